//! The built-in location table: the public ranges `gen` draws addresses from, with the city each
//! is placed in. The demo uses it as its GeoIP database, so it needs no download.
//!
//! Ranges are public ISP, carrier and cloud blocks registered in the city's region; they are not
//! guaranteed to match a commercial database. Attackers without a location use the documentation
//! ranges instead (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24), which are never in this table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use super::clock::HOUR;
use super::rng::Rng;

/// One located range of the built-in table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoEntry {
    /// The range, e.g. `81.2.69.0/24` or `2a00:23c4:1a00::/48`.
    pub cidr: &'static str,
    /// City name in English.
    pub city: &'static str,
    /// ISO 3166-1 alpha-2 country code.
    pub country: &'static str,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Accuracy radius in kilometres (carrier and cloud ranges are coarse).
    pub accuracy_km: u16,
}

/// What kind of network a range is: decides who gets addresses from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Net {
    /// Residential or office broadband.
    Home,
    /// A mobile carrier (addresses change often, coarse location).
    Mobile,
    /// A cloud region (services and batch jobs).
    Cloud,
}

struct Place(Net, GeoEntry);

const fn at(
    net: Net,
    cidr: &'static str,
    city: &'static str,
    country: &'static str,
    lat: f64,
    lon: f64,
    accuracy_km: u16,
) -> Place {
    Place(
        net,
        GeoEntry {
            cidr,
            city,
            country,
            lat,
            lon,
            accuracy_km,
        },
    )
}

use Net::{Cloud, Home, Mobile};

#[rustfmt::skip]
static PLACES: &[Place] = &[
    at(Home,   "81.2.69.0/24",         "London",         "GB",  51.5074,   -0.1278,  20),
    at(Home,   "2a00:23c4:1a00::/48",  "London",         "GB",  51.5074,   -0.1278,  50),
    at(Home,   "86.2.16.0/24",         "Manchester",     "GB",  53.4808,   -2.2426,  20),
    at(Home,   "90.63.196.0/24",       "Paris",          "FR",  48.8566,    2.3522,  20),
    at(Home,   "91.64.12.0/24",        "Berlin",         "DE",  52.5200,   13.4050,  20),
    at(Home,   "2003:e4:1f00::/48",    "Berlin",         "DE",  52.5200,   13.4050,  50),
    at(Cloud,  "18.184.10.0/24",       "Frankfurt",      "DE",  50.1109,    8.6821, 100),
    at(Home,   "84.150.20.0/24",       "Munich",         "DE",  48.1351,   11.5820,  20),
    at(Home,   "145.53.10.0/24",       "Amsterdam",      "NL",  52.3676,    4.9041,  20),
    at(Mobile, "84.241.192.0/24",      "Amsterdam",      "NL",  52.3676,    4.9041, 100),
    at(Home,   "81.240.10.0/24",       "Brussels",       "BE",  50.8503,    4.3517,  20),
    at(Mobile, "94.110.10.0/24",       "Brussels",       "BE",  50.8503,    4.3517, 100),
    at(Cloud,  "52.208.10.0/24",       "Dublin",         "IE",  53.3498,   -6.2603, 100),
    at(Home,   "83.44.10.0/24",        "Madrid",         "ES",  40.4168,   -3.7038,  20),
    at(Home,   "90.224.10.0/24",       "Stockholm",      "SE",  59.3293,   18.0686,  20),
    at(Home,   "83.6.10.0/24",         "Warsaw",         "PL",  52.2297,   21.0122,  20),
    at(Home,   "78.160.10.0/24",       "Istanbul",       "TR",  41.0082,   28.9784,  25),
    at(Home,   "72.229.10.0/24",       "New York",       "US",  40.7128,  -74.0060,  20),
    at(Mobile, "174.192.10.0/24",      "New York",       "US",  40.7128,  -74.0060, 100),
    at(Mobile, "2600:1001:b000::/48",  "New York",       "US",  40.7128,  -74.0060, 100),
    at(Home,   "73.16.10.0/24",        "Boston",         "US",  42.3601,  -71.0589,  20),
    at(Mobile, "174.242.10.0/24",      "Boston",         "US",  42.3601,  -71.0589, 100),
    at(Cloud,  "3.208.10.0/24",        "Ashburn",        "US",  39.0438,  -77.4874, 100),
    at(Home,   "98.206.10.0/24",       "Chicago",        "US",  41.8781,  -87.6298,  20),
    at(Home,   "67.169.10.0/24",       "San Francisco",  "US",  37.7749, -122.4194,  20),
    at(Cloud,  "34.208.10.0/24",       "Boardman",       "US",  45.8399, -119.7006, 100),
    at(Home,   "99.224.10.0/24",       "Toronto",        "CA",  43.6532,  -79.3832,  20),
    at(Home,   "187.188.10.0/24",      "Mexico City",    "MX",  19.4326,  -99.1332,  30),
    at(Home,   "177.32.10.0/24",       "Sao Paulo",      "BR", -23.5505,  -46.6333,  30),
    at(Mobile, "179.240.10.0/24",      "Sao Paulo",      "BR", -23.5505,  -46.6333, 100),
    at(Home,   "179.210.10.0/24",      "Rio de Janeiro", "BR", -22.9068,  -43.1729,  30),
    at(Mobile, "187.26.10.0/24",       "Rio de Janeiro", "BR", -22.9068,  -43.1729, 100),
    at(Home,   "126.10.10.0/24",       "Tokyo",          "JP",  35.6762,  139.6503,  20),
    at(Home,   "2400:4051:1a00::/48",  "Tokyo",          "JP",  35.6762,  139.6503,  50),
    at(Mobile, "49.96.10.0/24",        "Tokyo",          "JP",  35.6762,  139.6503, 100),
    at(Home,   "60.36.10.0/24",        "Osaka",          "JP",  34.6937,  135.5023,  20),
    at(Mobile, "1.66.10.0/24",         "Osaka",          "JP",  34.6937,  135.5023, 100),
    at(Home,   "211.36.10.0/24",       "Seoul",          "KR",  37.5665,  126.9780,  20),
    at(Home,   "116.86.10.0/24",       "Singapore",      "SG",   1.3521,  103.8198,  20),
    at(Cloud,  "13.228.10.0/24",       "Singapore",      "SG",   1.3521,  103.8198, 100),
    at(Home,   "49.36.10.0/24",        "Mumbai",         "IN",  19.0760,   72.8777,  50),
    at(Home,   "106.51.10.0/24",       "Bangalore",      "IN",  12.9716,   77.5946,  50),
    at(Home,   "1.120.10.0/24",        "Sydney",         "AU", -33.8688,  151.2093,  20),
    at(Home,   "2001:8003:1a00::/48",  "Sydney",         "AU", -33.8688,  151.2093,  50),
    at(Home,   "1.128.10.0/24",        "Melbourne",      "AU", -37.8136,  144.9631,  20),
    at(Home,   "105.224.10.0/24",      "Johannesburg",   "ZA", -26.2041,   28.0473,  30),
    at(Home,   "102.88.10.0/24",       "Lagos",          "NG",   6.5244,    3.3792,  50),
    at(Home,   "94.200.10.0/24",       "Dubai",          "AE",  25.2048,   55.2708,  30),
];

/// The built-in location table for every located address `gen` emits.
pub fn geo_table() -> &'static [GeoEntry] {
    static TABLE: OnceLock<Vec<GeoEntry>> = OnceLock::new();
    TABLE.get_or_init(|| PLACES.iter().map(|p| p.1).collect())
}

/// The table entry whose range contains `ip`, if any (linear: the table is small).
pub fn locate(ip: IpAddr) -> Option<&'static GeoEntry> {
    geo_table().iter().find(|e| {
        e.cidr
            .parse::<crate::net::Cidr>()
            .is_ok_and(|c| c.contains(ip))
    })
}

/// An index into the table: a located range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc(usize);

impl Loc {
    /// The entry for this location.
    pub(crate) fn entry(self) -> &'static GeoEntry {
        &geo_table()[self.0.min(PLACES.len() - 1)]
    }

    /// The kind of network.
    pub(crate) fn net(self) -> Net {
        PLACES[self.0.min(PLACES.len() - 1)].0
    }

    /// True for an IPv6 range.
    pub(crate) fn is_v6(self) -> bool {
        self.entry().cidr.contains(':')
    }

    /// The city's fixed offset from UTC in ms (longitude / 15°, rounded; no daylight saving —
    /// synthetic users only need a consistent local day).
    pub(crate) fn utc_offset(self) -> i64 {
        (self.entry().lon / 15.0).round() as i64 * HOUR
    }

    /// A random host address in the range (IPv4 hosts 1–254; IPv6 anywhere in the /48).
    pub(crate) fn host(self, rng: &mut Rng) -> IpAddr {
        self.host_in(rng.below(0x1_0000) as u16, rng.next_u64(), rng)
    }

    /// An address in subnet `subnet` of an IPv6 /48 with interface id `iid` (IPv4: random host).
    pub(crate) fn host_in(self, subnet: u16, iid: u64, rng: &mut Rng) -> IpAddr {
        match base(self.entry().cidr) {
            IpAddr::V4(b) => {
                let host = 1 + rng.below(254) as u32;
                IpAddr::V4(Ipv4Addr::from(u32::from(b) | host))
            }
            IpAddr::V6(b) => {
                let bits = u128::from(b) | (u128::from(subnet) << 64) | u128::from(iid | 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        }
    }

    /// Great-circle distance to another location in km.
    pub(crate) fn km_to(self, other: Loc) -> f64 {
        let (a, b) = (self.entry(), other.entry());
        km(a.lat, a.lon, b.lat, b.lon)
    }
}

/// The network address of a table CIDR (the table is static and checked by a test).
fn base(cidr: &str) -> IpAddr {
    let addr = cidr.split('/').next().unwrap_or(cidr);
    addr.parse()
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(81, 2, 69, 0)))
}

/// The first range of `city` on a network of kind `net` (IPv4 preferred).
pub(crate) fn find(city: &str, net: Net) -> Option<Loc> {
    let matching = |v6: bool| {
        PLACES
            .iter()
            .position(|p| p.1.city == city && p.0 == net && p.1.cidr.contains(':') == v6)
    };
    matching(false).or_else(|| matching(true)).map(Loc)
}

/// Every residential IPv6 range.
pub(crate) fn all_v6_homes() -> Vec<Loc> {
    (0..PLACES.len())
        .map(Loc)
        .filter(|l| l.net() == Net::Home && l.is_v6())
        .collect()
}

/// Every location of a kind of network (IPv4 only), in table order.
pub(crate) fn all_v4(net: Net) -> Vec<Loc> {
    (0..PLACES.len())
        .map(Loc)
        .filter(|l| l.net() == net && !l.is_v6())
        .collect()
}

/// Haversine distance in km.
pub(crate) fn km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Cidr;

    fn is_private_or_doc(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                v4.is_private()
                    || v4.is_loopback()
                    || v4.is_link_local()
                    || v4.is_documentation()
                    || v4.is_multicast()
                    || o[0] == 0
                    || o[0] >= 240
                    || (o[0] == 100 && (64..128).contains(&o[1]))
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                s[0] == 0x2001 && s[1] == 0x0db8 || (s[0] & 0xfe00) == 0xfc00 || s[0] < 0x2000
            }
        }
    }

    #[test]
    fn table_is_well_formed_and_public() {
        let t = geo_table();
        assert!(t.len() >= 30);
        let cities: std::collections::HashSet<_> = t.iter().map(|e| e.city).collect();
        assert!(cities.len() >= 30, "{} cities", cities.len());
        assert!(t.iter().filter(|e| e.cidr.contains(':')).count() >= 3);
        for e in t {
            let c: Cidr = e.cidr.parse().expect("valid CIDR");
            let prefix: u8 = e
                .cidr
                .split('/')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("prefix");
            assert!(prefix == 24 || prefix == 48, "{}", e.cidr);
            assert!(!is_private_or_doc(base(e.cidr)), "{}", e.cidr);
            assert_eq!(e.country.len(), 2);
            assert!(e.lat.abs() <= 90.0 && e.lon.abs() <= 180.0);
            assert_eq!(c.to_string(), e.cidr, "CIDR is in canonical form");
        }
    }

    #[test]
    fn hosts_fall_in_their_range_and_are_located() {
        let mut rng = Rng::new(5);
        for i in 0..PLACES.len() {
            let loc = Loc(i);
            let ip = loc.host(&mut rng);
            let found = locate(ip).expect("located");
            assert_eq!(found.cidr, loc.entry().cidr);
        }
        assert!(locate("203.0.113.9".parse().expect("ip")).is_none());
    }

    #[test]
    fn distances_are_sane() {
        let london = find("London", Net::Home).expect("london");
        let ny = find("New York", Net::Home).expect("ny");
        let d = london.km_to(ny);
        assert!((5500.0..5650.0).contains(&d), "{d}");
        let ams = find("Amsterdam", Net::Mobile).expect("ams");
        let bru = find("Brussels", Net::Mobile).expect("bru");
        assert!(ams.km_to(bru) < 500.0);
        assert_eq!(london.utc_offset(), 0);
        assert_eq!(ny.utc_offset(), -5 * HOUR);
    }
}
