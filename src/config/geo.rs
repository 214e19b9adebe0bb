//! `[geo]`: GeoIP databases and IPv6 grouping.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[geo]` as read from the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeoConfig {
    /// `.mmdb` files: MaxMind GeoIP2/GeoLite2 City and ASN schema, or the flat ip-location-db
    /// schema (its IPv4 and IPv6 files both listed). Default none; a missing file is a warning.
    pub mmdb: Vec<PathBuf>,
    /// IPv6 clients are grouped by this prefix length wherever IPs are counted (default 64).
    pub ipv6_prefix: u8,
}

impl Default for GeoConfig {
    fn default() -> Self {
        GeoConfig {
            mmdb: Vec::new(),
            ipv6_prefix: 64,
        }
    }
}
