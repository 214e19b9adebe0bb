//! `[detectors.brute_force]`: the settings `detect::detectors::brute_force` runs with (the config
//! feeds the detectors, so their settings live here).

use serde::{Deserialize, Serialize};

/// `[detectors.brute_force]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether the detector runs (default true).
    pub enabled: bool,
    /// Rejected checks from one IP in the window to fire (default 30). Peers block sooner
    /// (fail2ban 5 in 10 m, CrowdSec a bucket of 5 leaking one per 10 s, Panther 20 in
    /// 60 m) because they guard interactive logins; token clients are programs that retry,
    /// so a misbehaving client makes a few 401s a minute — 30 in 5 m (one every 10 s,
    /// CrowdSec's leak rate, sustained) is above that and still far below a real guessing
    /// run.
    pub min_rejected: u64,
    /// Sliding window (default 300 s).
    pub window_secs: u64,
    /// No second record for the same IP within this (default 900 s, above fail2ban's 10 m
    /// bantime: one incident per attack run).
    pub cooldown_secs: u64,
    /// IPs tracked at most (default 100 000, ~20 MB); the least recently seen are evicted.
    pub max_ips: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            min_rejected: 30,
            window_secs: 300,
            cooldown_secs: 900,
            max_ips: 100_000,
        }
    }
}
