//! `[detectors]`: engine limits, and one `[detectors.NAME]` table per detector whose
//! fields are that detector's own `Settings` (defined beside the detector, so a threshold
//! and the code that uses it live in one file).

use serde::{Deserialize, Serialize};

use crate::detect::detectors::{
    brute_force, distributed_spray, impossible_travel, ip_fanout, off_hours, rate_spike,
    rejection_ratio, revoked_reuse, token_spray, Common,
};

/// `[detectors]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorsConfig {
    /// Budget for all detector state, in bytes (default 1 GiB); per-key maps are capped
    /// from it and evict the least recently seen keys beyond it.
    pub max_state_bytes: u64,
    /// Events older than the newest seen minus this are counted late and not used for
    /// windows (default 300 s: multi-source and multi-host clock skew).
    pub reorder_tolerance_secs: u64,
    /// Detection records (JSON lines) for `run` (default `detections.jsonl` in the state
    /// directory); safe to rotate by rename or copytruncate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<std::path::PathBuf>,
    /// How often `run` snapshots learned state to the state directory, in seconds
    /// (default 300; also at shutdown and reload).
    pub snapshot_interval_secs: u64,
    /// Rejected/checked ratio over a sliding window, global and per source.
    pub rejection_ratio: rejection_ratio::Settings,
    /// Many rejected checks from one IP.
    pub brute_force: brute_force::Settings,
    /// Many distinct unknown tokens from one IP.
    pub token_spray: token_spray::Settings,
    /// Many IPs each trying a few never-seen tokens.
    pub distributed_spray: distributed_spray::Settings,
    /// A token's rate far above its own baseline.
    pub rate_spike: rate_spike::Settings,
    /// Two uses of a token too far apart for the time between them.
    pub impossible_travel: impossible_travel::Settings,
    /// A token used from many IPs, networks or countries.
    pub ip_fanout: ip_fanout::Settings,
    /// Use at hours a token has never been active in.
    pub off_hours: off_hours::Settings,
    /// Repeated use of a revoked or expired token.
    pub revoked_reuse: revoked_reuse::Settings,
}

impl Default for DetectorsConfig {
    fn default() -> Self {
        DetectorsConfig {
            max_state_bytes: 1 << 30,
            reorder_tolerance_secs: 300,
            output: None,
            snapshot_interval_secs: 300,
            rejection_ratio: Default::default(),
            brute_force: Default::default(),
            token_spray: Default::default(),
            distributed_spray: Default::default(),
            rate_spike: Default::default(),
            impossible_travel: Default::default(),
            ip_fanout: Default::default(),
            off_hours: Default::default(),
            revoked_reuse: Default::default(),
        }
    }
}

impl DetectorsConfig {
    /// The stable detector names, in DESIGN order.
    pub const NAMES: [&'static str; 9] = crate::metrics::DETECTORS;

    /// The common settings of the detector called `name`, if that is a detector.
    pub fn get(&self, name: &str) -> Option<&dyn Common> {
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
        self.get(name).is_some_and(|d| d.enabled())
    }
}
