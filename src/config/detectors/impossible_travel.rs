//! `[detectors.impossible_travel]`: the settings `detect::detectors::impossible_travel` runs with (the config
//! feeds the detectors, so their settings live here).

use serde::{Deserialize, Serialize};

/// `[detectors.impossible_travel]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether the detector runs (default true).
    pub enabled: bool,
    /// Fires above this speed, km/h, after subtracting accuracy radii (default 900, as
    /// Panther; Okta uses 805, Elastic 800 without accuracy). Airliners cruise at
    /// 850–930 km/h and spend time on the ground, so 900 end to end is never a real trip.
    pub max_kmh: u32,
    /// Moves shorter than this never fire, km (default 500, Elastic's floor; CrowdSec uses
    /// 1000): nearby cities, carrier address changes and database noise stay below it.
    pub min_km: u32,
    /// Accuracy radius assumed when the database gives none (the flat ip-location-db schema),
    /// km (default 100: MaxMind's typical radius for broadband is 5–100 km, carriers 100+).
    pub unknown_accuracy_km: u16,
    /// A jump counts only away from a place the token was used at for at least this long,
    /// seconds from arrival to last use there (default 600): the warm-up rule, and a guard
    /// against tokens used concurrently from two places (they flip within seconds).
    pub min_dwell_secs: u32,
    /// No second record for the same token within this many seconds (default 3600).
    pub cooldown_secs: u64,
    /// City names of places kept for evidence, at most (default 20000; one entry per place,
    /// not per token).
    pub max_places: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            max_kmh: 900,
            min_km: 500,
            unknown_accuracy_km: 100,
            min_dwell_secs: 600,
            cooldown_secs: 3600,
            max_places: 20_000,
        }
    }
}
