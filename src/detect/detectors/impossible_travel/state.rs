//! A token's last place, packed into 32 bytes: coordinates, accuracy, country, network,
//! when it arrived there and when it was last seen, and the place before (for the
//! multi-homed rule).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::enrich::geo::Location;
use crate::event::EventTime;

/// `acc` bit set when the place is only known to country precision (no city).
const COARSE: u16 = 0x8000;
/// `alt` value meaning "no previous place".
const NO_ALT: i16 = i16::MIN;

/// `impossible_travel`'s part of a token's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    lat: f32,
    lon: f32,
    /// Last use here, seconds since the epoch (0: no place yet).
    last_s: u32,
    /// First use here (arrival), seconds since the epoch.
    since_s: u32,
    net: u64,
    /// The place before this one, in 1/100 degrees (~1 km).
    alt: [i16; 2],
    /// Accuracy radius in km (low 15 bits) and the [`COARSE`] flag.
    acc: u16,
    country: [u8; 2],
}

impl State {
    /// True before the token's first located use.
    pub(super) fn is_empty(&self) -> bool {
        self.last_s == 0
    }

    /// The current place (without a city name: that lives in the detector's place table).
    pub(super) fn place(&self) -> Location {
        Location {
            lat: self.lat,
            lon: self.lon,
            accuracy_km: self.acc & !COARSE,
            country: (self.country != [0, 0]).then_some(self.country),
            city: None,
        }
    }

    /// True if the current place has no city (country precision).
    pub(super) fn coarse(&self) -> bool {
        self.acc & COARSE != 0
    }

    /// The network of the last use.
    pub(super) fn net(&self) -> Net {
        Net(self.net)
    }

    /// Last use here.
    pub(super) fn last_s(&self) -> u32 {
        self.last_s
    }

    /// Seconds between arriving here and the last use here.
    pub(super) fn dwell_s(&self) -> u32 {
        self.last_s.saturating_sub(self.since_s)
    }

    /// The place before the current one, if any.
    pub(super) fn previous(&self) -> Option<Location> {
        (self.alt[0] != NO_ALT).then(|| Location {
            lat: f32::from(self.alt[0]) / 100.0,
            lon: f32::from(self.alt[1]) / 100.0,
            accuracy_km: 0,
            country: None,
            city: None,
        })
    }

    /// A use in the same area: time and network move on; the place is replaced when `loc`
    /// is given (a nearby city), kept otherwise.
    pub(super) fn stay(&mut self, loc: Option<&Location>, net: Net, t: u32) {
        if let Some(l) = loc {
            self.set_place(l);
        }
        self.net = net.0;
        self.last_s = t;
    }

    /// A move to a new place: the current one becomes the previous one.
    pub(super) fn arrive(&mut self, loc: &Location, net: Net, t: u32) {
        self.alt = if self.is_empty() {
            [NO_ALT, NO_ALT]
        } else {
            [centi(self.lat, 90.0), centi(self.lon, 180.0)]
        };
        self.set_place(loc);
        self.net = net.0;
        self.since_s = t;
        self.last_s = t;
    }

    fn set_place(&mut self, l: &Location) {
        self.lat = l.lat;
        self.lon = l.lon;
        let coarse = if l.city.is_none() { COARSE } else { 0 };
        self.acc = l.accuracy_km.min(!COARSE) | coarse;
        self.country = l.country.unwrap_or([0, 0]);
    }
}

/// Degrees to 1/100 degrees, clamped to the valid range.
fn centi(deg: f32, max: f32) -> i16 {
    (deg.clamp(-max, max) * 100.0).round() as i16
}

/// Event time as whole seconds, at least 1 (0 marks "no place").
pub(super) fn secs(t: EventTime) -> u32 {
    t.as_millis().div_euclid(1000).clamp(1, i64::from(u32::MAX)) as u32
}

/// A client network in 8 bytes: an IPv4 address (tagged in the top half, which as IPv6
/// would be multicast and so never a located client), or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Net(u64);

const V4_TAG: u64 = 0xffff_ffff << 32;

impl Net {
    /// The network of `ip` (IPv4-mapped IPv6 counts as IPv4).
    pub(super) fn of(ip: IpAddr) -> Net {
        match crate::net::canonical(ip) {
            IpAddr::V4(v4) => Net(V4_TAG | u64::from(u32::from(v4))),
            IpAddr::V6(v6) => Net((u128::from(v6) >> 64) as u64),
        }
    }

    /// Same IPv4 /24 or same IPv6 /64: one site, whatever a database says about it.
    pub(super) fn same_site(self, other: Net) -> bool {
        if self.0 & V4_TAG == V4_TAG && other.0 & V4_TAG == V4_TAG {
            (self.0 ^ other.0) & 0xffff_ff00 == 0
        } else {
            self.0 == other.0
        }
    }

    /// For evidence: `("ip", "81.2.69.7")` or `("network", "2a00:23c4:1a00:1::/64")`.
    pub(super) fn describe(self) -> (&'static str, String) {
        if self.0 & V4_TAG == V4_TAG {
            let v4 = std::net::Ipv4Addr::from(self.0 as u32);
            ("ip", v4.to_string())
        } else {
            let v6 = std::net::Ipv6Addr::from(u128::from(self.0) << 64);
            ("network", format!("{v6}/64"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_small() {
        assert!(
            std::mem::size_of::<State>() <= 32,
            "{}",
            std::mem::size_of::<State>()
        );
    }

    #[test]
    fn snapshots_round_trip_and_old_ones_load_empty() {
        let mut s = State::default();
        let loc = Location {
            lat: 1.5,
            lon: 2.5,
            accuracy_km: 10,
            country: Some(*b"SG"),
            city: None,
        };
        s.arrive(&loc, Net::of("116.86.10.1".parse().unwrap()), 42);
        let back: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let old: State = serde_json::from_str("{}").unwrap();
        assert!(old.is_empty());
    }

    #[test]
    fn networks() {
        let a = Net::of("81.2.69.7".parse().unwrap());
        assert!(a.same_site(Net::of("81.2.69.200".parse().unwrap())));
        assert!(a.same_site(Net::of("::ffff:81.2.69.1".parse().unwrap())));
        assert!(!a.same_site(Net::of("81.2.70.7".parse().unwrap())));
        assert_eq!(a.describe(), ("ip", "81.2.69.7".to_string()));
        let b = Net::of("2a00:23c4:1a00:1::5".parse().unwrap());
        assert!(b.same_site(Net::of("2a00:23c4:1a00:1:ffff::9".parse().unwrap())));
        assert!(!b.same_site(Net::of("2a00:23c4:1a00:2::5".parse().unwrap())));
        assert!(!b.same_site(a));
        assert_eq!(b.describe().1, "2a00:23c4:1a00:1::/64");
    }

    #[test]
    fn arrive_keeps_the_previous_place() {
        let mut s = State::default();
        let london = Location {
            lat: 51.5074,
            lon: -0.1278,
            accuracy_km: 20,
            country: Some(*b"GB"),
            city: Some("London".into()),
        };
        let net = Net::of("81.2.69.7".parse().unwrap());
        s.arrive(&london, net, 100);
        assert!(s.previous().is_none() && !s.coarse());
        let us = Location {
            lat: 37.751,
            lon: -97.822,
            accuracy_km: 1000,
            country: Some(*b"US"),
            city: None,
        };
        s.arrive(&us, net, 200);
        let p = s.previous().unwrap();
        assert!((p.lat - 51.51).abs() < 0.01 && (p.lon + 0.13).abs() < 0.01);
        assert!(s.coarse() && s.place().accuracy_km == 1000);
        assert_eq!(s.place().country_str(), Some("US"));
    }
}
