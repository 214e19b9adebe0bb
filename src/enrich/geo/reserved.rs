//! Which addresses a GeoIP database can place: public unicast only. Private, loopback,
//! link-local, shared (CGNAT), documentation, benchmarking, multicast and reserved ranges are
//! answered `None` without a lookup: a database either has nothing for them or something
//! misleading (a `10.x` client is in *your* network, wherever that is).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address a lookup should use: IPv4-mapped (`::ffff:a.b.c.d`) and NAT64
/// (`64:ff9b::a.b.c.d`, RFC 6052) IPv6 become the IPv4 address they carry.
pub fn lookup_form(ip: IpAddr) -> IpAddr {
    match crate::net::canonical(ip) {
        IpAddr::V6(v6) => nat64(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn nat64(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let wkp = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0);
    wkp.then(|| Ipv4Addr::from(u128::from(v6) as u32))
}

/// True if `ip` (in [`lookup_form`]) is a public unicast address worth looking up.
pub fn is_locatable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_public(v4),
        IpAddr::V6(v6) => v6_public(v6),
    }
}

fn v4_public(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = a == 0
        || ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_documentation()
        || ip.is_multicast()
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19));
    !special
}

fn v6_public(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Global unicast is 2000::/3; everything else (loopback, ULA fc00::/7, link-local
    // fe80::/10, multicast, unspecified) has no place.
    let global = (s[0] & 0xe000) == 0x2000;
    let documentation = (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x3fff && s[1] < 0x1000);
    // 2001::/23: IETF protocol assignments (Teredo, benchmarking, ORCHID).
    let ietf = s[0] == 0x2001 && s[1] < 0x0200;
    global && !documentation && !ietf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> bool {
        is_locatable(lookup_form(s.parse().unwrap()))
    }

    #[test]
    fn public_addresses_are_locatable() {
        for s in [
            "81.2.69.160",
            "8.8.8.8",
            "2a00:23c4:1a00::1",
            "::ffff:81.2.69.1",
        ] {
            assert!(ok(s), "{s}");
        }
        assert_eq!(
            lookup_form("64:ff9b::5102:45a0".parse().unwrap()),
            "81.2.69.160".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn special_ranges_are_not() {
        let special = [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.1.2.3",
            "192.0.0.8",
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "2001::1",
            "::ffff:10.0.0.1",
            "::ffff:203.0.113.5",
            "64:ff9b::a00:1",
        ];
        for s in special {
            assert!(!ok(s), "{s}");
        }
    }
}
