//! `webhook`: one HTTP request per action, signed, with an idempotency key.
//!
//! 2xx is success; 4xx except 408 and 429 is a permanent failure; everything else
//! (5xx, 408, 429, timeouts, connection errors) is retried. `Retry-After` (seconds) is
//! honoured as the least delay before the next attempt.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use sha2::Sha256;

use super::{payload, CallFuture, CallResult, Hook};
use crate::config::template::Escape;
use crate::config::HookConfig;
use crate::respond::journal::Job;
use crate::respond::RespondError;

/// The signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-tokenwatch-signature";
/// The idempotency header.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// The event header (`freeze`, `unfreeze`, ...).
pub const EVENT_HEADER: &str = "x-tokenwatch-event";

/// A configured webhook.
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    method: Method,
    headers: HeaderMap,
    key: Option<Vec<u8>>,
    body: Option<String>,
    content_type: String,
    timeout: Duration,
}

fn bad(cfg: &HookConfig, reason: impl Into<String>) -> RespondError {
    RespondError::Hook {
        hook: cfg.name.clone(),
        reason: reason.into(),
    }
}

impl Webhook {
    /// Builds the client (rustls, ring provider) and the fixed headers.
    pub fn new(cfg: &HookConfig) -> Result<Webhook, RespondError> {
        super::install_crypto_provider();
        let url = cfg.url.clone().ok_or_else(|| bad(cfg, "no url"))?;
        let method = Method::from_bytes(cfg.method.as_deref().unwrap_or("POST").as_bytes())
            .map_err(|_| bad(cfg, "invalid method"))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| bad(cfg, "invalid header name"))?;
            let value = v
                .value()
                .ok_or_else(|| bad(cfg, format!("header {k}: secret not resolved")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| bad(cfg, format!("header {k}: invalid value")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(t) = &cfg.bearer_token {
            let t = t
                .expose()
                .ok_or_else(|| bad(cfg, "bearer_token not resolved"))?;
            let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| bad(cfg, "bearer_token is not a valid header value"))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let key = match &cfg.hmac_key {
            Some(k) => Some(
                k.expose()
                    .ok_or_else(|| bad(cfg, "hmac_key not resolved"))?
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("tokenwatch/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bad(cfg, format!("HTTP client: {e}")))?;
        Ok(Webhook {
            client,
            url,
            method,
            headers,
            key,
            body: cfg.body.clone(),
            content_type: cfg
                .content_type
                .clone()
                .unwrap_or_else(|| "application/json".into()),
            timeout: cfg.timeout(),
        })
    }

    fn body(&self, job: &Job) -> Vec<u8> {
        match &self.body {
            None => payload::json(job),
            Some(t) => {
                let esc = if self.content_type.contains("json") {
                    Escape::Json
                } else if self.content_type.contains("x-www-form-urlencoded") {
                    Escape::Percent
                } else {
                    Escape::Raw
                };
                payload::render(t, esc, job).into_bytes()
            }
        }
    }

    async fn send(&self, job: &Job) -> CallResult {
        let body = self.body(job);
        let url = payload::render(&self.url, Escape::Percent, job);
        let mut req = self
            .client
            .request(self.method.clone(), &url)
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, &self.content_type)
            .header(IDEMPOTENCY_HEADER, job.idempotency_key())
            .header(EVENT_HEADER, job.event.as_str());
        if let Some(key) = &self.key {
            req = req.header(SIGNATURE_HEADER, sign(key, &body));
        }
        match req.body(body).send().await {
            Ok(resp) => classify(resp.status(), retry_after(resp.headers())),
            Err(e) => CallResult::Retry(e.without_url().to_string(), None),
        }
    }
}

impl Hook for Webhook {
    fn call<'a>(&'a self, jobs: &'a [Job]) -> CallFuture<'a> {
        Box::pin(async move {
            for job in jobs {
                let r = self.send(job).await;
                if r != CallResult::Ok {
                    return r;
                }
            }
            CallResult::Ok
        })
    }
}

/// `sha256=<hex>` of `body` under `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The webhook status rules of the module docs.
pub fn classify(status: StatusCode, after: Option<Duration>) -> CallResult {
    let code = status.as_u16();
    if status.is_success() {
        CallResult::Ok
    } else if status.is_client_error() && code != 408 && code != 429 {
        CallResult::Permanent(format!("HTTP {code}"))
    } else {
        CallResult::Retry(format!("HTTP {code}"), after)
    }
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let secs: u64 = h
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rules() {
        let s = |c| classify(StatusCode::from_u16(c).unwrap_or(StatusCode::OK), None);
        assert_eq!(s(204), CallResult::Ok);
        assert!(matches!(s(400), CallResult::Permanent(_)));
        assert!(matches!(s(404), CallResult::Permanent(_)));
        assert!(matches!(s(408), CallResult::Retry(..)));
        assert!(matches!(s(429), CallResult::Retry(..)));
        assert!(matches!(s(503), CallResult::Retry(..)));
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
