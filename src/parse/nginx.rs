//! The `nginx` preset: access logs described by an nginx `log_format` string.
//!
//! The format is compiled once into literal and variable segments; a line is split by a
//! search for each literal's first byte (or for the closing quote of a quoted variable,
//! honouring `\"` escapes): eight bytes at a time for short fields, memchr's vector search
//! past the first 16 bytes of a quoted one. The hot path has no regex and no allocation.
//!
//! Tolerated: `\xNN` escapes (kept as found), `\"` escapes, empty requests `""`, IPv6
//! clients, `-` for absent values and byte counts, CRLF endings, and a leading prefix of up
//! to 8 space-separated words before `$remote_addr` (syslog header `<190>Oct 10 13:55:36
//! host nginx:`, Apache `vhost:port`), tried only when the line does not match as is.

use std::borrow::Cow;
use std::net::IpAddr;

use memchr::memchr;

use super::client::{parse_addr, Resolver};
use super::{
    present, trim_cr, utf8, ClientIp, ParseError, Parsed, Parser, ParserSpec, Record, SpecError,
};
use crate::event::{EventTime, Outcome};

/// nginx's predefined `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;
/// The Common Log Format (`combined` without referer and user agent).
pub const COMMON: &str =
    r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent"#;
/// The tail of Traefik's CLF access log after `combined`: request count, router, backend
/// URL and duration (<https://doc.traefik.io/traefik/observability/access-logs/#clf-common-log-format>).
const TRAEFIK_TAIL: &str =
    r#" $traefik_request_count "$traefik_router" "$traefik_server_url" ${request_duration}ms"#;
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

/// A format segment as compiled from the `log_format` text.
#[derive(Debug, Clone)]
enum Seg {
    Lit(Box<[u8]>),
    Var { role: Role, quoted: bool },
}

/// One step of the scan: a literal the line must have at this point, then usually a
/// variable. Merging the two halves the per-field dispatch of a segment-at-a-time loop.
#[derive(Debug, Clone)]
struct Step {
    /// Literal text before the variable (may be empty).
    lit: Box<[u8]>,
    /// The variable that follows the literal, if any.
    var: Option<VarStep>,
    /// The line may end before this step (the optional tail starts here).
    may_end_before: bool,
}

/// A variable of the scan: how its value ends, and where its span goes.
#[derive(Debug, Clone, Copy)]
struct VarStep {
    end: End,
    /// Index into [`Spans`]; variables without a role write the spare slot `ROLES`, so
    /// the scan stores every span without a test.
    slot: usize,
}

/// How a variable's value is delimited, decided once when the format is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A quoted variable: up to the next `"` not escaped by a backslash.
    Quote,
    /// `$time_local`: its fixed 26 bytes, or (on a shorter rest of line) up to the byte.
    Time(Option<u8>),
    /// Up to the first occurrence of the byte that starts the next literal.
    Byte(u8),
    /// To the end of the line (the format's last variable).
    Line,
}

/// Byte ranges of each role's value in the current line (`start == u32::MAX`: absent),
/// plus a spare slot for variables without a role. `u32` halves the array the scanner
/// fills and copies; lines are capped far below 4 GiB.
type Spans = [(u32, u32); ROLES + 1];
const NONE: (u32, u32) = (u32::MAX, 0);

/// An nginx access-log parser for one compiled `log_format`.
pub struct NginxParser {
    steps: Vec<Step>,
    /// The span slots of the `combined` head's variables when the format starts with it
    /// (every built-in does): the scan then runs those steps as straight-line code.
    head: Option<[usize; HEAD_VARS]>,
    /// Roles set by the optional tail, cleared when a line ends before it.
    tail_roles: Vec<usize>,
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
            "common" => (COMMON.to_string(), String::new()),
            "traefik" => (COMBINED.to_string(), TRAEFIK_TAIL.to_string()),
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
        let tail_roles = match ends.first() {
            Some(&head) if ends.len() > 1 => tail_only_roles(&segs, head),
            _ => vec![],
        };
        Ok(NginxParser {
            resolver: Resolver::new(
                spec.client_ip == ClientIp::ForwardedFor,
                &spec.trusted_proxies,
            ),
            client_field: field.is_some(),
            head: None,
            steps: plan(&segs, &ends),
            tail_roles,
            skip_prefix,
            last_time: None,
        }
        .with_head())
    }

    /// Notes whether the plan starts with the `combined` head's steps.
    fn with_head(mut self) -> NginxParser {
        let mut slots = [ROLES; HEAD_VARS];
        let same = self.steps.len() >= HEAD.len()
            && self.steps.iter().zip(HEAD).all(|(step, (lit, end))| {
                !step.may_end_before && *step.lit == *lit && step.var.map(|v| v.end) == end
            });
        for (slot, step) in slots.iter_mut().zip(&self.steps) {
            *slot = step.var.map_or(ROLES, |v| v.slot);
        }
        self.head = same.then_some(slots);
        self
    }

    /// Splits `line` into role spans. A line that ends early (inside the optional tail) yields
    /// the spans up to the last place the format may end, dropping the partial tail.
    fn scan(&self, line: &[u8], spans: &mut Spans) -> Result<(), ParseError> {
        *spans = [NONE; ROLES + 1];
        let (mut pos, mut first) = (0, 0);
        if let Some(slots) = &self.head {
            match scan_head(line, spans, slots) {
                Some(p) => (pos, first) = (p, HEAD.len()),
                // The step-by-step scan below gives the answer (and the error).
                None => *spans = [NONE; ROLES + 1],
            }
        }
        let mut can_end = false;
        for step in self.steps.get(first..).unwrap_or_default() {
            if step.may_end_before {
                if pos == line.len() {
                    return Ok(());
                }
                can_end = true;
            }
            pos = match match_lit(line, pos, &step.lit) {
                Some(p) => p,
                None => return self.short_line(line, pos, &step.lit, can_end, spans),
            };
            let Some(var) = step.var else { continue };
            let Some(end) = var_end(line, pos, var.end) else {
                return self.short_line(line, pos, &[], can_end, spans);
            };
            if let Some(slot) = spans.get_mut(var.slot) {
                // Both fit: lines are capped (max_line_bytes) far below 4 GiB.
                *slot = (pos as u32, end as u32);
            }
            pos = end;
        }
        // Extra fields after the format's last one (Traefik's CLF, other gateways' variants
        // of combined) are tolerated: they start with a space.
        if pos == line.len() || line.get(pos) == Some(&b' ') {
            Ok(())
        } else {
            Err(ParseError::NoMatch("nginx"))
        }
    }

    /// A line that stops matching at `pos`: accepted as the head without the optional tail
    /// when the tail may be absent and the line ended (or stopped inside `lit`) there.
    fn short_line(
        &self,
        line: &[u8],
        pos: usize,
        lit: &[u8],
        can_end: bool,
        spans: &mut Spans,
    ) -> Result<(), ParseError> {
        let rest = line.get(pos..).unwrap_or_default();
        // The line ended inside the optional tail, or other fields follow the head instead
        // of the tail (a Traefik CLF line read with the `tokenwatch` format).
        let other_fields = rest.first() == Some(&b' ');
        if can_end && (rest.is_empty() || lit.starts_with(rest) || other_fields) {
            for &r in &self.tail_roles {
                if let Some(slot) = spans.get_mut(r) {
                    *slot = NONE;
                }
            }
            return Ok(());
        }
        Err(ParseError::NoMatch("nginx"))
    }

    /// Scans the line, then retries past up to 8 prefix words if the first field is no address.
    /// Returns the line without its prefix and the parsed `$remote_addr` (parsed once per line).
    fn scan_with_prefix<'l>(
        &self,
        line: &'l [u8],
        spans: &mut Spans,
    ) -> Result<(&'l [u8], Option<IpAddr>), ParseError> {
        let first = self.scan(line, spans).and_then(|()| addr(line, spans));
        if first.is_ok() || !self.skip_prefix {
            return first.map(|peer| (line, peer));
        }
        let mut rest = line;
        for _ in 0..MAX_PREFIX_WORDS {
            let Some(sp) = memchr(b' ', rest) else { break };
            rest = rest.get(sp + 1..).unwrap_or_default();
            if let Ok(peer) = self.scan(rest, spans).and_then(|()| addr(rest, spans)) {
                return Ok((rest, peer));
            }
        }
        first.map(|peer| (line, peer))
    }

    /// The record of a scanned line. With `full` false (counting only) the token, user and
    /// client address are checked as `parse` checks them but not built: the same lines fail,
    /// with the same error, in the same order.
    fn record<'l>(
        &mut self,
        line: &'l [u8],
        s: &Spans,
        peer: Option<IpAddr>,
        full: bool,
    ) -> Result<Record<'l>, ParseError> {
        let status = match field(line, s, Role::Status) {
            Some(b) => super::parse_status(b)?,
            None => return Err(ParseError::MissingField("status")),
        };
        let reason = text(line, s, Role::Reason)?;
        let ip = match (full, self.client_field) {
            (false, _) => None,
            (true, true) => field(line, s, Role::ClientField).and_then(parse_addr),
            (true, false) => self.resolver.resolve(peer, field(line, s, Role::Xff)),
        };
        Ok(Record {
            alias: None,
            time: self.time(line, s)?,
            token: text_if(line, s, Role::Token, full)?.map(Cow::Borrowed),
            ip,
            user: text_if(line, s, Role::User, full)?.map(Cow::Borrowed),
            status: Some(status),
            outcome: Outcome::from_status(status, reason),
        })
    }
}

impl Parser for NginxParser {
    fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        let line = trim_cr(line);
        let mut spans = [NONE; ROLES + 1];
        let (line, peer) = self.scan_with_prefix(line, &mut spans)?;
        self.record(line, &spans, peer, true).map(Parsed::Event)
    }

    fn parse_counts<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        let line = trim_cr(line);
        let mut spans = [NONE; ROLES + 1];
        // The address is still parsed: an unparsable one makes the line (or its prefix
        // retry) fail, as in `parse`.
        let (line, peer) = self.scan_with_prefix(line, &mut spans)?;
        self.record(line, &spans, peer, false).map(Parsed::Event)
    }
}

/// The parsed `$remote_addr`; a line whose address is neither an address nor `-` does not
/// match (that is how a prefixed line is told apart).
fn addr(line: &[u8], spans: &Spans) -> Result<Option<IpAddr>, ParseError> {
    match field(line, spans, Role::Addr) {
        Some(a) if a != b"-" => parse_addr(a).map(Some).ok_or(ParseError::NoMatch("nginx")),
        _ => Ok(None),
    }
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
    // The default names are filled in for every nginx source; only a name the user chose
    // must exist (`combined`, `common`, `traefik` have no token variable).
    if spec
        .token_field
        .as_deref()
        .is_some_and(|t| t.trim_start_matches('$') != "token_id")
        && !has(Role::Token)
    {
        return err(format!(
            "token_field ${} is not a variable of the log_format",
            n.token
        ));
    }
    if spec
        .reason_field
        .as_deref()
        .is_some_and(|r| r.trim_start_matches('$') != "auth_reason")
        && !has(Role::Reason)
    {
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

/// Roles that only the segments from `head` on set (cleared when a line stops before them).
fn tail_only_roles(segs: &[Seg], head: usize) -> Vec<usize> {
    let roles = |s: &[Seg]| -> Vec<Role> {
        s.iter()
            .filter_map(|s| match s {
                Seg::Var { role, .. } if *role != Role::Other => Some(*role),
                _ => None,
            })
            .collect()
    };
    let (h, t) = segs.split_at(head.min(segs.len()));
    let in_head = roles(h);
    roles(t)
        .into_iter()
        .filter(|r| !in_head.contains(r))
        .map(|r| r as usize)
        .collect()
}

/// Turns segments into scan steps: each literal absorbs the variable after it, and each
/// variable learns the byte that ends it. `ends` are the segment indices where a line may end.
fn plan(segs: &[Seg], ends: &[usize]) -> Vec<Step> {
    let next_byte = |i: usize| match segs.get(i) {
        Some(Seg::Lit(l)) => l.first().copied(),
        _ => None,
    };
    let var_at = |i: usize| match segs.get(i) {
        Some(Seg::Var { role, quoted }) => {
            let next = next_byte(i + 1);
            let end = match (*quoted, *role, next) {
                (true, _, _) => End::Quote,
                (false, Role::TimeLocal, next) => End::Time(next),
                (false, _, Some(c)) => End::Byte(c),
                (false, _, None) => End::Line,
            };
            Some(VarStep {
                end,
                slot: (*role as usize).min(ROLES),
            })
        }
        _ => None,
    };
    let mut steps = vec![];
    let mut i = 0;
    while i < segs.len() {
        let may_end_before = ends.contains(&i);
        let (lit, var, used) = match segs.get(i) {
            Some(Seg::Lit(l)) if !ends.contains(&(i + 1)) => (l.clone(), var_at(i + 1), 2),
            Some(Seg::Lit(l)) => (l.clone(), None, 1),
            _ => (Box::default(), var_at(i), 1),
        };
        // A literal followed by another literal (or by the end) takes one segment only.
        let used = if var.is_none() { 1 } else { used };
        steps.push(Step {
            lit,
            var,
            may_end_before,
        });
        i += used;
    }
    steps
}

/// The steps of nginx's `combined` format, which every built-in format starts with.
const HEAD: [(&[u8], Option<End>); 9] = [
    (b"", Some(End::Byte(b' '))),
    (b" - ", Some(End::Byte(b' '))),
    (b" [", Some(End::Time(Some(b']')))),
    (b"] \"", Some(End::Quote)),
    (b"\" ", Some(End::Byte(b' '))),
    (b" ", Some(End::Byte(b' '))),
    (b" \"", Some(End::Quote)),
    (b"\" \"", Some(End::Quote)),
    (b"\"", None),
];
/// The variables of [`HEAD`].
const HEAD_VARS: usize = 8;

/// The [`HEAD`] steps as straight-line code (each step's literal and end are constants,
/// so the per-step dispatch of the general loop disappears). The same helpers as the
/// general loop, so the same spans; `None` where that loop would stop.
fn scan_head(line: &[u8], spans: &mut Spans, slots: &[usize; HEAD_VARS]) -> Option<usize> {
    #[inline(always)]
    fn step(
        line: &[u8],
        pos: usize,
        (lit, end): (&[u8], End),
        slot: usize,
        spans: &mut Spans,
    ) -> Option<usize> {
        let start = match_lit(line, pos, lit)?;
        let stop = var_end(line, start, end)?;
        if let Some(s) = spans.get_mut(slot) {
            *s = (start as u32, stop as u32);
        }
        Some(stop)
    }
    let [addr, user, time, request, status, bytes, referer, agent] = *slots;
    let pos = step(line, 0, (b"", End::Byte(b' ')), addr, spans)?;
    let pos = step(line, pos, (b" - ", End::Byte(b' ')), user, spans)?;
    let pos = step(line, pos, (b" [", End::Time(Some(b']'))), time, spans)?;
    let pos = step(line, pos, (b"] \"", End::Quote), request, spans)?;
    let pos = step(line, pos, (b"\" ", End::Byte(b' ')), status, spans)?;
    let pos = step(line, pos, (b" ", End::Byte(b' ')), bytes, spans)?;
    let pos = step(line, pos, (b" \"", End::Quote), referer, spans)?;
    let pos = step(line, pos, (b"\" \"", End::Quote), agent, spans)?;
    match_lit(line, pos, b"\"")
}

#[inline(always)]
fn match_lit(line: &[u8], pos: usize, lit: &[u8]) -> Option<usize> {
    let rest = line.get(pos..)?;
    // Literals are 1–3 bytes: compares by length beat both a loop and a call to memcmp.
    let ok = match *lit {
        [] => true,
        [a] => rest.first() == Some(&a),
        [a, b] => matches!(*rest, [x, y, ..] if x == a && y == b),
        [a, b, c] => matches!(*rest, [x, y, z, ..] if x == a && y == b && z == c),
        _ => rest.starts_with(lit),
    };
    ok.then_some(pos + lit.len())
}

/// Where a variable's value ends.
#[inline(always)]
fn var_end(line: &[u8], pos: usize, end: End) -> Option<usize> {
    let rest = line.get(pos..)?;
    let len = match end {
        End::Quote => closing_quote(rest)?,
        End::Time(_) if rest.len() >= 26 => 26,
        End::Time(Some(c)) | End::Byte(c) => find_byte(rest, c)?,
        End::Time(None) | End::Line => rest.len(),
    };
    Some(pos + len)
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Non-zero when a byte of `x` is zero; its lowest set bit marks the first zero byte
/// (higher lanes may be false positives after a borrow, the lowest never is).
fn zero_byte(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// Eight bytes as a little-endian word.
fn word(c: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(c);
    u64::from_le_bytes(w)
}

/// The first `c` in `b`, eight bytes at a time: unquoted fields (address, user, status,
/// byte count) are a few to a few dozen bytes, too short for a vector search's setup.
fn find_byte(b: &[u8], c: u8) -> Option<usize> {
    let pat = LO * u64::from(c);
    let mut chunks = b.chunks_exact(8);
    let mut base = 0;
    for w in &mut chunks {
        let hit = zero_byte(word(w) ^ pat);
        if hit != 0 {
            return Some(base + (hit.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    let tail = chunks.remainder();
    tail.iter().position(|&x| x == c).map(|p| base + p)
}

/// The next `"` not escaped by a backslash.
fn closing_quote(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        i += find_quote_or_backslash(b.get(i..)?)?;
        match b.get(i)? {
            b'"' => return Some(i),
            _ => i += 2, // a backslash escapes the byte after it
        }
    }
}

/// How many bytes the word-at-a-time search looks at before handing over to memchr's
/// vector search: most quoted fields (`-`, a token id, a reason, a short request) end
/// within them, and for those a vector search's setup costs more than the search; user
/// agents, referers and query strings run to hundreds of bytes, where it pays many times.
const SWAR_BYTES: usize = 16;

/// The first `"` or `\` in `b` (also used to unescape Docker's json-file entries, whose
/// runs between escapes are as short).
pub(crate) fn find_quote_or_backslash(b: &[u8]) -> Option<usize> {
    let head = b.get(..SWAR_BYTES).unwrap_or(b);
    let mut chunks = head.chunks_exact(8);
    let mut base = 0;
    for c in &mut chunks {
        let x = word(c);
        let hit = zero_byte(x ^ (LO * u64::from(b'"'))) | zero_byte(x ^ (LO * u64::from(b'\\')));
        if hit != 0 {
            // The lowest set bit of either test is the first match.
            return Some(base + (hit.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    if base == SWAR_BYTES {
        let rest = b.get(SWAR_BYTES..).unwrap_or_default();
        return memchr::memchr2(b'"', b'\\', rest).map(|p| SWAR_BYTES + p);
    }
    let tail = chunks.remainder();
    tail.iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|p| base + p)
}

fn field<'l>(line: &'l [u8], s: &Spans, r: Role) -> Option<&'l [u8]> {
    let (a, b) = *s.get(r as usize)?;
    line.get(a as usize..b as usize)
}

/// A text field with `-`/empty as absent.
fn text<'l>(line: &'l [u8], s: &Spans, r: Role) -> Result<Option<&'l str>, ParseError> {
    match field(line, s, r) {
        // `-` (most users and reasons) needs no UTF-8 check.
        Some(b"-" | b"") | None => Ok(None),
        Some(b) => Ok(present(utf8(b)?)),
    }
}

/// [`text`] when `keep`; otherwise only its check (ASCII, the usual case, is checked far
/// cheaper than `str::from_utf8` makes a `&str`), with `None` for the value.
fn text_if<'l>(
    line: &'l [u8],
    s: &Spans,
    r: Role,
    keep: bool,
) -> Result<Option<&'l str>, ParseError> {
    if keep {
        return text(line, s, r);
    }
    match field(line, s, r) {
        Some(b) if !b.is_ascii() => utf8(b).map(|_| None),
        _ => Ok(None),
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

#[cfg(test)]
mod search_tests {
    use super::*;

    /// The closing quote by a plain byte walk.
    fn reference_quote(b: &[u8]) -> Option<usize> {
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            match c {
                b'"' => return Some(i),
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        None
    }

    fn spec(log_format: &str, token: &str) -> ParserSpec {
        ParserSpec {
            log_format: Some(log_format.into()),
            token_field: Some(token.into()),
            ..ParserSpec::default()
        }
    }

    #[test]
    fn the_combined_head_is_recognised() {
        for (f, head) in [
            ("tokenwatch", true),
            ("combined", true),
            ("main", true),
            ("traefik", true),
            ("common", false),
            (r#"$remote_addr [$time_local] "$request" $status"#, false),
        ] {
            let p = NginxParser::new(&spec(f, "token_id")).unwrap();
            assert_eq!(p.head.is_some(), head, "{f}");
        }
    }

    const LINE: &str = r#"203.0.113.9 - alice [02/Mar/2026:13:55:36 +0000] "GET /v1?q=\"a\" HTTP/1.1" 401 12 "-" "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0" "ak_3f9c2b11d0aa" "token revoked""#;

    proptest::proptest! {
        #[test]
        fn the_straight_line_head_scans_as_the_loop_does(
            token in proptest::sample::select(vec!["token_id", "http_user_agent", "remote_user"]),
            format in proptest::sample::select(vec!["tokenwatch", "combined", "main"]),
            at in 0usize..400,
            byte in proptest::sample::select(b"\"\\ -[]:0".to_vec()),
            edit in 0u8..3,
        ) {
            let fast = NginxParser::new(&spec(format, token)).unwrap();
            let mut slow = NginxParser::new(&spec(format, token)).unwrap();
            slow.head = None;
            let mut line = LINE.as_bytes().to_vec();
            let at = at % line.len();
            match edit {
                0 => line[at] = byte,
                1 => { line.remove(at); }
                _ => line.truncate(at),
            }
            let (mut a, mut b) = ([NONE; ROLES + 1], [NONE; ROLES + 1]);
            let (ra, rb) = (fast.scan(&line, &mut a), slow.scan(&line, &mut b));
            proptest::prop_assert_eq!(&ra, &rb);
            if ra.is_ok() {
                proptest::prop_assert_eq!(&a[..ROLES], &b[..ROLES]);
            }
        }

        #[test]
        fn searches_agree_with_a_byte_walk(s in "[a \"\\\\é]{0,70}") {
            // Lengths around the 8-byte words and the 16-byte hand-over to memchr.
            let b = s.as_bytes();
            proptest::prop_assert_eq!(closing_quote(b), reference_quote(b));
            proptest::prop_assert_eq!(find_byte(b, b' '), b.iter().position(|&c| c == b' '));
            proptest::prop_assert_eq!(
                find_quote_or_backslash(b),
                b.iter().position(|&c| c == b'"' || c == b'\\')
            );
        }
    }
}
