//! One generated request, compact and copyable, plus the request and user-agent tables it indexes.

use std::net::IpAddr;

use crate::event::Reason;

/// One synthetic token check, before formatting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ev {
    /// Event time, ms since the epoch.
    pub t: i64,
    /// The token id as 48 bits (printed `ak_` + 12 hex); `None` when the request had no token.
    pub token: Option<u64>,
    /// Client address.
    pub ip: IpAddr,
    /// User number (printed `user0001`); 0 when unknown.
    pub user: u32,
    /// Index into [`REQUESTS`].
    pub req: u8,
    /// Index into [`AGENTS`].
    pub ua: u8,
    /// HTTP status.
    pub status: u16,
    /// Rejection reason; `None` when accepted.
    pub reason: Option<Reason>,
    /// Response body size.
    pub bytes: u32,
}

impl Ev {
    /// An accepted request.
    pub(crate) fn ok(t: i64, token: Option<u64>, ip: IpAddr, user: u32, req: u8, ua: u8) -> Ev {
        Ev {
            t,
            token,
            ip,
            user,
            req,
            ua,
            status: 200,
            reason: None,
            bytes: 0,
        }
    }

    /// The same request, rejected with 401 and `reason`.
    pub(crate) fn rejected(mut self, reason: Reason) -> Ev {
        self.status = 401;
        self.reason = Some(reason);
        self
    }

    /// The same request at another time.
    pub(crate) fn at(mut self, t: i64) -> Ev {
        self.t = t;
        self
    }
}

/// One request shape: HTTP method and path, and the Vault operation and path it stands for.
pub(crate) struct Request {
    pub method: &'static str,
    pub path: &'static str,
    pub vault_op: &'static str,
    pub vault_path: &'static str,
}

const fn rq(
    method: &'static str,
    path: &'static str,
    vault_op: &'static str,
    vault_path: &'static str,
) -> Request {
    Request {
        method,
        path,
        vault_op,
        vault_path,
    }
}

/// Request shapes, indexed by `Ev::req`.
pub(crate) static REQUESTS: &[Request] = &[
    rq(
        "POST",
        "/v1/chat/completions",
        "update",
        "transit/encrypt/app",
    ),
    rq("GET", "/v1/models", "read", "secret/data/app/config"),
    rq("POST", "/v1/embeddings", "update", "transit/decrypt/app"),
    rq("GET", "/v1/files", "list", "secret/metadata/app"),
    rq("POST", "/v1/completions", "read", "database/creds/readonly"),
    rq("GET", "/v1/usage", "read", "auth/token/lookup-self"),
    rq("POST", "/v1/batches", "update", "pki/issue/internal"),
];

/// Requests a person at a keyboard makes.
pub(crate) const HUMAN_REQS: &[u8] = &[0, 0, 0, 1, 3, 4, 5];
/// Requests a service makes.
pub(crate) const SERVICE_REQS: &[u8] = &[2, 2, 0, 1];
/// Requests a nightly batch job makes.
pub(crate) const BATCH_REQS: &[u8] = &[6, 2, 2];
/// Requests an attacker probing a key makes.
pub(crate) const PROBE_REQS: &[u8] = &[1, 5];

/// User agents, indexed by `Ev::ua`.
pub(crate) static AGENTS: &[&str] = &[
    "python-requests/2.31.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Go-http-client/1.1",
    "okhttp/4.12.0",
    "OpenAI/Python 1.30.1",
    "curl/8.5.0",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "python-httpx/0.27.0",
];

/// Agents a person uses.
pub(crate) const HUMAN_UAS: &[u8] = &[1, 2, 5, 0, 7];
/// Agents a service or job uses.
pub(crate) const SERVICE_UAS: &[u8] = &[3, 0, 5, 7];
/// Agent of a phone app.
pub(crate) const MOBILE_UA: u8 = 4;
/// Agents attackers use.
pub(crate) const ATTACK_UAS: &[u8] = &[8, 6, 0];
