//! Timestamp parsing shared by the presets.
//!
//! The fast paths (RFC 3339, nginx `$time_local`, epoch numbers) are hand-written digit
//! readers over bytes; jiff is used only to turn a zone-less local time into an instant.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::event::{days_from_civil, EventTime};

/// The zone used for formats that carry none; `None` is UTC (the fast path).
#[derive(Debug, Clone, Default)]
pub struct Zone(Option<TimeZone>, i64);

impl Zone {
    /// Wraps a spec's optional zone (absent means UTC). A fixed offset (UTC included) is
    /// kept as seconds and applied by hand: cheaper, and jiff's instants stop a day short
    /// of the end of 9999, which a log may still name.
    pub fn new(tz: Option<&TimeZone>) -> Zone {
        match tz.map(|t| (t, t.to_fixed_offset())) {
            None => Zone(None, 0),
            Some((_, Ok(off))) => Zone(None, i64::from(off.seconds())),
            Some((t, Err(_))) => Zone(Some(t.clone()), 0),
        }
    }

    /// The instant of a local wall-clock time in this zone (`ms` is the millisecond part).
    pub fn instant(&self, date: Civil, ms: u32) -> Option<EventTime> {
        let Some(tz) = &self.0 else {
            let t = utc(date, ms).as_millis() - self.1 * 1000;
            return Some(EventTime::from_millis(t));
        };
        let dt = DateTime::new(
            i16::try_from(date.year).ok()?,
            date.month as i8,
            date.day as i8,
            (date.sod / 3600) as i8,
            (date.sod / 60 % 60) as i8,
            (date.sod % 60) as i8,
            (ms as i32) * 1_000_000,
        )
        .ok()?;
        let ts = tz.to_timestamp(dt).ok()?;
        Some(EventTime::from_millis(ts.as_millisecond()))
    }
}

/// Parses `b` with a strftime format (jiff's strtime); a result without offset is read in `zone`.
pub fn strftime(format: &str, b: &[u8], zone: &Zone) -> Option<EventTime> {
    let bdt = jiff::fmt::strtime::parse(format, b).ok()?;
    let ts = match bdt.offset() {
        Some(_) => bdt.to_timestamp().ok()?,
        None => {
            let dt = bdt.to_datetime().ok()?;
            return match &zone.0 {
                Some(tz) => tz
                    .to_timestamp(dt)
                    .ok()
                    .map(|t| EventTime::from_millis(t.as_millisecond())),
                // A fixed offset: read as UTC, then shift.
                None => TimeZone::UTC
                    .to_timestamp(dt)
                    .ok()
                    .map(|t| EventTime::from_millis(t.as_millisecond() - zone.1 * 1000)),
            };
        }
    };
    Some(EventTime::from_millis(ts.as_millisecond()))
}

/// A validated calendar date plus seconds of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year (0..=9999).
    pub year: i64,
    /// Month 1..=12.
    pub month: u32,
    /// Day 1..=31 (checked against the month).
    pub day: u32,
    /// Seconds since midnight (0..86_400; a leap second 60 is folded into the next second).
    pub sod: u32,
}

impl Civil {
    /// Days since 1970-01-01.
    pub fn days(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    /// The civil date of a day count (time of day `sod`).
    pub fn from_days(days: i64, sod: u32) -> Civil {
        let (year, month, day) = crate::event::civil_from_days(days);
        Civil {
            year,
            month,
            day,
            sod,
        }
    }
}

/// The instant of a UTC civil time.
fn utc(c: Civil, ms: u32) -> EventTime {
    let secs = c.days() * 86_400 + i64::from(c.sod);
    EventTime::from_millis(secs * 1000 + i64::from(ms))
}

/// Reads exactly `N` ASCII digits.
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 {
        return None;
    }
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Validates the parts of a date and time.
fn civil(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<Civil> {
    let year = i64::from(y);
    let ok = (1..=12).contains(&mo)
        && d >= 1
        && d <= days_in_month(year, mo)
        && h < 24
        && mi < 60
        && s <= 60;
    ok.then(|| Civil {
        year,
        month: mo,
        day: d,
        sod: h * 3600 + mi * 60 + s.min(59),
    })
}

/// Reads a fraction of a second after `.` or `,`; returns (millis, bytes used).
fn fraction(b: &[u8]) -> (u32, usize) {
    if !matches!(b.first(), Some(b'.' | b',')) {
        return (0, 0);
    }
    let n = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut ms = 0;
    for i in 0..3 {
        ms = ms * 10
            + b.get(1 + i)
                .filter(|_| i < n)
                .map_or(0, |c| u32::from(c - b'0'));
    }
    (ms, if n == 0 { 0 } else { 1 + n })
}

/// Reads `Z`, `±HH:MM`, `±HHMM` or `±HH`; returns the offset in seconds, or `None`.
fn offset(b: &[u8]) -> Option<i64> {
    match b {
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2] => (digits(&[*h1, *h2])?, 0),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?)
                }
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => None,
    }
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.frac|,frac]` → (civil, millis, rest).
fn date_time(b: &[u8]) -> Option<(Civil, u32, &[u8])> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let c = civil(
        digits(&b[0..4])?,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    )?;
    let (ms, used) = fraction(&b[19..]);
    Some((c, ms, &b[19 + used..]))
}

/// RFC 3339 / ISO 8601 (`2026-03-02T13:55:36.120+01:00`, `Z`, space separator, comma
/// fractions). A time without an offset is read in `zone`.
pub fn rfc3339(b: &[u8], zone: &Zone) -> Option<EventTime> {
    let (c, ms, rest) = date_time(b)?;
    rfc3339_rest(c, ms, rest, zone)
}

/// The instant of a read date and time, given what follows it (an offset or nothing).
fn rfc3339_rest(c: Civil, ms: u32, rest: &[u8], zone: &Zone) -> Option<EventTime> {
    if rest.is_empty() {
        return zone.instant(c, ms);
    }
    let off = offset(rest)?;
    Some(EventTime::from_millis(utc(c, ms).as_millis() - off * 1000))
}

/// [`rfc3339`] through a one-entry cache of the date and time to the second: consecutive
/// lines mostly share their second, and comparing 19 bytes is far cheaper than reading and
/// validating them again (the fraction and offset are still read every time).
#[derive(Debug, Clone, Default)]
pub struct SecondCache(Option<([u8; 19], Civil)>);

impl SecondCache {
    /// The same answer as [`rfc3339`].
    pub fn rfc3339(&mut self, b: &[u8], zone: &Zone) -> Option<EventTime> {
        let head = <[u8; 19]>::try_from(b.get(..19)?).ok()?;
        let (c, ms, rest) = match &self.0 {
            Some((text, c)) if head == *text => {
                let after = b.get(19..)?;
                let (ms, used) = fraction(after);
                (*c, ms, after.get(used..)?)
            }
            _ => {
                let got = date_time(b)?;
                self.0 = Some((head, got.0));
                got
            }
        };
        rfc3339_rest(c, ms, rest, zone)
    }
}

/// Date and time with a space or `T` and no offset (`2024-01-10 21:01:45,403`), in `zone`.
pub fn local_date_time(b: &[u8], zone: &Zone) -> Option<EventTime> {
    let (c, ms, rest) = date_time(b)?;
    rest.is_empty().then_some(())?;
    zone.instant(c, ms)
}

/// A three-letter English month name (`Jan`…`Dec`) as 1–12.
pub fn month(b: &[u8]) -> Option<u32> {
    const M: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    M.iter()
        .position(|m| m.as_slice() == b)
        .map(|i| i as u32 + 1)
}

/// nginx `$time_local` / Apache `%t`: `10/Oct/2000:13:55:36 -0700`.
pub fn nginx_local(b: &[u8]) -> Option<EventTime> {
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[20] != b' ' {
        return None;
    }
    if b[14] != b':' || b[17] != b':' {
        return None;
    }
    let c = civil(
        digits(&b[7..11])?,
        month(&b[3..6])?,
        digits(&b[0..2])?,
        digits(&b[12..14])?,
        digits(&b[15..17])?,
        digits(&b[18..20])?,
    )?;
    let off = offset(&b[21..])?;
    Some(EventTime::from_secs(utc(c, 0).as_millis() / 1000 - off))
}

/// oauth2-proxy `2006/01/02 15:04:05` (local time, no zone), read in `zone`.
pub fn slashed(b: &[u8], zone: &Zone) -> Option<EventTime> {
    if b.len() != 19 || b[4] != b'/' || b[7] != b'/' || b[10] != b' ' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let c = civil(
        digits(&b[0..4])?,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    )?;
    zone.instant(c, 0)
}

/// A time of day `21:01:45,403` (WildFly): seconds since midnight and millis.
pub fn time_of_day(b: &[u8]) -> Option<(u32, u32)> {
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, s) = (digits(&b[0..2])?, digits(&b[3..5])?, digits(&b[6..8])?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let (ms, used) = fraction(&b[8..]);
    (8 + used == b.len()).then_some((h * 3600 + m * 60 + s.min(59), ms))
}

/// The last millisecond of the year 9999: the latest instant any preset's text form can name,
/// and the bound for epoch numbers too.
pub const MAX_MILLIS: i64 = 253_402_300_799_999;

/// An epoch instant in the range tokenwatch accepts: 1970-01-01 to the end of 9999. A
/// negative or larger number is a corrupt or hostile value, not a time (detectors keep
/// event-time windows, so one absurd stamp must not be taken as real).
pub fn epoch_in_range(ms: i64) -> Option<EventTime> {
    (0..=MAX_MILLIS)
        .contains(&ms)
        .then_some(EventTime::from_millis(ms))
}

/// Epoch seconds, integer or with a fraction (`1700000000`, `1700000000.123`).
pub fn epoch_secs(b: &[u8]) -> Option<EventTime> {
    let dot = b.iter().position(|&c| c == b'.').unwrap_or(b.len());
    let secs = int(&b[..dot])?;
    let (ms, used) = fraction(&b[dot..]);
    (dot + used == b.len()).then_some(())?;
    epoch_in_range(secs.checked_mul(1000)?.checked_add(i64::from(ms))?)
}

/// Epoch milliseconds (`1700000000123`).
pub fn epoch_millis(b: &[u8]) -> Option<EventTime> {
    epoch_in_range(int(b)?)
}

/// An epoch number whose unit is guessed from its size: values above 10^11 are millis
/// (10^11 seconds is the year 5138).
pub fn epoch_auto(b: &[u8]) -> Option<EventTime> {
    let int_part = b.split(|&c| c == b'.').next().unwrap_or(b);
    if int(int_part)?.abs() >= 100_000_000_000 {
        epoch_millis(b)
    } else {
        epoch_secs(b)
    }
}

/// An optionally signed decimal integer of at most 16 digits.
fn int(b: &[u8]) -> Option<i64> {
    let (neg, d) = match b {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, b),
    };
    if d.is_empty() || d.len() > 16 {
        return None;
    }
    let v = d.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })?;
    Some(if neg { -v } else { v })
}

/// Any of the self-describing forms: RFC 3339, nginx `$time_local`, epoch (seconds/millis).
pub fn auto(b: &[u8], zone: &Zone) -> Option<EventTime> {
    rfc3339(b, zone)
        .or_else(|| nginx_local(b))
        .or_else(|| slashed(b, zone))
        .or_else(|| epoch_auto(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_cache_gives_rfc3339s_answers() {
        let zone = Zone::new(Some(&TimeZone::fixed(jiff::tz::offset(2))));
        let mut cache = SecondCache::default();
        for stamp in [
            "2026-03-02T13:55:36.120Z",
            "2026-03-02T13:55:36.999Z",
            "2026-03-02T13:55:36+01:00",
            "2026-03-02T13:55:36",
            "2026-03-02T13:55:36,5",
            "2026-03-02T13:55:36.1x",
            "2026-03-02T13:55:36Z",
            "2026-03-02T13:55:37Z",
            "2026-02-30T13:55:37Z",
            "2026-02-30T13:55:37Z",
            "2026-03-02T13:55:3",
            "2026-03-02T13:55:37Z",
            "",
        ] {
            let b = stamp.as_bytes();
            assert_eq!(cache.rfc3339(b, &zone), rfc3339(b, &zone), "{stamp}");
        }
    }

    fn ms(t: Option<EventTime>) -> i64 {
        t.map(EventTime::as_millis).unwrap_or(i64::MIN)
    }

    #[test]
    fn rfc3339_forms() {
        let z = Zone::default();
        let base = 1_772_459_736_000; // 2026-03-02T13:55:36Z
        assert_eq!(ms(rfc3339(b"2026-03-02T13:55:36Z", &z)), base);
        assert_eq!(ms(rfc3339(b"2026-03-02T13:55:36.120Z", &z)), base + 120);
        assert_eq!(
            ms(rfc3339(b"2026-03-02T14:55:36.123456789+01:00", &z)),
            base + 123
        );
        assert_eq!(ms(rfc3339(b"2026-03-02T08:55:36-0500", &z)), base);
        assert_eq!(ms(rfc3339(b"2026-03-02 13:55:36,5", &z)), base + 500);
        assert!(rfc3339(b"2026-02-30T13:55:36Z", &z).is_none());
        assert!(rfc3339(b"2026-03-02T13:55:36Q", &z).is_none());
        assert!(rfc3339(b"2026-03-02T25:55:36Z", &z).is_none());
    }

    #[test]
    fn nginx_and_epoch() {
        assert_eq!(
            ms(nginx_local(b"10/Oct/2000:13:55:36 -0700")),
            971_211_336_000
        );
        assert!(nginx_local(b"10/Foo/2000:13:55:36 -0700").is_none());
        assert_eq!(ms(epoch_auto(b"1700000000")), 1_700_000_000_000);
        assert_eq!(ms(epoch_auto(b"1700000000.25")), 1_700_000_000_250);
        assert_eq!(ms(epoch_auto(b"1700000000123")), 1_700_000_000_123);
        assert!(epoch_auto(b"17x").is_none());
        assert!(epoch_secs(b"99999999999999999999").is_none());
    }

    #[test]
    fn fixed_offsets_reach_the_end_of_9999() {
        let utc = Zone::new(Some(&TimeZone::UTC));
        let c = Civil {
            year: 9999,
            month: 12,
            day: 31,
            sod: 86_399,
        };
        assert_eq!(ms(utc.instant(c, 999)), MAX_MILLIS);
        let plus1 = TimeZone::fixed(jiff::tz::offset(1));
        let z = Zone::new(Some(&plus1));
        assert_eq!(ms(z.instant(c, 999)), MAX_MILLIS - 3_600_000);
        assert_eq!(
            ms(strftime("%Y-%m-%d %H:%M:%S", b"2026-03-02 14:55:36", &z)),
            1_772_459_736_000
        );
    }

    #[test]
    fn epoch_numbers_outside_1970_to_9999_are_refused() {
        assert_eq!(ms(epoch_auto(b"0")), 0);
        assert_eq!(ms(epoch_secs(b"253402300799")), MAX_MILLIS - 999);
        assert_eq!(ms(epoch_auto(b"99999999999")), 99_999_999_999_000);
        assert_eq!(ms(epoch_millis(b"253402300799999")), MAX_MILLIS);
        assert!(epoch_millis(b"253402300800000").is_none());
        assert!(epoch_auto(b"-1").is_none());
        assert!(epoch_auto(b"-99999999999").is_none());
        assert!(epoch_secs(b"9999999999999999").is_none());
        assert_eq!(
            ms(rfc3339(b"9999-12-31T23:59:59.999Z", &Zone::default())),
            MAX_MILLIS
        );
        assert_eq!(ms(rfc3339(b"1970-01-01T00:00:00Z", &Zone::default())), 0);
    }

    #[test]
    fn zones_apply_to_local_times() {
        let berlin = Some(jiff::tz::TimeZone::fixed(jiff::tz::offset(1)));
        let z = Zone::new(berlin.as_ref());
        // 2026-03-02 14:55:36 at +01:00 (CET) is 13:55:36Z.
        assert_eq!(ms(slashed(b"2026/03/02 14:55:36", &z)), 1_772_459_736_000);
        assert_eq!(
            ms(local_date_time(b"2026-03-02 14:55:36,120", &z)),
            1_772_459_736_120
        );
        assert_eq!(time_of_day(b"21:01:45,403"), Some((75_705, 403)));
        assert_eq!(time_of_day(b"21:01:45"), Some((75_705, 0)));
        assert!(time_of_day(b"21:01:4x").is_none());
    }
}
