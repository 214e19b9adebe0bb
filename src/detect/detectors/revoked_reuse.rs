//! `revoked_reuse` (DESIGN §6): a token that worked, now refused on every use, and used
//! again and again — an old key still deployed after a rotation, or a stolen one replayed.
//!
//! Behaviour first, the log's reason word only as a hint: most gateways log a bare 401/403
//! (nginx's `main`, combined + a token variable) and Vault says `permission denied` for a
//! revoked token, so "revoked" is recognised from what the token does, not what the line
//! says. A token fires when
//! - it has an accepted history (the engine remembers when it was last accepted), and every
//!   use since its first refusal in this streak was refused — whatever the reason; or it was
//!   never accepted as far as the engine knows but the log says `revoked`/`expired` (a key
//!   revoked before tokenwatch started watching);
//! - at least `min_uses` such refusals fall in the window.
//!
//! What it must not confuse with reuse:
//! - a busy token with sporadic refusals (a `401 expired` now and then while its client
//!   refreshes): any accepted use ends the streak;
//! - rotation stragglers: one or two uses of the old key (`min_uses`);
//! - an auth outage, where every known token is refused for minutes: refusals while most
//!   known tokens fail ([`Health`](super::health::Health), and its one-minute twin for the outage's first
//!   minutes) do not count (a revoked key still refused after the outage still fires);
//! - never-seen tokens refused as invalid: guesses, the spray detectors' business.

use std::io::Write;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::health::Health;
use super::token_spray_kit::{before, ms, ReasonCounts};
use super::{from_part, refill, write_part, Detector, Pairs};
use crate::config::detectors::revoked_reuse::Settings;
use crate::detect::bounded::{Aged, BoundedMap};
use crate::detect::window::Window;
use crate::detect::{Finding, Findings, Obs};
use crate::event::Severity;
use crate::event::{EventTime, Outcome, Reason, TokenId};

/// Buckets per window.
const BUCKETS: usize = 10;
/// Client addresses remembered per token for evidence.
const IPS: usize = 5;

/// One token's current streak of refusals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TokenUses {
    uses: Window<BUCKETS>,
    reasons: ReasonCounts,
    ips: [Option<IpAddr>; IPS],
    /// The first refusal of the streak.
    first: EventTime,
    last: EventTime,
    /// When the token was last accepted before the streak (`None`: never, as far as known).
    accepted_until: Option<EventTime>,
    quiet_until: EventTime,
}

impl Aged for TokenUses {
    fn last_seen(&self) -> EventTime {
        self.last
    }
}

impl TokenUses {
    fn note_ip(&mut self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        if self.ips.contains(&Some(ip)) {
            return;
        }
        if let Some(slot) = self.ips.iter_mut().find(|s| s.is_none()) {
            *slot = Some(ip);
        }
    }
}

/// The persisted state, as written (borrowing).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    tokens: Pairs<'a, TokenId, TokenUses>,
}

/// The persisted state, as read back.
#[derive(Deserialize)]
struct Snapshot {
    tokens: Vec<(TokenId, TokenUses)>,
}

/// The detector.
pub struct RevokedReuse {
    settings: Settings,
    tokens: BoundedMap<TokenId, TokenUses>,
}

impl RevokedReuse {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        RevokedReuse {
            settings: settings.clone(),
            tokens: BoundedMap::new(settings.max_tokens),
        }
    }

    fn finding(&self, tok: &TokenId, st: &TokenUses, n: u64, obs: &Obs<'_>) -> Finding {
        let mut ips: Vec<IpAddr> = st.ips.iter().flatten().copied().collect();
        ips.sort();
        let evidence = json!({
            "uses": n,
            "threshold": self.settings.min_uses,
            "window_secs": self.settings.window_secs,
            "revoked": st.reasons.get(Reason::Revoked),
            "expired": st.reasons.get(Reason::Expired),
            "reasons": st.reasons.top(5),
            "accepted_until": st.accepted_until.map(|t| t.to_string()),
            "refused_since": st.first.to_string(),
            "ips": ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "first": st.first.to_string(),
            "last": st.last.to_string(),
        });
        Finding::about_token(
            "revoked_reuse",
            Severity::Medium,
            tok.clone(),
            obs,
            evidence,
            self.settings.cooldown_secs,
        )
    }
}

impl Detector for RevokedReuse {
    fn name(&self) -> &'static str {
        "revoked_reuse"
    }

    fn observe(&mut self, obs: &Obs<'_>, out: &mut Findings) {
        let Outcome::Rejected(reason) = obs.ev.outcome else {
            return;
        };
        let Some(tok) = &obs.ev.token else { return };
        let said = matches!(reason, Reason::Revoked | Reason::Expired);
        // A never-accepted token refused as invalid is a guess, not reuse.
        if obs.last_accepted.is_none() && !said {
            return;
        }
        let t = obs.ev.time;
        // A refusal while most known tokens fail is the outage's, not this token's: it
        // neither counts towards a streak nor fires.
        if obs.health.outage(t) || obs.health.quick_outage(t) {
            return;
        }
        let width = ms(self.settings.window_secs) / BUCKETS as i64;
        let st = self.tokens.entry(tok, || tok.clone(), TokenUses::default);
        // A new streak when the window emptied or the token was accepted since this one
        // began (still in use: sporadic refusals are not reuse).
        let accepted_since = obs.last_accepted.is_some_and(|a| a >= st.first);
        if st.uses.sum_at(t, width) == 0 || accepted_since {
            *st = TokenUses {
                first: t,
                accepted_until: obs.last_accepted,
                quiet_until: st.quiet_until,
                ..TokenUses::default()
            };
        }
        if !st.uses.add(t, width, 1) {
            return;
        }
        st.last = st.last.max(t);
        st.reasons.add(reason, 1);
        st.note_ip(obs.ev.ip);
        let n = st.uses.sum_at(t, width);
        let span = t.as_millis().saturating_sub(st.first.as_millis());
        if n < self.settings.min_uses
            || span < ms(self.settings.min_streak_secs)
            || t < st.quiet_until
        {
            return;
        }
        st.quiet_until = EventTime::from_millis(
            t.as_millis()
                .saturating_add(ms(self.settings.cooldown_secs)),
        );
        let st = st.clone();
        out.push(self.finding(tok, &st, n, obs));
    }

    fn tick(&mut self, now: EventTime, _health: &Health, _out: &mut Findings) {
        let keep = ms(self.settings.window_secs).max(ms(self.settings.cooldown_secs));
        self.tokens.expire(before(now, keep));
    }

    fn tracked(&self) -> usize {
        self.tokens.len()
    }

    fn evictions(&self) -> u64 {
        self.tokens.evictions()
    }

    /// The tokens' streaks (with cooldowns) and both outage guards: a restart in the middle
    /// of a streak neither restarts its count nor forgets an outage under way.
    fn write_snapshot(&self, out: &mut dyn Write) -> serde_json::Result<()> {
        write_part(
            out,
            &SnapshotRef {
                tokens: Pairs(&self.tokens),
            },
        )
    }

    fn restore(&mut self, v: serde_json::Value) -> Result<(), String> {
        let snap: Snapshot = from_part(v)?;
        refill(&mut self.tokens, snap.tokens);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::token_spray_kit::test_util::{counted, ev, take};
    use super::*;

    /// Drives the detector the way the engine does: remembers when each token was last
    /// accepted and hands that over with every event.
    #[derive(Default)]
    struct Drive {
        accepted: HashMap<String, EventTime>,
        health: Health,
        got: Vec<Finding>,
    }

    impl Drive {
        fn at(&mut self, d: &mut RevokedReuse, secs: i64, ip: &str, tok: &str, o: Outcome) {
            let e = ev(secs, ip, Some(tok), o);
            let last = self.accepted.get(tok).copied();
            let o2 = Obs {
                last_accepted: last,
                ..counted(&mut self.health, &e, last.is_some())
            };
            let mut f = Findings::default();
            d.observe(&o2, &mut f);
            if secs % 10 == 0 {
                d.tick(EventTime::from_secs(secs), &self.health, &mut f);
            }
            self.got.extend(take(&mut f));
            if o == Outcome::Accepted {
                self.accepted.insert(tok.to_string(), e.time);
            }
        }
    }

    const OK: Outcome = Outcome::Accepted;

    #[test]
    fn fires_on_an_old_key_still_in_use_whatever_the_log_says() {
        for reason in [
            Reason::Revoked,
            Reason::Invalid,
            Reason::Forbidden,
            Reason::Other,
        ] {
            let mut d = RevokedReuse::new(&Settings::default());
            let mut r = Drive::default();
            r.at(&mut d, 0, "10.0.0.1", "ak_old", OK);
            r.at(&mut d, 100, "10.0.0.1", "ak_old", OK);
            for i in 0..20i64 {
                let ip = format!("192.0.2.{}", 50 + i % 7);
                r.at(
                    &mut d,
                    1000 + i * 28,
                    &ip,
                    "ak_old",
                    Outcome::Rejected(reason),
                );
            }
            assert_eq!(r.got.len(), 1, "{reason:?}: {:?}", r.got);
            let g = &r.got[0];
            assert_eq!(
                (g.key.as_str(), g.ts),
                ("ak_old", EventTime::from_secs(1000 + 4 * 28))
            );
            assert_eq!(g.token.as_ref().map(TokenId::as_str), Some("ak_old"));
            assert_eq!(g.evidence["uses"], 5);
            assert_eq!(g.evidence["accepted_until"], "1970-01-01T00:01:40.000Z");
            assert_eq!(g.evidence["refused_since"], "1970-01-01T00:16:40.000Z");
            assert_eq!(g.evidence["reasons"][0]["reason"], reason.as_str());
            assert_eq!(
                g.evidence["ips"],
                json!([
                    "192.0.2.50",
                    "192.0.2.51",
                    "192.0.2.52",
                    "192.0.2.53",
                    "192.0.2.54"
                ])
            );
            assert_eq!(g.cooldown_ms, 3_600_000);
        }
    }

    #[test]
    fn a_revoked_word_is_enough_without_history() {
        let mut d = RevokedReuse::new(&Settings::default());
        let mut r = Drive::default();
        for i in 0..6i64 {
            r.at(
                &mut d,
                i * 30,
                "10.0.0.9",
                "ak_gone",
                Outcome::Rejected(Reason::Revoked),
            );
        }
        assert_eq!(r.got.len(), 1, "{:?}", r.got);
        assert_eq!(r.got[0].evidence["accepted_until"], serde_json::Value::Null);
    }

    #[test]
    fn quiet_on_busy_tokens_stragglers_guesses_and_outages() {
        let mut d = RevokedReuse::new(&Settings::default());
        let mut r = Drive::default();
        for day in 0..30i64 {
            let t0 = day * 86_400;
            // A busy token, accepted every 10 s, refused as expired now and then (its client
            // refreshes) — a handful of refusals in ten minutes, but never a streak.
            for k in 0..60 {
                let t = t0 + k * 10;
                r.at(&mut d, t, "10.0.0.1", "ak_busy", OK);
                if k % 8 == 3 {
                    let o = Outcome::Rejected(Reason::Expired);
                    r.at(&mut d, t + 1, "10.0.0.1", "ak_busy", o);
                    r.at(&mut d, t + 2, "10.0.0.1", "ak_busy", o);
                }
            }
            // A rotated key tried again twice, 10-50 minutes apart.
            let tok = format!("ak_rot{day}");
            r.at(&mut d, t0 + 700, "10.0.0.2", &tok, OK);
            r.at(
                &mut d,
                t0 + 705,
                "10.0.0.2",
                &tok,
                Outcome::Rejected(Reason::Revoked),
            );
            r.at(
                &mut d,
                t0 + 2500,
                "10.0.0.2",
                &tok,
                Outcome::Rejected(Reason::Revoked),
            );
            // Never-seen tokens refused as invalid are guesses.
            for k in 0..10 {
                let o = Outcome::Rejected(Reason::Invalid);
                r.at(&mut d, t0 + 3000 + k, "10.0.0.3", "ak_guess", o);
            }
        }
        assert!(r.got.is_empty(), "{:?}", r.got);
    }

    #[test]
    fn waits_out_an_outage_and_fires_if_the_streak_outlasts_it() {
        let mut d = RevokedReuse::new(&Settings::default());
        let mut r = Drive::default();
        let known: Vec<String> = (0..30).map(|k| format!("ak_{k}")).collect();
        for tok in &known {
            r.at(&mut d, 0, "10.0.0.1", tok, OK);
        }
        // Five minutes of outage: every known token refused, several times each.
        for s in 0..300i64 {
            let tok = &known[(s % 30) as usize];
            r.at(
                &mut d,
                60 + s,
                "10.0.0.1",
                tok,
                Outcome::Rejected(Reason::Invalid),
            );
        }
        // Recovery: all accepted again, except ak_0 which was revoked meanwhile.
        for s in 0..600i64 {
            let k = (s % 30) as usize;
            let o = if k == 0 {
                Outcome::Rejected(Reason::Invalid)
            } else {
                OK
            };
            r.at(&mut d, 360 + s, "10.0.0.1", &known[k], o);
        }
        assert_eq!(r.got.len(), 1, "{:?}", r.got);
        assert_eq!(r.got[0].key, "ak_0");
        assert!(r.got[0].ts > EventTime::from_secs(360));
    }

    #[test]
    fn bounded_under_a_flood_of_tokens() {
        let s = Settings {
            max_tokens: 10_000,
            ..Settings::default()
        };
        let mut d = RevokedReuse::new(&s);
        let mut f = Findings::default();
        for i in 0..1_000_000i64 {
            let tok = format!("r{i}");
            let e = ev(
                i / 1000,
                "10.0.0.1",
                Some(&tok),
                Outcome::Rejected(Reason::Revoked),
            );
            let o = super::super::token_spray_kit::test_util::obs(&e, false);
            d.observe(&o, &mut f);
        }
        assert!(d.tracked() <= 10_000);
        assert!(d.evictions() >= 990_000);
        assert!(f.is_empty());
    }
}
