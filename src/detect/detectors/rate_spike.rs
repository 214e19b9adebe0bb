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

use super::off_hours::authenticated;
use super::TokenDetector;
use crate::config::detectors::rate_spike::Settings;
use crate::detect::{Finding, Findings, Obs};
pub use state::State;
use state::{Bar, Params};

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

    /// Nothing outside the tokens' parts (its baselines are in each token's `State`).
    fn write_snapshot(&self, out: &mut dyn std::io::Write) -> serde_json::Result<()> {
        super::write_nothing(out)
    }

    fn restore(&mut self, _v: serde_json::Value) -> Result<(), String> {
        Ok(())
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
