//! The `nginx` preset: access logs described by an nginx `log_format` string.
//!
//! The format is compiled once into literal and variable segments; a line is split by
//! `memchr` on each literal's first byte (or on the closing quote of a quoted variable,
//! honouring `\"` escapes), so the hot path has no regex and no allocation.
//!
//! Tolerated: `\xNN` escapes (kept as found), `\"` escapes, empty requests `""`, IPv6
//! clients, `-` for absent values and byte counts, CRLF endings, and a leading prefix of up
//! to 8 space-separated words before `$remote_addr` (syslog header `<190>Oct 10 13:55:36
//! host nginx:`, Apache `vhost:port`), tried only when the line does not match as is.

use std::borrow::Cow;

use memchr::memchr;

use super::client::{parse_addr, Resolver};
use super::{
    present, trim_cr, utf8, ClientIp, ParseError, Parsed, Parser, ParserSpec, Record, SpecError,
};
use crate::event::{EventTime, Outcome};

/// nginx's predefined `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;
/// tokenwatch's default tail after `combined`.
const TOKENWATCH_TAIL: &str = r#" "$token_id" "$auth_reason""#;
/// The tail of the `main` format in nginx's stock nginx.conf.
const MAIN_TAIL: &str = r#" "$http_x_forwarded_for""#;
/// How many leading words a prefix may have.
const MAX_PREFIX_WORDS: usize = 8;

/// What a variable means to tokenwatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Addr = 0,
    Xff,
    TimeLocal,
    TimeIso,
    Msec,
    Status,
    Token,
    Reason,
    User,
    ClientField,
    Other,
}

const ROLES: usize = Role::Other as usize;

#[derive(Debug, Clone)]
enum Seg {
    Lit(Box<[u8]>),
    Var { role: Role, quoted: bool },
}

/// Byte ranges of each role's value in the current line (`start == usize::MAX`: absent).
type Spans = [(usize, usize); ROLES];
const NONE: (usize, usize) = (usize::MAX, 0);

/// An nginx access-log parser for one compiled `log_format`.
pub struct NginxParser {
    segs: Vec<Seg>,
    /// Segment counts after which the line may end (e.g. combined-only lines).
    ends: Vec<usize>,
    resolver: Resolver,
    client_field: bool,
    skip_prefix: bool,
    /// The last `$time_local` text and its value: consecutive lines mostly share their
    /// second, and a 26-byte compare is far cheaper than parsing the date again.
    last_time: Option<([u8; 26], EventTime)>,
}

impl NginxParser {
    /// Compiles the spec's `log_format` (default `tokenwatch`).
    pub fn new(spec: &ParserSpec) -> Result<NginxParser, SpecError> {
        let token = spec.token_field.as_deref().unwrap_or("token_id");
        let reason = spec.reason_field.as_deref().unwrap_or("auth_reason");
        let field = match &spec.client_ip {
            ClientIp::Field(f) => Some(f.trim_start_matches('$')),
            _ => None,
        };
        let names = Names {
            token: token.trim_start_matches('$'),
            reason: reason.trim_start_matches('$'),
            field,
        };
        let fmt = spec.log_format.as_deref().unwrap_or("tokenwatch").trim();
        let (head, tail) = match fmt {
            "tokenwatch" => (COMBINED.to_string(), TOKENWATCH_TAIL.to_string()),
            "combined" => (COMBINED.to_string(), String::new()),
            "main" => (COMBINED.to_string(), MAIN_TAIL.to_string()),
            own => split_combined(&join_quoted(own)),
        };
        let mut segs = compile(&head, &names)?;
        let mut ends = vec![];
        if !tail.is_empty() {
            ends.push(segs.len());
            segs.extend(compile(&tail, &names)?);
        }
        ends.push(segs.len());
        mark_quoted(&mut segs);
        let has = |r: Role| {
            segs.iter()
                .any(|s| matches!(s, Seg::Var { role, .. } if *role == r))
        };
        check(&has, spec, &names)?;
        let skip_prefix = matches!(
            segs.first(),
            Some(Seg::Var {
                role: Role::Addr,
                ..
            })
        );
        Ok(NginxParser {
            resolver: Resolver::new(
                spec.client_ip == ClientIp::ForwardedFor,
                &spec.trusted_proxies,
            ),
            client_field: field.is_some(),
            segs,
            ends,
            skip_prefix,
            last_time: None,
        })
    }

    /// Splits `line` into role spans. A line that ends early (inside the optional tail) yields
    /// the spans up to the last place the format may end, dropping the partial tail.
    fn scan(&self, line: &[u8]) -> Result<Spans, ParseError> {
        let mut spans: Spans = [NONE; ROLES];
        let mut saved: Option<Spans> = None;
        let mut pos = 0;
        for (i, seg) in self.segs.iter().enumerate() {
            if self.ends.contains(&i) {
                if pos == line.len() {
                    return Ok(spans);
                }
                saved = Some(spans);
            }
            let step = match seg {
                Seg::Lit(lit) => match_lit(line, pos, lit),
                Seg::Var { role, quoted } => {
                    let next = match self.segs.get(i + 1) {
                        Some(Seg::Lit(l)) => l.first().copied(),
                        _ => None,
                    };
                    let end = var_end(line, pos, *quoted, next, *role);
                    if let (Some(e), Some(slot)) = (end, spans.get_mut(*role as usize)) {
                        *slot = (pos, e);
                    }
                    end
                }
            };
            match step {
                Some(p) => pos = p,
                None if pos >= line.len() || ended_in_literal(line, pos, seg) => {
                    return saved.ok_or(ParseError::NoMatch("nginx"));
                }
                None => return Err(ParseError::NoMatch("nginx")),
            }
        }
        if pos == line.len() {
            Ok(spans)
        } else {
            Err(ParseError::NoMatch("nginx"))
        }
    }

    /// Scans the line, then retries past up to 8 prefix words if the first field is no address.
    /// Returns the parsed `$remote_addr` too, so it is parsed once per line.
    fn scan_with_prefix<'l>(&self, line: &'l [u8]) -> Result<(&'l [u8], Scanned), ParseError> {
        let first = self.scan(line).and_then(|s| self.addr_ok(line, s));
        if first.is_ok() || !self.skip_prefix {
            return first.map(|s| (line, s));
        }
        let mut rest = line;
        for _ in 0..MAX_PREFIX_WORDS {
            let Some(sp) = memchr(b' ', rest) else { break };
            rest = &rest[sp + 1..];
            if let Ok(s) = self.scan(rest).and_then(|s| self.addr_ok(rest, s)) {
                return Ok((rest, s));
            }
        }
        first.map(|s| (line, s))
    }

    /// Rejects a line whose `$remote_addr` is neither an address nor `-`.
    fn addr_ok(&self, line: &[u8], spans: Spans) -> Result<Scanned, ParseError> {
        let peer = match field(line, &spans, Role::Addr) {
            Some(a) if a != b"-" => Some(parse_addr(a).ok_or(ParseError::NoMatch("nginx"))?),
            _ => None,
        };
        Ok(Scanned { spans, peer })
    }

    fn record<'l>(&mut self, line: &'l [u8], sc: &Scanned) -> Result<Record<'l>, ParseError> {
        let s = &sc.spans;
        let status = match field(line, s, Role::Status) {
            Some(b) => super::parse_status(b)?,
            None => return Err(ParseError::MissingField("status")),
        };
        let reason = text(line, s, Role::Reason)?;
        let peer = sc.peer;
        let ip = if self.client_field {
            field(line, s, Role::ClientField).and_then(parse_addr)
        } else {
            self.resolver.resolve(peer, field(line, s, Role::Xff))
        };
        Ok(Record {
            time: self.time(line, s)?,
            token: text(line, s, Role::Token)?.map(Cow::Borrowed),
            ip,
            user: text(line, s, Role::User)?.map(Cow::Borrowed),
            status: Some(status),
            outcome: Outcome::from_status(status, reason),
        })
    }
}

impl Parser for NginxParser {
    fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        let line = trim_cr(line);
        let (line, scanned) = self.scan_with_prefix(line)?;
        self.record(line, &scanned).map(Parsed::Event)
    }
}

/// A scanned line: field spans and the already parsed peer address.
struct Scanned {
    spans: Spans,
    peer: Option<std::net::IpAddr>,
}

/// Variable names that have a role.
struct Names<'a> {
    token: &'a str,
    reason: &'a str,
    field: Option<&'a str>,
}

fn role(name: &str, n: &Names<'_>) -> Role {
    match name {
        _ if Some(name) == n.field => Role::ClientField,
        _ if name == n.token => Role::Token,
        _ if name == n.reason => Role::Reason,
        "remote_addr" => Role::Addr,
        "http_x_forwarded_for" => Role::Xff,
        "time_local" => Role::TimeLocal,
        "time_iso8601" => Role::TimeIso,
        "msec" => Role::Msec,
        "status" => Role::Status,
        "remote_user" => Role::User,
        _ => Role::Other,
    }
}

/// Validates that the roles the spec relies on exist in the format.
fn check(has: &dyn Fn(Role) -> bool, spec: &ParserSpec, n: &Names<'_>) -> Result<(), SpecError> {
    let err = |m: String| Err(SpecError::LogFormat(m));
    if !has(Role::Status) {
        return err("no $status variable: tokenwatch cannot tell accepted from rejected".into());
    }
    if spec.token_field.is_some() && !has(Role::Token) {
        return err(format!(
            "token_field ${} is not a variable of the log_format",
            n.token
        ));
    }
    if spec.reason_field.is_some() && !has(Role::Reason) {
        return err(format!(
            "reason_field ${} is not a variable of the log_format",
            n.reason
        ));
    }
    if let Some(f) = n.field {
        if !has(Role::ClientField) {
            return err(format!(
                "client_ip field ${f} is not a variable of the log_format"
            ));
        }
    }
    if spec.client_ip == ClientIp::ForwardedFor && !has(Role::Xff) {
        return err("client_ip = x_forwarded_for needs $http_x_forwarded_for in the log_format (use `main` or your own format)".into());
    }
    Ok(())
}

/// Joins the single-quoted pieces of a `log_format` copied from nginx.conf
/// (`'$remote_addr - ' '"$request"'`); a string without leading quote is used as is.
fn join_quoted(f: &str) -> String {
    let f = f.trim().trim_end_matches(';');
    if !f.starts_with('\'') {
        return f.to_string();
    }
    f.split('\'').skip(1).step_by(2).collect()
}

/// A user format that starts with `combined` may end after it (lines without the tail).
fn split_combined(f: &str) -> (String, String) {
    match f.strip_prefix(COMBINED) {
        Some(tail) => (COMBINED.to_string(), tail.to_string()),
        None => (f.to_string(), String::new()),
    }
}

/// Compiles a format string into segments.
fn compile(f: &str, n: &Names<'_>) -> Result<Vec<Seg>, SpecError> {
    let b = f.as_bytes();
    let mut segs = vec![];
    let mut lit = vec![];
    let mut i = 0;
    while i < b.len() {
        let (name, used) = var_name(&b[i..]);
        if name.is_empty() {
            lit.push(b[i]);
            i += 1;
            continue;
        }
        if !lit.is_empty() {
            segs.push(Seg::Lit(std::mem::take(&mut lit).into()));
        } else if matches!(segs.last(), Some(Seg::Var { .. })) {
            return Err(SpecError::LogFormat(format!(
                "${name} follows another variable with nothing between them"
            )));
        }
        segs.push(Seg::Var {
            role: role(name, n),
            quoted: false,
        });
        i += used;
    }
    if !lit.is_empty() {
        segs.push(Seg::Lit(lit.into()));
    }
    if segs.is_empty() {
        return Err(SpecError::LogFormat("empty log_format".into()));
    }
    Ok(segs)
}

/// `$name` or `${name}` at the start of `b`: (name, bytes used); empty name if none.
fn var_name(b: &[u8]) -> (&str, usize) {
    let ident = |s: &[u8]| {
        s.iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count()
    };
    match b {
        [b'$', b'{', rest @ ..] => {
            let n = ident(rest);
            if rest.get(n) == Some(&b'}') && n > 0 {
                (std::str::from_utf8(&rest[..n]).unwrap_or(""), n + 3)
            } else {
                ("", 0)
            }
        }
        [b'$', rest @ ..] => {
            let n = ident(rest);
            (std::str::from_utf8(&rest[..n]).unwrap_or(""), n + 1)
        }
        _ => ("", 0),
    }
}

/// A variable between `"` literals is quoted: it ends at the next unescaped `"`.
fn mark_quoted(segs: &mut [Seg]) {
    for i in 0..segs.len() {
        let before = i.checked_sub(1).and_then(|j| segs.get(j));
        let opens = matches!(before, Some(Seg::Lit(l)) if l.last() == Some(&b'"'));
        let closes = matches!(segs.get(i + 1), Some(Seg::Lit(l)) if l.first() == Some(&b'"'));
        if let Some(Seg::Var { quoted, .. }) = segs.get_mut(i) {
            *quoted = opens && closes;
        }
    }
}

fn match_lit(line: &[u8], pos: usize, lit: &[u8]) -> Option<usize> {
    let end = pos.checked_add(lit.len())?;
    let got = line.get(pos..end)?;
    // Literals are 1–3 bytes: an inline loop beats a call to memcmp.
    got.iter().zip(lit).all(|(a, b)| a == b).then_some(end)
}

/// True when the line stopped inside a literal (what is left is a prefix of it).
fn ended_in_literal(line: &[u8], pos: usize, seg: &Seg) -> bool {
    match (seg, line.get(pos..)) {
        (Seg::Lit(l), Some(rest)) => l.starts_with(rest),
        _ => false,
    }
}

/// Where a variable's value ends.
fn var_end(line: &[u8], pos: usize, quoted: bool, next: Option<u8>, role: Role) -> Option<usize> {
    let rest = line.get(pos..)?;
    if quoted {
        return closing_quote(rest).map(|e| pos + e);
    }
    if role == Role::TimeLocal && rest.len() >= 26 {
        return Some(pos + 26);
    }
    match next {
        // Unquoted fields (address, user, status, bytes) are a few bytes: a plain loop
        // beats memchr's vector setup there.
        Some(c) => rest.iter().position(|&b| b == c).map(|e| pos + e),
        None => Some(line.len()),
    }
}

/// The next `"` not escaped by an odd run of backslashes.
fn closing_quote(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let q = from + memchr(b'"', b.get(from..)?)?;
        let slashes = b[..q].iter().rev().take_while(|&&c| c == b'\\').count();
        if slashes % 2 == 0 {
            return Some(q);
        }
        from = q + 1;
    }
}

fn field<'l>(line: &'l [u8], s: &Spans, r: Role) -> Option<&'l [u8]> {
    let (a, b) = *s.get(r as usize)?;
    line.get(a..b)
}

/// A text field with `-`/empty as absent.
fn text<'l>(line: &'l [u8], s: &Spans, r: Role) -> Result<Option<&'l str>, ParseError> {
    match field(line, s, r) {
        Some(b) => Ok(present(utf8(b)?)),
        None => Ok(None),
    }
}

impl NginxParser {
    /// The line's time, `$time_local` through the one-entry cache.
    fn time(&mut self, line: &[u8], s: &Spans) -> Result<Option<EventTime>, ParseError> {
        let Some(b) = field(line, s, Role::TimeLocal) else {
            return time(line, s);
        };
        if let Some((text, t)) = &self.last_time {
            if b == text.as_slice() {
                return Ok(Some(*t));
            }
        }
        let t = super::time::nginx_local(b).ok_or(ParseError::Timestamp)?;
        if let Ok(text) = <[u8; 26]>::try_from(b) {
            self.last_time = Some((text, t));
        }
        Ok(Some(t))
    }
}

fn time(line: &[u8], s: &Spans) -> Result<Option<EventTime>, ParseError> {
    let zone = super::time::Zone::default();
    let parsed = if let Some(b) = field(line, s, Role::TimeLocal) {
        super::time::nginx_local(b)
    } else if let Some(b) = field(line, s, Role::TimeIso) {
        super::time::rfc3339(b, &zone)
    } else if let Some(b) = field(line, s, Role::Msec) {
        super::time::epoch_secs(b)
    } else {
        return Ok(None);
    };
    parsed.map(Some).ok_or(ParseError::Timestamp)
}
