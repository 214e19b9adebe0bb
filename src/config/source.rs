//! `[[source]]`: one log to tail, how to parse it, and how to turn it into runtime settings.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::suggest::unknown_choice;
use super::values::{self, Zone};
use crate::event::SourceIdx;
use crate::net::Cidr;
use crate::parse::{ClientIp, Dialect, JsonFields, ParserSpec, Preset};
use crate::source::file::{StartAt, TailConfig, WatchMode};
use crate::source::wrapper::WrapperChoice;

/// Whether a token value in the log is a non-secret id or a secret to fingerprint (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TokenKind {
    /// Decide by shape: `Bearer `, JWTs, known secret prefixes, long key material ⇒ secret.
    #[default]
    Auto,
    /// Always a non-secret id (kept as it is).
    Id,
    /// Always a secret (fingerprinted at once, never kept).
    Secret,
}

impl TokenKind {
    /// Every kind with its config name.
    pub const ALL: [(TokenKind, &'static str); 3] = [
        (TokenKind::Auto, "auto"),
        (TokenKind::Id, "id"),
        (TokenKind::Secret, "secret"),
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Auto => "auto",
            TokenKind::Id => "id",
            TokenKind::Secret => "secret",
        }
    }

    /// The default for a preset: Vault's audit log already HMACs its tokens, and Keycloak's
    /// token is `clientId:userId` (user ids are UUIDs, not secrets), so both are `id`.
    pub fn default_for(preset: Preset) -> TokenKind {
        match preset {
            Preset::Vault | Preset::Keycloak => TokenKind::Id,
            _ => TokenKind::Auto,
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for TokenKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        TokenKind::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(k, _)| *k)
            .ok_or_else(|| unknown_choice("token_kind", &s, &TokenKind::ALL.map(|(_, n)| n)))
    }
}

impl From<TokenKind> for String {
    fn from(k: TokenKind) -> String {
        k.name().to_string()
    }
}

/// Where a source's lines come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SourceKind {
    /// Files tailed through rotation (`path` / `include`).
    #[default]
    File,
    /// A syslog listener (`listen`).
    Syslog,
    /// The systemd journal, through `journalctl`.
    Journald,
}

impl SourceKind {
    /// Every kind with its config name.
    pub const ALL: [(SourceKind, &'static str); 3] = [
        (SourceKind::File, "file"),
        (SourceKind::Syslog, "syslog"),
        (SourceKind::Journald, "journald"),
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Syslog => "syslog",
            SourceKind::Journald => "journald",
        }
    }
}

impl TryFrom<String> for SourceKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        SourceKind::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(k, _)| *k)
            .ok_or_else(|| unknown_choice("kind", &s, &SourceKind::ALL.map(|(_, n)| n)))
    }
}

impl From<SourceKind> for String {
    fn from(k: SourceKind) -> String {
        k.name().to_string()
    }
}

/// `[source.fields]`: JSON keys for the `json` preset (dotted paths such as `request.ip` allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldsConfig {
    /// Timestamp: RFC 3339, epoch seconds or epoch millis (default `ts`).
    pub ts: String,
    /// Token id or secret (default `token_id`).
    pub token: String,
    /// User (default `user`).
    pub user: String,
    /// Client address (default `ip`).
    pub ip: String,
    /// HTTP method (default `method`).
    pub method: String,
    /// Request path (default `path`).
    pub path: String,
    /// HTTP status (default `status`).
    pub status: String,
    /// Explicit outcome such as `accepted`/`rejected` (default `outcome`).
    pub outcome: String,
    /// Rejection reason (default `reason`).
    pub reason: String,
}

impl Default for FieldsConfig {
    fn default() -> Self {
        let d = JsonFields::default();
        FieldsConfig {
            ts: d.ts,
            token: d.token,
            user: d.user,
            ip: d.ip,
            method: d.method,
            path: d.path,
            status: d.status,
            outcome: d.outcome,
            reason: d.reason,
        }
    }
}

impl From<&FieldsConfig> for JsonFields {
    fn from(f: &FieldsConfig) -> JsonFields {
        JsonFields {
            ts: f.ts.clone(),
            token: f.token.clone(),
            user: f.user.clone(),
            ip: f.ip.clone(),
            method: f.method.clone(),
            path: f.path.clone(),
            status: f.status.clone(),
            outcome: f.outcome.clone(),
            reason: f.reason.clone(),
        }
    }
}

/// One `[[source]]` table as read from the file (after loading, defaults that depend on the
/// preset or position are filled in: `name`, `token_kind`, nginx field names, regex
/// `time_format`, json `fields`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name, used as the `source` metric label: `[a-zA-Z0-9_.-]{1,64}` (default
    /// `source<N>`, N being the 0-based position among the `[[source]]` tables).
    pub name: String,
    /// Where lines come from: `file` (default) | `syslog` | `journald`.
    pub kind: SourceKind,
    /// One file path or glob (may be combined with `include`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// File paths or globs (may be combined with `path`; at least one of the two is required).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// `nginx` | `json` | `vault` | `keycloak` | `oauth2-proxy` | `regex` (default `nginx`).
    #[serde(with = "values::preset")]
    pub format: Preset,
    /// nginx: `tokenwatch` (default), `combined`, `main`, or a `log_format` string copied from
    /// nginx.conf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// nginx: the variable holding the token (default `token_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_field: Option<String>,
    /// nginx: the variable holding the rejection reason (default `auth_reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_field: Option<String>,
    /// `peer` (default; alias `remote_addr`) | `x_forwarded_for` | `field:<name>`.
    #[serde(with = "values::client_ip")]
    pub client_ip: ClientIp,
    /// Proxies (CIDRs) whose `X-Forwarded-For` entries are trusted (default none).
    #[serde(with = "values::cidrs")]
    pub trusted_proxies: Vec<Cidr>,
    /// Zone for timestamps without one: `UTC` (default), an IANA name, or `+HH:MM`.
    pub timezone: Zone,
    /// `auto` | `id` | `secret` (default `auto`; `id` for the vault preset).
    pub token_kind: TokenKind,
    /// Where to start in a file without a checkpoint: `end` (default) | `beginning`.
    #[serde(with = "values::start_at")]
    pub start_at: StartAt,
    /// How changes are noticed: `notify` (default) | `poll`.
    #[serde(with = "values::watch")]
    pub watch: WatchMode,
    /// Reconcile period, and poll period with `watch = "poll"`, in milliseconds (default 250).
    pub poll_interval_ms: u64,
    /// Longer lines are dropped and counted, in bytes (default 102400).
    pub max_line_bytes: usize,
    /// regex: the pattern, with named captures `ts`, `token`, `ip`, `status`, `outcome`,
    /// `reason`, `user`, `path` (required for the regex preset).
    #[serde(
        deserialize_with = "values::pattern::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub pattern: Option<String>,
    /// regex: timestamp format, `rfc3339` (default), `epoch`, `epoch_ms`, `nginx` or strftime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_format: Option<String>,
    /// json: field mapping (filled with the defaults for the json preset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldsConfig>,
    /// json: a shipped field mapping, `generic` (the `fields` mapping), `caddy`, `traefik`,
    /// `envoy` or `kong`; unset (`auto`): detected from the first line's keys unless
    /// `[source.fields]` is given.
    #[serde(with = "values::dialect", skip_serializing_if = "Option::is_none")]
    pub dialect: Option<Dialect>,
    /// Container log wrapper: `auto` (default, detected per file) | `none` | `docker` | `cri`.
    #[serde(with = "values::wrapper")]
    pub wrapper: WrapperChoice,
    /// syslog: `udp://IP:PORT` or `tcp://IP:PORT` (required for `kind = "syslog"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// syslog: keep only messages whose tag/APP-NAME is this program (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// syslog: messages held between the socket and the pipeline; beyond it they are
    /// dropped and counted (default 65536).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_messages: Option<usize>,
    /// syslog over TCP: simultaneous connections; more are closed at once (default 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// syslog over UDP: the socket's receive buffer (`SO_RCVBUF`) in bytes, capped by
    /// `net.core.rmem_max` (default 4194304; 0 leaves the kernel's `net.core.rmem_default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv_buffer_bytes: Option<usize>,
    /// journald: only these systemd units (`journalctl --unit`; default: all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    /// journald: only these syslog identifiers (`journalctl --identifier`; default: all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identifiers: Vec<String>,
    /// journald: read the journal files in this directory instead of the system journal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_dir: Option<PathBuf>,
    /// journald: read this journal file instead of the system journal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_file: Option<PathBuf>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            name: String::new(),
            path: None,
            include: Vec::new(),
            format: Preset::Nginx,
            log_format: None,
            token_field: None,
            reason_field: None,
            client_ip: ClientIp::Peer,
            trusted_proxies: Vec::new(),
            timezone: Zone::default(),
            token_kind: TokenKind::Auto,
            start_at: StartAt::End,
            watch: WatchMode::Notify,
            poll_interval_ms: 250,
            max_line_bytes: 102_400,
            pattern: None,
            time_format: None,
            fields: None,
            dialect: None,
            wrapper: WrapperChoice::Auto,
            kind: SourceKind::File,
            listen: None,
            program: None,
            queue_messages: None,
            max_connections: None,
            recv_buffer_bytes: None,
            units: Vec::new(),
            identifiers: Vec::new(),
            journal_dir: None,
            journal_file: None,
        }
    }
}

impl SourceConfig {
    /// Every path and glob to tail: `path` first, then `include`.
    pub fn paths(&self) -> Vec<String> {
        self.path.iter().chain(&self.include).cloned().collect()
    }

    /// The runtime parser settings.
    pub fn parser_spec(&self) -> ParserSpec {
        ParserSpec {
            preset: self.format,
            log_format: self.log_format.clone(),
            token_field: self.token_field.clone(),
            reason_field: self.reason_field.clone(),
            client_ip: self.client_ip.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            timezone: Some(self.timezone.time_zone().clone()),
            fields: self
                .fields
                .as_ref()
                .map(JsonFields::from)
                .unwrap_or_default(),
            pattern: self.pattern.clone(),
            time_format: self.time_format.clone(),
            dialect: self.dialect.or(match self.fields {
                Some(_) if self.fields != Some(FieldsConfig::default()) => Some(Dialect::Generic),
                _ => None,
            }),
        }
    }

    /// The runtime tailing settings, tagged with source index `idx`.
    pub fn tail_config(&self, idx: SourceIdx) -> TailConfig {
        TailConfig {
            source: idx,
            name: self.name.clone(),
            include: self.paths(),
            start_at: self.start_at,
            watch: self.watch,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            max_line_bytes: self.max_line_bytes,
            wrapper: self.wrapper,
        }
    }

    /// Whether this source's token values are ids or secrets.
    pub fn token_kind(&self) -> TokenKind {
        self.token_kind
    }
}
