//! Parsers: one file per preset, each turning a borrowed line into a borrowed [`Record`].
//!
//! The hot path allocates nothing per line where a borrow will do: fields are slices of the
//! line (or `Cow` where JSON unescaping forces a copy).

use std::borrow::Cow;
use std::net::IpAddr;

use crate::event::{EventTime, Outcome, Reason};

pub mod client;
mod json;
mod json_scan;
mod keycloak;
mod nginx;
mod noise;

pub(crate) use nginx::find_quote_or_backslash;
mod oauth2_proxy;
mod regex;
pub mod time;
mod vault;

/// What a parser extracted from one line. Borrowed from the line; lives only for that line.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// Event time from the line (`None` only if the format has no time at all).
    pub time: Option<EventTime>,
    /// The token text as found (may be a raw secret: the caller fingerprints it at once).
    pub token: Option<Cow<'a, str>>,
    /// A non-secret second handle of the same token (Vault's accessor), when the line has one.
    pub alias: Option<Cow<'a, str>>,
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
    /// Well-formed, but not a token check (e.g. a Vault request entry, a Keycloak admin event),
    /// or a blank line.
    Skip,
    /// Recognisably not an access line (an nginx/Apache error-log line, a server start-up
    /// line): skipped and counted under a bounded reason label, not malformed.
    NotAccess(&'static str),
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

    /// Like [`parse`](Parser::parse), for counting only (metrics-only mode): the same lines
    /// succeed or fail (with the same error), with the same outcome, status and time, but
    /// the record may leave out the token, alias, client address and user when that is
    /// cheaper.
    fn parse_counts<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        self.parse(line)
    }

    /// What the parser settled on by itself, for `tokenwatch parse` (a detected JSON
    /// dialect); `None` when there was nothing to detect.
    fn detected(&self) -> Option<String> {
        None
    }
}

/// Wraps a preset's parser with what every preset shares: blank lines skip silently, and a
/// line the preset refused is checked against known non-access shapes (error logs, server
/// lines) before it counts as malformed. Only refused lines pay for the check.
struct Guarded<P>(P);

impl<P: Parser> Parser for Guarded<P> {
    fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        guard(line, self.0.parse(line))
    }

    fn parse_counts<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        guard(line, self.0.parse_counts(line))
    }

    fn detected(&self) -> Option<String> {
        self.0.detected()
    }
}

/// What [`Guarded`] makes of a preset's answer for `line`.
fn guard<'l>(
    line: &'l [u8],
    got: Result<Parsed<'l>, ParseError>,
) -> Result<Parsed<'l>, ParseError> {
    match got {
        Err(_) if line.iter().all(u8::is_ascii_whitespace) => Ok(Parsed::Skip),
        Err(e) => noise::classify(line).map_or(Err(e), |why| Ok(Parsed::NotAccess(why))),
        ok => ok,
    }
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
    /// JSON preset: a shipped field mapping; `None` detects one from the first line's keys
    /// (falling back to `fields`).
    pub dialect: Option<Dialect>,
}

/// A JSON access-log dialect: a shipped field mapping for one product's JSON log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// The `fields` mapping of the source.
    Generic,
    /// Caddy's `http.log.access` logger.
    Caddy,
    /// Traefik's access log with `format = "json"`.
    Traefik,
    /// Envoy's JSON access log (the keys of its default format, as Istio and Envoy Gateway
    /// write them).
    Envoy,
    /// Kong's file-log plugin.
    Kong,
}

impl Dialect {
    /// Every dialect with its config name.
    pub const ALL: [(Dialect, &'static str); 5] = [
        (Dialect::Generic, "generic"),
        (Dialect::Caddy, "caddy"),
        (Dialect::Traefik, "traefik"),
        (Dialect::Envoy, "envoy"),
        (Dialect::Kong, "kong"),
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        Dialect::ALL
            .iter()
            .find(|(d, _)| *d == self)
            .map_or("generic", |(_, n)| *n)
    }
}

/// Why a source's parser settings were refused at build time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The nginx `log_format` is unusable (names the problem).
    #[error("log_format: {0}")]
    LogFormat(String),
    /// The regex pattern does not compile or has no usable captures.
    #[error("pattern: {0}")]
    Pattern(String),
    /// `time_format` is not `rfc3339`, `epoch`, `epoch_ms`, `nginx`, `auto` or a strftime string.
    #[error("unknown time_format {0:?}: expected rfc3339, epoch, epoch_ms, nginx, auto or a strftime string with %")]
    TimeFormat(String),
    /// A field mapping or client-IP choice cannot work with this preset.
    #[error("{0}")]
    Field(String),
}

/// Builds the parser a source's spec asks for, validating it first.
pub fn build(spec: &ParserSpec) -> Result<Box<dyn Parser>, SpecError> {
    Ok(match spec.preset {
        Preset::Nginx => Box::new(Guarded(nginx::NginxParser::new(spec)?)),
        Preset::Json => Box::new(Guarded(json::JsonParser::new(spec)?)),
        Preset::Vault => Box::new(Guarded(vault::VaultParser::new(spec))),
        Preset::Keycloak => Box::new(Guarded(keycloak::KeycloakParser::new(spec))),
        Preset::OAuth2Proxy => Box::new(Guarded(oauth2_proxy::OAuth2ProxyParser::new(spec))),
        Preset::Regex => Box::new(Guarded(regex::RegexParser::new(spec)?)),
    })
}

/// Drops one trailing `\r` (CRLF files).
fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `-` and the empty string mean "absent" in every preset.
fn present(s: &str) -> Option<&str> {
    (!s.is_empty() && s != "-").then_some(s)
}

/// Bytes as text, or `ParseError::Utf8`.
fn utf8(b: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(b).map_err(|_| ParseError::Utf8)
}

/// A three-digit HTTP status.
fn parse_status(b: &[u8]) -> Result<u16, ParseError> {
    match b {
        [a @ b'1'..=b'5', c @ b'0'..=b'9', d @ b'0'..=b'9'] => {
            Ok(u16::from(a - b'0') * 100 + u16::from(c - b'0') * 10 + u16::from(d - b'0'))
        }
        _ => Err(ParseError::Status),
    }
}

/// An explicit outcome word: `Some(true)` for rejected, `Some(false)` for accepted.
fn outcome_word(s: &str) -> Option<bool> {
    const REJECTED: [&str; 6] = ["rejected", "failure", "failed", "denied", "false", "reject"];
    const ACCEPTED: [&str; 5] = ["accepted", "success", "ok", "true", "accept"];
    let s = s.trim();
    if REJECTED.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(true)
    } else if ACCEPTED.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(false)
    } else {
        None
    }
}

/// Outcome from an explicit word and/or status: the word wins; a rejection's reason comes
/// from the reason text, else the status (403 forbidden, 401 invalid), else `Other`.
fn decide(rejected: Option<bool>, status: Option<u16>, reason: Option<&str>) -> Option<Outcome> {
    let reason = reason.and_then(present);
    match (rejected, status) {
        (Some(false), _) => Some(Outcome::Accepted),
        (Some(true), Some(s @ (401 | 403))) => Some(Outcome::from_status(s, reason)),
        (Some(true), _) => Some(Outcome::Rejected(
            reason.map(Reason::classify).unwrap_or(Reason::Other),
        )),
        (None, Some(s)) => Some(Outcome::from_status(s, reason)),
        (None, None) => None,
    }
}

/// Detaches a parse result from its line (for the rare lines that had to be read from a copy).
fn parsed_owned(p: Parsed<'_>) -> Parsed<'static> {
    match p {
        Parsed::Event(r) => Parsed::Event(into_owned(r)),
        Parsed::Skip => Parsed::Skip,
        Parsed::NotAccess(why) => Parsed::NotAccess(why),
    }
}

/// Parses a text line with `parse`. Invalid bytes in a free-text field (an attacker-chosen
/// username, client id or message) must not hide the event from the detectors, so such a
/// line is read from a lossy copy; that is rare, so the hot path stays copy-free.
fn parse_lossy<'l>(
    line: &'l [u8],
    parse: impl for<'t> FnOnce(&'t str) -> Result<Parsed<'t>, ParseError>,
) -> Result<Parsed<'l>, ParseError> {
    match utf8(line) {
        Ok(text) => parse(text),
        Err(_) => parse(&String::from_utf8_lossy(line)).map(parsed_owned),
    }
}

/// Detaches a record from its line (for the rare formats that had to unescape into a copy).
fn into_owned(r: Record<'_>) -> Record<'static> {
    Record {
        alias: None,
        time: r.time,
        token: r.token.map(|t| Cow::Owned(t.into_owned())),
        ip: r.ip,
        user: r.user.map(|u| Cow::Owned(u.into_owned())),
        status: r.status,
        outcome: r.outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_words() {
        assert_eq!(parse_status(b"401"), Ok(401));
        assert!(parse_status(b"40").is_err());
        assert!(parse_status(b"999").is_err());
        assert_eq!(outcome_word("Denied"), Some(true));
        assert_eq!(outcome_word("ok"), Some(false));
        assert_eq!(outcome_word("maybe"), None);
        assert_eq!(
            decide(Some(true), None, None),
            Some(Outcome::Rejected(Reason::Other))
        );
        assert_eq!(
            decide(Some(true), Some(403), None),
            Some(Outcome::Rejected(Reason::Forbidden))
        );
        assert_eq!(decide(None, Some(429), None), Some(Outcome::Accepted));
        assert_eq!(decide(None, None, Some("x")), None);
    }
}
