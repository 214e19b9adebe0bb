//! The admin API: detections, the frozen set, manual freeze/unfreeze, the Alertmanager
//! receiver. Every route needs `Authorization: Bearer <server.admin_token>` (compared in
//! constant time, checked before any body is read); without a configured token the routes do
//! not exist (404). Bodies are capped: [`MAX_BODY`], [`MAX_ALERTMANAGER_BODY`] (413 above).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::alertmanager::{self, Seen};
use crate::config::Secret;
use crate::detect::{DetectionSink, Ring};
use crate::enrich::{identify, Fingerprinter, TokenKind};
use crate::event::EventTime;
use crate::respond::{origin, Control, FrozenEntry};

/// Admin request bodies larger than this are refused (413): a freeze reason is a sentence.
pub const MAX_BODY: usize = 64 * 1024;
/// Alertmanager payloads larger than this are refused (413): a large alert group is ~100 KiB.
pub const MAX_ALERTMANAGER_BODY: usize = 1024 * 1024;
/// Alertmanager alerts remembered for dedupe.
const SEEN_ALERTS: usize = 10_000;
/// Longest token accepted in a path.
const MAX_TOKEN_LEN: usize = 512;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    control: Control,
    ring: Ring,
    /// Turns a token an operator pastes (possibly a raw secret) into the id tokenwatch
    /// tracks, so a raw secret never reaches the frozen set, the journal or a hook.
    fp: Fingerprinter,
    token_hash: Arc<[u8; 32]>,
    seen: Arc<Mutex<Seen>>,
}

/// The admin routes; empty when `admin_token` is absent or unresolved.
pub fn routes(
    control: Control,
    ring: Ring,
    admin_token: Option<Secret>,
    fp: Fingerprinter,
) -> Router {
    let Some(token) = admin_token.as_ref().and_then(Secret::expose) else {
        tracing::info!("admin API off: set server.admin_token to enable /api/v1");
        return Router::new();
    };
    let state = AdminState {
        control,
        ring,
        fp,
        token_hash: Arc::new(hash(token.as_bytes())),
        seen: Arc::new(Mutex::new(Seen::new(SEEN_ALERTS))),
    };
    Router::new()
        .route("/api/v1/detections", get(detections))
        .route("/api/v1/frozen", get(frozen))
        .route("/api/v1/frozen/{token}", post(freeze).delete(unfreeze))
        .route(
            "/api/v1/alertmanager",
            // The route's own limit is the innermost layer, so it wins over the router's.
            post(alertmanager).layer(DefaultBodyLimit::max(MAX_ALERTMANAGER_BODY)),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn hash(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Proof that the request carried the admin token.
pub struct Authorized;

impl FromRequestParts<AdminState> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AdminState) -> Result<Self, Response> {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Hashing first makes the comparison constant-time in the length too.
        if bool::from(hash(given.as_bytes()).ct_eq(&s.token_hash[..])) && !given.is_empty() {
            return Ok(Authorized);
        }
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Err(r)
    }
}

/// `GET /api/v1/detections` query.
#[derive(Debug, Deserialize)]
pub struct DetectionsQuery {
    /// RFC 3339 time or Unix seconds: only records at or after it.
    pub since: Option<String>,
    /// Only this detector's records.
    pub detector: Option<String>,
}

async fn detections(
    _: Authorized,
    State(s): State<AdminState>,
    Query(q): Query<DetectionsQuery>,
) -> Response {
    let since = match q.since.as_deref().map(parse_since) {
        None => None,
        Some(Some(t)) => Some(t),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "since: expected an RFC 3339 time or Unix seconds",
            )
        }
    };
    let list: Vec<_> = s
        .ring
        .snapshot()
        .into_iter()
        .filter(|d| since.is_none_or(|t| d.ts >= t))
        .filter(|d| q.detector.as_deref().is_none_or(|n| d.detector == n))
        .collect();
    Json(serde_json::json!({ "detections": list })).into_response()
}

fn parse_since(s: &str) -> Option<EventTime> {
    if let Ok(secs) = s.parse::<i64>() {
        return Some(EventTime::from_millis(secs.saturating_mul(1000)));
    }
    crate::parse::time::rfc3339(s.as_bytes(), &crate::parse::time::Zone::new(None))
}

fn entry_json(e: &FrozenEntry) -> serde_json::Value {
    serde_json::json!({
        "token": e.token,
        "since": EventTime::from_millis(e.since_ms).to_string(),
        "until": e.until_ms.map(|u| EventTime::from_millis(u).to_string()),
        "detector": e.detection.detector,
        "id": e.detection.id,
        "user": e.detection.user,
    })
}

async fn frozen(_: Authorized, State(s): State<AdminState>) -> Response {
    let list: Vec<_> = s.control.frozen().iter().map(entry_json).collect();
    // Where enforcement at the gateways stands (`tokenwatch frozen` prints it).
    let enforcement = s.control.enforcement();
    Json(serde_json::json!({ "frozen": list, "enforcement": enforcement })).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FreezeBody {
    #[serde(default)]
    reason: Option<String>,
}

/// The tracked id for a token from a request path: a non-secret id as given, a secret (by
/// shape or `Bearer` scheme) as its fingerprint; `None` for an unusable value.
fn token_id(t: &str, fp: &Fingerprinter) -> Option<String> {
    let bad = t.is_empty() || t.len() > MAX_TOKEN_LEN || t.chars().any(char::is_control);
    (!bad)
        .then(|| identify(t, TokenKind::Auto, fp))
        .flatten()
        .map(|t| t.to_string())
}

fn invalid_token() -> Response {
    error(StatusCode::BAD_REQUEST, "invalid token id")
}

async fn freeze(
    _: Authorized,
    State(s): State<AdminState>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let Some(token) = token_id(&token, &s.fp) else {
        return invalid_token();
    };
    let req: FreezeBody = if body.iter().all(u8::is_ascii_whitespace) {
        FreezeBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
        }
    };
    let key = EventTime::now().as_millis().to_string();
    let evidence = serde_json::json!({ "requested_by": "admin api", "note": req.reason });
    let d = s.control.freeze(&token, origin::MANUAL, &key, evidence);
    let mut ring = s.ring.clone();
    let _ = ring.emit(&d);
    Json(d).into_response()
}

async fn unfreeze(
    _: Authorized,
    State(s): State<AdminState>,
    Path(token): Path<String>,
) -> Response {
    let Some(token) = token_id(&token, &s.fp) else {
        return invalid_token();
    };
    match s.control.unfreeze(&token) {
        Some(e) => Json(serde_json::json!({ "unfrozen": entry_json(&e) })).into_response(),
        None => error(StatusCode::NOT_FOUND, "token is not frozen"),
    }
}

async fn alertmanager(_: Authorized, State(s): State<AdminState>, body: Bytes) -> Response {
    let payload: alertmanager::Payload = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
    };
    let result = match s.seen.lock() {
        Ok(mut seen) => alertmanager::handle(&s.control, &mut seen, payload, &|t| {
            identify(t, TokenKind::Auto, &s.fp).map(|t| t.to_string())
        }),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal state poisoned"),
    };
    match result {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}
