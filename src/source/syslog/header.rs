//! The syslog header: RFC 3164 (what nginx, `logger` and most daemons send) and RFC 5424.
//!
//! Only what tokenwatch needs is read: the header's time (the event time when the
//! preset's line has none), the program (tag / APP-NAME, for the `program` filter) and where
//! the message starts. Everything borrows from the datagram or frame.

use crate::event::{civil_from_days, EventTime};
use crate::parse::time::{month, rfc3339, time_of_day, Civil, Zone};

/// One syslog message, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The header's time, if it had a usable one.
    pub time: Option<EventTime>,
    /// The RFC 3164 tag or RFC 5424 APP-NAME (without `[pid]` and `:`).
    pub program: Option<&'a [u8]>,
    /// The message part: what the preset parses.
    pub msg: &'a [u8],
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// No `<PRI>` at the start (0..=191): not syslog.
    #[error("no <PRI> at the start")]
    Pri,
}

/// Splits a message. `zone` and `now` place RFC 3164's year-less, zone-less time.
pub fn parse<'a>(b: &'a [u8], zone: &Zone, now: EventTime) -> Result<Message<'a>, HeaderError> {
    let rest = pri(b).ok_or(HeaderError::Pri)?;
    match rest {
        [b'1', b' ', tail @ ..] => Ok(rfc5424(tail, zone)),
        _ => Ok(rfc3164(rest, zone, now)),
    }
}

/// Skips `<N>` with N in 0..=191 (facility * 8 + severity).
fn pri(b: &[u8]) -> Option<&[u8]> {
    let b = b.strip_prefix(b"<")?;
    let end = b.iter().take(4).position(|&c| c == b'>')?;
    let digits = b.get(..end)?;
    let n = parse_u32(digits)?;
    (!digits.is_empty() && digits.len() <= 3 && n <= 191).then(|| b.get(end + 1..))?
}

fn parse_u32(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add(u32::from(c - b'0')))?
    })
}

/// The next space-delimited token and what follows its single separating space.
fn token(b: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b' ', b) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

/// `1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]` (after the `1 `).
fn rfc5424<'a>(b: &'a [u8], zone: &Zone) -> Message<'a> {
    let (ts, b) = token(b);
    let (_host, b) = token(b);
    let (app, b) = token(b);
    let (_procid, b) = token(b);
    let (_msgid, b) = token(b);
    let msg = skip_structured_data(b);
    let msg = msg.strip_prefix(b" ").unwrap_or(msg);
    let msg = msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(msg);
    Message {
        time: (ts != b"-").then(|| rfc3339(ts, zone)).flatten(),
        program: (app != b"-" && !app.is_empty()).then_some(app),
        msg,
    }
}

/// Skips `-` or one or more `[id param="value"...]` elements (`\]`, `\"` and `\\` escaped
/// inside values); a malformed element swallows the rest (no message).
fn skip_structured_data(b: &[u8]) -> &[u8] {
    if let Some(rest) = b.strip_prefix(b"-") {
        return rest;
    }
    let mut i = 0;
    while b.get(i) == Some(&b'[') {
        let mut quoted = false;
        i += 1;
        loop {
            match b.get(i) {
                None => return &[],
                Some(b'\\') if quoted => i += 2,
                Some(b'"') => {
                    quoted = !quoted;
                    i += 1;
                }
                Some(b']') if !quoted => {
                    i += 1;
                    break;
                }
                Some(_) => i += 1,
            }
        }
    }
    b.get(i..).unwrap_or_default()
}

/// `Mmm dd hh:mm:ss HOSTNAME TAG[pid]: MSG`; also an RFC 3339 time in place of the
/// BSD one (rsyslog's high-precision legacy format), and no hostname (a local sender).
fn rfc3164<'a>(b: &'a [u8], zone: &Zone, now: EventTime) -> Message<'a> {
    let (time, b) = match bsd_time(b, zone, now) {
        Some((t, rest)) => (Some(t), rest),
        None => {
            let (ts, rest) = token(b);
            match rfc3339(ts, zone) {
                Some(t) => (Some(t), rest),
                None => (None, b),
            }
        }
    };
    let (first, after_first) = token(b);
    // A hostname is a bare word; a tag ends in `:` or carries `[pid]`.
    let tagged = |t: &[u8]| t.ends_with(b":") || t.contains(&b'[');
    let (tag_tok, rest) = if time.is_some() && !tagged(first) {
        token(after_first)
    } else {
        (first, after_first)
    };
    if !tagged(tag_tok) {
        // No tag at all: everything after the header is the message.
        return Message {
            time,
            program: None,
            msg: if time.is_some() { after_first } else { b },
        };
    }
    let end = tag_tok
        .iter()
        .position(|&c| c == b'[' || c == b':')
        .unwrap_or(tag_tok.len());
    Message {
        time,
        program: Some(&tag_tok[..end]).filter(|p| !p.is_empty()),
        msg: rest,
    }
}

/// `Mmm dd hh:mm:ss ` (day space-padded or not), placed in the year that puts it closest
/// to `now` (so a December line read in January lands in the old year).
fn bsd_time<'a>(b: &'a [u8], zone: &Zone, now: EventTime) -> Option<(EventTime, &'a [u8])> {
    let month = month(b.get(..3)?)?;
    let b = b.get(3..)?.strip_prefix(b" ")?;
    let b = b.strip_prefix(b" ").unwrap_or(b);
    let (day, b) = token(b);
    let day = parse_u32(day).filter(|d| (1..=31).contains(d))?;
    let (hms, rest) = token(b);
    let (sod, _ms) = time_of_day(hms)?;
    let (year, _, _) = civil_from_days(now.as_millis().div_euclid(86_400_000));
    let at = |year: i64| {
        zone.instant(
            Civil {
                year,
                month,
                day,
                sod,
            },
            0,
        )
    };
    let dist = |t: EventTime| (t.as_millis() - now.as_millis()).abs();
    let best = [year, year - 1, year + 1]
        .into_iter()
        .filter_map(at)
        .min_by_key(|t| dist(*t))?;
    Some((best, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> EventTime {
        rfc3339(s.as_bytes(), &Zone::default()).unwrap()
    }

    #[test]
    fn nginx_rfc3164() {
        let now = utc("2026-03-02T14:00:00Z");
        let line = b"<190>Mar  2 13:55:36 web1 nginx: 1.2.3.4 - - [02/Mar/2026:13:55:36 +0000] \"GET / HTTP/1.1\" 200";
        let m = parse(line, &Zone::default(), now).unwrap();
        assert_eq!(m.time, Some(utc("2026-03-02T13:55:36Z")));
        assert_eq!(m.program, Some(&b"nginx"[..]));
        assert!(m.msg.starts_with(b"1.2.3.4 - - ["));
    }

    #[test]
    fn tag_with_pid_and_no_hostname_and_zone() {
        let now = utc("2026-07-10T12:00:00Z");
        let berlin = Zone::new(Some(&jiff::tz::TimeZone::fixed(jiff::tz::offset(2))));
        let m = parse(b"<13>Jul 10 13:00:00 app[42]: hello world", &berlin, now).unwrap();
        assert_eq!(m.time, Some(utc("2026-07-10T11:00:00Z")));
        assert_eq!(m.program, Some(&b"app"[..]));
        assert_eq!(m.msg, b"hello world");
    }

    #[test]
    fn december_line_read_in_january_is_last_year() {
        let now = utc("2027-01-01T00:00:05Z");
        let m = parse(b"<190>Dec 31 23:59:58 h nginx: x", &Zone::default(), now).unwrap();
        assert_eq!(m.time, Some(utc("2026-12-31T23:59:58Z")));
        // And a sender whose clock is ahead across New Year lands in the next year.
        let now = utc("2026-12-31T23:59:59Z");
        let m = parse(b"<190>Jan  1 00:00:01 h nginx: x", &Zone::default(), now).unwrap();
        assert_eq!(m.time, Some(utc("2027-01-01T00:00:01Z")));
    }

    #[test]
    fn rfc5424_with_structured_data_and_bom() {
        let now = utc("2026-03-02T14:00:00Z");
        let line = b"<165>1 2026-03-02T13:55:36.120+01:00 gw nginx 42 ID47 [ex@1 a=\"x\\]y\"][b@2 c=\"d\"] \xEF\xBB\xBFthe msg";
        let m = parse(line, &Zone::default(), now).unwrap();
        assert_eq!(m.time, Some(utc("2026-03-02T12:55:36.120Z")));
        assert_eq!(m.program, Some(&b"nginx"[..]));
        assert_eq!(m.msg, b"the msg");
        let m = parse(b"<14>1 - - - - - - plain", &Zone::default(), now).unwrap();
        assert_eq!((m.time, m.program, m.msg), (None, None, &b"plain"[..]));
    }

    #[test]
    fn refuses_without_pri_and_never_panics_on_junk() {
        let now = utc("2026-03-02T14:00:00Z");
        assert_eq!(
            parse(b"hello", &Zone::default(), now),
            Err(HeaderError::Pri)
        );
        assert_eq!(
            parse(b"<192>x", &Zone::default(), now),
            Err(HeaderError::Pri)
        );
        assert_eq!(parse(b"<>x", &Zone::default(), now), Err(HeaderError::Pri));
        for junk in [
            &b"<1>"[..],
            b"<1>1 ",
            b"<1>1 - - - - - [unterminated",
            b"<1>Mar",
            b"<1>Mar 99 1:2:3 h t: m",
            b"<1>Feb 30 10:00:00 h t: m",
        ] {
            let _ = parse(junk, &Zone::default(), now);
        }
    }
}
