//! The `keycloak` preset: event lines of Keycloak's jboss-logging event listener.
//!
//! Accepted line shapes:
//! - `2024-01-10 21:01:45,403 WARN  [org.keycloak.events] (executor-thread-1) type=LOGIN_ERROR, ...`
//!   (Quarkus; category also abbreviated `org.key.events` or `o.k.events`);
//! - WildFly's time-only prefix `21:01:45,403 WARN [org.keycloak.events] (default task-1) ...`:
//!   the date is the one of the last full-dated line this parser saw (1970-01-01 before any),
//!   advanced by a day when the time of day jumps back by more than 12 h (midnight rollover);
//! - JSON console/file logging `{"timestamp":"…","loggerName":"org.keycloak.events","message":"type=…"}`;
//! - unquoted `key=value, ...` and Keycloak ≥ 24 quoted `key="value", ...` messages.
//!
//! Other categories, admin events (no `type=`), stack-trace continuation lines and event types
//! that check no credential (`LOGOUT`, `REGISTER`, ...) are skipped.
//!
//! Outcome: `LOGIN`, `CODE_TO_TOKEN`, `REFRESH_TOKEN`, `CLIENT_LOGIN`, `INTROSPECT_TOKEN`,
//! `TOKEN_EXCHANGE`, `USER_INFO_REQUEST`, `PERMISSION_TOKEN`, `OAUTH2_DEVICE_CODE_TO_TOKEN`,
//! `IMPERSONATE`, `GRANT_CONSENT` are accepted; every `*_ERROR` is rejected with a reason from
//! `error`: `user_temporarily_disabled` (brute-force lockout) ⇒ forbidden, `user_disabled` ⇒
//! revoked, `expired_code` ⇒ expired, `invalid_user_credentials`, `user_not_found`,
//! `invalid_client_credentials`, `invalid_token` ⇒ invalid; others by `Reason::classify`.
//!
//! Token id: Keycloak logs no token, so the credential holder stands in for it:
//! `clientId:user` (user = `userId`, else `username`), or `clientId` alone when no user is
//! named (client credentials). `null` means absent. The user field is `username`, else `userId`.

use std::borrow::Cow;

use serde::Deserialize;

use super::time::{self, Civil, Zone};
use super::{
    parse_lossy, parsed_owned, present, trim_cr, ParseError, Parsed, Parser, ParserSpec, Record,
};
use crate::event::{EventTime, Outcome, Reason};

/// Event types that are a successful credential check.
const ACCEPTED: [&str; 11] = [
    "LOGIN",
    "CODE_TO_TOKEN",
    "REFRESH_TOKEN",
    "CLIENT_LOGIN",
    "INTROSPECT_TOKEN",
    "TOKEN_EXCHANGE",
    "USER_INFO_REQUEST",
    "PERMISSION_TOKEN",
    "OAUTH2_DEVICE_CODE_TO_TOKEN",
    "IMPERSONATE",
    "GRANT_CONSENT",
];
const HALF_DAY: u32 = 43_200;

/// The Keycloak events parser; remembers the last full date for time-only lines.
pub struct KeycloakParser {
    zone: Zone,
    last_day: i64,
    last_sod: u32,
}

impl KeycloakParser {
    /// Builds the parser.
    pub fn new(spec: &ParserSpec) -> KeycloakParser {
        KeycloakParser {
            zone: Zone::new(spec.timezone.as_ref()),
            last_day: 0,
            last_sod: 0,
        }
    }

    /// Parses the leading timestamp (full or time-only); returns it and the rest of the line.
    fn stamp<'l>(&mut self, line: &'l str) -> Result<(EventTime, &'l str), ParseError> {
        let b = line.as_bytes();
        if b.get(2) == Some(&b':') {
            let end = line.find(' ').ok_or(ParseError::NoMatch("keycloak"))?;
            let (sod, ms) = time::time_of_day(&b[..end]).ok_or(ParseError::Timestamp)?;
            if sod + HALF_DAY < self.last_sod {
                self.last_day += 1;
            }
            self.last_sod = sod;
            let t = self
                .zone
                .instant(Civil::from_days(self.last_day, sod), ms)
                .ok_or(ParseError::Timestamp)?;
            return Ok((t, &line[end..]));
        }
        // `2024-01-10 21:01:45,403`: date, space, time up to the next space.
        let end = line
            .get(11..)
            .and_then(|r| r.find(' '))
            .map(|i| i + 11)
            .ok_or(ParseError::NoMatch("keycloak"))?;
        let t = time::local_date_time(&b[..end], &self.zone).ok_or(ParseError::Timestamp)?;
        self.remember(&b[..end]);
        Ok((t, &line[end..]))
    }

    /// Keeps the date of a full timestamp for later time-only lines.
    fn remember(&mut self, stamp: &[u8]) {
        let zone = Zone::default();
        if let Some(day) = stamp.get(..10).and_then(|d| {
            let mut s = [0u8; 19];
            s[..10].copy_from_slice(d);
            s[10..].copy_from_slice(b"T00:00:00");
            time::rfc3339(&s, &zone)
        }) {
            self.last_day = day.as_millis().div_euclid(86_400_000);
            self.last_sod =
                time::time_of_day(stamp.get(11..19).unwrap_or(b"")).map_or(0, |(s, _)| s);
        }
    }

    fn parse_text<'l>(&mut self, line: &'l str) -> Result<Parsed<'l>, ParseError> {
        if line.starts_with(char::is_whitespace) || line.starts_with("Caused by:") {
            return Ok(Parsed::Skip);
        }
        let (t, rest) = self.stamp(line)?;
        let open = rest.find('[').ok_or(ParseError::NoMatch("keycloak"))?;
        let level = rest[..open].trim();
        if level.is_empty() || !level.bytes().all(|c| c.is_ascii_uppercase()) {
            return Err(ParseError::NoMatch("keycloak"));
        }
        let close = rest[open..]
            .find(']')
            .ok_or(ParseError::NoMatch("keycloak"))?
            + open;
        if !is_events(&rest[open + 1..close]) {
            return Ok(Parsed::Skip);
        }
        let msg = rest[close + 1..].trim_start();
        let msg = match msg.strip_prefix('(') {
            Some(m) => m.find(") ").map_or("", |i| &m[i + 2..]),
            None => msg,
        };
        Ok(event(msg, t))
    }

    fn parse_json<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        let j: JsonLine<'l> = serde_json::from_slice(line).map_err(|e| {
            ParseError::Json(format!("{:?} error at column {}", e.classify(), e.column()))
        })?;
        if !j.logger_name.as_deref().is_some_and(is_events) {
            return Ok(Parsed::Skip);
        }
        let ts = j.timestamp.ok_or(ParseError::MissingField("timestamp"))?;
        let t = time::rfc3339(ts.as_bytes(), &self.zone).ok_or(ParseError::Timestamp)?;
        self.remember(ts.as_bytes());
        let msg = j.message.ok_or(ParseError::MissingField("message"))?;
        Ok(match msg {
            Cow::Borrowed(m) => event(m, t),
            Cow::Owned(m) => parsed_owned(event(&m, t)),
        })
    }
}

impl Parser for KeycloakParser {
    fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        let line = trim_cr(line);
        if line.first() == Some(&b'{') {
            return self.parse_json(line);
        }
        parse_lossy(line, |text| self.parse_text(text))
    }
}

/// The JSON log line fields we read.
#[derive(Deserialize)]
struct JsonLine<'a> {
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "loggerName")]
    logger_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

fn is_events(category: &str) -> bool {
    matches!(
        category,
        "org.keycloak.events" | "org.key.events" | "o.k.events"
    )
}

/// The fields of an event message.
#[derive(Default)]
struct Fields<'m> {
    kind: Option<&'m str>,
    client: Option<&'m str>,
    user_id: Option<&'m str>,
    username: Option<&'m str>,
    ip: Option<&'m str>,
    error: Option<&'m str>,
}

/// Reads `key=value, key="value", ...`.
fn fields(msg: &str) -> Fields<'_> {
    let mut f = Fields::default();
    let mut rest = msg.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let (value, next) = match after.strip_prefix('"') {
            Some(q) => {
                let end = closing(q).unwrap_or(q.len());
                (&q[..end], q.get(end + 1..).unwrap_or(""))
            }
            None => match after.find(", ") {
                Some(c) => (&after[..c], &after[c..]),
                None => (after, ""),
            },
        };
        let value = present(value).filter(|v| *v != "null");
        match key {
            "type" => f.kind = value,
            "clientId" => f.client = value,
            "userId" => f.user_id = value,
            "username" => f.username = value,
            "ipAddress" => f.ip = value,
            "error" => f.error = value,
            _ => {}
        }
        rest = next.trim_start_matches(',').trim_start();
    }
    f
}

/// The next `"` not escaped by a backslash.
fn closing(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Turns an event message into a record (or a skip).
fn event(msg: &str, t: EventTime) -> Parsed<'_> {
    let f = fields(msg);
    let Some(kind) = f.kind else {
        return Parsed::Skip;
    };
    let outcome = if kind.ends_with("_ERROR") {
        Outcome::Rejected(reason(f.error.unwrap_or("")))
    } else if ACCEPTED.contains(&kind) {
        Outcome::Accepted
    } else {
        return Parsed::Skip;
    };
    let holder = f.user_id.or(f.username);
    let token = match (f.client, holder) {
        (Some(c), Some(u)) => Some(Cow::Owned(format!("{c}:{u}"))),
        (Some(c), None) => Some(Cow::Borrowed(c)),
        (None, Some(u)) => Some(Cow::Borrowed(u)),
        (None, None) => None,
    };
    Parsed::Event(Record {
        alias: None,
        time: Some(t),
        token,
        ip: f.ip.and_then(|s| super::client::parse_addr(s.as_bytes())),
        user: f.username.or(f.user_id).map(Cow::Borrowed),
        status: None,
        outcome,
    })
}

/// Keycloak error codes to reasons (module docs).
fn reason(error: &str) -> Reason {
    match error {
        "user_temporarily_disabled" => Reason::Forbidden,
        "user_disabled" => Reason::Revoked,
        "expired_code" => Reason::Expired,
        "invalid_user_credentials"
        | "user_not_found"
        | "invalid_client_credentials"
        | "invalid_token" => Reason::Invalid,
        other => Reason::classify(other),
    }
}
