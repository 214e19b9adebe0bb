//! Parsers: one file per preset, each turning a borrowed line into a borrowed [`Record`].
//!
//! The hot path allocates nothing per line where a borrow will do: fields are slices of the
//! line (or `Cow` where JSON unescaping forces a copy).

use std::borrow::Cow;
use std::net::IpAddr;

use crate::event::{EventTime, Outcome};

/// What a parser extracted from one line. Borrowed from the line; lives only for that line.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// Event time from the line (`None` only if the format has no time at all).
    pub time: Option<EventTime>,
    /// The token text as found (may be a raw secret: the caller fingerprints it at once).
    pub token: Option<Cow<'a, str>>,
    /// Client address, after `client_ip` / `trusted_proxies` resolution.
    pub ip: Option<IpAddr>,
    /// User name or id, when the log names one.
    pub user: Option<Cow<'a, str>>,
    /// HTTP status, when the format has one.
    pub status: Option<u16>,
    /// Accepted or rejected (with reason), by the outcome rules of DESIGN §4.
    pub outcome: Outcome,
}

/// A line either is a token check or is well-formed but carries none.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<'a> {
    /// A token check.
    Event(Record<'a>),
    /// Well-formed, but not a token check (e.g. a Vault request entry, a Keycloak admin event).
    Skip,
}

/// Why a line could not be parsed; `reason()` is a bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The line does not have the preset's shape.
    #[error("line does not match the {0} format")]
    NoMatch(&'static str),
    /// JSON could not be decoded.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The timestamp is missing or not in a known format.
    #[error("bad timestamp")]
    Timestamp,
    /// The status code is missing or not a number.
    #[error("bad status")]
    Status,
    /// A field the preset needs is absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// The line is not valid UTF-8 where text was needed.
    #[error("invalid UTF-8")]
    Utf8,
}

impl ParseError {
    /// A stable, bounded label for metrics (`tokenwatch_malformed_lines_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::NoMatch(_) => "no_match",
            ParseError::Json(_) => "json",
            ParseError::Timestamp => "timestamp",
            ParseError::Status => "status",
            ParseError::MissingField(_) => "missing_field",
            ParseError::Utf8 => "utf8",
        }
    }
}

/// A line parser for one source. Implementations keep reusable scratch state (capture
/// locations, buffers) in `self`; results borrow only from the line.
pub trait Parser: Send {
    /// Parses one line (without its trailing newline; a trailing `\r` may be present).
    fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError>;
}

/// The input presets of DESIGN §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Preset {
    /// nginx/gateway access logs (`log_format` string or built-in `tokenwatch`/`combined`/`main`).
    #[default]
    Nginx,
    /// Generic JSON lines with a field mapping.
    Json,
    /// HashiCorp Vault audit device JSON.
    Vault,
    /// Keycloak event log lines (jboss-logging listener).
    Keycloak,
    /// oauth2-proxy auth log (and its request log).
    OAuth2Proxy,
    /// A user regex with named captures.
    Regex,
}

impl Preset {
    /// Every preset with its config name.
    pub const ALL: [(Preset, &'static str); 6] = [
        (Preset::Nginx, "nginx"),
        (Preset::Json, "json"),
        (Preset::Vault, "vault"),
        (Preset::Keycloak, "keycloak"),
        (Preset::OAuth2Proxy, "oauth2-proxy"),
        (Preset::Regex, "regex"),
    ];

    /// The config name (`nginx`, `json`, ...).
    pub fn name(self) -> &'static str {
        Preset::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, n)| *n)
            .unwrap_or("nginx")
    }

    /// Looks a preset up by its config name.
    pub fn from_name(name: &str) -> Option<Preset> {
        Preset::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(p, _)| *p)
    }
}

/// Which address is the client: the TCP peer, or the `X-Forwarded-For` chain read right to
/// left skipping `trusted_proxies` (and ignored when the peer itself is not trusted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientIp {
    /// The peer address (`$remote_addr`, or the preset's natural address field).
    #[default]
    Peer,
    /// `X-Forwarded-For` resolution (needs `trusted_proxies`).
    ForwardedFor,
    /// A named field (JSON key or nginx variable) holding the client address as is.
    Field(String),
}

/// JSON field names for the `json` preset (dotted paths allowed, e.g. `request.ip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonFields {
    /// Timestamp (RFC 3339, epoch seconds or epoch millis).
    pub ts: String,
    /// Token id or secret.
    pub token: String,
    /// User.
    pub user: String,
    /// Client address.
    pub ip: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// HTTP status.
    pub status: String,
    /// Explicit outcome (`accepted`/`rejected`, `success`/`failure`, bool `ok`...).
    pub outcome: String,
    /// Rejection reason.
    pub reason: String,
}

impl Default for JsonFields {
    fn default() -> Self {
        JsonFields {
            ts: "ts".into(),
            token: "token_id".into(),
            user: "user".into(),
            ip: "ip".into(),
            method: "method".into(),
            path: "path".into(),
            status: "status".into(),
            outcome: "outcome".into(),
            reason: "reason".into(),
        }
    }
}

/// Everything needed to build a parser for one source (the validated runtime form of a
/// `[[source]]` table).
#[derive(Debug, Clone, Default)]
pub struct ParserSpec {
    /// The preset.
    pub preset: Preset,
    /// nginx: `tokenwatch` (default), `combined`, `main`, or a `log_format` string with `$vars`.
    pub log_format: Option<String>,
    /// Field/variable holding the token (nginx default `token_id`; JSON uses `fields.token`).
    pub token_field: Option<String>,
    /// Field/variable holding the rejection reason (nginx default `auth_reason`).
    pub reason_field: Option<String>,
    /// Client address choice.
    pub client_ip: ClientIp,
    /// Proxies whose `X-Forwarded-For` entries are trusted.
    pub trusted_proxies: Vec<crate::net::Cidr>,
    /// Zone for formats without one (oauth2-proxy, Keycloak/WildFly, regex); default UTC.
    pub timezone: Option<jiff::tz::TimeZone>,
    /// JSON preset field mapping.
    pub fields: JsonFields,
    /// Regex preset: the pattern with named captures.
    pub pattern: Option<String>,
    /// Regex preset: timestamp format (`rfc3339`, `epoch`, `epoch_ms`, `nginx`, or strftime).
    pub time_format: Option<String>,
}
