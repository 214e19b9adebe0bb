//! The `vault` preset: HashiCorp Vault audit device JSON (file/socket/syslog devices).
//!
//! Each request is counted once, on its `response` entry; `request` entries and other types
//! (`kmip-request`, ...) are skipped. A device `prefix` or a syslog header before the JSON
//! object is skipped.
//!
//! Outcome: no `error` (or `""`) and `rate limit quota exceeded` are accepted. `permission
//! denied` is Vault's answer both to an unknown/revoked/expired token and to a valid token
//! without the policy: when the entry names the token's accessor the token resolved, so the
//! rejection is `forbidden`; without an accessor Vault could not resolve the token, so it is
//! `invalid`. Other errors that concern the credential (mentioning a token, password,
//! credentials or secret id, e.g. `invalid token`, `token expired`, `invalid username or
//! password`) are rejected with `Reason::classify`; any other error (`invalid request`, bad
//! input, internal errors) means the credential check passed.
//!
//! Token id: the HMAC'd `auth.client_token`, else `request.client_token` (strings
//! `hmac-sha256:…`, shown as they are). Vault writes the client token on every request,
//! failed or not, while the accessor appears only when the token resolved: a revoked or
//! expired token's refusals carry no accessor. Keying by the accessor made a known token's
//! failures look like guesses of a never-seen one; keying by the client token keeps one
//! identity. The accessor (`auth.accessor`, else `request.client_token_accessor`) is linked
//! to it as the event's alias: revoke hooks need it (`vault token revoke -accessor`), and
//! detection records carry it as `accessor`. A line with an accessor and no client token
//! (audit devices with `hmac_accessor = false` and a redacted token) keys by the accessor.

use std::borrow::Cow;

use memchr::memchr;

use super::client::parse_addr;
use super::json::{extract, Node, Val};
use super::time::{self, Zone};
use super::{present, trim_cr, ParseError, Parsed, Parser, ParserSpec, Record};
use crate::event::{Outcome, Reason};

const TYPE: usize = 0;
const TIME: usize = 1;
const ERROR: usize = 2;
const ACCESSOR: usize = 3;
const REQ_ACCESSOR: usize = 4;
const CLIENT_TOKEN: usize = 5;
const REQ_CLIENT_TOKEN: usize = 6;
const DISPLAY_NAME: usize = 7;
const USERNAME: usize = 8;
const REMOTE: usize = 9;
const SLOTS: usize = 10;

/// The Vault audit-log parser.
pub struct VaultParser {
    root: Node,
    zone: Zone,
    /// The last timestamp's second.
    seconds: time::SecondCache,
}

impl VaultParser {
    /// Builds the parser (Vault's paths are fixed).
    pub fn new(spec: &ParserSpec) -> VaultParser {
        let mut root = Node::default();
        for (path, slot) in [
            ("type", TYPE),
            ("time", TIME),
            ("error", ERROR),
            ("auth.accessor", ACCESSOR),
            ("request.client_token_accessor", REQ_ACCESSOR),
            ("auth.client_token", CLIENT_TOKEN),
            ("request.client_token", REQ_CLIENT_TOKEN),
            ("auth.display_name", DISPLAY_NAME),
            ("auth.metadata.username", USERNAME),
            ("request.remote_address", REMOTE),
        ] {
            root.add(path, slot);
        }
        VaultParser {
            root,
            zone: Zone::new(spec.timezone.as_ref()),
            seconds: time::SecondCache::default(),
        }
    }
}

impl Parser for VaultParser {
    fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        let line = trim_cr(line);
        let start = memchr(b'{', line).ok_or(ParseError::NoMatch("vault"))?;
        let mut v: [Val<'l>; SLOTS] = std::array::from_fn(|_| Val::Null);
        extract(&self.root, &line[start..], &mut v)?;
        match &v[TYPE] {
            Val::Str(t) if t == "response" => {}
            Val::Str(_) => return Ok(Parsed::Skip),
            _ => return Err(ParseError::MissingField("type")),
        }
        let t = match &v[TIME] {
            Val::Str(s) => self
                .seconds
                .rfc3339(s.as_bytes(), &self.zone)
                .ok_or(ParseError::Timestamp)?,
            _ => return Err(ParseError::MissingField("time")),
        };
        let resolved = str_of(&v[ACCESSOR]).is_some();
        let outcome = outcome(str_of(&v[ERROR]), resolved);
        let ip = str_of(&v[REMOTE]).and_then(|s| parse_addr(s.as_bytes()));
        let mut token = [CLIENT_TOKEN, REQ_CLIENT_TOKEN]
            .into_iter()
            .find_map(|i| take(&mut v[i]));
        let mut alias = [ACCESSOR, REQ_ACCESSOR]
            .into_iter()
            .find_map(|i| take(&mut v[i]));
        if token.is_none() {
            token = alias.take();
        }
        let user = take(&mut v[DISPLAY_NAME]).or_else(|| take(&mut v[USERNAME]));
        Ok(Parsed::Event(Record {
            alias,
            time: Some(t),
            token,
            ip,
            user,
            status: None,
            outcome,
        }))
    }
}

fn str_of<'a>(v: &'a Val<'_>) -> Option<&'a str> {
    match v {
        Val::Str(s) => present(s),
        _ => None,
    }
}

fn take<'l>(v: &mut Val<'l>) -> Option<Cow<'l, str>> {
    match std::mem::take(v) {
        Val::Str(s) if present(&s).is_some() => Some(s),
        _ => None,
    }
}

/// The outcome rules of the module docs.
fn outcome(error: Option<&str>, resolved: bool) -> Outcome {
    let Some(e) = error.map(str::trim).filter(|e| !e.is_empty()) else {
        return Outcome::Accepted;
    };
    let has = |w: &str| {
        e.as_bytes()
            .windows(w.len())
            .any(|x| x.eq_ignore_ascii_case(w.as_bytes()))
    };
    if has("permission denied") {
        return Outcome::Rejected(if resolved {
            Reason::Forbidden
        } else {
            Reason::Invalid
        });
    }
    if has("rate limit quota exceeded") {
        return Outcome::Accepted;
    }
    let about_credential = ["token", "password", "credential", "secret id", "secret_id"]
        .iter()
        .any(|w| has(w));
    if about_credential {
        let r = Reason::classify(e);
        Outcome::Rejected(if r == Reason::Other {
            Reason::Invalid
        } else {
            r
        })
    } else {
        Outcome::Accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(line: &str) -> Record<'_> {
        let spec = ParserSpec {
            preset: super::super::Preset::Vault,
            ..ParserSpec::default()
        };
        match VaultParser::new(&spec).parse(line.as_bytes()) {
            Ok(Parsed::Event(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_client_token_is_the_id_and_the_accessor_is_linked() {
        let ok = r#"{"time":"2026-03-02T13:55:36Z","type":"response","auth":{"client_token":"hmac-sha256:c1","accessor":"acc1"},"request":{"client_token":"hmac-sha256:c1","client_token_accessor":"acc1","remote_address":"192.0.2.1"}}"#;
        let r = parse_one(ok);
        assert_eq!(r.token.as_deref(), Some("hmac-sha256:c1"));
        assert_eq!(r.alias.as_deref(), Some("acc1"));
        assert_eq!(r.outcome, Outcome::Accepted);
        // The same token after revocation: Vault resolves nothing, so no accessor; the id
        // is the same, so the refusal is of a known token, not a guess.
        let revoked = r#"{"time":"2026-03-02T13:56:36Z","type":"response","auth":{"token_type":"default"},"request":{"client_token":"hmac-sha256:c1","remote_address":"192.0.2.1"},"error":"1 error occurred:\n\t* permission denied\n\n"}"#;
        let r = parse_one(revoked);
        assert_eq!(r.token.as_deref(), Some("hmac-sha256:c1"));
        assert_eq!(r.alias, None);
        assert_eq!(r.outcome, Outcome::Rejected(Reason::Invalid));
        // Only an accessor: it is the id.
        let acc_only = r#"{"time":"2026-03-02T13:57:36Z","type":"response","auth":{"accessor":"acc2"},"request":{"remote_address":"192.0.2.1"}}"#;
        let r = parse_one(acc_only);
        assert_eq!((r.token.as_deref(), r.alias), (Some("acc2"), None));
    }

    #[test]
    fn error_rules() {
        assert_eq!(outcome(None, true), Outcome::Accepted);
        assert_eq!(outcome(Some(""), true), Outcome::Accepted);
        assert_eq!(
            outcome(Some("1 error occurred:\n\t* permission denied\n\n"), false),
            Outcome::Rejected(Reason::Invalid)
        );
        assert_eq!(
            outcome(Some("permission denied"), true),
            Outcome::Rejected(Reason::Forbidden)
        );
        assert_eq!(
            outcome(Some("rate limit quota exceeded"), true),
            Outcome::Accepted
        );
        assert_eq!(
            outcome(Some("1 error occurred:\n\t* invalid request\n\n"), true),
            Outcome::Accepted
        );
        assert_eq!(
            outcome(Some("token expired"), false),
            Outcome::Rejected(Reason::Expired)
        );
        assert_eq!(
            outcome(Some("invalid username or password"), false),
            Outcome::Rejected(Reason::Invalid)
        );
    }
}
