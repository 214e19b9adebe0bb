//! The `regex` preset: a user pattern with named captures `ts`, `token`, `ip`, `status`,
//! `outcome`, `reason`, `user`, `path` (and `xff` for `client_ip = x_forwarded_for`).
//!
//! The pattern is compiled once over bytes (`regex::bytes`), so invalid UTF-8 elsewhere in a
//! line does not matter; only a needed capture that is not UTF-8 makes the line malformed
//! (note `\S` matches only valid UTF-8: write `(?-u:\S)` to capture arbitrary bytes).
//! Capture locations are allocated once and reused. `time_format` is `auto` (default: RFC
//! 3339, nginx, oauth2-proxy or epoch), `rfc3339`, `epoch`, `epoch_ms`, `nginx`, or a
//! strftime string (jiff). Outcome: `status` (401/403 rejected), else `outcome` words
//! (`rejected`/`failure`/`denied`/`false` vs `accepted`/`success`/`ok`/`true`), else accepted.

use std::borrow::Cow;

use ::regex::bytes::{CaptureLocations, Regex};

use super::client::{parse_addr, Resolver};
use super::time::{self, Zone};
use super::{
    decide, outcome_word, present, trim_cr, utf8, ClientIp, ParseError, Parsed, Parser, ParserSpec,
    Record, SpecError,
};
use crate::event::{EventTime, Outcome};

/// The capture names with a meaning.
const NAMES: [&str; 9] = [
    "ts", "token", "ip", "status", "outcome", "reason", "user", "path", "xff",
];

#[derive(Debug, Clone)]
enum TimeFormat {
    Auto,
    Rfc3339,
    Epoch,
    EpochMs,
    Nginx,
    Strftime(String),
}

impl TimeFormat {
    fn from_spec(s: Option<&str>) -> Result<TimeFormat, SpecError> {
        Ok(match s.map(str::trim) {
            None | Some("auto") => TimeFormat::Auto,
            Some("rfc3339") => TimeFormat::Rfc3339,
            Some("epoch") => TimeFormat::Epoch,
            Some("epoch_ms") => TimeFormat::EpochMs,
            Some("nginx") => TimeFormat::Nginx,
            Some(f) if f.contains('%') => TimeFormat::Strftime(f.to_string()),
            Some(f) => return Err(SpecError::TimeFormat(f.to_string())),
        })
    }

    fn parse(&self, b: &[u8], zone: &Zone) -> Option<EventTime> {
        match self {
            TimeFormat::Auto => time::auto(b, zone),
            TimeFormat::Rfc3339 => time::rfc3339(b, zone),
            TimeFormat::Epoch => time::epoch_secs(b),
            TimeFormat::EpochMs => time::epoch_millis(b),
            TimeFormat::Nginx => time::nginx_local(b),
            TimeFormat::Strftime(f) => time::strftime(f, b, zone),
        }
    }
}

/// A compiled user pattern.
pub struct RegexParser {
    re: Regex,
    locs: CaptureLocations,
    /// Group index per entry of `NAMES`.
    groups: [Option<usize>; NAMES.len()],
    time: TimeFormat,
    zone: Zone,
    resolver: Resolver,
}

impl RegexParser {
    /// Compiles the pattern and checks its captures and time format.
    pub fn new(spec: &ParserSpec) -> Result<RegexParser, SpecError> {
        let pattern = spec
            .pattern
            .as_deref()
            .ok_or_else(|| SpecError::Pattern("the regex preset needs a pattern".into()))?;
        let re = Regex::new(pattern).map_err(|e| SpecError::Pattern(e.to_string()))?;
        let mut groups = [None; NAMES.len()];
        for (i, name) in re.capture_names().enumerate() {
            if let Some(slot) = name.and_then(|n| NAMES.iter().position(|k| *k == n)) {
                groups[slot] = Some(i);
            }
        }
        let usable = ["token", "ip", "status", "outcome", "user"]
            .iter()
            .any(|n| groups[idx(n)].is_some());
        if !usable {
            return Err(SpecError::Pattern(
                "no usable named capture: name at least one of (?P<token>…), (?P<ip>…), (?P<status>…), (?P<outcome>…), (?P<user>…)".into(),
            ));
        }
        if spec.client_ip == ClientIp::ForwardedFor && groups[idx("xff")].is_none() {
            return Err(SpecError::Pattern(
                "client_ip = x_forwarded_for needs a (?P<xff>…) capture".into(),
            ));
        }
        Ok(RegexParser {
            locs: re.capture_locations(),
            re,
            groups,
            time: TimeFormat::from_spec(spec.time_format.as_deref())?,
            zone: Zone::new(spec.timezone.as_ref()),
            resolver: Resolver::new(
                spec.client_ip == ClientIp::ForwardedFor,
                &spec.trusted_proxies,
            ),
        })
    }

    fn get<'l>(&self, line: &'l [u8], name: &str) -> Option<&'l [u8]> {
        let g = self.groups[idx(name)]?;
        let (a, b) = self.locs.get(g)?;
        line.get(a..b)
    }

    fn text<'l>(&self, line: &'l [u8], name: &str) -> Result<Option<&'l str>, ParseError> {
        match self.get(line, name) {
            Some(b) => Ok(present(utf8(b)?)),
            None => Ok(None),
        }
    }
}

fn idx(name: &str) -> usize {
    NAMES.iter().position(|n| *n == name).unwrap_or(0)
}

impl Parser for RegexParser {
    fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        let line = trim_cr(line);
        if self.re.captures_read(&mut self.locs, line).is_none() {
            return Err(ParseError::NoMatch("regex"));
        }
        let time = match self.get(line, "ts") {
            Some(b) => Some(
                self.time
                    .parse(b, &self.zone)
                    .ok_or(ParseError::Timestamp)?,
            ),
            None => None,
        };
        let status = match self.text(line, "status")? {
            Some(s) => Some(super::parse_status(s.as_bytes())?),
            None => None,
        };
        let rejected = self.text(line, "outcome")?.and_then(outcome_word);
        let reason = self.text(line, "reason")?;
        let outcome = decide(rejected, status, reason).unwrap_or(Outcome::Accepted);
        let peer = self.get(line, "ip").and_then(parse_addr);
        let ip = self.resolver.resolve(peer, self.get(line, "xff"));
        Ok(Parsed::Event(Record {
            alias: None,
            time,
            token: self.text(line, "token")?.map(Cow::Borrowed),
            ip,
            user: self.text(line, "user")?.map(Cow::Borrowed),
            status,
            outcome,
        }))
    }
}
