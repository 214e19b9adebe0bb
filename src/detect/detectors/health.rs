//! Known tokens' health: the outage guard the spray and reuse detectors stand down on.
//!
//! When most checks of tokens that worked before now fail, the auth backend is down or
//! rotating keys: never-seen and invalid tokens then say nothing about guessing, and a known
//! token refused says nothing about that token. One copy for every detector: the engine
//! counts each event once, before any detector sees it, and hands it over in
//! [`Obs`](crate::detect::Obs) (four detectors used to keep four identical copies).

use serde::{Deserialize, Serialize};

use crate::detect::window::Window;
use crate::event::{AuthEvent, EventTime};

/// Known-token checks in a window before a guard can trip.
const GUARD_MIN_CHECKS: u64 = 20;

/// Known tokens' checks and rejections over `N` buckets of `WIDTH_MS` each.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KnownTokenHealth<const N: usize, const WIDTH_MS: i64> {
    checked: Window<N>,
    rejected: Window<N>,
}

impl<const N: usize, const WIDTH_MS: i64> KnownTokenHealth<N, WIDTH_MS> {
    const EMPTY: Self = KnownTokenHealth {
        checked: Window::EMPTY,
        rejected: Window::EMPTY,
    };

    fn observe(&mut self, ev: &AuthEvent) {
        self.checked.add(ev.time, WIDTH_MS, 1);
        if ev.outcome.is_rejected() {
            self.rejected.add(ev.time, WIDTH_MS, 1);
        }
    }

    /// True if more than half of at least 20 known-token checks in the window failed.
    fn outage(&self, now: EventTime) -> bool {
        let c = self.checked.sum_at(now, WIDTH_MS);
        c >= GUARD_MIN_CHECKS && self.rejected.sum_at(now, WIDTH_MS) * 2 > c
    }
}

/// The outage guard (5 minutes in 30 s buckets) and its quick twin (the last minute in
/// 10 s buckets, so an outage is recognised within a minute of its start while the 5-minute
/// guard still counts the good minutes before it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Health {
    guard: KnownTokenHealth<10, 30_000>,
    quick: KnownTokenHealth<6, 10_000>,
}

impl Health {
    /// No checks seen (never an outage).
    pub const EMPTY: Health = Health {
        guard: KnownTokenHealth::EMPTY,
        quick: KnownTokenHealth::EMPTY,
    };

    /// Counts `ev` if its token is known (had an accepted check before).
    pub fn observe(&mut self, ev: &AuthEvent, token_known: bool) {
        if token_known {
            self.guard.observe(ev);
            self.quick.observe(ev);
        }
    }

    /// True while most known tokens fail (5-minute window).
    pub fn outage(&self, now: EventTime) -> bool {
        self.guard.outage(now)
    }

    /// True while most known tokens fail over the last minute.
    pub fn quick_outage(&self, now: EventTime) -> bool {
        self.quick.outage(now)
    }
}
