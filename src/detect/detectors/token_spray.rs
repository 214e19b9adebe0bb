//! `token_spray` (DESIGN §6): one client address presenting many distinct tokens that fail
//! as unknown — never accepted before, or rejected as invalid — in a sliding window.
//!
//! Accepted first uses do not count (every new or refreshed token is "never seen" once:
//! an office NAT whose users refresh short-lived tokens is not a spray), nor do expired or
//! revoked tokens (real keys once, `revoked_reuse`'s job) or 403s (a valid token). While
//! most known tokens fail (an auth outage) nothing is reported: see
//! [`Health`](super::health::Health).

use std::io::Write;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::health::Health;
use super::token_spray_kit::{before, is_spray_attempt, ms, token_hash, TokenSet};
use super::{from_part, refill, write_part, Detector, Pairs};
use crate::config::detectors::token_spray::Settings;
use crate::detect::bounded::{Aged, BoundedMap};
use crate::detect::{Finding, Findings, Obs};
use crate::event::Severity;
use crate::event::{EventTime, TokenId};

/// Token ids shown in evidence, at most.
const SAMPLES: usize = 5;
/// Recent attempted token ids kept (globally) to name samples in evidence.
const NAMES_CAP: usize = 4096;

/// One IP's recent failing tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IpState {
    tokens: TokenSet,
    attempts: u32,
    first: EventTime,
    last: EventTime,
    quiet_until: EventTime,
}

impl Aged for IpState {
    fn last_seen(&self) -> EventTime {
        self.last
    }
}

/// A token id remembered for evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Name {
    id: TokenId,
    last: EventTime,
}

impl Aged for Name {
    fn last_seen(&self) -> EventTime {
        self.last
    }
}

/// The persisted state, as written (borrowing).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    ips: Pairs<'a, IpAddr, IpState>,
    names: Pairs<'a, u64, Name>,
}

/// The persisted state, as read back.
#[derive(Deserialize)]
struct Snapshot {
    ips: Vec<(IpAddr, IpState)>,
    names: Vec<(u64, Name)>,
}

/// The detector.
pub struct TokenSpray {
    settings: Settings,
    ips: BoundedMap<IpAddr, IpState>,
    names: BoundedMap<u64, Name>,
}

impl TokenSpray {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        TokenSpray {
            settings: settings.clone(),
            ips: BoundedMap::new(settings.max_ips),
            names: BoundedMap::new(NAMES_CAP),
        }
    }

    fn finding(&self, ip: IpAddr, st: &IpState, obs: &Obs<'_>) -> Finding {
        let since = before(obs.ev.time, ms(self.settings.window_secs));
        let sample: Vec<&str> = st
            .tokens
            .hashes_since(since)
            .filter_map(|h| self.names.get(&h).map(|n| n.id.as_str()))
            .take(SAMPLES)
            .collect();
        let evidence = json!({
            "distinct_tokens": st.tokens.count_since(since),
            "threshold": self.settings.min_tokens,
            "attempts": st.attempts,
            "window_secs": self.settings.window_secs,
            "sample_tokens": sample,
            "first": st.first.to_string(),
            "last": st.last.to_string(),
        });
        Finding::about_ip(
            "token_spray",
            Severity::Medium,
            ip,
            obs.ev.time,
            evidence,
            self.settings.cooldown_secs,
        )
    }
}

impl Detector for TokenSpray {
    fn name(&self) -> &'static str {
        "token_spray"
    }

    fn observe(&mut self, obs: &Obs<'_>, out: &mut Findings) {
        if !is_spray_attempt(obs) {
            return;
        }
        let (Some(ip), Some(tok)) = (obs.ip_key, &obs.ev.token) else {
            return;
        };
        let t = obs.ev.time;
        let since = before(t, ms(self.settings.window_secs));
        let h = obs.token_hash.unwrap_or_else(|| token_hash(tok));
        // A full map admits an address on its second attempt (bounded.rs); the name is kept
        // only for addresses with state, the only ones whose evidence can show it.
        let Some(st) = self.ips.admit(&ip, || ip, IpState::default) else {
            return;
        };
        let name = self.names.entry(
            &h,
            || h,
            || Name {
                id: tok.clone(),
                last: t,
            },
        );
        name.last = name.last.max(t);
        let cap = self.settings.min_tokens.max(1);
        if st.last < since {
            *st = IpState {
                first: t,
                quiet_until: st.quiet_until,
                ..IpState::default()
            };
        }
        st.attempts = st.attempts.saturating_add(1);
        st.last = st.last.max(t);
        if !st.tokens.add(h, t, since, cap) {
            return;
        }
        if st.tokens.count_since(since) < cap || t < st.quiet_until || obs.health.outage(t) {
            return;
        }
        st.quiet_until = EventTime::from_millis(
            t.as_millis()
                .saturating_add(ms(self.settings.cooldown_secs)),
        );
        let st = st.clone();
        out.push(self.finding(ip, &st, obs));
    }

    fn tick(&mut self, now: EventTime, _health: &Health, _out: &mut Findings) {
        let keep = ms(self.settings.window_secs).max(ms(self.settings.cooldown_secs));
        self.ips.expire(before(now, keep));
        self.names
            .expire(before(now, ms(self.settings.window_secs)));
    }

    fn tracked(&self) -> usize {
        self.ips.len()
    }

    fn evictions(&self) -> u64 {
        self.ips.evictions()
    }

    /// The addresses in their window, the token ids evidence names, and the outage guard.
    fn write_snapshot(&self, out: &mut dyn Write) -> serde_json::Result<()> {
        write_part(
            out,
            &SnapshotRef {
                ips: Pairs(&self.ips),
                names: Pairs(&self.names),
            },
        )
    }

    fn restore(&mut self, v: serde_json::Value) -> Result<(), String> {
        let snap: Snapshot = from_part(v)?;
        refill(&mut self.ips, snap.ips);
        refill(&mut self.names, snap.names);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::token_spray_kit::test_util::{counted, ev, obs, rand_ip, take};
    use super::*;
    use crate::event::{Outcome, Reason};

    fn attempt(d: &mut TokenSpray, f: &mut Findings, secs: i64, ip: &str, tok: &str, r: Outcome) {
        let e = ev(secs, ip, Some(tok), r);
        d.observe(&obs(&e, false), f);
        if secs % 10 == 0 {
            d.tick(EventTime::from_secs(secs), &Health::EMPTY, f);
        }
    }

    const INVALID: Outcome = Outcome::Rejected(Reason::Invalid);

    #[test]
    fn fires_on_many_distinct_unknown_tokens_from_one_ip() {
        let mut d = TokenSpray::new(&Settings::default());
        let mut f = Findings::default();
        let mut got = Vec::new();
        // 24 tokens in 9 minutes, each tried twice; then more of the same within cooldown.
        for i in 0..40i64 {
            let tok = format!("ak_{i:04}");
            attempt(&mut d, &mut f, i * 22, "198.51.100.20", &tok, INVALID);
            attempt(&mut d, &mut f, i * 22 + 3, "198.51.100.20", &tok, INVALID);
            got.extend(take(&mut f));
        }
        assert_eq!(got.len(), 1, "{got:?}");
        let g = &got[0];
        assert_eq!(g.key, "198.51.100.20");
        assert_eq!(g.evidence["distinct_tokens"], 10);
        assert_eq!(g.evidence["attempts"], 19);
        assert_eq!(
            g.evidence["sample_tokens"],
            json!(["ak_0000", "ak_0001", "ak_0002", "ak_0003", "ak_0004"])
        );
        assert_eq!(g.cooldown_ms, 1_800_000);
    }

    #[test]
    fn quiet_on_new_tokens_accepted_and_slow_mistypes_and_expiry() {
        let mut d = TokenSpray::new(&Settings::default());
        let mut f = Findings::default();
        for i in 0..100i64 {
            // An office NAT: users' fresh tokens, accepted on first use.
            attempt(
                &mut d,
                &mut f,
                i * 5,
                "192.0.2.1",
                &format!("n{i}"),
                Outcome::Accepted,
            );
            // Expired tokens refreshed: real keys, not guesses.
            let exp = Outcome::Rejected(Reason::Expired);
            attempt(
                &mut d,
                &mut f,
                i * 5 + 1,
                "192.0.2.1",
                &format!("e{i}"),
                exp,
            );
            // A typo every two minutes: 5 per window.
            attempt(
                &mut d,
                &mut f,
                i * 120,
                "192.0.2.2",
                &format!("t{i}"),
                INVALID,
            );
        }
        assert!(take(&mut f).is_empty());
    }

    #[test]
    fn quiet_during_an_outage() {
        let mut d = TokenSpray::new(&Settings::default());
        let mut f = Findings::default();
        let mut health = Health::default();
        for i in 0..60i64 {
            // Known tokens failing everywhere: the backend is down.
            for k in 0..4 {
                let e = ev(i * 5, &format!("10.1.0.{k}"), Some("known"), INVALID);
                d.observe(&counted(&mut health, &e, true), &mut f);
            }
            // The office NAT's users retrying their (new, so unknown) tokens.
            let e = ev(i * 5 + 1, "192.0.2.1", Some(&format!("n{i}")), INVALID);
            d.observe(&counted(&mut health, &e, false), &mut f);
        }
        assert!(take(&mut f).is_empty());
    }

    #[test]
    fn bounded_under_a_flood_of_addresses_and_tokens() {
        let s = Settings {
            max_ips: 10_000,
            ..Settings::default()
        };
        let mut d = TokenSpray::new(&s);
        let mut f = Findings::default();
        for i in 0..1_000_000u64 {
            let tok = format!("r{i}");
            let e = ev((i / 1000) as i64, "0.0.0.0", Some(&tok), INVALID);
            let o = Obs {
                ip_key: Some(rand_ip(i)),
                ..obs(&e, false)
            };
            d.observe(&o, &mut f);
        }
        assert!(d.tracked() <= 10_000 && d.names.len() <= NAMES_CAP);
        assert!(f.is_empty());
    }
}
