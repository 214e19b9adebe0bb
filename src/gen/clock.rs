//! Calendar arithmetic on event-time milliseconds (UTC plus a fixed per-city offset).

/// One minute in milliseconds.
pub(crate) const MIN: i64 = 60_000;
/// One hour in milliseconds.
pub(crate) const HOUR: i64 = 60 * MIN;
/// One day in milliseconds.
pub(crate) const DAY: i64 = 24 * HOUR;

/// Midnight (in the same frame) of the day containing `ms`.
pub(crate) const fn day_start(ms: i64) -> i64 {
    ms.div_euclid(DAY) * DAY
}

/// Milliseconds since midnight.
pub(crate) const fn time_of_day(ms: i64) -> i64 {
    ms.rem_euclid(DAY)
}

/// Day of the week, 0 = Monday .. 6 = Sunday (1970-01-01 was a Thursday).
pub(crate) const fn weekday(ms: i64) -> i64 {
    (ms.div_euclid(DAY) + 3).rem_euclid(7)
}

/// Hour of the day, 0..24.
pub(crate) const fn hour(ms: i64) -> i64 {
    time_of_day(ms) / HOUR
}

/// A daily window of local hours `[from, to)`, on weekdays only or every day.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// First hour of activity.
    pub from: i64,
    /// Hour activity stops.
    pub to: i64,
    /// Monday to Friday only.
    pub weekdays_only: bool,
}

impl Window {
    /// Office hours: 08–18, Monday to Friday.
    pub(crate) const OFFICE: Window = Window {
        from: 8,
        to: 18,
        weekdays_only: true,
    };
    /// A phone in a pocket: 07–23 every day.
    pub(crate) const WAKING: Window = Window {
        from: 7,
        to: 23,
        weekdays_only: false,
    };

    /// True if local time `local` is inside the window.
    pub(crate) fn contains(self, local: i64) -> bool {
        let h = hour(local);
        (!self.weekdays_only || weekday(local) < 5) && h >= self.from && h < self.to
    }

    /// The first local instant at or after `local` that is inside the window.
    pub(crate) fn next_open(self, local: i64) -> i64 {
        if self.contains(local) {
            return local;
        }
        let mut day = day_start(local);
        for _ in 0..9 {
            let open = day + self.from * HOUR;
            if open >= local && (!self.weekdays_only || weekday(day) < 5) {
                return open;
            }
            day += DAY;
        }
        local + DAY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::days_from_civil;

    #[test]
    fn weekday_of_known_dates() {
        let mon = days_from_civil(2026, 3, 2) * DAY;
        assert_eq!(weekday(mon), 0);
        assert_eq!(weekday(mon + 6 * DAY + 3 * HOUR), 6);
        assert_eq!(hour(mon + 13 * HOUR + 5 * MIN), 13);
    }

    #[test]
    fn office_window_skips_nights_and_weekends() {
        let mon = days_from_civil(2026, 3, 2) * DAY;
        let w = Window::OFFICE;
        assert_eq!(w.next_open(mon + 3 * HOUR), mon + 8 * HOUR);
        assert_eq!(w.next_open(mon + 9 * HOUR), mon + 9 * HOUR);
        assert_eq!(w.next_open(mon + 18 * HOUR), mon + DAY + 8 * HOUR);
        let fri_evening = mon + 4 * DAY + 19 * HOUR;
        assert_eq!(w.next_open(fri_evening), mon + 7 * DAY + 8 * HOUR);
        let sun = mon + 6 * DAY + 3 * HOUR;
        assert_eq!(Window::WAKING.next_open(sun), mon + 6 * DAY + 7 * HOUR);
    }
}
