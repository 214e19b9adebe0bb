//! The calendar behind `off_hours`: UTC day and hour numbers, and a 168-bit hour-of-week
//! bitmap with neighbouring-hour tolerance.

use serde::{Deserialize, Serialize};

/// Milliseconds in an hour.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// Hours in a week.
pub(crate) const WEEK_HOURS: u16 = 168;

/// Days since 1970-01-01 (UTC), clamped into `u16` (good until 2149).
pub(crate) fn day_of(ms: i64) -> u16 {
    ms.div_euclid(24 * HOUR_MS).clamp(0, i64::from(u16::MAX)) as u16
}

/// Day of the week of a day number, 0 = Monday (1970-01-01 was a Thursday).
pub(crate) fn weekday_of(day: u16) -> u16 {
    (day + 3) % 7
}

/// Hour of the week in UTC, 0 = Monday 00:00–01:00.
pub(crate) fn hour_of_week(ms: i64) -> u16 {
    let hod = ms.div_euclid(HOUR_MS).rem_euclid(24) as u16;
    weekday_of(day_of(ms)) * 24 + hod
}

/// Hours since the epoch, wrapped into `u16` (only differences of a few hours are used).
pub(crate) fn hour_tag(ms: i64) -> u16 {
    ms.div_euclid(HOUR_MS) as u16
}

/// How many times weekday `wd` was seen as a whole day strictly between `first` and `today`.
pub(crate) fn weekday_seen(first: u16, today: u16, wd: u16) -> u16 {
    let Some(n) = today.checked_sub(first).and_then(|d| d.checked_sub(1)) else {
        return 0;
    };
    let start = weekday_of(first.saturating_add(1));
    let offset = (wd + 7 - start) % 7;
    if n > offset {
        (n - offset - 1) / 7 + 1
    } else {
        0
    }
}

/// One bit per UTC hour of the week: was the token ever active then.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Week([u8; 21]);

impl Week {
    /// Marks hour-of-week `how` active.
    pub fn set(&mut self, how: u16) {
        let how = how % WEEK_HOURS;
        if let Some(b) = self.0.get_mut(usize::from(how / 8)) {
            *b |= 1 << (how % 8);
        }
    }

    /// True if hour-of-week `how` was active.
    pub fn get(&self, how: u16) -> bool {
        let how = how % WEEK_HOURS;
        self.0
            .get(usize::from(how / 8))
            .is_some_and(|b| b & (1 << (how % 8)) != 0)
    }

    /// True if hour-of-day `hod` was active on any weekday.
    pub fn any_day(&self, hod: u16) -> bool {
        (0..7).any(|d| self.get(d * 24 + hod % 24))
    }

    /// True if `how` or an hour within `tol` of it (same week, across midnight) was active.
    pub fn near_week(&self, how: u16, tol: u16) -> bool {
        (0..=2 * tol).any(|k| self.get(how + WEEK_HOURS + k - tol))
    }

    /// True if the hour of day of `how`, or one within `tol`, was active on any day.
    pub fn near_day(&self, how: u16, tol: u16) -> bool {
        let hod = how % 24;
        (0..=2 * tol).any(|k| self.any_day(hod + 24 + k - tol))
    }

    /// The UTC hours of day with any activity, as compact ranges (`"07-17"`, `"02"`).
    pub fn day_ranges(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut h = 0;
        while h < 24 {
            if !self.any_day(h) {
                h += 1;
                continue;
            }
            let from = h;
            while h + 1 < 24 && self.any_day(h + 1) {
                h += 1;
            }
            out.push(if from == h {
                format!("{from:02}")
            } else {
                format!("{from:02}-{h:02}")
            });
            h += 1;
        }
        out
    }

    /// Active hours of the week.
    pub fn count(&self) -> u32 {
        self.0.iter().map(|b| b.count_ones()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MON: u16 = 20_514; // 2026-03-02

    #[test]
    fn calendar() {
        assert_eq!(weekday_of(MON), 0);
        let ms = i64::from(MON) * 24 * HOUR_MS + 6 * 24 * HOUR_MS + 3 * HOUR_MS;
        assert_eq!(hour_of_week(ms), 6 * 24 + 3);
        // First seen on Monday: Tuesday..Sunday are whole days by the next Monday.
        assert_eq!(weekday_seen(MON, MON + 7, 1), 1);
        assert_eq!(weekday_seen(MON, MON + 7, 0), 0);
        assert_eq!(weekday_seen(MON, MON + 8, 0), 1);
        assert_eq!(weekday_seen(MON, MON + 15, 0), 2);
        assert_eq!(weekday_seen(MON, MON + 1, 1), 0);
        assert_eq!(weekday_seen(MON + 3, MON, 1), 0);
    }

    #[test]
    fn tolerance_wraps() {
        let mut w = Week::default();
        w.set(0); // Monday 00
        assert!(w.near_week(167, 1) && w.near_week(1, 1) && !w.near_week(2, 1));
        assert!(w.near_day(24 * 3 + 23, 1), "23:00 any day is near 00:00");
        assert!(!w.near_day(24 * 3 + 22, 1));
        w.set(7);
        w.set(8);
        w.set(9);
        assert_eq!(w.day_ranges(), vec!["00", "07-09"]);
        assert_eq!(w.count(), 4);
    }
}
