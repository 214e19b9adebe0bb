//! `rate_spike`'s per-token state: a seasonal hour-of-day baseline and learned peaks in a
//! few dozen bytes, with a rolling window of six sub-buckets.
//!
//! Rates are stored log-quantized in one byte (steps of 2^(1/8), about 9 %, from 0 to
//! 4·10⁹): ample precision for a threshold that is a multiple of the baseline.

use serde::{Deserialize, Serialize};

/// Milliseconds in an hour.
const HOUR_MS: i64 = 3_600_000;
/// Hours per peak block.
const BLOCK_HOURS: usize = 3;
/// Learned peaks lose this many quantization steps (≈ 8 %) per day without refresh: a
/// weekly job's burst keeps more than half its allowance until next week.
const PEAK_DECAY_STEPS: u8 = 1;

/// `x` as a log-quantized byte.
pub(crate) fn q(x: f64) -> u8 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    (8.0 * (1.0 + x).log2()).round().clamp(0.0, 255.0) as u8
}

/// The value of a log-quantized byte (a table: this runs for every check of every token).
pub(crate) fn dq(v: u8) -> f64 {
    static TABLE: std::sync::LazyLock<[f64; 256]> = std::sync::LazyLock::new(|| {
        let mut t = [0.0; 256];
        for (i, x) in t.iter_mut().enumerate() {
            *x = (i as f64 / 8.0).exp2() - 1.0;
        }
        t
    });
    TABLE[usize::from(v)]
}

/// Thresholds and learning rates, derived from the settings once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    /// Width of the rolling window in ms.
    pub window_ms: i64,
    /// EWMA weight of a new day's hour.
    pub alpha: f64,
    /// Multiple of the expected count that fires.
    pub factor: f64,
    /// Multiple of the learned peak that fires.
    pub peak_factor: f64,
    /// Floor on the window count.
    pub min_checks: f64,
    /// Active days before firing.
    pub min_days: u8,
}

/// What the threshold was made of at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bar {
    /// Expected checks per window at this hour of day (baseline).
    pub expected: f64,
    /// Learned peak checks per window around this hour.
    pub peak: f64,
    /// The threshold: max(floor, factor × expected, peak_factor × peak).
    pub threshold: f64,
}

/// Sub-buckets of the rolling window.
pub(crate) const SLOTS: usize = 6;
/// A window's checks must be spread over at least this many sub-buckets to reach the bar
/// (each counts at most bar / SPREAD): a page load's burst of calls in one second is not a
/// rate.
pub(crate) const SPREAD: f64 = 3.0;

/// This detector's part of a token's state (56 bytes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Checks per hour by UTC hour of day (EWMA over days), log-quantized.
    mean: [u8; 24],
    /// Peak checks per window by 3-hour block of the UTC day (decaying max), log-quantized.
    peak: [u8; 8],
    /// The rolling window: checks per sub-bucket, a ring indexed by sub-bucket number.
    ring: [u16; SLOTS],
    /// Sub-bucket number of the newest sub-bucket.
    head: u32,
    /// Checks in the current hour.
    hour_count: u32,
    /// Day number of the last check (0: nothing seen yet).
    last_day: u16,
    /// Days with activity before `last_day` (saturating).
    pub(crate) days: u8,
    /// Peak window of the current hour (log-quantized), learned when the hour closes so
    /// that a spike cannot raise its own bar while it is under way.
    hour_peak: u8,
}

impl State {
    /// Counts a check at `ms`; returns true if it is current (late checks are counted but
    /// not evaluated).
    pub(crate) fn add(&mut self, ms: i64, p: &Params) -> bool {
        let w = sub_ms(p);
        let b = u32::try_from(ms.div_euclid(w).max(0)).unwrap_or(u32::MAX);
        if self.last_day == 0 {
            self.head = b;
            self.last_day = day_of(ms);
        }
        self.count_day(ms);
        if b > self.head {
            self.roll(b, p);
        }
        if b.saturating_add(SLOTS as u32) <= self.head {
            return false;
        }
        if let Some(c) = self.ring.get_mut(b as usize % SLOTS) {
            *c = c.saturating_add(1);
        }
        if hour_of(b, w) == hour_of(self.head, w) {
            self.hour_count = self.hour_count.saturating_add(1);
        }
        b == self.head
    }

    /// Checks in the window, each sub-bucket counting at most `clip`.
    pub(crate) fn window(&self, clip: f64) -> f64 {
        self.ring.iter().map(|&c| f64::from(c).min(clip)).sum()
    }

    /// The threshold at UTC hour of day `hod`.
    pub(crate) fn bar(&self, hod: usize, p: &Params) -> Bar {
        let near = [(hod + 23) % 24, hod % 24, (hod + 1) % 24];
        let per_window = (sub_ms(p) * SLOTS as i64) as f64 / HOUR_MS as f64;
        // dq is monotonic: the largest byte is the largest value.
        let top = |bytes: &[u8], at: &dyn Fn(usize) -> usize| {
            dq(near
                .iter()
                .map(|&h| bytes.get(at(h)).copied().unwrap_or(0))
                .max()
                .unwrap_or(0))
        };
        let expected = top(&self.mean, &|h| h) * per_window;
        let peak = top(&self.peak, &|h| h / BLOCK_HOURS);
        let threshold = p
            .min_checks
            .max(p.factor * expected)
            .max(p.peak_factor * peak);
        Bar {
            expected,
            peak,
            threshold,
        }
    }

    /// Checks per hour learned for hour of day `hod`.
    pub(crate) fn baseline_hour(&self, hod: usize) -> f64 {
        dq(self.mean.get(hod).copied().unwrap_or(0))
    }

    fn count_day(&mut self, ms: i64) {
        let today = day_of(ms);
        if today > self.last_day {
            let gone = (today - self.last_day).min(30) as u8;
            self.days = self.days.saturating_add(1);
            self.last_day = today;
            for v in &mut self.peak {
                *v = v.saturating_sub(PEAK_DECAY_STEPS.saturating_mul(gone));
            }
        }
    }

    /// Moves on to sub-bucket `b`: notes the closing window's peak, learns closed hours.
    fn roll(&mut self, b: u32, p: &Params) {
        let w = sub_ms(p);
        self.note_peak(hour_of(self.head, w), p);
        let (old_h, new_h) = (hour_of(self.head, w), hour_of(b, w));
        if new_h > old_h {
            self.close_hour(old_h, self.hour_count, p);
            self.hour_peak = 0;
            // Hours without any check; a long idle gap counts once per hour of day.
            for h in (old_h + 1..new_h).take(24) {
                self.close_hour(h, 0, p);
            }
            self.hour_count = 0;
        }
        for k in (self.head + 1..=b).take(SLOTS) {
            if let Some(c) = self.ring.get_mut(k as usize % SLOTS) {
                *c = 0;
            }
        }
        self.head = b;
    }

    /// Notes the window ending with the closing sub-bucket towards this hour's peak.
    fn note_peak(&mut self, hour: i64, p: &Params) {
        let hod = hour.rem_euclid(24) as usize;
        let mut c = self.window(f64::INFINITY);
        if self.days >= p.min_days {
            // A burst teaches at most `peak_factor` × the bar it crossed: a new habit (a
            // nightly job) is learned in two or three days, not from one burst.
            c = c.min(self.bar(hod, p).threshold * p.peak_factor.max(1.0));
        }
        self.hour_peak = self.hour_peak.max(q(c));
    }

    fn close_hour(&mut self, hour: i64, count: u32, p: &Params) {
        let hod = hour.rem_euclid(24) as usize;
        if let Some(v) = self.peak.get_mut(hod / BLOCK_HOURS) {
            *v = (*v).max(self.hour_peak);
        }
        // The first days average in fully (no bias towards zero), then an EWMA.
        let a = p.alpha.max(1.0 / (f64::from(self.days) + 1.0)).min(1.0);
        if let Some(v) = self.mean.get_mut(hod) {
            *v = q((1.0 - a) * dq(*v) + a * f64::from(count));
        }
    }
}

fn day_of(ms: i64) -> u16 {
    ms.div_euclid(24 * HOUR_MS).clamp(0, i64::from(u16::MAX)) as u16
}

fn hour_of(bucket: u32, width_ms: i64) -> i64 {
    i64::from(bucket) * width_ms / HOUR_MS
}

/// Width of one sub-bucket in ms.
fn sub_ms(p: &Params) -> i64 {
    (p.window_ms / SLOTS as i64).max(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_is_close_and_monotone() {
        assert_eq!(q(0.0), 0);
        assert_eq!(dq(0), 0.0);
        for x in [1.0, 7.5, 60.0, 500.0, 1e6, 1e9] {
            let r = dq(q(x)) / x;
            assert!((0.9..1.1).contains(&r), "{x}: {r}");
        }
        assert!((0..255).all(|v| dq(v) < dq(v + 1)));
        assert_eq!(q(1e30), 255);
    }
}
