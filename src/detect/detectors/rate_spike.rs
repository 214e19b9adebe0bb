//! `rate_spike` (DESIGN §6): a token's request rate far above its own learned baseline.
//!
//! Each token learns, per UTC hour of day, its usual checks per hour (an EWMA over days:
//! the daily season) and the peak count it reached in one rolling window (per 3-hour block,
//! decaying slowly). Every check updates a rolling window of `window_secs` (six
//! sub-buckets, each counting at most a third of the bar, so a one-second burst of calls is
//! not a rate); the token fires when the window count reaches the *bar*: the largest of `min_checks`, `factor` × the expected
//! count for this hour (and its neighbours, so a morning ramp or a DST shift is not
//! novel) and `peak_factor` × the learned peak (so a nightly batch job that is part of the
//! baseline does not fire). Nothing fires before `min_history_days` days of activity.
//! Hours of day are UTC: a token has no known time zone, and a fixed offset only rotates
//! the profile.

#[path = "rate_spike_state.rs"]
mod state;

use serde::{Deserialize, Serialize};

use super::off_hours::authenticated;
use super::{Common, TokenDetector};
use crate::detect::{Finding, Findings, Obs, Severity};
pub use state::State;
use state::{Bar, Params};

/// `[detectors.rate_spike]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether the detector runs (default true).
    pub enabled: bool,
    /// Width of the rolling window that is evaluated on every check, in six sub-buckets
    /// (default 120 s: a ×20 spike of a 1/min token reaches the floor about a minute after
    /// it starts, not at the end of the hour). Checks must be spread over at least a third
    /// of the window: a burst within one sub-bucket counts for at most a third of the bar.
    pub window_secs: u64,
    /// Floor on checks in one window (default 20 in 120 s, spread over ≥ 40 s: more than a
    /// person clicking, so small tokens never fire on a handful of requests).
    pub min_checks: u32,
    /// Fires at this multiple of the expected count for the hour of day (default 5; peers:
    /// Datadog's anomaly bounds are 2–3 deviations, a multiple is easier to read and ×5 is
    /// well clear of ×2 organic growth and ±30 % hourly noise).
    pub factor: f64,
    /// Fires only above this multiple of the token's learned peak window around this hour
    /// (default 2: bursty habits such as a nightly batch job are part of the baseline).
    pub peak_factor: f64,
    /// Days with activity before the token may fire (default 3: Datadog's seasonal
    /// monitors need 3 seasons; Twitter's AnomalyDetection at least 2 periods).
    pub min_history_days: u8,
    /// Memory of the daily baseline in days (default 7: EWMA weight 2/(N+1) = 0.25, so a
    /// steady new level is baseline within a few days).
    pub baseline_days: u32,
    /// No repeat record for the same token within this many seconds (default 3600: a spike
    /// is one incident).
    pub cooldown_secs: u64,
    /// Severity of the record (default medium).
    pub severity: Severity,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            window_secs: 120,
            min_checks: 20,
            factor: 5.0,
            peak_factor: 2.0,
            min_history_days: 3,
            baseline_days: 7,
            cooldown_secs: 3600,
            severity: Severity::Medium,
        }
    }
}

impl Common for Settings {
    fn enabled(&self) -> bool {
        self.enabled
    }
}

/// The detector.
pub struct RateSpike {
    settings: Settings,
    params: Params,
}

impl RateSpike {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        let s = settings;
        let params = Params {
            window_ms: i64::try_from(s.window_secs.clamp(1, 86_400) * 1000).unwrap_or(60_000),
            alpha: 2.0 / (f64::from(s.baseline_days.max(1)) + 1.0),
            factor: s.factor,
            peak_factor: s.peak_factor,
            min_checks: f64::from(s.min_checks.max(1)),
            min_days: s.min_history_days,
        };
        RateSpike {
            settings: s.clone(),
            params,
        }
    }

    fn finding(
        &self,
        st: &State,
        obs: &Obs<'_>,
        seen: f64,
        hod: usize,
        bar: Bar,
    ) -> Option<Finding> {
        let token = obs.ev.token.clone()?;
        let round2 = |x: f64| (x * 100.0).round() / 100.0;
        let evidence = serde_json::json!({
            "window_secs": self.params.window_ms / 1000,
            "observed": round2(seen),
            "expected": round2(bar.expected),
            "ratio": round2(seen / bar.expected.max(0.01)),
            "learned_peak": round2(bar.peak),
            "threshold": round2(bar.threshold),
            "baseline_per_hour": round2(st.baseline_hour(hod)),
            "hour_utc": hod,
            "history_days": st.days,
        });
        Some(Finding::about_token(
            "rate_spike",
            self.settings.severity,
            token,
            obs,
            evidence,
            self.settings.cooldown_secs,
        ))
    }
}

impl TokenDetector for RateSpike {
    type State = State;

    fn name(&self) -> &'static str {
        "rate_spike"
    }

    fn observe(&mut self, st: &mut State, obs: &Obs<'_>, out: &mut Findings) {
        if !authenticated(obs) {
            return;
        }
        let ms = obs.ev.time.as_millis();
        if !st.add(ms, &self.params) || st.days < self.params.min_days {
            return;
        }
        if st.window(f64::INFINITY) < self.params.min_checks {
            return;
        }
        let hod = ms.div_euclid(3_600_000).rem_euclid(24) as usize;
        let bar = st.bar(hod, &self.params);
        let seen = st.window(bar.threshold / state::SPREAD);
        if seen >= bar.threshold {
            if let Some(f) = self.finding(st, obs, seen, hod, bar) {
                out.push(f);
            }
        }
    }
}

#[cfg(test)]
#[path = "rate_spike_tests.rs"]
mod tests;
