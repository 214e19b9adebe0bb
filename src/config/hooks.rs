//! `[[hook]]`: where response actions go (webhook, exec, e-mail).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::secret::{Secret, SecretRef, SecretSource};

/// What kind of hook a `[[hook]]` table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    /// An HTTP request (signed JSON body or a body template).
    Webhook,
    /// A program run without a shell, the record on stdin.
    Exec,
    /// An e-mail through an SMTP relay (batched into digests).
    Email,
}

impl HookKind {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Webhook => "webhook",
            HookKind::Exec => "exec",
            HookKind::Email => "email",
        }
    }
}

/// Which response events a hook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// A token was frozen (enforce mode).
    Freeze,
    /// A token was unfrozen (TTL or admin API).
    Unfreeze,
    /// A token would have been frozen (dry-run): a notification, never a revocation.
    WouldFreeze,
    /// A detection that only alerts.
    Alert,
    /// The freeze circuit breaker opened (sent once per opening).
    Breaker,
}

impl HookEvent {
    /// The config and payload name.
    pub const fn as_str(self) -> &'static str {
        match self {
            HookEvent::Freeze => "freeze",
            HookEvent::Unfreeze => "unfreeze",
            HookEvent::WouldFreeze => "would_freeze",
            HookEvent::Alert => "alert",
            HookEvent::Breaker => "breaker",
        }
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an e-mail hook talks to its relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required); port 587 by default.
    #[default]
    Starttls,
    /// Implicit TLS from the first byte; port 465 by default.
    Tls,
    /// No encryption, for a relay on localhost or a trusted network; port 25 by default.
    None,
}

/// A header value: literal text, or a secret given as `env:NAME` / `file:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Sent as written (not for secrets).
    Literal(String),
    /// Resolved at load time, never printed.
    Secret(Secret),
}

impl HeaderValue {
    /// The value to send, if available.
    pub fn value(&self) -> Option<&str> {
        match self {
            HeaderValue::Literal(s) => Some(s),
            HeaderValue::Secret(s) => s.expose(),
        }
    }
}

impl Serialize for HeaderValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HeaderValue::Literal(v) => s.serialize_str(v),
            HeaderValue::Secret(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.starts_with("env:") || text.starts_with("file:") {
            SecretRef::parse(&text)
                .map(|r| HeaderValue::Secret(Secret::new(r)))
                .map_err(serde::de::Error::custom)
        } else {
            Ok(HeaderValue::Literal(text))
        }
    }
}

/// One `[[hook]]` table. Keys that do not apply to its `type` are warned about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookConfig {
    /// Unique name, the `hook` metric label (default `hook<N>`).
    pub name: String,
    /// `webhook` | `exec` | `email` (required).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<HookKind>,
    /// Events sent to this hook (default: webhook and exec `freeze`, `unfreeze`; email
    /// `freeze`, `unfreeze`, `breaker`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<HookEvent>>,
    /// One attempt's time limit in milliseconds (default 5000; e-mail 30000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Attempts per round (default 8); after a failed round the action waits `backoff_max_ms`
    /// in the journal, then a new round starts (and a restart retries it too).
    pub max_attempts: u32,
    /// First retry delay in milliseconds, doubled each attempt, with jitter (default 500).
    pub backoff_ms: u64,
    /// Longest retry delay in milliseconds (default 60000).
    pub backoff_max_ms: u64,
    /// webhook: the URL; `{{token}}`-style placeholders are replaced (percent-encoded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// webhook: the HTTP method (default `POST`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// webhook: extra headers; a value `env:NAME` / `file:PATH` is a secret.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderValue>,
    /// webhook: sent as `Authorization: Bearer <value>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// webhook: HMAC-SHA256 key for `X-Tokenwatch-Signature: sha256=<hex>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_key: Option<Secret>,
    /// webhook: a body template instead of the JSON record (placeholders `{{token}}`,
    /// `{{user}}`, `{{id}}`, `{{ip}}`, `{{detector}}`, `{{severity}}`, `{{event}}`, `{{reason}}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// webhook: the body's content type (default `application/json`); placeholders are
    /// JSON-escaped for JSON and percent-encoded for `application/x-www-form-urlencoded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// exec: the program (absolute path or looked up in PATH); no shell is involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<PathBuf>,
    /// exec: its arguments (placeholders replaced as they are).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// email: the SMTP relay's host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_host: Option<String>,
    /// email: the relay's port (default by `tls`: 587, 465 or 25).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_port: Option<u16>,
    /// email: `starttls` (default) | `tls` | `none` (local relays only).
    pub tls: SmtpTls,
    /// email: SMTP user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// email: SMTP password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// email: the sender, e.g. `tokenwatch <tokenwatch@example.com>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// email: recipients.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// email: actions within this many seconds of the first go out as one digest (default 60).
    pub digest_secs: u64,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            name: String::new(),
            kind: None,
            on: None,
            timeout_ms: None,
            max_attempts: 8,
            backoff_ms: 500,
            backoff_max_ms: 60_000,
            url: None,
            method: None,
            headers: BTreeMap::new(),
            bearer_token: None,
            hmac_key: None,
            body: None,
            content_type: None,
            program: None,
            args: Vec::new(),
            smtp_host: None,
            smtp_port: None,
            tls: SmtpTls::default(),
            username: None,
            password: None,
            from: None,
            to: Vec::new(),
            digest_secs: 60,
        }
    }
}

/// Placeholders a body, URL or argument template may use.
pub const PLACEHOLDERS: [&str; 9] = [
    "token", "accessor", "user", "id", "ip", "detector", "severity", "event", "reason",
];

/// A finding about one hook: key (relative to the table), message, and whether it is an error.
pub(crate) type Problem = (&'static str, String, bool);

impl HookConfig {
    /// The events this hook receives.
    pub fn events(&self) -> Vec<HookEvent> {
        if let Some(on) = &self.on {
            return on.clone();
        }
        match self.kind {
            Some(HookKind::Email) => {
                vec![HookEvent::Freeze, HookEvent::Unfreeze, HookEvent::Breaker]
            }
            _ => vec![HookEvent::Freeze, HookEvent::Unfreeze],
        }
    }

    /// One attempt's time limit.
    pub fn timeout(&self) -> std::time::Duration {
        let default = if self.kind == Some(HookKind::Email) {
            30_000
        } else {
            5_000
        };
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(default))
    }

    /// Resolves this hook's secrets; each failure is reported under its key.
    pub(crate) fn resolve_secrets(&mut self, src: &dyn SecretSource) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut one = |key: &'static str, s: Option<&mut Secret>| {
            if let Some(Err(e)) = s.map(|s| s.resolve(src)) {
                out.push((key, e, true));
            }
        };
        one("bearer_token", self.bearer_token.as_mut());
        one("hmac_key", self.hmac_key.as_mut());
        one("password", self.password.as_mut());
        for v in self.headers.values_mut() {
            if let HeaderValue::Secret(s) = v {
                one("headers", Some(s));
            }
        }
        out
    }

    /// Problems serde cannot see.
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if !valid_name(&self.name) {
            out.push((
                "name",
                format!(
                    "invalid hook name {:?} (1 to 64 of a-z A-Z 0-9 _ . -)",
                    self.name
                ),
                true,
            ));
        }
        if self.max_attempts == 0 {
            out.push(("max_attempts", "must be at least 1".into(), true));
        }
        if self.timeout_ms == Some(0) {
            out.push(("timeout_ms", "must be at least 1".into(), true));
        }
        match self.kind {
            None => out.push((
                "type",
                "missing: type = \"webhook\" | \"exec\" | \"email\"".into(),
                true,
            )),
            Some(HookKind::Webhook) => self.webhook_problems(&mut out),
            Some(HookKind::Exec) => self.exec_problems(&mut out),
            Some(HookKind::Email) => self.email_problems(&mut out),
        }
        self.unused_keys(&mut out);
        out
    }

    fn webhook_problems(&self, out: &mut Vec<Problem>) {
        match &self.url {
            None => out.push(("url", "webhook needs url = \"https://...\"".into(), true)),
            Some(u) => {
                check_template(u, "url", out);
                let probe = super::template::fill_with(u, |_| "x");
                match reqwest::Url::parse(&probe) {
                    Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                    Ok(p) => out.push((
                        "url",
                        format!("unsupported scheme {:?} (http or https)", p.scheme()),
                        true,
                    )),
                    Err(e) => out.push(("url", format!("invalid URL: {e}"), true)),
                }
            }
        }
        if let Some(m) = &self.method {
            if reqwest::Method::from_bytes(m.as_bytes()).is_err() {
                out.push(("method", format!("invalid HTTP method {m:?}"), true));
            }
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                out.push(("headers", format!("invalid header name {name:?}"), true));
            }
        }
        if let Some(b) = &self.body {
            check_template(b, "body", out);
        }
        if self.hmac_key.is_none() && self.body.is_none() {
            out.push(("hmac_key", "no hmac_key: requests are not signed, so the receiver cannot tell them from forgeries".into(), false));
        }
    }

    fn exec_problems(&self, out: &mut Vec<Problem>) {
        match &self.program {
            None => out.push((
                "program",
                "exec needs program = \"/path/to/program\"".into(),
                true,
            )),
            Some(p) if p.as_os_str().is_empty() => out.push(("program", "empty path".into(), true)),
            Some(p) if p.is_absolute() && !p.is_file() => {
                out.push(("program", format!("{} not found", p.display()), false));
            }
            Some(_) => {}
        }
        for a in &self.args {
            check_template(a, "args", out);
        }
    }

    fn email_problems(&self, out: &mut Vec<Problem>) {
        if self.smtp_host.as_deref().is_none_or(str::is_empty) {
            out.push((
                "smtp_host",
                "email needs smtp_host = \"smtp.example.com\"".into(),
                true,
            ));
        }
        match &self.from {
            None => out.push((
                "from",
                "email needs from = \"tokenwatch <tw@example.com>\"".into(),
                true,
            )),
            Some(f) if f.parse::<lettre::message::Mailbox>().is_err() => {
                out.push(("from", format!("invalid address {f:?}"), true));
            }
            Some(_) => {}
        }
        if self.to.is_empty() {
            out.push(("to", "email needs to = [\"ops@example.com\"]".into(), true));
        }
        for t in &self.to {
            if t.parse::<lettre::message::Mailbox>().is_err() {
                out.push(("to", format!("invalid address {t:?}"), true));
            }
        }
        if self.password.is_some() && self.username.is_none() {
            out.push(("username", "password given without username".into(), true));
        }
        if self.digest_secs == 0 {
            out.push(("digest_secs", "must be at least 1".into(), true));
        }
    }

    /// Keys set for another hook type: harmless, likely a mistake.
    fn unused_keys(&self, out: &mut Vec<Problem>) {
        let Some(kind) = self.kind else { return };
        let set: [(&'static str, bool, HookKind); 13] = [
            ("url", self.url.is_some(), HookKind::Webhook),
            ("method", self.method.is_some(), HookKind::Webhook),
            ("headers", !self.headers.is_empty(), HookKind::Webhook),
            (
                "bearer_token",
                self.bearer_token.is_some(),
                HookKind::Webhook,
            ),
            ("hmac_key", self.hmac_key.is_some(), HookKind::Webhook),
            ("body", self.body.is_some(), HookKind::Webhook),
            ("program", self.program.is_some(), HookKind::Exec),
            ("args", !self.args.is_empty(), HookKind::Exec),
            ("smtp_host", self.smtp_host.is_some(), HookKind::Email),
            ("smtp_port", self.smtp_port.is_some(), HookKind::Email),
            ("password", self.password.is_some(), HookKind::Email),
            ("from", self.from.is_some(), HookKind::Email),
            ("to", !self.to.is_empty(), HookKind::Email),
        ];
        for (key, present, wanted) in set {
            if present && kind != wanted {
                out.push((
                    key,
                    format!(
                        "{key} is only used with type = \"{}\"; ignored for \"{}\"",
                        wanted.name(),
                        kind.name()
                    ),
                    false,
                ));
            }
        }
    }
}

fn check_template(t: &str, key: &'static str, out: &mut Vec<Problem>) {
    for name in super::template::names(t) {
        if !PLACEHOLDERS.contains(&name) {
            out.push((
                key,
                format!(
                    "unknown placeholder {{{{{name}}}}} (known: {})",
                    PLACEHOLDERS.join(", ")
                ),
                true,
            ));
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
}
