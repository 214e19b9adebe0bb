//! When things happen: the run's span, the learning period and the attack day.

use super::clock::{day_start, DAY, HOUR};
use super::{GenOptions, LEARNING_DAYS};

/// The time frame of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// First instant of traffic.
    pub start: i64,
    /// End of the scheduled days (attacks stay before it).
    pub end: i64,
    /// When normal traffic stops: `end`, or never when a line count bounds the run.
    pub horizon: i64,
    /// Midnight UTC of the last scheduled day, where most attacks go.
    pub attack_day: i64,
    /// End of the learning period.
    pub learned: i64,
}

impl Plan {
    /// The plan for a set of options.
    pub(crate) fn new(opts: &GenOptions) -> Plan {
        let start = opts.start.as_millis();
        let days = i64::from(opts.days);
        let end = start.saturating_add(days.saturating_mul(DAY));
        Plan {
            start,
            end,
            horizon: if opts.lines.is_some() { i64::MAX } else { end },
            attack_day: day_start(start) + (days - 1).max(0) * DAY,
            learned: start + i64::from(LEARNING_DAYS) * DAY,
        }
    }

    /// True if an incident over `[from, to]` fits the run (and the learning period if needed).
    pub(crate) fn fits(&self, from: i64, to: i64, needs_baseline: bool) -> bool {
        from >= self.start && to < self.end && (!needs_baseline || from >= self.learned)
    }

    /// When the revoked-reuse victim's key is replaced: well before its reuse.
    pub(crate) fn revoke_at(&self) -> i64 {
        (self.start + 2 * DAY + 10 * HOUR)
            .min(self.attack_day + 11 * HOUR)
            .max(self.start)
    }
}
