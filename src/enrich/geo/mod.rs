//! GeoIP: where a client address is. Databases are optional; without one, travel and
//! country features are off and everything else runs.
//!
//! [`open`] loads `.mmdb` files (MaxMind City or the flat ip-location-db schema, detected per
//! file); [`BuiltinGeo`] knows the generator's addresses so the demo needs no download.

use std::net::IpAddr;
use std::sync::Arc;

mod intern;
mod mmdb;
mod record;
mod reserved;

pub use mmdb::{default_paths, open, GeoError, MmdbGeo};
pub use record::Schema;
pub use reserved::{is_locatable, lookup_form};

/// A located address.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Latitude in degrees.
    pub lat: f32,
    /// Longitude in degrees.
    pub lon: f32,
    /// Radius in km within which the address is (MaxMind: 67 % confidence); 0 if unknown.
    pub accuracy_km: u16,
    /// ISO 3166-1 alpha-2 country code, if known.
    pub country: Option<[u8; 2]>,
    /// City name, if known (shared: one allocation per city, not per lookup).
    pub city: Option<Arc<str>>,
}

impl Location {
    /// The country code as text.
    pub fn country_str(&self) -> Option<&str> {
        self.country
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok())
    }
}

/// Looks addresses up. Private, loopback and reserved ranges are never located.
pub trait GeoLookup: Send + Sync {
    /// The location of `ip`, if known.
    fn locate(&self, ip: IpAddr) -> Option<Location>;
}

/// The generator's built-in table (`tokenwatch gen` addresses), used by the demo so it
/// needs no download.
pub struct BuiltinGeo;

impl GeoLookup for BuiltinGeo {
    fn locate(&self, ip: IpAddr) -> Option<Location> {
        let e = crate::gen::locate(ip)?;
        let cc = e.country.as_bytes();
        Some(Location {
            lat: e.lat as f32,
            lon: e.lon as f32,
            accuracy_km: e.accuracy_km,
            country: (cc.len() == 2).then(|| [cc[0], cc[1]]),
            city: Some(Arc::from(e.city)),
        })
    }
}

/// Great-circle distance in km (haversine, mean Earth radius 6371 km).
pub fn distance_km(a: &Location, b: &Location) -> f64 {
    let (la1, lo1) = (f64::from(a.lat).to_radians(), f64::from(a.lon).to_radians());
    let (la2, lo2) = (f64::from(b.lat).to_radians(), f64::from(b.lon).to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn london_new_york_is_about_5570_km() {
        let l = Location {
            lat: 51.5074,
            lon: -0.1278,
            accuracy_km: 0,
            country: None,
            city: None,
        };
        let n = Location {
            lat: 40.7128,
            lon: -74.0060,
            accuracy_km: 0,
            country: None,
            city: None,
        };
        let d = distance_km(&l, &n);
        assert!((d - 5570.0).abs() < 20.0, "{d}");
    }
}
