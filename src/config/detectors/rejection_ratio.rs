//! `[detectors.rejection_ratio]`: the settings `detect::detectors::rejection_ratio` runs with (the config
//! feeds the detectors, so their settings live here).

use serde::{Deserialize, Serialize};

/// `[detectors.rejection_ratio]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether the detector runs (default true).
    pub enabled: bool,
    /// Sliding window (default 300 s, the `rate(...[5m])` of the `HighTokenFailureRate`
    /// alert; long enough that one burst of retries does not dominate).
    pub window_secs: u64,
    /// Fires when rejected/checked exceeds this (default 0.5, as the alert: more checks
    /// fail than pass).
    pub ratio: f64,
    /// Checks in the window, at least (default 50: below that a handful of 401s from one
    /// misconfigured client is a majority; the 20 is too few for a busy gateway).
    pub min_checks: u64,
    /// Rejections in the window, at least (default 30, the scale of brute-force peers'
    /// per-IP counts — fail2ban 5, Panther 20 — multiplied by a few clients).
    pub min_rejected: u64,
    /// Distinct client addresses with a rejection in the window, at least (default 5: an
    /// outage or a misconfigured fleet hits many clients; one or two noisy IPs are
    /// `brute_force`/`token_spray` incidents).
    pub min_ips: usize,
    /// The condition must hold this long before a record (default 60 s; the alert's `for:
    /// 2m` on a 5 m rate, shortened because the 5 m window already smooths bursts).
    pub sustain_secs: u64,
    /// No second record for the same key within this (default 900 s).
    pub cooldown_secs: u64,
    /// Client addresses tracked per scope for the breadth check (default 10 000; beyond
    /// it the least recently seen are evicted, which only under-counts breadth).
    pub max_ips: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            window_secs: 300,
            ratio: 0.5,
            min_checks: 50,
            min_rejected: 30,
            min_ips: 5,
            sustain_secs: 60,
            cooldown_secs: 900,
            max_ips: 10_000,
        }
    }
}
