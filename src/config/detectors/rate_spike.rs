//! `[detectors.rate_spike]`: the settings `detect::detectors::rate_spike` runs with (the config
//! feeds the detectors, so their settings live here).

use serde::{Deserialize, Serialize};

use crate::event::Severity;

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
