//! `[detectors.distributed_spray]`: the settings `detect::detectors::distributed_spray` runs with (the config
//! feeds the detectors, so their settings live here).

use serde::{Deserialize, Serialize};

/// `[detectors.distributed_spray]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether the detector runs (default true).
    pub enabled: bool,
    /// Sliding window (default 3600 s: low-and-slow sprays pace themselves over 30–60 m;
    /// Elastic's Okta rule looks at 15 m, Splunk's at 2 m buckets).
    pub window_secs: u64,
    /// Distinct addresses with few failing never-seen tokens, at least (default 10; Elastic
    /// wants ≥ 5 per 15 m, doubled for the 4× longer window).
    pub min_ips: usize,
    /// An address counts towards the several-tokens-per-address rule once it tried this many
    /// distinct never-seen tokens (default 2: "a few"; background scanners try one).
    pub min_tokens_per_ip: usize,
    /// The width rule: addresses of any shape, at least (default 20, twice `min_ips`).
    pub wide_min_ips: usize,
    /// The width rule: distinct never-seen tokens, at least (default 60, three times
    /// `min_tokens`: a busy hour of background scanning reaches 20–30).
    pub wide_min_tokens: usize,
    /// Distinct never-seen tokens tried by those addresses, at least (default 20; Elastic
    /// wants ≥ 8 identities and ≥ 25 attempts per 15 m; 20 distinct tokens is above what a
    /// few mistyping users produce — one wrong value each — and below a spray's volume).
    pub min_tokens: usize,
    /// An address with more attempts than this in the window is not "a few" (default 5,
    /// Elastic's ≤ 5 attempts per identity); it is `token_spray`'s or `brute_force`'s.
    pub max_attempts_per_ip: u32,
    /// The token count must also exceed mean + this many standard deviations of the hourly
    /// history (default 3.0, Splunk's distributed-spray rule).
    pub sigmas: f64,
    /// Hourly samples of history needed before any record (default 6, kept across restarts
    /// in the state snapshot): the engine must learn which tokens are real before "never
    /// seen" means anything, and the baseline must exist before it can hold a busy gateway
    /// back. At most 24 are kept.
    pub learning_hours: usize,
    /// No second record within this (default 3600 s, one window).
    pub cooldown_secs: u64,
    /// Addresses tracked at most (default 50 000); the least recently seen are evicted.
    pub max_ips: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            window_secs: 3600,
            min_ips: 10,
            min_tokens: 20,
            min_tokens_per_ip: 2,
            wide_min_ips: 20,
            wide_min_tokens: 60,
            max_attempts_per_ip: 5,
            sigmas: 3.0,
            learning_hours: 6,
            cooldown_secs: 3600,
            max_ips: 50_000,
        }
    }
}
