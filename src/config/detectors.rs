//! `[detectors.NAME]`: per-detector settings (for now only `enabled`).

use serde::{Deserialize, Serialize};

/// One `[detectors.NAME]` table as read from the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Whether the detector runs (default true).
    pub enabled: bool,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig { enabled: true }
    }
}

/// `[detectors]`: one table per detector, by its stable name (DESIGN §6); other names are
/// rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorsConfig {
    /// Rejected/checked ratio over a sliding window, global and per source.
    pub rejection_ratio: DetectorConfig,
    /// Many rejected checks from one IP.
    pub brute_force: DetectorConfig,
    /// Many distinct unknown tokens from one IP.
    pub token_spray: DetectorConfig,
    /// Many IPs each trying a few never-seen tokens.
    pub distributed_spray: DetectorConfig,
    /// A token's rate far above its own baseline.
    pub rate_spike: DetectorConfig,
    /// Two uses of a token too far apart for the time between them.
    pub impossible_travel: DetectorConfig,
    /// A token used from many IPs, networks or countries.
    pub ip_fanout: DetectorConfig,
    /// Use at hours a token has never been active in.
    pub off_hours: DetectorConfig,
    /// Repeated use of a revoked or expired token.
    pub revoked_reuse: DetectorConfig,
}

impl DetectorsConfig {
    /// The stable detector names, in DESIGN order.
    pub const NAMES: [&'static str; 9] = [
        "rejection_ratio",
        "brute_force",
        "token_spray",
        "distributed_spray",
        "rate_spike",
        "impossible_travel",
        "ip_fanout",
        "off_hours",
        "revoked_reuse",
    ];

    /// The settings of the detector called `name`, if that is a detector.
    pub fn get(&self, name: &str) -> Option<&DetectorConfig> {
        Some(match name {
            "rejection_ratio" => &self.rejection_ratio,
            "brute_force" => &self.brute_force,
            "token_spray" => &self.token_spray,
            "distributed_spray" => &self.distributed_spray,
            "rate_spike" => &self.rate_spike,
            "impossible_travel" => &self.impossible_travel,
            "ip_fanout" => &self.ip_fanout,
            "off_hours" => &self.off_hours,
            "revoked_reuse" => &self.revoked_reuse,
            _ => return None,
        })
    }

    /// True if the detector called `name` exists and is enabled.
    pub fn enabled(&self, name: &str) -> bool {
        self.get(name).is_some_and(|d| d.enabled)
    }
}
