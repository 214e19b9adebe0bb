//! Client-address resolution: peer address, `X-Forwarded-For` behind trusted proxies, or a
//! named field.

use std::net::{IpAddr, Ipv6Addr};

use crate::net::{canonical, Cidr};

/// Parses an address as logs write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]:443` or `[2001:db8::1]`; IPv4-mapped IPv6 becomes IPv4; an IPv6 zone id
/// (`fe80::1%eth0`, `[fe80::1%25eth0]:443`) is dropped. `-` and empty are `None`.
pub fn parse_addr(b: &[u8]) -> Option<IpAddr> {
    let b = b.trim_ascii();
    // Most client addresses are plain dotted quads: parse those by hand (10x cheaper than
    // going through str and std's general parser); everything else takes the full path.
    if let Some(v4) = dotted_quad(b) {
        return Some(IpAddr::V4(v4));
    }
    if let Some(v6) = plain_ipv6(b) {
        return Some(canonical(IpAddr::V6(v6)));
    }
    if b.len() > 64 {
        return None;
    }
    let s = std::str::from_utf8(b).ok()?;
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, _) = rest.split_once(']')?;
        return v6_with_zone(v6).map(|a| canonical(IpAddr::V6(a)));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if s.contains('%') {
        return v6_with_zone(s).map(|a| canonical(IpAddr::V6(a)));
    }
    // `host:port` with an IPv4 host (a bare IPv6 address was handled above).
    let (host, port) = s.rsplit_once(':')?;
    port.bytes().all(|c| c.is_ascii_digit()).then_some(())?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// An IPv6 address with an optional `%zone` suffix. The zone names a local interface, which
/// says nothing about the client, so it is dropped (one client keeps one key); a zone is a
/// non-empty run of visible ASCII.
fn v6_with_zone(s: &str) -> Option<Ipv6Addr> {
    let (addr, zone) = match s.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (s, None),
    };
    if let Some(z) = zone {
        (!z.is_empty() && z.bytes().all(|c| c.is_ascii_graphic())).then_some(())?;
    }
    addr.parse::<Ipv6Addr>().ok()
}

/// A strict dotted quad (`203.0.113.9`): four decimal octets ≤ 255 without leading zeros,
/// exactly what `Ipv4Addr::from_str` accepts. One pass, an octet at a time.
fn dotted_quad(b: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let first = b.get(i).filter(|c| c.is_ascii_digit())?;
        let mut n = u16::from(first - b'0');
        i += 1;
        // A leading 0 is the whole octet (`01` is refused by the `.` test that follows).
        if n != 0 {
            for _ in 0..2 {
                match b.get(i) {
                    Some(c) if c.is_ascii_digit() => n = n * 10 + u16::from(c - b'0'),
                    _ => break,
                }
                i += 1;
            }
        }
        *octet = u8::try_from(n).ok()?;
    }
    (i == b.len()).then(|| octets.into())
}

/// An IPv6 address of hex groups with at most one `::` (`2001:db8::1`, or all eight groups
/// as most gateways log it), by hand; embedded IPv4 and zones take std's general parser.
/// Agrees with std: 1–4 hex digits a group, and a `::` stands for at least one group.
fn plain_ipv6(b: &[u8]) -> Option<Ipv6Addr> {
    let mut groups = [0u16; 8];
    let (mut n, mut gap, mut i) = (0usize, None, 0usize);
    if b.starts_with(b"::") {
        gap = Some(0);
        i = 2;
    }
    while i < b.len() {
        let (mut v, start) = (0u16, i);
        while let Some(d) = b.get(i).and_then(|&c| char::from(c).to_digit(16)) {
            if i - start == 4 {
                return None;
            }
            v = (v << 4) | d as u16;
            i += 1;
        }
        if i == start {
            return None;
        }
        *groups.get_mut(n)? = v;
        n += 1;
        match (b.get(i), b.get(i + 1)) {
            (None, _) => break,
            (Some(b':'), Some(b':')) if gap.is_none() => {
                gap = Some(n);
                i += 2;
            }
            (Some(b':'), Some(_)) => i += 1,
            _ => return None,
        }
    }
    match gap {
        None => (n == 8).then(|| Ipv6Addr::from(groups)),
        Some(g) if n < 8 => {
            // Move the groups after `::` to the end; the ones between are zero.
            let mut out = [0u16; 8];
            out.get_mut(..g)?.copy_from_slice(groups.get(..g)?);
            out.get_mut(8 - (n - g)..)?
                .copy_from_slice(groups.get(g..n)?);
            Some(Ipv6Addr::from(out))
        }
        Some(_) => None,
    }
}

/// How a preset turns its peer address and forwarded-for header into the client address.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    forwarded_for: bool,
    trusted: Vec<Cidr>,
}

impl Resolver {
    /// A resolver; `forwarded_for` selects `X-Forwarded-For` resolution.
    pub fn new(forwarded_for: bool, trusted: &[Cidr]) -> Resolver {
        Resolver {
            forwarded_for,
            trusted: trusted.to_vec(),
        }
    }

    /// True when this resolver reads `X-Forwarded-For`.
    pub fn uses_forwarded_for(&self) -> bool {
        self.forwarded_for
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client: the peer, unless forwarded-for mode is on and the peer is a trusted proxy;
    /// then the header is read right to left and the first untrusted hop is the client. If
    /// every hop is trusted the leftmost is taken; an unparsable hop stops the walk (the last
    /// good address stands), so a spoofed garbage entry cannot inject anything.
    pub fn resolve(&self, peer: Option<IpAddr>, xff: Option<&[u8]>) -> Option<IpAddr> {
        let peer = peer.map(canonical);
        let (Some(p), Some(xff), true) = (peer, xff, self.forwarded_for) else {
            return peer;
        };
        if !self.trusted(p) {
            return peer;
        }
        let mut client = p;
        for hop in xff.rsplit(|&c| c == b',') {
            match parse_addr(hop) {
                Some(ip) => {
                    client = ip;
                    if !self.trusted(ip) {
                        break;
                    }
                }
                None => break,
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod quad_tests {
    use super::*;

    #[test]
    fn dotted_quad_agrees_with_std() {
        for s in [
            "203.0.113.9",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "",
            "a.b.c.d",
            "1.2.3.4 ",
            "1.2.3.-4",
            "10.0.0.00",
        ] {
            let std = s.parse::<std::net::Ipv4Addr>().ok();
            assert_eq!(dotted_quad(s.as_bytes()), std, "{s:?}");
        }
    }

    #[test]
    fn plain_ipv6_agrees_with_std() {
        for s in [
            "2400:4051:1a00:548c:42c4:681a:ebb:c19d",
            "2001:db8:0:0:0:0:0:1",
            "0:0:0:0:0:ffff:c000:201",
            "FFFF:ffff:0:0:0:0:0:0",
            "2001:db8::1",
            "2a01:4f8:d46a:c322::b2cc",
            "::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::8",
            "1::2::3",
            ":::",
            ":1::2",
            "1::2:",
            "2001:db8:0:0:0:0:0:1:2",
            "2001:db8:0:0:0:0:0",
            "2001:db8:0:0:0:0:0:",
            "12345:0:0:0:0:0:0:1",
            "g:0:0:0:0:0:0:1",
            "1:2:3:4:5:6:1.2.3.4",
            "::ffff:1.2.3.4",
            "",
        ] {
            let std = s.parse::<Ipv6Addr>().ok();
            let plain = plain_ipv6(s.as_bytes());
            // The fast path agrees with std on everything but embedded IPv4, which it
            // declines (std then decides).
            assert!(plain.is_none() || plain == std, "{s:?}");
            assert_eq!(plain.is_some(), std.is_some() && !s.contains('.'), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_paths_agree_with_std(s in "[0-9a-fA-F:.]{0,40}") {
            if let Some(v4) = dotted_quad(s.as_bytes()) {
                proptest::prop_assert_eq!(Some(v4), s.parse().ok());
            } else {
                proptest::prop_assert!(s.parse::<std::net::Ipv4Addr>().is_err());
            }
            let std = s.parse::<Ipv6Addr>().ok();
            let plain = plain_ipv6(s.as_bytes());
            proptest::prop_assert!(plain.is_none() || plain == std);
            if !s.contains('.') {
                proptest::prop_assert_eq!(plain, std);
            }
        }

        #[test]
        fn compressed_ipv6_agrees_with_std(groups in proptest::collection::vec(0u16..=0xffff, 8), zeros in 0usize..8, at in 0usize..8) {
            // Real compressed addresses (a zero run written as `::`), which random strings
            // over the alphabet above rarely hit.
            let mut g = groups;
            for x in g.iter_mut().skip(at).take(zeros) {
                *x = 0;
            }
            let text = Ipv6Addr::from(<[u16; 8]>::try_from(g.as_slice()).unwrap()).to_string();
            proptest::prop_assert_eq!(plain_ipv6(text.as_bytes()), text.parse().ok());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn address_forms() {
        assert_eq!(parse_addr(b"10.0.0.1"), Some(ip("10.0.0.1")));
        assert_eq!(parse_addr(b" 10.0.0.1:5678 "), Some(ip("10.0.0.1")));
        assert_eq!(parse_addr(b"2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_addr(b"[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_addr(b"::ffff:192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(parse_addr(b"-"), None);
        assert_eq!(parse_addr(b"host:80"), None);
        assert_eq!(parse_addr(b"[::1"), None);
        assert_eq!(parse_addr(b"fe80::1%eth0"), Some(ip("fe80::1")));
        assert_eq!(parse_addr(b"[fe80::1%25eth0]:443"), Some(ip("fe80::1")));
        assert_eq!(parse_addr(b"[fe80::1%eth0]"), Some(ip("fe80::1")));
        assert_eq!(parse_addr(b"fe80::1%"), None);
        assert_eq!(parse_addr(b"1.2.3.4%eth0"), None);
        assert_eq!(parse_addr(b"fe80::1%et h0"), None);
        assert_eq!(parse_addr(b"::ffff:1.2.3.4%eth0"), Some(ip("1.2.3.4")));
    }

    #[test]
    fn forwarded_for_right_to_left() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let r = Resolver::new(true, &trusted);
        let xff = b"6.6.6.6, 203.0.113.9, 10.1.1.1";
        // Spoofed leftmost entry ignored: the first untrusted hop from the right is the client.
        assert_eq!(
            r.resolve(Some(ip("10.0.0.2")), Some(xff)),
            Some(ip("203.0.113.9"))
        );
        // Untrusted peer: header ignored.
        assert_eq!(
            r.resolve(Some(ip("198.51.100.1")), Some(xff)),
            Some(ip("198.51.100.1"))
        );
        // Garbage hop stops the walk.
        assert_eq!(
            r.resolve(Some(ip("10.0.0.2")), Some(b"1.2.3.4, junk, 10.9.9.9")),
            Some(ip("10.9.9.9"))
        );
        // Peer mode ignores the header.
        let peer = Resolver::new(false, &trusted);
        assert_eq!(
            peer.resolve(Some(ip("10.0.0.2")), Some(xff)),
            Some(ip("10.0.0.2"))
        );
    }
}
