//! `ip_fanout` (DESIGN §6): a token used from many distinct networks or countries within a
//! short window — a leaked key passed around, or used through a proxy pool.
//!
//! Networks, not addresses, are counted (IPv4 /24, IPv6 /48 by default), so a NAT pool or a
//! phone hopping between carrier addresses stays one or two networks. Countries come from
//! the GeoIP database when there is one; without it the network count alone decides. A
//! token costs 16 bytes while it is seen from one network; a second network within the
//! window allocates a small list, dropped again when only one network is left in it.

#[path = "ip_fanout_fan.rs"]
mod fan;

use serde::{Deserialize, Serialize};

use super::off_hours::authenticated;
use super::TokenDetector;
use crate::config::detectors::ip_fanout::Settings;
use crate::detect::{Finding, Findings, Obs};
use fan::{net_key, Fan, NetUse};

/// Countries remembered per fanned-out token.
const MAX_COUNTRIES: usize = 16;
/// Sample addresses in the evidence.
const SAMPLE_IPS: usize = 10;

/// This detector's part of a token's state (16 bytes while one network is in use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Key of the last network.
    net: u32,
    /// Seconds since the epoch of the last check (0: none yet).
    seen: u32,
    /// Recent networks and countries, while more than one network is in the window.
    fan: Option<Box<Fan>>,
}

/// The detector.
pub struct IpFanout {
    settings: Settings,
}

impl IpFanout {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        IpFanout {
            settings: settings.clone(),
        }
    }

    fn window(&self) -> u32 {
        u32::try_from(self.settings.window_secs.max(1)).unwrap_or(u32::MAX)
    }

    fn fires(&self, fan: &Fan) -> bool {
        fan.nets.len() as u64 >= u64::from(self.settings.min_networks.max(2))
            || fan.countries.len() as u64 >= u64::from(self.settings.min_countries.max(2))
    }

    fn finding(&self, fan: &Fan, obs: &Obs<'_>) -> Option<Finding> {
        let token = obs.ev.token.clone()?;
        let s = &self.settings;
        let evidence = serde_json::json!({
            "networks": fan.nets.len(),
            "min_networks": s.min_networks,
            "countries": fan.country_codes(),
            "min_countries": s.min_countries,
            "sample_ips": fan.sample_ips(SAMPLE_IPS),
            "window_secs": s.window_secs,
            "ipv4_prefix": s.ipv4_prefix,
            "ipv6_prefix": s.ipv6_prefix,
        });
        Some(Finding::about_token(
            "ip_fanout",
            s.severity,
            token,
            obs,
            evidence,
            s.cooldown_secs,
        ))
    }
}

impl TokenDetector for IpFanout {
    type State = State;

    fn name(&self) -> &'static str {
        "ip_fanout"
    }

    /// Nothing outside the tokens' parts (its networks are in each token's `State`).
    fn write_snapshot(&self, out: &mut dyn std::io::Write) -> serde_json::Result<()> {
        super::write_nothing(out)
    }

    fn restore(&mut self, _v: serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    fn observe(&mut self, st: &mut State, obs: &Obs<'_>, out: &mut Findings) {
        if !authenticated(obs) {
            return;
        }
        let Some(ip) = obs.ev.ip else { return };
        let now =
            u32::try_from(obs.ev.time.as_millis().div_euclid(1000).max(1)).unwrap_or(u32::MAX);
        let cutoff = now.saturating_sub(self.window());
        let key = net_key(ip, self.settings.ipv4_prefix, self.settings.ipv6_prefix);
        let single = st.fan.is_none();
        if single && (st.seen == 0 || st.net == key || st.seen < cutoff) {
            st.seen = if st.net == key { st.seen.max(now) } else { now };
            st.net = key;
            return;
        }
        let fan = st.fan.get_or_insert_with(|| {
            Box::new(Fan {
                nets: vec![NetUse {
                    key: st.net,
                    last: st.seen,
                    ip: None,
                }],
                countries: Vec::new(),
                fired: 0,
            })
        });
        fan.prune(cutoff);
        let cap = usize::try_from(self.settings.max_networks).unwrap_or(usize::MAX);
        fan.see_net(key, ip, now, cap);
        if let Some(cc) = obs.location.and_then(|l| l.country) {
            fan.see_country(cc, now, MAX_COUNTRIES);
        }
        let cooldown = u32::try_from(self.settings.cooldown_secs).unwrap_or(u32::MAX);
        let cooled = fan.fired == 0 || now >= fan.fired.saturating_add(cooldown);
        if cooled && self.fires(fan) {
            if let Some(f) = self.finding(fan, obs) {
                out.push(f);
                fan.fired = now;
            }
        }
        if fan.nets.len() <= 1 {
            st.fan = None;
        }
        st.net = key;
        st.seen = now;
    }
}

#[cfg(test)]
#[path = "ip_fanout_tests.rs"]
mod tests;
