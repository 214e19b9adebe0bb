//! `/authz`: the forward-auth check a gateway calls before passing a request on (nginx
//! `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`, Envoy `ext_authz`).
//!
//! Served on its own listener (`[authz] listen`), never next to `/metrics` or the admin
//! API, and without the admin token: it only ever says yes or no about the token the
//! caller already holds. Any method and any path under `/authz/` is answered the same way,
//! because Envoy appends the original path to its `path_prefix` and forwards the original
//! method, and Traefik and Caddy may forward the original method too.
//!
//! | answer | when |
//! |---|---|
//! | 200 | the token is not frozen; or no token and `on_missing = "allow"` |
//! | 403 | frozen: `X-Tokenwatch-Detector` and `X-Tokenwatch-Record` name the decision |
//! | 401 | no token and `on_missing = "deny"` |
//! | 503 | the frozen set is not loaded yet (start, or an edge still reading the topic) |
//!
//! The token is identified exactly as the parsers do ([`identify`]): a secret becomes its
//! keyed `fp:` fingerprint, an id stays an id. The lookup ([`FrozenView::lookup`]) is one
//! hash probe in a sharded map, with no await on the request path; nothing is allocated
//! for an allowed token but the fingerprint.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::config::{AuthzConfig, OnMissing, TokenFrom, TokenKind};
use crate::enrich::{identify, Fingerprinter};
use crate::event::EventTime;
use crate::metrics::Metrics;
use crate::respond::FrozenView;

/// Header naming the detector that froze the token.
pub const DETECTOR_HEADER: &str = "x-tokenwatch-detector";
/// Header naming the detection record that froze the token.
pub const RECORD_HEADER: &str = "x-tokenwatch-record";
/// How often the size and age gauges are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

/// The `/authz` families, registered once per process.
#[derive(Clone)]
pub struct AuthzMetrics {
    allow: IntCounter,
    deny: IntCounter,
    no_token_allow: IntCounter,
    no_token_deny: IntCounter,
    not_ready: IntCounter,
    /// `tokenwatch_authz_frozen_entries`.
    pub entries: IntGauge,
    /// `tokenwatch_authz_snapshot_age_seconds`.
    pub age: Gauge,
    /// `tokenwatch_authz_deny_file_writes_total{result}` (ok | error).
    pub deny_file_writes: IntCounterVec,
    /// `tokenwatch_authz_reload_total{result}` (ok | error | timeout).
    pub reloads: IntCounterVec,
}

impl AuthzMetrics {
    /// Registers the families in `m`.
    pub fn register(m: &Metrics) -> Result<AuthzMetrics, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "tokenwatch_authz_requests_total",
                "/authz answers by result: allow, deny (frozen), no_token_allow, no_token_deny, not_ready (503)",
            ),
            &["result"],
        )?;
        let entries = IntGauge::new(
            "tokenwatch_authz_frozen_entries",
            "Frozen tokens /authz and the deny file enforce (this process's copy)",
        )?;
        let age = Gauge::new(
            "tokenwatch_authz_snapshot_age_seconds",
            "Seconds since this process's copy of the frozen set last matched its source (0 where the freeze is decided; on an edge, since it last reached the end of the frozen topic)",
        )?;
        let deny_file_writes = IntCounterVec::new(
            Opts::new(
                "tokenwatch_authz_deny_file_writes_total",
                "Writes of [authz] deny_file by result (ok | error)",
            ),
            &["result"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "tokenwatch_authz_reload_total",
                "Runs of the [authz] reload command by result (ok | error | timeout)",
            ),
            &["result"],
        )?;
        let r = m.registry();
        r.register(Box::new(requests.clone()))?;
        r.register(Box::new(entries.clone()))?;
        r.register(Box::new(age.clone()))?;
        r.register(Box::new(deny_file_writes.clone()))?;
        r.register(Box::new(reloads.clone()))?;
        let c = |l: &str| requests.with_label_values(&[l]);
        Ok(AuthzMetrics {
            allow: c("allow"),
            deny: c("deny"),
            no_token_allow: c("no_token_allow"),
            no_token_deny: c("no_token_deny"),
            not_ready: c("not_ready"),
            entries,
            age,
            deny_file_writes,
            reloads,
        })
    }

    /// Refreshes the size and age gauges from `view`.
    pub fn observe(&self, view: &FrozenView) {
        self.entries
            .set(i64::try_from(view.len()).unwrap_or(i64::MAX));
        match view.age_secs(EventTime::now().as_millis()) {
            Some(a) => self.age.set(a),
            None => self.age.set(f64::NAN),
        }
    }
}

/// Everything a check needs (cheap to clone: axum clones the state for every request).
#[derive(Clone)]
pub struct AuthzState(Arc<Checker>);

struct Checker {
    view: FrozenView,
    from: TokenFrom,
    kind: TokenKind,
    on_missing: OnMissing,
    fp: Fingerprinter,
    metrics: AuthzMetrics,
}

impl AuthzState {
    /// The check for `cfg` over `view`.
    pub fn new(
        cfg: &AuthzConfig,
        view: FrozenView,
        fp: Fingerprinter,
        metrics: AuthzMetrics,
    ) -> AuthzState {
        AuthzState(Arc::new(Checker {
            view,
            from: cfg.token_from(),
            kind: cfg.token_kind,
            on_missing: cfg.on_missing,
            fp,
            metrics,
        }))
    }
}

/// `/authz` and everything under it, any method.
pub fn router(state: AuthzState) -> Router {
    Router::new()
        .route("/authz", any(check))
        .route("/authz/", any(check))
        .route("/authz/{*rest}", any(check))
        .with_state(state)
}

/// Serves `/authz` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AuthzState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(a) = listener.local_addr() {
        state.0.view.set_listen(a);
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Refreshes the size and age gauges every [`GAUGE_EVERY`] until aborted.
async fn gauges(m: AuthzMetrics, v: FrozenView) {
    loop {
        m.observe(&v);
        tokio::time::sleep(GAUGE_EVERY).await;
    }
}

/// The running enforcement of one process: the `/authz` listener and the deny-file writer.
pub struct Enforcer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// The deny-file writer and the gauge refresher.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// The bound `/authz` address, when the listener is on.
    pub addr: Option<std::net::SocketAddr>,
}

impl Enforcer {
    /// Starts what `[authz]` asks for over `view`: nothing when neither `listen` nor
    /// `deny_file` is set.
    pub async fn start(
        cfg: &AuthzConfig,
        view: FrozenView,
        fp: Fingerprinter,
        metrics: &Metrics,
    ) -> Result<Enforcer, AuthzError> {
        let mut e = Enforcer {
            stop: None,
            server: None,
            background: Vec::new(),
            addr: None,
        };
        if cfg.listen.is_none() && cfg.deny_file.is_none() {
            return Ok(e);
        }
        let m = AuthzMetrics::register(metrics)?;
        e.background
            .push(tokio::spawn(gauges(m.clone(), view.clone())));
        if let Some(path) = &cfg.deny_file {
            let w = crate::respond::deny_file::DenyFile {
                path: path.clone(),
                reload: cfg.reload.clone(),
                reload_timeout: Duration::from_millis(cfg.reload_timeout_ms),
                writes: m.deny_file_writes.clone(),
                reloads: m.reloads.clone(),
            };
            e.background.push(tokio::spawn(w.run(view.clone())));
        }
        if let Some(listen) = cfg.listen {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|source| AuthzError::Bind {
                    addr: listen,
                    source,
                })?;
            e.addr = listener.local_addr().ok();
            tracing::info!(addr = ?e.addr, "serving /authz (forward-auth)");
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            e.stop = Some(tx);
            let state = AuthzState::new(cfg, view, fp, m);
            e.server = Some(tokio::spawn(async move {
                let shutdown = async {
                    let _ = rx.await;
                };
                if let Err(err) = serve(listener, state, shutdown).await {
                    tracing::error!(%err, "the /authz listener failed");
                }
            }));
        }
        Ok(e)
    }

    /// Stops serving (in-flight checks finish) and the deny-file writer.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.server.take() {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        for t in self.background.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Why enforcement could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// The `/authz` listener could not bind.
    #[error("binding the /authz listener {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The metrics could not be registered.
    #[error("authz metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

async fn check(State(s): State<AuthzState>, req: Request) -> Response {
    let s = &*s.0;
    if !s.view.is_loaded() {
        s.metrics.not_ready.inc();
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "frozen set not loaded yet\n",
        );
    }
    let raw = token(&s.from, req.headers(), req.uri().query());
    let id = raw.and_then(|r| identify(&r, s.kind, &s.fp));
    let Some(id) = id else {
        return match s.on_missing {
            OnMissing::Allow => {
                s.metrics.no_token_allow.inc();
                answer(StatusCode::OK, "")
            }
            OnMissing::Deny => {
                s.metrics.no_token_deny.inc();
                answer(StatusCode::UNAUTHORIZED, "no token\n")
            }
        };
    };
    match s.view.lookup(id.as_str(), EventTime::now().as_millis()) {
        None => {
            s.metrics.allow.inc();
            answer(StatusCode::OK, "")
        }
        Some(d) => {
            s.metrics.deny.inc();
            let mut r = answer(StatusCode::FORBIDDEN, "token frozen\n");
            let h = r.headers_mut();
            for (name, v) in [(DETECTOR_HEADER, &d.detector), (RECORD_HEADER, &d.id)] {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.insert(name, v);
                }
            }
            r
        }
    }
}

fn answer(status: StatusCode, body: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    // The gateway's own cache (e.g. nginx proxy_cache_valid) decides how long an answer
    // may be reused; no one else should keep it.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The raw token from the configured place (`None`: absent). Bytes that are not UTF-8 are
/// replaced, as a log line's would be, so a malformed value is still identified (and
/// fingerprinted), never echoed.
fn token<'a>(from: &TokenFrom, h: &'a HeaderMap, query: Option<&'a str>) -> Option<Cow<'a, str>> {
    match from {
        TokenFrom::Header(name) => h
            .get(name.as_str())
            .map(|v| String::from_utf8_lossy(v.as_bytes())),
        TokenFrom::Query(name) => query
            .and_then(|q| param(q, name))
            .or_else(|| forwarded_query(h).and_then(|q| param(q, name))),
        TokenFrom::Cookie(name) => h
            .get_all(header::COOKIE)
            .iter()
            .find_map(|v| cookie(v.as_bytes(), name.as_bytes())),
    }
}

/// The original request's query, for gateways that call `/authz` without it and send the
/// original URI in a header instead (nginx recipe: `X-Original-URI`; Traefik and Caddy:
/// `X-Forwarded-Uri`).
fn forwarded_query(h: &HeaderMap) -> Option<&str> {
    ["x-original-uri", "x-forwarded-uri"]
        .iter()
        .find_map(|n| h.get(*n))
        .and_then(|v| v.to_str().ok())
        .and_then(|u| u.split_once('?'))
        .map(|(_, q)| q.split('#').next().unwrap_or(q))
}

/// The first value of `name` in a query string, percent-decoded.
fn param<'a>(q: &'a str, name: &str) -> Option<Cow<'a, str>> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|&h| (h as char).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The value of cookie `name` in one `Cookie` header (`a=1; b="2"`).
fn cookie<'a>(header: &'a [u8], name: &[u8]) -> Option<Cow<'a, str>> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (k, v) = (pair.get(..eq)?, pair.get(eq + 1..)?);
        let v = v
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v);
        (k.trim_ascii() == name).then(|| String::from_utf8_lossy(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::Deny;
    use tower::ServiceExt;

    async fn status(app: &Router, req: axum::http::Request<Body>) -> (StatusCode, HeaderMap) {
        match app.clone().oneshot(req).await {
            Ok(r) => (r.status(), r.headers().clone()),
            Err(e) => match e {},
        }
    }

    #[tokio::test]
    async fn answers_503_until_loaded_then_by_the_set() -> Result<(), Box<dyn std::error::Error>> {
        let view = FrozenView::new();
        let fp = Fingerprinter::new(b"k");
        let m = AuthzMetrics::register(&Metrics::new())?;
        let app = router(AuthzState::new(
            &AuthzConfig::default(),
            view.clone(),
            fp.clone(),
            m,
        ));
        let req = |method: &str, path: &str, auth: &str| {
            axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", auth)
                .body(Body::empty())
        };
        let key = "sk-live-0123456789abcdef";
        assert_eq!(
            status(&app, req("GET", "/authz", key)?).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        view.mark_authoritative();
        assert_eq!(
            status(&app, req("GET", "/authz", key)?).await.0,
            StatusCode::OK
        );
        let fpk = fp.fingerprint(key.as_bytes());
        view.upsert(
            fpk.as_str(),
            Deny {
                detector: "ip_fanout".into(),
                id: "rec-9".into(),
                since_ms: 0,
                until_ms: None,
            },
        );
        // Any method, any path under /authz (Envoy appends the original path).
        for (m, p) in [
            ("GET", "/authz"),
            ("POST", "/authz/v1/chat?x=1"),
            ("DELETE", "/authz/"),
        ] {
            let (s, h) = status(&app, req(m, p, &format!("Bearer {key}"))?).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{m} {p}");
            assert_eq!(
                h.get(RECORD_HEADER).map(|v| v.as_bytes()),
                Some(&b"rec-9"[..])
            );
            assert!(h
                .values()
                .all(|v| !v.as_bytes().windows(key.len()).any(|w| w == key.as_bytes())));
        }
        assert_eq!(
            status(&app, req("GET", "/other", key)?).await.0,
            StatusCode::NOT_FOUND
        );
        Ok(())
    }

    #[test]
    fn token_places() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("app-abc"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; tw=\"k%201\""),
        );
        h.append(header::COOKIE, HeaderValue::from_static("session=s3"));
        h.insert(
            "x-original-uri",
            HeaderValue::from_static("/v1/chat?x=1&key=sk-%2Fq#frag"),
        );
        let t = |f: TokenFrom, q: Option<&str>| token(&f, &h, q).map(|c| c.into_owned());
        assert_eq!(
            t(TokenFrom::Header("x-api-key".into()), None).as_deref(),
            Some("app-abc")
        );
        assert_eq!(t(TokenFrom::Header("authorization".into()), None), None);
        assert_eq!(
            t(TokenFrom::Cookie("session".into()), None).as_deref(),
            Some("s3")
        );
        assert_eq!(
            t(TokenFrom::Cookie("tw".into()), None).as_deref(),
            Some("k%201")
        );
        assert_eq!(t(TokenFrom::Cookie("nope".into()), None), None);
        assert_eq!(
            t(TokenFrom::Query("key".into()), Some("key=a+b")).as_deref(),
            Some("a b")
        );
        assert_eq!(
            t(TokenFrom::Query("key".into()), None).as_deref(),
            Some("sk-/q")
        );
        assert_eq!(param("k=%zz%4", "k").as_deref(), Some("%zz%4"));
        assert_eq!(param("k", "k").as_deref(), Some(""));
    }
}
