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
