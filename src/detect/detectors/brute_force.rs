//! `brute_force` (DESIGN §6): many rejected checks from one client address (IPv6 grouped by
//! prefix) in a sliding window.
//!
//! Only guesses count: rejections with no token or a token that never had an accepted check.
//! A known token rejected again and again is a client whose key stopped working (an auth
//! outage, a scope change), and revoked or expired tokens are `revoked_reuse`'s incident.
//! While most known tokens fail (an outage, [`Health`](super::health::Health)) nothing is
//! reported: busy services retrying through the outage would each look like a guessing run
//! (`rejection_ratio` reports it).

use std::io::Write;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::health::Health;
use super::token_spray_kit::{before, ms, token_hash, ReasonCounts, TokenSet};
use super::{from_part, refill, write_part, Detector, Pairs};
use crate::config::detectors::brute_force::Settings;
use crate::detect::bounded::{Aged, BoundedMap};
use crate::detect::window::Window;
use crate::detect::{Finding, Findings, Obs};
use crate::event::Severity;
use crate::event::{EventTime, Outcome, Reason};

/// Buckets per window.
const BUCKETS: usize = 10;
/// Distinct tokens remembered per IP (evidence only; the count saturates here).
const TOKENS_CAP: usize = 8;

/// One IP's recent rejections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IpState {
    rejected: Window<BUCKETS>,
    tokens: TokenSet,
    /// Reasons since the window last emptied (evidence).
    reasons: ReasonCounts,
    first: EventTime,
    last: EventTime,
    quiet_until: EventTime,
}

impl Aged for IpState {
    fn last_seen(&self) -> EventTime {
        self.last
    }
}

/// The persisted state, as written (borrowing).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    ips: Pairs<'a, IpAddr, IpState>,
}

/// The persisted state, as read back.
#[derive(Deserialize)]
struct Snapshot {
    ips: Vec<(IpAddr, IpState)>,
}

/// The detector.
pub struct BruteForce {
    settings: Settings,
    ips: BoundedMap<IpAddr, IpState>,
}

impl BruteForce {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        BruteForce {
            settings: settings.clone(),
            ips: BoundedMap::new(settings.max_ips),
        }
    }

    fn window_ms(&self) -> i64 {
        ms(self.settings.window_secs)
    }

    fn finding(&self, ip: IpAddr, st: &IpState, n: u64, obs: &Obs<'_>) -> Finding {
        let since = before(obs.ev.time, self.window_ms());
        let distinct = st.tokens.count_since(since);
        // One token hammered is a misconfigured client more often than an attack.
        let severity = if distinct == 1 {
            Severity::Low
        } else {
            Severity::Medium
        };
        let evidence = json!({
            "rejected": n,
            "threshold": self.settings.min_rejected,
            "window_secs": self.settings.window_secs,
            "distinct_tokens": distinct,
            "distinct_tokens_capped_at": TOKENS_CAP,
            "first": st.first.to_string(),
            "last": st.last.to_string(),
            "top_reasons": st.reasons.top(3),
        });
        Finding::about_ip(
            "brute_force",
            severity,
            ip,
            obs.ev.time,
            evidence,
            self.settings.cooldown_secs,
        )
    }
}

impl Detector for BruteForce {
    fn name(&self) -> &'static str {
        "brute_force"
    }

    fn observe(&mut self, obs: &Obs<'_>, out: &mut Findings) {
        if obs.token_known {
            return;
        }
        let reason = match obs.ev.outcome {
            Outcome::Rejected(Reason::Revoked | Reason::Expired) | Outcome::Accepted => return,
            Outcome::Rejected(r) => r,
        };
        let Some(ip) = obs.ip_key else { return };
        let t = obs.ev.time;
        let (window, width) = (self.window_ms(), self.window_ms() / BUCKETS as i64);
        // A full map admits an address on its second guess (bounded.rs): a flood of
        // one-guess addresses costs a bit test each, not an eviction.
        let Some(st) = self.ips.admit(&ip, || ip, IpState::default) else {
            return;
        };
        if st.rejected.sum_at(t, width) == 0 {
            *st = IpState {
                first: t,
                quiet_until: st.quiet_until,
                ..IpState::default()
            };
        }
        if !st.rejected.add(t, width, 1) {
            return;
        }
        st.last = st.last.max(t);
        st.reasons.add(reason, 1);
        if let Some(tok) = &obs.ev.token {
            let h = obs.token_hash.unwrap_or_else(|| token_hash(tok));
            st.tokens.add(h, t, before(t, window), TOKENS_CAP);
        }
        let n = st.rejected.sum_at(t, width);
        if n < self.settings.min_rejected || t < st.quiet_until || obs.health.outage(t) {
            return;
        }
        st.quiet_until = EventTime::from_millis(
            t.as_millis()
                .saturating_add(ms(self.settings.cooldown_secs)),
        );
        let (st, ip) = (st.clone(), ip);
        out.push(self.finding(ip, &st, n, obs));
    }

    fn tick(&mut self, now: EventTime, _health: &Health, _out: &mut Findings) {
        // Keep an IP through its cooldown so a continuing attack is not re-reported.
        let keep = self.window_ms().max(ms(self.settings.cooldown_secs));
        self.ips.expire(before(now, keep));
    }

    fn tracked(&self) -> usize {
        self.ips.len()
    }

    fn evictions(&self) -> u64 {
        self.ips.evictions()
    }

    /// The addresses in their window (with cooldowns) and the outage guard.
    fn write_snapshot(&self, out: &mut dyn Write) -> serde_json::Result<()> {
        write_part(
            out,
            &SnapshotRef {
                ips: Pairs(&self.ips),
            },
        )
    }

    fn restore(&mut self, v: serde_json::Value) -> Result<(), String> {
        let snap: Snapshot = from_part(v)?;
        refill(&mut self.ips, snap.ips);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::token_spray_kit::test_util::{ev, obs, rand_ip, take};
    use super::*;

    fn rejected(
        d: &mut BruteForce,
        f: &mut Findings,
        secs: i64,
        ip: &str,
        tok: Option<&str>,
        r: Reason,
    ) {
        let e = ev(secs, ip, tok, Outcome::Rejected(r));
        d.observe(&obs(&e, false), f);
        if secs % 10 == 0 {
            d.tick(EventTime::from_secs(secs), &Health::EMPTY, f);
        }
    }

    #[test]
    fn fires_on_a_guessing_run_once_per_cooldown() {
        let mut d = BruteForce::new(&Settings::default());
        let mut f = Findings::default();
        let mut got = Vec::new();
        // 75 guesses 4 s apart, then another run 20 minutes later.
        for start in [0, 1200] {
            for i in 0..75 {
                let tok = format!("g{i}");
                rejected(
                    &mut d,
                    &mut f,
                    start + i * 4,
                    "203.0.113.7",
                    Some(&tok),
                    Reason::Invalid,
                );
                got.extend(take(&mut f));
            }
        }
        assert_eq!(got.len(), 2, "{got:?}");
        let g = &got[0];
        assert_eq!(g.key, "203.0.113.7");
        assert_eq!(g.ts, EventTime::from_secs(29 * 4));
        assert_eq!(g.evidence["rejected"], 30);
        assert_eq!(g.evidence["distinct_tokens"], TOKENS_CAP);
        assert_eq!(g.severity, Severity::Medium);
        assert_eq!(g.cooldown_ms, 900_000);
    }

    #[test]
    fn quiet_on_slow_failures_and_revoked_keys() {
        let mut d = BruteForce::new(&Settings::default());
        let mut f = Findings::default();
        for i in 0..200 {
            // One failure every 15 s: 20 per window, a noisy client but not a run.
            rejected(
                &mut d,
                &mut f,
                i * 15,
                "198.51.100.1",
                Some("k"),
                Reason::Invalid,
            );
            // An old key hammered every second: revoked_reuse's incident.
            rejected(
                &mut d,
                &mut f,
                i,
                "198.51.100.2",
                Some("old"),
                Reason::Revoked,
            );
        }
        assert!(take(&mut f).is_empty());
    }

    #[test]
    fn bounded_under_a_flood_of_addresses() {
        let s = Settings {
            max_ips: 10_000,
            ..Settings::default()
        };
        let mut d = BruteForce::new(&s);
        let mut f = Findings::default();
        for i in 0..1_000_000u64 {
            let e = ev(
                (i / 1000) as i64,
                "0.0.0.0",
                None,
                Outcome::Rejected(Reason::Invalid),
            );
            let o = Obs {
                ip_key: Some(rand_ip(i)),
                ..obs(&e, false)
            };
            d.observe(&o, &mut f);
        }
        assert!(d.tracked() <= 10_000);
        assert!(d.evictions() >= 990_000);
        assert!(f.is_empty());
    }
}
