//! The `oauth2-proxy` preset: its auth log and its request log (default templates).
//!
//! ```text
//! auth:    <client> - <request-id> - <user> [2006/01/02 15:04:05] [AuthSuccess] <message>
//! request: <client> - <request-id> - <user> [2006/01/02 15:04:05] <host> GET <upstream> "/path" HTTP/1.1 "<agent>" 401 21 0.001
//! ```
//! The ` - <request-id>` part exists since v7.1.0 (both forms parse); `<client>` is
//! `ip:port`, or the real client IP with `--reverse-proxy`. The timestamp is local time
//! without zone (read in the source's `timezone`); the pre-v6 form `02/Jan/2006:15:04:05
//! -0700` is accepted too. Standard log lines (`[2006/01/02 15:04:05] [file.go:12] ...`) skip.
//!
//! Outcome: `AuthSuccess` accepted; `AuthFailure` rejected (reason from the message, else
//! invalid); `AuthError` is an error on oauth2-proxy's or the IdP's side, treated like a 5xx
//! (accepted) unless its message names a credential reason (expired, revoked, invalid...).
//! Request lines use their status (401/403 rejected; bearer-token rejections appear only
//! here). Request lines for oauth2-proxy's own pages (`/oauth2/*` except `/oauth2/auth`,
//! `/ping`, `/ready`) skip: logins are counted from the auth log. oauth2-proxy logs no token,
//! so records carry the user and no token.

use std::borrow::Cow;

use super::client::parse_addr;
use super::time::{self, Zone};
use super::{
    parse_lossy, parse_status, present, trim_cr, ParseError, Parsed, Parser, ParserSpec, Record,
};
use crate::event::{EventTime, Outcome, Reason};

const NO_MATCH: ParseError = ParseError::NoMatch("oauth2-proxy");

/// The oauth2-proxy parser.
pub struct OAuth2ProxyParser {
    zone: Zone,
}

impl OAuth2ProxyParser {
    /// Builds the parser.
    pub fn new(spec: &ParserSpec) -> OAuth2ProxyParser {
        OAuth2ProxyParser {
            zone: Zone::new(spec.timezone.as_ref()),
        }
    }

    fn stamp(&self, s: &str) -> Result<EventTime, ParseError> {
        time::slashed(s.as_bytes(), &self.zone)
            .or_else(|| time::nginx_local(s.as_bytes()))
            .ok_or(ParseError::Timestamp)
    }
}

impl Parser for OAuth2ProxyParser {
    fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        parse_lossy(trim_cr(line), |text| self.parse_text(text))
    }
}

impl OAuth2ProxyParser {
    /// Parses one line already known to be text.
    fn parse_text<'l>(&self, line: &'l str) -> Result<Parsed<'l>, ParseError> {
        if is_standard(line, self) {
            return Ok(Parsed::Skip);
        }
        let open = line.find(" [").ok_or(NO_MATCH)?;
        let close = line[open..].find("] ").ok_or(NO_MATCH)? + open;
        let (client, user) = head(&line[..open])?;
        let t = self.stamp(&line[open + 2..close])?;
        let rest = &line[close + 2..];
        let (outcome, status) = match rest.strip_prefix('[') {
            Some(r) => (auth_outcome(r)?, None),
            None => match request(rest)? {
                Some(s) => (Outcome::from_status(s, None), Some(s)),
                None => return Ok(Parsed::Skip),
            },
        };
        Ok(Parsed::Event(Record {
            alias: None,
            time: Some(t),
            token: None,
            ip: parse_addr(client.as_bytes()),
            user: present(user).map(Cow::Borrowed),
            status,
            outcome,
        }))
    }
}

/// `[timestamp] [file:line] message`: well-formed, not a check. (A line starting with `[`
/// may also be a request from an IPv6 client `[2001:db8::1]:443 - ...`.)
fn is_standard(line: &str, p: &OAuth2ProxyParser) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    rest.split_once("] ")
        .is_some_and(|(stamp, _)| p.stamp(stamp).is_ok())
}

/// `client - request-id - user` or `client - user`.
fn head(h: &str) -> Result<(&str, &str), ParseError> {
    let mut parts = h.splitn(3, " - ");
    let client = parts.next().ok_or(NO_MATCH)?;
    let second = parts.next().ok_or(NO_MATCH)?;
    let user = parts.next().unwrap_or(second);
    if client.is_empty() || client.contains(' ') {
        return Err(NO_MATCH);
    }
    Ok((client, user))
}

/// `AuthSuccess] message` etc.
fn auth_outcome(r: &str) -> Result<Outcome, ParseError> {
    let (status, msg) = r.split_once(']').ok_or(NO_MATCH)?;
    let reason = Reason::classify(msg);
    match status {
        "AuthSuccess" => Ok(Outcome::Accepted),
        "AuthFailure" => Ok(Outcome::Rejected(match reason {
            Reason::Other => Reason::Invalid,
            r => r,
        })),
        "AuthError" if reason != Reason::Other => Ok(Outcome::Rejected(reason)),
        "AuthError" => Ok(Outcome::Accepted),
        _ => Err(NO_MATCH),
    }
}

/// `host METHOD upstream "uri" proto "agent" status size duration`: the status, or `None`
/// for oauth2-proxy's own pages.
fn request(rest: &str) -> Result<Option<u16>, ParseError> {
    let mut tail = rest.rsplitn(4, ' ');
    let _duration = tail.next().ok_or(NO_MATCH)?;
    let _size = tail.next().ok_or(NO_MATCH)?;
    let status = parse_status(tail.next().ok_or(NO_MATCH)?.as_bytes())?;
    let front = tail.next().ok_or(NO_MATCH)?;
    let q = front.find('"').ok_or(NO_MATCH)?;
    let uri = front[q + 1..].split('"').next().unwrap_or("");
    let path = uri.split('?').next().unwrap_or(uri);
    let own_page = (path.starts_with("/oauth2/") && path != "/oauth2/auth")
        || matches!(path, "/ping" | "/ready");
    Ok((!own_page).then_some(status))
}
