//! The event record on the wire: a compact, versioned binary form of an [`AuthEvent`] plus
//! its source name and event id, and the message keys of the two event topics.
//!
//! Layout of version 1 (integers little-endian, `varint` = unsigned LEB128):
//!
//! ```text
//! u8 version (1) | u8 flags | u8 outcome | i64 time_ms | u16 source_idx
//! | u8 len + source name | u8 len + edge id | u64 file id | varint byte offset
//! | [u16 status] | [varint len + token id] | [4 or 16 bytes ip] | [u8 len + user]
//! | [varint len + alias]
//! ```
//!
//! `flags` says which optional fields follow (bits: status, token, ip, ipv6, user, alias;
//! the alias bit, Vault's accessor, is only ever set on events that carry one, so records of
//! every other preset are byte-identical to the first version's);
//! `outcome` is 0 for accepted, 1 + the index in [`Reason::ALL`] for a rejection. A typical
//! nginx event with a fingerprint and an IPv4 client is 65–75 bytes. The token is always
//! the id or fingerprint the event carries: the raw secret never exists past the parser.
//! Decoding never panics: truncated, oversized or unknown input is a [`WireError`].

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::enrich::Fingerprinter;
use crate::event::{AuthEvent, EventTime, Outcome, Reason, SourceIdx, TokenId};

/// The format version this build writes (and the only one it reads).
pub const VERSION: u8 = 1;
/// Users longer than this are cut (at a character boundary) on the wire.
pub const MAX_USER_BYTES: usize = 64;
/// Token ids longer than this are refused by the decoder (no real id comes close).
pub const MAX_TOKEN_BYTES: usize = 1024;

const F_STATUS: u8 = 1;
const F_TOKEN: u8 = 2;
const F_IP: u8 = 4;
const F_IPV6: u8 = 8;
const F_USER: u8 = 16;
const F_ALIAS: u8 = 32;
const F_KNOWN: u8 = F_STATUS | F_TOKEN | F_IP | F_IPV6 | F_USER | F_ALIAS;

/// Where an event came from: edge id + file id (the tailer's head fingerprint) + byte offset
/// of the line. Stable across restarts, so a line read twice has one id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    /// The edge's configured id.
    pub edge: Box<str>,
    /// The file's identity (fingerprint of its head; 0 when unknown).
    pub file: u64,
    /// Byte offset of the line in the file.
    pub offset: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:016x}/{}", self.edge, self.file, self.offset)
    }
}

impl EventId {
    /// The borrowed form [`encode`] takes.
    pub fn id_ref(&self) -> IdRef<'_> {
        IdRef {
            edge: &self.edge,
            file: self.file,
            offset: self.offset,
        }
    }
}

/// An event id with a borrowed edge id (the edge encodes without allocating).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRef<'a> {
    /// The edge's configured id.
    pub edge: &'a str,
    /// The file's identity.
    pub file: u64,
    /// Byte offset of the line.
    pub offset: u64,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq)]
pub struct WireEvent {
    /// The event (its `source` is the index on the edge that sent it).
    pub event: AuthEvent,
    /// The source's name on the edge (the `source` label; stable across edges).
    pub source_name: Box<str>,
    /// The event id.
    pub id: EventId,
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// No bytes at all.
    #[error("empty record")]
    Empty,
    /// A version this build cannot read.
    #[error("unknown record version {0}")]
    Version(u8),
    /// Flag bits this version does not define.
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    /// An outcome byte out of range.
    #[error("invalid outcome {0}")]
    Outcome(u8),
    /// The record ends inside a field.
    #[error("record truncated in {0}")]
    Truncated(&'static str),
    /// A text field is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    /// A length over its limit.
    #[error("{0} too long")]
    TooLong(&'static str),
    /// Bytes after the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Appends the record of `ev` to `out` (which the caller reuses between events).
/// `source_name` and `id.edge` must be at most 255 bytes (config validation keeps them ≤ 64).
pub fn encode(ev: &AuthEvent, source_name: &str, id: IdRef<'_>, out: &mut Vec<u8>) {
    let mut flags = 0;
    flags |= if ev.status.is_some() { F_STATUS } else { 0 };
    flags |= if ev.token.is_some() { F_TOKEN } else { 0 };
    flags |= match ev.ip {
        Some(IpAddr::V4(_)) => F_IP,
        Some(IpAddr::V6(_)) => F_IP | F_IPV6,
        None => 0,
    };
    flags |= if ev.user.is_some() { F_USER } else { 0 };
    flags |= if ev.alias.is_some() { F_ALIAS } else { 0 };
    out.extend_from_slice(&[VERSION, flags, outcome_byte(ev.outcome)]);
    out.extend_from_slice(&ev.time.as_millis().to_le_bytes());
    out.extend_from_slice(&ev.source.to_le_bytes());
    short_str(out, source_name);
    short_str(out, id.edge);
    out.extend_from_slice(&id.file.to_le_bytes());
    varint(out, id.offset);
    if let Some(s) = ev.status {
        out.extend_from_slice(&s.to_le_bytes());
    }
    if let Some(t) = &ev.token {
        varint(out, t.as_str().len() as u64);
        out.extend_from_slice(t.as_str().as_bytes());
    }
    match ev.ip {
        Some(IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
        Some(IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
        None => {}
    }
    if let Some(u) = &ev.user {
        short_str(out, cap_user(u));
    }
    if let Some(a) = &ev.alias {
        varint(out, a.as_str().len() as u64);
        out.extend_from_slice(a.as_str().as_bytes());
    }
}

/// The user as the wire carries it: at most [`MAX_USER_BYTES`], cut at a char boundary.
pub fn cap_user(u: &str) -> &str {
    if u.len() <= MAX_USER_BYTES {
        return u;
    }
    let mut end = MAX_USER_BYTES;
    while !u.is_char_boundary(end) {
        end -= 1;
    }
    u.get(..end).unwrap_or_default()
}

fn outcome_byte(o: Outcome) -> u8 {
    match o {
        Outcome::Accepted => 0,
        Outcome::Rejected(r) => 1 + Reason::ALL.iter().position(|x| *x == r).unwrap_or(4) as u8,
    }
}

/// A string of at most 255 bytes (longer ones are cut at a char boundary).
fn short_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let s = s.get(..end).unwrap_or_default();
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes one record.
pub fn decode(bytes: &[u8]) -> Result<WireEvent, WireError> {
    let mut r = Reader { b: bytes };
    let version = r.u8("version").map_err(|_| WireError::Empty)?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let flags = r.u8("flags")?;
    if flags & !F_KNOWN != 0 || (flags & F_IPV6 != 0 && flags & F_IP == 0) {
        return Err(WireError::Flags(flags));
    }
    let outcome = outcome_of(r.u8("outcome")?)?;
    let time = EventTime::from_millis(i64::from_le_bytes(r.array("time")?));
    let source: SourceIdx = u16::from_le_bytes(r.array("source index")?);
    let source_name = r.short_str("source name")?;
    let edge = r.short_str("edge id")?;
    let file = u64::from_le_bytes(r.array("file id")?);
    let offset = r.varint("offset")?;
    let status = (flags & F_STATUS != 0)
        .then(|| r.array("status").map(u16::from_le_bytes))
        .transpose()?;
    let token = (flags & F_TOKEN != 0).then(|| r.token()).transpose()?;
    let ip = (flags & F_IP != 0)
        .then(|| r.ip(flags & F_IPV6 != 0))
        .transpose()?;
    let user = (flags & F_USER != 0)
        .then(|| r.short_str("user"))
        .transpose()?;
    let alias = (flags & F_ALIAS != 0).then(|| r.token()).transpose()?;
    if !r.b.is_empty() {
        return Err(WireError::Trailing(r.b.len()));
    }
    let event = AuthEvent {
        alias,
        time,
        source,
        token,
        ip,
        user,
        outcome,
        status,
    };
    Ok(WireEvent {
        event,
        source_name,
        id: EventId { edge, file, offset },
    })
}

fn outcome_of(b: u8) -> Result<Outcome, WireError> {
    match b {
        0 => Ok(Outcome::Accepted),
        n => Reason::ALL
            .get(usize::from(n) - 1)
            .map(|r| Outcome::Rejected(*r))
            .ok_or(WireError::Outcome(n)),
    }
}

/// A cursor over the record's bytes.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::TooLong(what))
    }

    fn str(&mut self, n: usize, what: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.take(n, what)?).map_err(|_| WireError::Utf8(what))
    }

    fn short_str(&mut self, what: &'static str) -> Result<Box<str>, WireError> {
        let n = self.u8(what)?;
        Ok(self.str(usize::from(n), what)?.into())
    }

    fn token(&mut self) -> Result<TokenId, WireError> {
        let n = self.varint("token")?;
        if n > MAX_TOKEN_BYTES as u64 {
            return Err(WireError::TooLong("token"));
        }
        Ok(TokenId::new(self.str(n as usize, "token")?))
    }

    fn ip(&mut self, v6: bool) -> Result<IpAddr, WireError> {
        Ok(if v6 {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>("ip")?))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.array::<4>("ip")?))
        })
    }
}

/// The `auth.by_token` message key: the keyed hash of the token id (`fp:` + 16 hex), so a
/// token's events share a partition on every edge that shares the fingerprint key.
pub fn token_key(fp: &Fingerprinter, token: &TokenId) -> TokenId {
    fp.fingerprint(token.as_str().as_bytes())
}

/// Writes the `auth.by_ip` message key into `out` (cleared first): the client's address as
/// text, IPv6 masked to `ipv6_prefix` so a /64 lands on one partition as the detectors
/// group it.
pub fn ip_key(ip: IpAddr, ipv6_prefix: u8, out: &mut String) {
    out.clear();
    let ip = match crate::net::canonical(ip) {
        v6 @ IpAddr::V6(_) => crate::net::mask(v6, ipv6_prefix),
        v4 => v4,
    };
    let _ = write!(out, "{ip}");
}

#[cfg(test)]
mod tests;
