//! `distributed_spray` (DESIGN §6): low and slow guessing — many addresses, each trying a
//! few never-seen tokens, over a long window. Each address alone stays under `brute_force`
//! and `token_spray`; together they are one incident (key `global`).
//!
//! A campaign stands out from the background scanning every public API sees (random tokens
//! from random addresses, one each, a few an hour and now and then a busier hour) in one of
//! two ways, and either fires:
//! - **several tokens per address**: at least `min_ips` addresses each tried at least
//!   `min_tokens_per_ip` distinct never-seen tokens (a botnet working through a list gives
//!   each member a few; a scanner tries one), with at least `min_tokens` such tokens, above
//!   mean + `sigmas` σ of this statistic's hourly history;
//! - **sheer width**: at least `wide_min_ips` addresses and `wide_min_tokens` tokens of any
//!   shape, above mean + `sigmas` σ of the total's hourly history — a one-token-per-address
//!   campaign must be clearly wider than a busy hour of background.
//!
//! What it must not confuse with a spray:
//! - users mistyping keys: each retries the same wrong value, so there are about as many
//!   tokens as addresses; a spray needs `min_tokens` distinct tokens, and the count must
//!   also stand out from this gateway's own history (mean + `sigmas` σ of hourly samples,
//!   as Splunk's distributed-spray search does), so a large population's normal typo rate
//!   does not fire;
//! - an auth outage: known tokens failing are not never-seen, and while most known tokens
//!   fail the detector stands down ([`Health`]);
//! - one address spraying: it makes more than `max_attempts_per_ip` attempts, which takes
//!   it out of this count (`token_spray` reports it).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::health::Health;
use super::token_spray_kit::{before, is_spray_attempt, ms, token_hash, TokenSet};
use super::{Detector, Pairs};
use crate::config::detectors::distributed_spray::Settings;
use crate::detect::bounded::{Aged, BoundedMap};
use crate::detect::window::Window;
use crate::detect::{Finding, Findings, Obs};
use crate::event::EventTime;
use crate::event::Severity;

/// Buckets per window.
const BUCKETS: usize = 6;
/// Evaluate at most this often (event time).
const EVAL_MS: i64 = 60_000;
/// Hourly samples kept for the baseline (one day).
const SAMPLES: usize = 24;
/// Addresses listed in evidence.
const TOP: usize = 10;

/// One address's failing never-seen tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IpState {
    attempts: Window<BUCKETS>,
    tokens: TokenSet,
    last: EventTime,
}

impl Aged for IpState {
    fn last_seen(&self) -> EventTime {
        self.last
    }
}

/// What one evaluation counted over the qualifying addresses (totals only: the per-address
/// list is built, and sorted, only for a record's evidence).
#[derive(Default)]
struct Tally {
    /// Qualifying addresses.
    ips: usize,
    tokens: usize,
    attempts: u64,
    /// Addresses with at least `min_tokens_per_ip` tokens, and their tokens.
    multi_ips: usize,
    multi_tokens: usize,
}

/// Hourly samples of both token counts (the baselines).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct History {
    /// All qualifying addresses' tokens.
    samples: Vec<u32>,
    /// Tokens of addresses with several (older snapshots lack it).
    #[serde(default)]
    multi: Vec<u32>,
    next: EventTime,
}

/// Mean and standard deviation of hourly samples.
fn stats(samples: &[u32]) -> Option<(f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = samples
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    Some((mean, var.sqrt()))
}

fn push_sample(v: &mut Vec<u32>, x: usize) {
    if v.len() >= SAMPLES {
        v.remove(0);
    }
    v.push(u32::try_from(x).unwrap_or(u32::MAX));
}

impl History {
    /// Mean and standard deviation of the total.
    fn stats(&self) -> Option<(f64, f64)> {
        stats(&self.samples)
    }

    fn push(&mut self, t: &Tally) {
        push_sample(&mut self.samples, t.tokens);
        push_sample(&mut self.multi, t.multi_tokens);
    }
}

/// The persisted state, as written (borrowing).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    history: &'a History,
    ips: Pairs<'a, IpAddr, IpState>,
    next_eval: EventTime,
    quiet_until: EventTime,
    armed: bool,
}

/// The persisted state, as read back.
#[derive(Deserialize)]
struct Snapshot {
    history: History,
    #[serde(default)]
    ips: Vec<(IpAddr, IpState)>,
    #[serde(default)]
    next_eval: Option<EventTime>,
    /// Older snapshots lack the rest: an empty guard, no cooldown, armed (as a fresh start).
    #[serde(default)]
    quiet_until: Option<EventTime>,
    #[serde(default)]
    armed: Option<bool>,
}

/// The detector.
pub struct DistributedSpray {
    settings: Settings,
    ips: BoundedMap<IpAddr, IpState>,
    history: History,
    next_eval: EventTime,
    quiet_until: EventTime,
    armed: bool,
}

impl DistributedSpray {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        DistributedSpray {
            settings: settings.clone(),
            ips: BoundedMap::new(settings.max_ips),
            history: History::default(),
            next_eval: EventTime::from_millis(i64::MIN),
            quiet_until: EventTime::from_millis(i64::MIN),
            armed: true,
        }
    }

    fn width(&self) -> i64 {
        (ms(self.settings.window_secs) / BUCKETS as i64).max(1)
    }

    /// The qualifying addresses as (attempts, address, distinct tokens), in map order.
    fn qualifying(&self, now: EventTime) -> impl Iterator<Item = (u64, IpAddr, usize)> + '_ {
        let since = before(now, ms(self.settings.window_secs));
        let max = u64::from(self.settings.max_attempts_per_ip);
        let width = self.width();
        self.ips
            .iter()
            .map(move |(ip, st)| {
                (
                    st.attempts.sum_at(now, width),
                    *ip,
                    st.tokens.count_since(since),
                )
            })
            .filter(move |(n, _, toks)| *n > 0 && *n <= max && *toks > 0)
    }

    fn tally(&self, now: EventTime) -> Tally {
        let per_ip = self.settings.min_tokens_per_ip.max(1);
        self.qualifying(now)
            .fold(Tally::default(), |mut t, (n, _, toks)| {
                t.ips += 1;
                t.tokens += toks;
                t.attempts += n;
                if toks >= per_ip {
                    t.multi_ips += 1;
                    t.multi_tokens += toks;
                }
                t
            })
    }

    /// The `TOP` qualifying addresses by attempts, then address.
    fn top(&self, now: EventTime) -> Vec<(u64, IpAddr, usize)> {
        let mut ips: Vec<_> = self.qualifying(now).collect();
        ips.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        ips.truncate(TOP);
        ips
    }

    /// A token count needed now: `min`, or more if the history of that count says so.
    fn threshold(&self, min: usize, samples: &[u32]) -> f64 {
        let min = min as f64;
        match stats(samples) {
            Some((mean, sd)) => min.max(mean + self.settings.sigmas * sd),
            None => min,
        }
    }

    /// Which rule the tally breaches, with the token threshold it beat.
    fn breach(&self, tally: &Tally) -> Option<(&'static str, f64)> {
        let s = &self.settings;
        let multi = self.threshold(s.min_tokens, &self.history.multi);
        if tally.multi_ips >= s.min_ips && tally.multi_tokens as f64 >= multi {
            return Some(("several_tokens_per_ip", multi));
        }
        let wide = self.threshold(s.wide_min_tokens, &self.history.samples);
        (tally.ips >= s.wide_min_ips && tally.tokens as f64 >= wide).then_some(("wide", wide))
    }

    fn evaluate(&mut self, now: EventTime, outage: bool) -> Option<Finding> {
        let tally = self.tally(now);
        let breach = self.breach(&tally);
        let breached = breach.is_some();
        let warm = self.history.samples.len() >= self.settings.learning_hours.min(SAMPLES);
        if now >= self.history.next {
            // Learning takes every hour; after that an incident is not history (a spray
            // must not raise the bar for the next one).
            if !(warm && breached) {
                self.history.push(&tally);
            }
            self.history.next = EventTime::from_millis(now.as_millis().saturating_add(3_600_000));
        }
        let Some((rule, threshold)) = breach else {
            self.armed = true;
            return None;
        };
        // One record per incident: re-armed only once the count falls back below.
        if !warm || !self.armed || now < self.quiet_until || outage {
            return None;
        }
        self.armed = false;
        self.quiet_until = EventTime::from_millis(
            now.as_millis()
                .saturating_add(ms(self.settings.cooldown_secs)),
        );
        Some(self.finding(&tally, rule, threshold, now))
    }

    fn finding(&self, tally: &Tally, rule: &str, threshold: f64, now: EventTime) -> Finding {
        let s = &self.settings;
        let top: Vec<_> = self
            .top(now)
            .iter()
            .map(|(n, ip, toks)| json!({"ip": ip.to_string(), "attempts": n, "tokens": toks}))
            .collect();
        let evidence = json!({
            "rule": rule,
            "distinct_ips": tally.ips,
            "distinct_tokens": tally.tokens,
            "ips_with_several_tokens": tally.multi_ips,
            "tokens_of_those_ips": tally.multi_tokens,
            "attempts": tally.attempts,
            "min_ips": s.min_ips,
            "token_threshold": (threshold * 10.0).round() / 10.0,
            "baseline_mean": self.history.stats().map(|(m, _)| (m * 10.0).round() / 10.0),
            "max_attempts_per_ip": s.max_attempts_per_ip,
            "window_secs": s.window_secs,
            "top_ips": top,
        });
        Finding {
            detector: "distributed_spray",
            severity: Severity::Medium,
            key: "global".into(),
            ts: now,
            token: None,
            ip: None,
            user: None,
            evidence,
            cooldown_ms: ms(s.cooldown_secs),
        }
    }
}

impl Detector for DistributedSpray {
    fn name(&self) -> &'static str {
        "distributed_spray"
    }

    fn observe(&mut self, obs: &Obs<'_>, _out: &mut Findings) {
        let t = obs.ev.time;
        if obs.token_known || !is_spray_attempt(obs) {
            return;
        }
        let (Some(ip), Some(tok)) = (obs.ip_key, &obs.ev.token) else {
            return;
        };
        let (width, window) = (self.width(), ms(self.settings.window_secs));
        let cap = self.settings.max_attempts_per_ip as usize + 1;
        // A full map admits an address on its second attempt (bounded.rs).
        let Some(st) = self.ips.admit(&ip, || ip, IpState::default) else {
            return;
        };
        if st.attempts.add(t, width, 1) {
            let h = obs.token_hash.unwrap_or_else(|| token_hash(tok));
            st.tokens.add(h, t, before(t, window), cap);
            st.last = st.last.max(t);
        }
    }

    fn tick(&mut self, now: EventTime, health: &Health, out: &mut Findings) {
        if now < self.next_eval {
            return;
        }
        // On the minute grid of event time, and kept in the snapshot: a restored detector
        // evaluates (and samples its baseline) at the very ticks an uninterrupted one did.
        self.next_eval = EventTime::from_millis(
            (now.as_millis().div_euclid(EVAL_MS) + 1).saturating_mul(EVAL_MS),
        );
        self.ips.expire(before(now, ms(self.settings.window_secs)));
        if let Some(f) = self.evaluate(now, health.outage(now)) {
            out.push(f);
        }
    }

    fn tracked(&self) -> usize {
        self.ips.len()
    }

    /// The baseline, the addresses in the window, the outage guard and the cooldown, so a
    /// restart neither forgets a spray under way (nor reports it twice) nor samples a
    /// thinner hour into the baseline than an uninterrupted run.
    fn write_snapshot(&self, out: &mut dyn std::io::Write) -> serde_json::Result<()> {
        let snap = SnapshotRef {
            history: &self.history,
            ips: Pairs(&self.ips),
            next_eval: self.next_eval,
            quiet_until: self.quiet_until,
            armed: self.armed,
        };
        super::write_part(out, &snap)
    }

    fn restore(&mut self, v: serde_json::Value) -> Result<(), String> {
        // Older snapshots hold the history alone.
        let snap = match serde_json::from_value::<Snapshot>(v.clone()) {
            Ok(s) => s,
            Err(_) => Snapshot {
                history: serde_json::from_value(v).map_err(|e| e.to_string())?,
                ips: Vec::new(),
                next_eval: None,
                quiet_until: None,
                armed: None,
            },
        };
        if let Some(t) = snap.next_eval {
            self.next_eval = t;
        }
        if let Some(t) = snap.quiet_until {
            self.quiet_until = t;
        }
        if let Some(a) = snap.armed {
            self.armed = a;
        }
        let mut h = snap.history;
        h.samples.truncate(SAMPLES);
        h.multi.truncate(SAMPLES);
        self.history = h;
        for (ip, st) in snap.ips {
            self.ips.insert(ip, st);
        }
        Ok(())
    }

    fn evictions(&self) -> u64 {
        self.ips.evictions()
    }
}

#[cfg(test)]
mod tests {
    use super::super::token_spray_kit::test_util::{counted, ev, obs, rand_ip, take};
    use super::*;
    use crate::event::{Outcome, Reason};

    const INVALID: Outcome = Outcome::Rejected(Reason::Invalid);
    const HOUR: i64 = 3600;

    /// Runs `hours` of background (a known token accepted every 10 s) plus `extra` events.
    fn run(hours: i64, extra: impl Fn(i64) -> Vec<(String, String, bool)>) -> Vec<Finding> {
        let mut d = DistributedSpray::new(&Settings::default());
        let mut f = Findings::default();
        let mut got = Vec::new();
        let mut health = Health::default();
        for s in (0..hours * HOUR).step_by(10) {
            let e = ev(s, "10.0.0.1", Some("known"), Outcome::Accepted);
            d.observe(&counted(&mut health, &e, true), &mut f);
            for (ip, tok, known) in extra(s) {
                let e = ev(s, &ip, Some(&tok), INVALID);
                d.observe(&counted(&mut health, &e, known), &mut f);
            }
            d.tick(EventTime::from_secs(s), &health, &mut f);
            got.extend(take(&mut f));
        }
        got
    }

    /// 18 IPs, each trying 3 never-seen tokens, spread over 45 minutes from hour 10.
    fn spray(s: i64) -> Vec<(String, String, bool)> {
        let start = 10 * HOUR;
        if !(start..start + 2700).contains(&s) || (s - start) % 50 != 0 {
            return Vec::new();
        }
        let k = (s - start) / 50; // 54 attempts
        vec![(
            format!("203.0.113.{}", 100 + k % 18),
            format!("sp{k}"),
            false,
        )]
    }

    #[test]
    fn fires_on_many_ips_with_few_tokens_each() {
        let got = run(12, spray);
        assert_eq!(got.len(), 1, "{got:?}");
        let g = &got[0];
        assert_eq!(g.key, "global");
        assert!(g.ts >= EventTime::from_secs(10 * HOUR) && g.ts <= EventTime::from_secs(11 * HOUR));
        let top = &g.evidence["top_ips"];
        assert_eq!(top.as_array().map(Vec::len), Some(TOP));
        // Sorted by attempts, then address.
        assert!(top[0]["attempts"].as_u64() >= top[1]["attempts"].as_u64());
    }

    #[test]
    fn quiet_on_mistypes_a_single_ip_and_known_tokens_failing() {
        let got = run(12, |s| {
            let mut v = Vec::new();
            // Every 3 minutes a user mistypes a key and retries the same value twice.
            if s % 180 == 0 {
                let ip = format!("198.51.100.{}", (s / 180) % 250);
                for _ in 0..3 {
                    v.push((ip.clone(), format!("typo{}", s / 180), false));
                }
            }
            // One address spraying 60 tokens in 10 minutes at hour 5.
            if (5 * HOUR..5 * HOUR + 600).contains(&s) {
                v.push(("192.0.2.9".into(), format!("one{s}"), false));
            }
            // An outage at hour 8: known tokens from 40 addresses fail.
            if (8 * HOUR..8 * HOUR + 600).contains(&s) {
                v.push((format!("10.9.0.{}", s % 40), format!("k{}", s % 40), true));
            }
            v
        });
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn learning_and_baseline_hold_it_back() {
        // The same spray in the first hours is not reported (nothing is known yet).
        let early = |s: i64| spray(s + 10 * HOUR - 2 * HOUR);
        assert!(run(4, early).is_empty());
        // A gateway whose hourly count of failing never-seen tokens swings between 10 and
        // 70 learns that as normal; the spray on a quiet hour does not stand out.
        let busy = |s: i64| {
            let every = if (s / HOUR) % 2 == 0 { 360 } else { 50 };
            let mut v = spray(s);
            if s % every == 0 {
                v.push((
                    format!("198.18.{}.{}", (s / 7) % 50, s % 250),
                    format!("b{s}"),
                    false,
                ));
            }
            v
        };
        let got = run(12, busy);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn background_scanning_with_a_busy_hour_is_not_a_campaign() {
        // All day: one random token from a random address every 20 minutes; at hour 9 a busy
        // hour of 21 addresses and 29 tokens (8 addresses try two).
        let got = run(12, |s| {
            let mut v = Vec::new();
            if s % 1200 == 0 {
                v.push((
                    format!("100.64.{}.{}", s % 200, s % 250),
                    format!("bg{s}"),
                    false,
                ));
            }
            let t = s - 9 * HOUR;
            if (0..21 * 150).contains(&t) && t % 150 == 0 {
                let k = t / 150;
                v.push((format!("203.0.113.{}", 10 + k), format!("burst{k}a"), false));
                if k < 8 {
                    v.push((format!("203.0.113.{}", 10 + k), format!("burst{k}b"), false));
                }
            }
            v
        });
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_wide_one_token_per_address_campaign_fires() {
        // 70 addresses, one never-seen token each, in 40 minutes from hour 10.
        let got = run(12, |s| {
            let t = s - 10 * HOUR;
            if (0..70 * 30).contains(&t) && t % 30 == 0 {
                let k = t / 30;
                vec![(
                    format!("198.18.{}.{}", k / 200, k % 200 + 1),
                    format!("w{k}"),
                    false,
                )]
            } else {
                Vec::new()
            }
        });
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].evidence["rule"], "wide");
    }

    #[test]
    fn history_survives_a_restart() {
        let mut d = DistributedSpray::new(&Settings::default());
        d.history.samples = vec![7, 9];
        let mut e = DistributedSpray::new(&Settings::default());
        let mut part = Vec::new();
        d.write_snapshot(&mut part).unwrap();
        assert_eq!(e.restore(serde_json::from_slice(&part).unwrap()), Ok(()));
        assert_eq!(e.history.samples, vec![7, 9]);
        // An older snapshot: the history alone.
        let mut old = DistributedSpray::new(&Settings::default());
        let v = serde_json::json!({"samples": [3, 4], "next": 0});
        assert_eq!(old.restore(v), Ok(()));
        assert_eq!(old.history.samples, vec![3, 4]);
        assert!(e.restore(serde_json::json!("junk")).is_err());
    }

    #[test]
    fn bounded_under_a_flood_of_addresses() {
        let s = Settings {
            max_ips: 10_000,
            ..Settings::default()
        };
        let mut d = DistributedSpray::new(&s);
        let mut f = Findings::default();
        for i in 0..1_000_000u64 {
            let tok = format!("r{i}");
            let e = ev((i / 100) as i64, "0.0.0.0", Some(&tok), INVALID);
            let o = Obs {
                ip_key: Some(rand_ip(i)),
                ..obs(&e, false)
            };
            d.observe(&o, &mut f);
            if i % 1000 == 0 {
                d.tick(
                    EventTime::from_secs((i / 100) as i64),
                    &Health::EMPTY,
                    &mut f,
                );
            }
        }
        assert!(d.tracked() <= 10_000);
        assert!(d.evictions() > 0);
    }
}
