//! `[detectors.revoked_reuse]`: the settings `detect::detectors::revoked_reuse` runs with (the config
//! feeds the detectors, so their settings live here).

use serde::{Deserialize, Serialize};

/// `[detectors.revoked_reuse]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether the detector runs (default true).
    pub enabled: bool,
    /// Refusals of one token in its current streak (no accepted use since the first) within
    /// the window to fire (default 5). Panther's
    /// Auth0 rule fires on any refresh-token reuse, but there a reuse is itself proof of
    /// theft; an API key or access token is legitimately retried once or twice after it
    /// expires or is rotated, while five in ten minutes is a client (or thief) that keeps
    /// using it.
    pub min_uses: u64,
    /// Sliding window (default 600 s).
    pub window_secs: u64,
    /// The streak must have lasted this long (default 60 s): a client whose token expired
    /// fails a handful of parallel requests and recovers within seconds; a revoked key
    /// still deployed keeps failing for minutes.
    pub min_streak_secs: u64,
    /// No second record for the same token within this (default 3600 s, Panther's 60 m
    /// dedupe).
    pub cooldown_secs: u64,
    /// Tokens tracked at most (default 50 000); the least recently seen are evicted.
    pub max_tokens: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            min_uses: 5,
            window_secs: 600,
            min_streak_secs: 60,
            cooldown_secs: 3600,
            max_tokens: 50_000,
        }
    }
}
