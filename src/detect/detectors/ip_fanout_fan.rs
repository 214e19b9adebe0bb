//! `ip_fanout`'s per-token state: one network inline (nearly every token), and a boxed list
//! of recent networks and countries only while a token is seen from more than one.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A network's key: an IPv4 prefix as its high bits (< 2³¹), an IPv6 prefix hashed with
/// the top bit set (so the two families never collide).
pub(crate) fn net_key(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> u32 {
    match crate::net::canonical(ip) {
        IpAddr::V4(a) => {
            let p = u32::from(v4_prefix.clamp(1, 31));
            (u32::from(a) >> (32 - p)) & 0x7fff_ffff
        }
        v6 @ IpAddr::V6(_) => {
            let IpAddr::V6(m) = crate::net::mask(v6, v6_prefix.clamp(1, 128)) else {
                return 0x8000_0000;
            };
            // FNV-1a over the masked bytes: deterministic, no per-process seed.
            let h = m.octets().iter().fold(0x811c_9dc5u32, |h, &b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
            h | 0x8000_0000
        }
    }
}

/// One network seen recently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NetUse {
    pub key: u32,
    /// Seconds since the epoch of its last check.
    pub last: u32,
    /// The first address seen from it while tracked here (a sample for the evidence).
    pub ip: Option<IpAddr>,
}

/// One country seen recently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CountryUse {
    pub cc: [u8; 2],
    pub last: u32,
}

/// Recent networks and countries of a token seen from more than one network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Fan {
    pub nets: Vec<NetUse>,
    pub countries: Vec<CountryUse>,
    /// Seconds since the epoch of the last finding (0: none), so that a long fan-out does
    /// not build a finding per check only for the cooldown to drop it.
    pub fired: u32,
}

impl Fan {
    /// Forgets what was last seen before `cutoff`.
    pub fn prune(&mut self, cutoff: u32) {
        self.nets.retain(|n| n.last >= cutoff);
        self.countries.retain(|c| c.last >= cutoff);
    }

    /// Records a check from network `key` (address `ip`); at most `cap` networks are kept,
    /// the least recently seen giving way.
    pub fn see_net(&mut self, key: u32, ip: IpAddr, now: u32, cap: usize) {
        if let Some(n) = self.nets.iter_mut().find(|n| n.key == key) {
            n.last = n.last.max(now);
            n.ip.get_or_insert(ip);
            return;
        }
        if self.nets.len() >= cap.max(2) {
            if let Some(i) = oldest(self.nets.iter().map(|n| n.last)) {
                self.nets.swap_remove(i);
            }
        }
        self.nets.push(NetUse {
            key,
            last: now,
            ip: Some(ip),
        });
    }

    /// Records a check from country `cc`; at most `cap` countries are kept.
    pub fn see_country(&mut self, cc: [u8; 2], now: u32, cap: usize) {
        if let Some(c) = self.countries.iter_mut().find(|c| c.cc == cc) {
            c.last = c.last.max(now);
            return;
        }
        if self.countries.len() >= cap.max(2) {
            if let Some(i) = oldest(self.countries.iter().map(|c| c.last)) {
                self.countries.swap_remove(i);
            }
        }
        self.countries.push(CountryUse { cc, last: now });
    }

    /// Up to `n` sample addresses, sorted.
    pub fn sample_ips(&self, n: usize) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.nets.iter().filter_map(|x| x.ip).collect();
        ips.sort_unstable();
        ips.truncate(n);
        ips
    }

    /// Country codes, sorted.
    pub fn country_codes(&self) -> Vec<String> {
        let mut cc: Vec<String> = self
            .countries
            .iter()
            .map(|c| String::from_utf8_lossy(&c.cc).into_owned())
            .collect();
        cc.sort_unstable();
        cc
    }
}

fn oldest(lasts: impl Iterator<Item = u32>) -> Option<usize> {
    lasts.enumerate().min_by_key(|&(_, t)| t).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keys_group_by_prefix_and_keep_families_apart() {
        assert_eq!(
            net_key(ip("198.51.100.7"), 24, 48),
            net_key(ip("198.51.100.200"), 24, 48)
        );
        assert_ne!(
            net_key(ip("198.51.100.7"), 24, 48),
            net_key(ip("198.51.101.7"), 24, 48)
        );
        assert_eq!(
            net_key(ip("2001:db8:1:aa::1"), 24, 48),
            net_key(ip("2001:db8:1:bb::2"), 24, 48)
        );
        assert_ne!(
            net_key(ip("2001:db8:1::1"), 24, 48),
            net_key(ip("2001:db8:2::1"), 24, 48)
        );
        assert!(net_key(ip("2001:db8::1"), 24, 48) >= 0x8000_0000);
        assert!(net_key(ip("255.255.255.255"), 24, 48) < 0x8000_0000);
        // IPv4-mapped IPv6 is IPv4.
        assert_eq!(
            net_key(ip("::ffff:198.51.100.9"), 24, 48),
            net_key(ip("198.51.100.7"), 24, 48)
        );
    }

    #[test]
    fn capped_and_sorted() {
        let mut f = Fan::default();
        for i in 0..100u32 {
            f.see_net(i, ip(&format!("10.0.{i}.1")), i, 16);
            f.see_country([b'A' + (i % 26) as u8, b'X'], i, 8);
        }
        assert_eq!(f.nets.len(), 16);
        assert_eq!(f.countries.len(), 8);
        assert!(f.nets.iter().all(|n| n.last >= 84));
        let s = f.sample_ips(10);
        assert_eq!(s.len(), 10);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        f.prune(95);
        assert_eq!(f.nets.len(), 5);
    }
}
