//! `[detectors.off_hours]`: the settings `detect::detectors::off_hours` runs with (the config
//! feeds the detectors, so their settings live here).

use serde::{Deserialize, Serialize};

use crate::event::Severity;

/// `[detectors.off_hours]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether the detector runs (default true).
    pub enabled: bool,
    /// Days with activity before the token may fire (default 5: Entra ID Protection learns
    /// sign-in properties for 5 days; Elastic new-terms rules use 5–14 days of history).
    pub learning_days: u8,
    /// Checks outside familiar hours (in one run of adjacent hours) before firing (default 5:
    /// one stray request or a single retry is not a habit change; a stolen key in use makes
    /// many more).
    pub min_checks: u8,
    /// An hour within this many hours of an active one is familiar (default 1: a worker who
    /// usually starts at 08:00 starting at 07:30, or a DST shift, does not fire; max 6).
    pub tolerance_hours: u8,
    /// A weekday's own hours are used once that weekday was seen this many times (default 2:
    /// one quiet Tuesday is not a pattern); before that, hours of day over all days.
    pub weekday_min_weeks: u8,
    /// No repeat record for the same token within this many seconds (default 21600: one
    /// night is one incident).
    pub cooldown_secs: u64,
    /// Severity of the record (default low: timing alone is weak evidence).
    pub severity: Severity,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            learning_days: 5,
            min_checks: 5,
            tolerance_hours: 1,
            weekday_min_weeks: 2,
            cooldown_secs: 21_600,
            severity: Severity::Low,
        }
    }
}
