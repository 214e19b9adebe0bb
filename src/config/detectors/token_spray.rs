//! `[detectors.token_spray]`: the settings `detect::detectors::token_spray` runs with (the config
//! feeds the detectors, so their settings live here).

use serde::{Deserialize, Serialize};

/// `[detectors.token_spray]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether the detector runs (default true).
    pub enabled: bool,
    /// Distinct failing unknown tokens from one IP to fire (default 10: Elastic's SSH
    /// spraying rule wants > 10 distinct users per IP, Splunk's Okta rule > 9; a person
    /// mistyping a key tries one or two).
    pub min_tokens: usize,
    /// Sliding window (default 600 s: the peers use 5 m; 10 m also catches a spray paced
    /// to stay under a 5 m rule, at no cost because legitimate clients rarely fail with
    /// even three distinct tokens).
    pub window_secs: u64,
    /// No second record for the same IP within this (default 1800 s).
    pub cooldown_secs: u64,
    /// IPs tracked at most (default 100 000; each holds up to `min_tokens` 16-byte
    /// entries); the least recently seen are evicted.
    pub max_ips: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            min_tokens: 10,
            window_secs: 600,
            cooldown_secs: 1800,
            max_ips: 100_000,
        }
    }
}
