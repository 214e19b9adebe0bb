//! `[authz]`: the forward-auth check gateways call before passing a request on (`GET /authz`
//! on its own listener), and the deny file for gateways that cannot make a subrequest.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::doc::Seg;
use super::source::TokenKind;
use super::suggest::unknown_choice;

/// What `/authz` answers when the request carries no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum OnMissing {
    /// 200: the gateway (or the upstream) decides what an anonymous request may do.
    #[default]
    Allow,
    /// 401: every request must carry a token.
    Deny,
}

impl OnMissing {
    const ALL: [(OnMissing, &'static str); 2] =
        [(OnMissing::Allow, "allow"), (OnMissing::Deny, "deny")];
}

impl TryFrom<String> for OnMissing {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        OnMissing::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(v, _)| *v)
            .ok_or_else(|| unknown_choice("on_missing", &s, &OnMissing::ALL.map(|(_, n)| n)))
    }
}

impl From<OnMissing> for String {
    fn from(v: OnMissing) -> String {
        OnMissing::ALL
            .iter()
            .find(|(x, _)| *x == v)
            .map_or("allow", |(_, n)| n)
            .to_string()
    }
}

/// `[authz]` as read from the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthzConfig {
    /// Address of the `/authz` listener (off when absent); never the `[server]` listener.
    #[serde(
        deserialize_with = "opt_socket_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen: Option<SocketAddr>,
    /// Request header carrying the token (default `Authorization`; a `Bearer ` scheme is stripped).
    pub header: String,
    /// Query parameter carrying the token instead of the header (e.g. `key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Cookie carrying the token instead of the header (e.g. `session`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// How the value is identified: `auto` | `id` | `secret`, as the source's `token_kind`.
    pub token_kind: TokenKind,
    /// Answer for a request without a token: `allow` (200) or `deny` (401).
    pub on_missing: OnMissing,
    /// nginx `map` include of the frozen ids and fingerprints, rewritten atomically on change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_file: Option<PathBuf>,
    /// Command run (no shell) after each deny-file write, e.g. `["nginx", "-s", "reload"]`.
    pub reload: Vec<String>,
    /// How long the reload command may run before it is killed, in milliseconds.
    pub reload_timeout_ms: u64,
}

impl Default for AuthzConfig {
    fn default() -> Self {
        AuthzConfig {
            listen: None,
            header: "Authorization".into(),
            query: None,
            cookie: None,
            token_kind: TokenKind::Auto,
            on_missing: OnMissing::Allow,
            deny_file: None,
            reload: Vec::new(),
            reload_timeout_ms: 10_000,
        }
    }
}

/// Where `/authz` finds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFrom {
    /// A header (lower-cased name).
    Header(String),
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

impl AuthzConfig {
    /// The token's place: `query` or `cookie` when set, else `header`.
    pub fn token_from(&self) -> TokenFrom {
        match (&self.query, &self.cookie) {
            (Some(q), _) => TokenFrom::Query(q.clone()),
            (None, Some(c)) => TokenFrom::Cookie(c.clone()),
            (None, None) => TokenFrom::Header(self.header.to_ascii_lowercase()),
        }
    }

    /// Problems serde could not see, with their key paths.
    pub(crate) fn problems(&self, server_listen: SocketAddr) -> Vec<(Vec<Seg>, String)> {
        let at = |k: &str| vec![Seg::Key("authz".into()), Seg::Key(k.into())];
        let mut out = Vec::new();
        if self
            .listen
            .is_some_and(|l| l == server_listen && l.port() != 0)
        {
            out.push((
                at("listen"),
                "same address as server.listen: /authz needs its own listener".to_string(),
            ));
        }
        if self.query.is_some() && self.cookie.is_some() {
            out.push((at("cookie"), "set query or cookie, not both".to_string()));
        }
        let bad_name = |s: &str| s.is_empty() || s.bytes().any(|b| b <= b' ' || b == 0x7f);
        for (k, v) in [
            ("header", Some(&self.header)),
            ("query", self.query.as_ref()),
            ("cookie", self.cookie.as_ref()),
        ] {
            if v.is_some_and(|v| {
                bad_name(v)
                    || (k == "header" && axum::http::HeaderName::from_bytes(v.as_bytes()).is_err())
            }) {
                out.push((at(k), format!("invalid {k} name")));
            }
        }
        if self.reload.first().is_some_and(|p| p.is_empty()) {
            out.push((at("reload"), "the program name is empty".to_string()));
        }
        if !self.reload.is_empty() && self.deny_file.is_none() {
            out.push((at("reload"), "reload needs deny_file".to_string()));
        }
        if self.reload_timeout_ms == 0 {
            out.push((at("reload_timeout_ms"), "must be at least 1".to_string()));
        }
        out
    }
}

fn opt_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    super::values::socket_addr(d).map(Some)
}
