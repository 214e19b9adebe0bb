//! `[detectors.ip_fanout]`: the settings `detect::detectors::ip_fanout` runs with (the config
//! feeds the detectors, so their settings live here).

use serde::{Deserialize, Serialize};

use crate::event::Severity;

/// `[detectors.ip_fanout]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether the detector runs (default true).
    pub enabled: bool,
    /// Sliding window in seconds (default 900: a leaked key sprayed from a proxy pool shows
    /// within minutes; Elastic's AWS and Okta rules use 30 minutes for 2 of a kind, a
    /// shorter window suits a count of 10).
    pub window_secs: u64,
    /// Distinct networks in the window that fire (default 10: Elastic fires on ≥ 2 IPs,
    /// ASNs and cities for AWS session tokens, but API keys are legitimately used from a
    /// few places — office, home, CI, a phone — and a NAT pool is one network).
    pub min_networks: u32,
    /// Distinct countries in the window that fire (default 3: Okta's rule fires on ≥ 2 in
    /// 30 minutes; one border crossing or a VPN exit abroad makes 2, not 3).
    pub min_countries: u32,
    /// IPv4 addresses are grouped by this prefix (default 24: one NAT pool, one office).
    pub ipv4_prefix: u8,
    /// IPv6 addresses are grouped by this prefix (default 48: one site; privacy addresses
    /// and /64s within it are one network).
    pub ipv6_prefix: u8,
    /// Networks remembered per fanned-out token, the least recent giving way (default 64).
    pub max_networks: u32,
    /// No repeat record for the same token within this many seconds (default 3600).
    pub cooldown_secs: u64,
    /// Severity of the record (default high: a key in many hands should be rotated).
    pub severity: Severity,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            window_secs: 900,
            min_networks: 10,
            min_countries: 3,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            max_networks: 64,
            cooldown_secs: 3600,
            severity: Severity::High,
        }
    }
}
