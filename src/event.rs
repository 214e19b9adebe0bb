//! The types passed between pipeline stages.

use std::fmt;
use std::net::IpAddr;

/// Event time: milliseconds since the Unix epoch, taken from the log line, never the wall clock.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct EventTime(i64);

impl EventTime {
    /// Builds a time from milliseconds since the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        EventTime(ms)
    }

    /// Builds a time from whole seconds since the Unix epoch.
    pub const fn from_secs(secs: i64) -> Self {
        EventTime(secs.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Seconds since the Unix epoch as a float (for lag histograms).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// The current wall-clock time (only for lag measurement, never for detection).
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        EventTime(d.as_millis() as i64)
    }
}

impl fmt::Display for EventTime {
    /// RFC 3339 in UTC with milliseconds, e.g. `2026-03-02T13:55:36.120Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub const fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub const fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Why a token check was rejected; a closed set so it can be a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The token was valid once but has expired.
    Expired,
    /// The token is unknown or malformed.
    Invalid,
    /// The token was revoked (rotated, disabled).
    Revoked,
    /// The token is valid but not allowed to do this (403).
    Forbidden,
    /// Any other rejection.
    Other,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 5] = [
        Reason::Expired,
        Reason::Invalid,
        Reason::Revoked,
        Reason::Forbidden,
        Reason::Other,
    ];

    /// The stable label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::Invalid => "invalid",
            Reason::Revoked => "revoked",
            Reason::Forbidden => "forbidden",
            Reason::Other => "other",
        }
    }

    /// Classifies a free-text reason from a log (`token_expired`, `revoked`, `invalid_token`, ...).
    /// Matching is case-insensitive on ASCII keywords; anything unrecognised is `Other`.
    pub fn classify(text: &str) -> Reason {
        let b = text.as_bytes();
        let has = |needle: &[u8]| {
            b.windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
        };
        if b.is_empty() {
            Reason::Other
        } else if has(b"revok") || has(b"rotated") || has(b"disabled") {
            Reason::Revoked
        } else if has(b"expir") {
            Reason::Expired
        } else if has(b"forbid") || has(b"permission") || has(b"denied") || has(b"scope") {
            Reason::Forbidden
        } else if has(b"invalid")
            || has(b"unknown")
            || has(b"not_found")
            || has(b"not found")
            || has(b"malformed")
            || has(b"bad")
            || has(b"credentials")
        {
            Reason::Invalid
        } else {
            Reason::Other
        }
    }
}

/// The result of one token check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The credential was accepted (2xx/3xx, and non-auth errors such as 429/5xx).
    Accepted,
    /// The credential was rejected (401/403 or an explicit rejected outcome).
    Rejected(Reason),
}

impl Outcome {
    /// Outcome from an HTTP status: 401/403 reject, everything else passed the auth check.
    /// `reason` (a free-text reason field, if the log has one) refines the rejection reason.
    pub fn from_status(status: u16, reason: Option<&str>) -> Outcome {
        match status {
            401 | 403 => {
                let r = reason
                    .filter(|r| !r.is_empty() && *r != "-")
                    .map(Reason::classify)
                    .unwrap_or(if status == 403 {
                        Reason::Forbidden
                    } else {
                        Reason::Invalid
                    });
                Outcome::Rejected(r)
            }
            _ => Outcome::Accepted,
        }
    }

    /// True for a rejection.
    pub const fn is_rejected(self) -> bool {
        matches!(self, Outcome::Rejected(_))
    }
}

/// A token as tokenwatch knows it: a non-secret id from the log or a keyed fingerprint
/// (`fp:` + 16 hex) of a secret. Never a raw secret.
///
/// Ids of up to 22 bytes (every fingerprint, typical key ids) are stored inline: no heap
/// allocation per event and ~24 bytes less per tracked token; longer ones go to the heap.
#[derive(Clone)]
pub struct TokenId(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<str>),
}

/// Bytes stored inline (the enum stays 24 bytes: tag + length + 22).
const INLINE: usize = 22;

impl TokenId {
    /// Wraps a value already known to be safe to show (an id or a fingerprint).
    pub fn new(safe: impl AsRef<str>) -> Self {
        let s = safe.as_ref();
        if s.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            TokenId(Repr::Inline {
                len: s.len() as u8,
                buf,
            })
        } else {
            TokenId(Repr::Heap(s.into()))
        }
    }

    /// The printable form.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Built from a &str cut at its own length, so always valid UTF-8.
            Repr::Inline { len, buf } => {
                std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }

    /// The bytes, without re-validating UTF-8 (map lookups compare and hash these).
    fn bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..usize::from(*len)],
            Repr::Heap(s) => s.as_bytes(),
        }
    }
}

impl PartialEq for TokenId {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for TokenId {}

impl std::hash::Hash for TokenId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.bytes());
    }
}

impl PartialOrd for TokenId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TokenId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Byte order is str order.
        self.bytes().cmp(other.bytes())
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for TokenId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for TokenId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(TokenId::new(s))
    }
}

/// Index of a configured source (into the config's `[[source]]` list).
pub type SourceIdx = u16;

/// One parsed, enriched token check: what detectors see.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthEvent {
    /// When the check happened (log time).
    pub time: EventTime,
    /// Which configured source it came from.
    pub source: SourceIdx,
    /// The token, if the line carried one.
    pub token: Option<TokenId>,
    /// Another non-secret handle of the same token the line links to it (Vault's accessor,
    /// which revoke APIs take), when the format has one.
    pub alias: Option<TokenId>,
    /// The client address (after trusted-proxy resolution).
    pub ip: Option<IpAddr>,
    /// The user the log names, if any.
    pub user: Option<Box<str>>,
    /// Accepted or rejected.
    pub outcome: Outcome,
    /// HTTP status, when the format has one.
    pub status: Option<u16>,
}

/// How bad a detection is (also a metric label).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Likely abuse.
    Medium,
    /// Act now.
    High,
}

impl Severity {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000i64, -1, 0, 1, 19_000, 20_514, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2026, 3, 2), 20_514);
    }

    #[test]
    fn time_displays_rfc3339() {
        let t = EventTime::from_millis(1_772_459_736_120);
        assert_eq!(t.to_string(), "2026-03-02T13:55:36.120Z");
    }

    #[test]
    fn token_ids_inline_and_heap_compare_by_content() {
        let short = TokenId::new("ak_3f9c2b11d0aa");
        let long = TokenId::new("hmac-sha256:0123456789abcdef0123456789abcdef");
        assert_eq!(short.as_str(), "ak_3f9c2b11d0aa");
        assert_eq!(
            long.as_str(),
            "hmac-sha256:0123456789abcdef0123456789abcdef"
        );
        assert_eq!(TokenId::new(String::from("ak_3f9c2b11d0aa")), short);
        assert_eq!(short.cmp(&long), "ak_3f9c2b11d0aa".cmp("hmac-sha256:0"));
        assert_eq!(std::mem::size_of::<TokenId>(), 24);
        let json = serde_json::to_string(&long).unwrap();
        assert_eq!(serde_json::from_str::<TokenId>(&json).unwrap(), long);
        assert_eq!(format!("{short:?}"), "\"ak_3f9c2b11d0aa\"");
    }

    #[test]
    fn status_rules() {
        assert_eq!(Outcome::from_status(200, None), Outcome::Accepted);
        assert_eq!(Outcome::from_status(429, None), Outcome::Accepted);
        assert_eq!(Outcome::from_status(503, None), Outcome::Accepted);
        assert_eq!(
            Outcome::from_status(401, None),
            Outcome::Rejected(Reason::Invalid)
        );
        assert_eq!(
            Outcome::from_status(403, Some("-")),
            Outcome::Rejected(Reason::Forbidden)
        );
        assert_eq!(
            Outcome::from_status(401, Some("token_revoked")),
            Outcome::Rejected(Reason::Revoked)
        );
        assert_eq!(
            Outcome::from_status(401, Some("expired")),
            Outcome::Rejected(Reason::Expired)
        );
    }
}
