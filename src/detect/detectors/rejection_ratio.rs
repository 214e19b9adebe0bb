//! `rejection_ratio` (DESIGN §6): the share of rejected token checks over a sliding window,
//! globally and per source — the detection twin of the `HighTokenFailureRate` alert.
//!
//! A high ratio alone is not enough on real traffic: a quiet night with one brute-forcing
//! IP can push the global share over half. That is `brute_force`'s incident, not a
//! gateway-wide one, so this detector also asks for breadth: rejections from at least
//! `min_ips` client addresses, and the ratio must still be above the threshold with the
//! single noisiest address left out. The condition must then hold for `sustain_secs`.

use std::io::Write;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::health::Health;
use super::token_spray_kit::{before, ms, ReasonCounts};
use super::{from_part, refill, write_part, Detector, Pairs};
use crate::config::detectors::rejection_ratio::Settings;
use crate::detect::bounded::{Aged, BoundedMap};
use crate::detect::window::Window;
use crate::detect::{Finding, Findings, Obs};
use crate::event::Severity;
use crate::event::{EventTime, Outcome, Reason};

/// Buckets per window.
const BUCKETS: usize = 10;
/// Sources tracked separately, at most (sources come from config, this is a safety cap).
const MAX_SOURCES: usize = 64;

/// One IP's rejections in the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IpRejections {
    rejected: Window<BUCKETS>,
    last: EventTime,
}

impl Aged for IpRejections {
    fn last_seen(&self) -> EventTime {
        self.last
    }
}

/// Counters for the global scope or one source.
#[derive(Clone)]
struct Scope {
    name: String,
    checked: Window<BUCKETS>,
    rejected: Window<BUCKETS>,
    reasons: [Window<BUCKETS>; 5],
    ips: BoundedMap<IpAddr, IpRejections>,
    above_since: Option<EventTime>,
    /// No new finding before this (the cooldown, kept here too so one incident is one
    /// finding rather than one per tick).
    quiet_until: EventTime,
}

/// A scope as written (borrowing).
#[derive(Serialize)]
struct ScopeRef<'a> {
    name: &'a str,
    checked: &'a Window<BUCKETS>,
    rejected: &'a Window<BUCKETS>,
    reasons: &'a [Window<BUCKETS>; 5],
    ips: Pairs<'a, IpAddr, IpRejections>,
    above_since: Option<EventTime>,
    quiet_until: EventTime,
}

impl<'a> From<&'a Scope> for ScopeRef<'a> {
    fn from(s: &'a Scope) -> Self {
        ScopeRef {
            name: &s.name,
            checked: &s.checked,
            rejected: &s.rejected,
            reasons: &s.reasons,
            ips: Pairs(&s.ips),
            above_since: s.above_since,
            quiet_until: s.quiet_until,
        }
    }
}

/// A scope as read back.
#[derive(Deserialize)]
struct ScopeSnap {
    name: String,
    checked: Window<BUCKETS>,
    rejected: Window<BUCKETS>,
    reasons: [Window<BUCKETS>; 5],
    ips: Vec<(IpAddr, IpRejections)>,
    above_since: Option<EventTime>,
    quiet_until: EventTime,
}

impl ScopeSnap {
    fn into_scope(self, max_ips: usize) -> Scope {
        let mut ips = BoundedMap::new(max_ips);
        refill(&mut ips, self.ips);
        Scope {
            name: self.name,
            checked: self.checked,
            rejected: self.rejected,
            reasons: self.reasons,
            ips,
            above_since: self.above_since,
            quiet_until: self.quiet_until,
        }
    }
}

/// The persisted state, as written (borrowing).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    global: ScopeRef<'a>,
    /// By source index, like `RejectionRatio::sources`.
    sources: Vec<Option<ScopeRef<'a>>>,
}

/// The persisted state, as read back.
#[derive(Deserialize)]
struct Snapshot {
    global: ScopeSnap,
    sources: Vec<Option<ScopeSnap>>,
}

/// What one evaluation of a scope saw.
struct Reading {
    checked: u64,
    rejected: u64,
    ips: usize,
    top_ip: Option<(IpAddr, u64)>,
}

impl Reading {
    fn ratio(&self) -> f64 {
        self.rejected as f64 / self.checked.max(1) as f64
    }

    /// The ratio with the noisiest IP's rejections left out of both sides (its checks are
    /// taken to be all rejections: an over-estimate of what remains, so conservative).
    fn ratio_without_top(&self) -> f64 {
        let top = self.top_ip.map_or(0, |t| t.1);
        let checked = self.checked.saturating_sub(top);
        self.rejected.saturating_sub(top) as f64 / checked.max(1) as f64
    }
}

impl Scope {
    fn new(name: String, max_ips: usize) -> Scope {
        Scope {
            name,
            checked: Window::default(),
            rejected: Window::default(),
            reasons: Default::default(),
            ips: BoundedMap::new(max_ips),
            above_since: None,
            quiet_until: EventTime::from_millis(i64::MIN),
        }
    }

    fn observe(&mut self, obs: &Obs<'_>, width: i64) {
        let t = obs.ev.time;
        self.checked.add(t, width, 1);
        let Outcome::Rejected(reason) = obs.ev.outcome else {
            return;
        };
        self.rejected.add(t, width, 1);
        if let Some(w) = self.reasons.get_mut(crate::metrics::reason_index(reason)) {
            w.add(t, width, 1);
        }
        // A full map admits an address on its second rejection (bounded.rs): breadth is
        // then counted over the addresses already there, which are more than `min_ips`.
        if let Some(e) = obs
            .ip_key
            .and_then(|ip| self.ips.admit(&ip, || ip, IpRejections::default))
        {
            e.rejected.add(t, width, 1);
            e.last = e.last.max(t);
        }
    }

    fn read(&self, now: EventTime, width: i64) -> Reading {
        let mut ips = 0;
        let mut top_ip: Option<(IpAddr, u64)> = None;
        for (ip, e) in self.ips.iter() {
            let n = e.rejected.sum_at(now, width);
            if n == 0 {
                continue;
            }
            ips += 1;
            if top_ip.is_none_or(|(tip, tn)| n > tn || (n == tn && *ip < tip)) {
                top_ip = Some((*ip, n));
            }
        }
        Reading {
            checked: self.checked.sum_at(now, width),
            rejected: self.rejected.sum_at(now, width),
            ips,
            top_ip,
        }
    }

    fn reasons(&self, now: EventTime, width: i64) -> ReasonCounts {
        let mut r = ReasonCounts::default();
        for (reason, w) in Reason::ALL.iter().zip(&self.reasons) {
            r.add(
                *reason,
                u32::try_from(w.sum_at(now, width)).unwrap_or(u32::MAX),
            );
        }
        r
    }
}

/// The detector.
pub struct RejectionRatio {
    settings: Settings,
    global: Scope,
    /// Per-source scopes indexed by `SourceIdx` (created on first event).
    sources: Vec<Option<Scope>>,
    /// While every event so far came from one source (this index, below `MAX_SOURCES`), that
    /// source's scope would be `global` in all but its name and severity: it is not kept
    /// (half the per-IP work and memory on a one-source deployment), and is built from
    /// `global` when a second source shows up.
    mirror: Option<(usize, String)>,
    /// True once any event was seen.
    seen: bool,
}

impl RejectionRatio {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        RejectionRatio {
            settings: settings.clone(),
            global: Scope::new("global".into(), settings.max_ips),
            sources: Vec::new(),
            mirror: None,
            seen: false,
        }
    }

    /// Keeps the mirror in step with an event from source `i` (named `name`): starts it on
    /// the first event, ends it when another source speaks. True while the event goes to
    /// `global` only.
    fn mirrored(&mut self, i: usize, name: &str) -> bool {
        if !self.seen {
            self.seen = true;
            if i < MAX_SOURCES {
                self.mirror = Some((i, name.to_string()));
                return true;
            }
            return false;
        }
        match &self.mirror {
            Some((j, _)) if *j == i => true,
            Some(_) => {
                self.split();
                false
            }
            None => false,
        }
    }

    /// Ends the mirror: the mirrored source gets its own scope, a copy of `global` (which it
    /// equals up to this event) under its own name.
    fn split(&mut self) {
        let Some((j, name)) = self.mirror.take() else {
            return;
        };
        if self.sources.len() <= j {
            self.sources.resize_with(j + 1, || None);
        }
        if let Some(slot) = self.sources.get_mut(j) {
            *slot = Some(Scope {
                name,
                ..self.global.clone()
            });
        }
    }

    fn width(&self) -> i64 {
        (ms(self.settings.window_secs) / BUCKETS as i64).max(1)
    }

    fn source_scope(&mut self, obs: &Obs<'_>) -> Option<&mut Scope> {
        let i = usize::from(obs.ev.source);
        if i >= MAX_SOURCES {
            return None;
        }
        if self.sources.len() <= i {
            self.sources.resize_with(i + 1, || None);
        }
        let max_ips = self.settings.max_ips;
        let slot = self.sources.get_mut(i)?;
        Some(slot.get_or_insert_with(|| Scope::new(obs.source.to_string(), max_ips)))
    }

    /// True if the reading meets every condition.
    fn breached(&self, r: &Reading) -> bool {
        let s = &self.settings;
        r.checked >= s.min_checks
            && r.rejected >= s.min_rejected
            && r.ips >= s.min_ips
            && r.ratio() > s.ratio
            && r.ratio_without_top() > s.ratio
    }

    fn evaluate(&self, scope: &mut Scope, now: EventTime, severity: Severity) -> Option<Finding> {
        let width = self.width();
        scope.ips.expire(before(now, ms(self.settings.window_secs)));
        let r = scope.read(now, width);
        if !self.breached(&r) {
            scope.above_since = None;
            return None;
        }
        let since = *scope.above_since.get_or_insert(now);
        if now.as_millis() - since.as_millis() < ms(self.settings.sustain_secs)
            || now < scope.quiet_until
        {
            return None;
        }
        scope.quiet_until = EventTime::from_millis(
            now.as_millis()
                .saturating_add(ms(self.settings.cooldown_secs)),
        );
        Some(self.finding(scope, &r, now, since, severity))
    }

    fn finding(
        &self,
        scope: &Scope,
        r: &Reading,
        now: EventTime,
        since: EventTime,
        severity: Severity,
    ) -> Finding {
        let s = &self.settings;
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let evidence = json!({
            "scope": scope.name,
            "checked": r.checked,
            "rejected": r.rejected,
            "ratio": round(r.ratio()),
            "threshold": s.ratio,
            "ratio_without_top_ip": round(r.ratio_without_top()),
            "distinct_ips": r.ips,
            "top_ip": r.top_ip.map(|t| t.0.to_string()),
            "top_ip_rejected": r.top_ip.map_or(0, |t| t.1),
            "window_secs": s.window_secs,
            "above_since": since.to_string(),
            "top_reasons": scope.reasons(now, self.width()).top(3),
        });
        Finding {
            detector: "rejection_ratio",
            severity,
            key: scope.name.clone(),
            ts: now,
            token: None,
            ip: None,
            user: None,
            evidence,
            cooldown_ms: ms(s.cooldown_secs),
        }
    }
}

impl Detector for RejectionRatio {
    fn name(&self) -> &'static str {
        "rejection_ratio"
    }

    fn observe(&mut self, obs: &Obs<'_>, _out: &mut Findings) {
        let width = self.width();
        let only_global = self.mirrored(usize::from(obs.ev.source), obs.source);
        self.global.observe(obs, width);
        if only_global {
            return;
        }
        if let Some(sc) = self.source_scope(obs) {
            sc.observe(obs, width);
        }
    }

    /// Evaluates every scope. Per-source scopes only matter when there are several sources:
    /// with one, the source and `global` are the same incident and only `global` reports
    /// (and while one source is mirrored, its scope evaluates exactly as `global` did).
    fn tick(&mut self, now: EventTime, _health: &Health, out: &mut Findings) {
        let mut global = std::mem::replace(&mut self.global, Scope::new(String::new(), 1));
        if let Some(f) = self.evaluate(&mut global, now, Severity::High) {
            out.push(f);
        }
        self.global = global;
        let mut sources = std::mem::take(&mut self.sources);
        let several = sources.iter().flatten().count() > 1;
        for sc in sources.iter_mut().flatten() {
            let f = self.evaluate(sc, now, Severity::Medium);
            if let Some(f) = f.filter(|_| several) {
                out.push(f);
            }
        }
        self.sources = sources;
    }

    /// A mirrored source counts as the copy of `global` it stands for.
    fn tracked(&self) -> usize {
        let mirror = if self.mirror.is_some() { 2 } else { 1 };
        mirror * self.global.ips.len()
            + self
                .sources
                .iter()
                .flatten()
                .map(|s| s.ips.len())
                .sum::<usize>()
    }

    fn evictions(&self) -> u64 {
        let mirror = if self.mirror.is_some() { 2 } else { 1 };
        mirror * self.global.ips.evictions()
            + self
                .sources
                .iter()
                .flatten()
                .map(|s| s.ips.evictions())
                .sum::<u64>()
    }

    /// Every scope's windows, addresses, breach start and cooldown: a restart during a
    /// storm neither restarts its sustain timer nor reports it again.
    fn write_snapshot(&self, out: &mut dyn Write) -> serde_json::Result<()> {
        write_part(
            out,
            &SnapshotRef {
                global: ScopeRef::from(&self.global),
                sources: self
                    .sources
                    .iter()
                    .map(|s| s.as_ref().map(ScopeRef::from))
                    .collect(),
            },
        )
    }

    fn restore(&mut self, v: serde_json::Value) -> Result<(), String> {
        let snap: Snapshot = from_part(v)?;
        let max_ips = self.settings.max_ips;
        self.global = snap.global.into_scope(max_ips);
        self.sources = snap
            .sources
            .into_iter()
            .take(MAX_SOURCES)
            .map(|s| s.map(|s| s.into_scope(max_ips)))
            .collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::token_spray_kit::test_util::{ev, obs, rand_ip, take};
    use super::*;
    use crate::event::Reason;

    fn feed(d: &mut RejectionRatio, f: &mut Findings, secs: i64, ip: &str, rejected: bool) {
        let outcome = if rejected {
            Outcome::Rejected(Reason::Invalid)
        } else {
            Outcome::Accepted
        };
        let e = ev(secs, ip, Some("ak_1"), outcome);
        d.observe(&obs(&e, true), f);
        if secs % 10 == 0 {
            d.tick(EventTime::from_secs(secs), &Health::EMPTY, f);
        }
    }

    /// Ten minutes of baseline traffic (one check a second from 20 IPs) with `storm`
    /// deciding which seconds are rejections and from where.
    fn run(storm: impl Fn(i64) -> Option<String>) -> Vec<Finding> {
        let mut d = RejectionRatio::new(&Settings::default());
        let mut f = Findings::default();
        let mut all = Vec::new();
        for s in 0..1200 {
            match storm(s) {
                Some(ip) => feed(&mut d, &mut f, s, &ip, true),
                None => feed(&mut d, &mut f, s, &format!("10.0.0.{}", s % 20), false),
            }
            all.extend(take(&mut f));
        }
        all
    }

    #[test]
    fn fires_on_a_broad_sustained_storm_once() {
        // From minute 5, four checks in five fail across all clients.
        let got = run(|s| (s >= 300 && s % 5 != 0).then(|| format!("10.0.0.{}", s % 20)));
        assert_eq!(got.len(), 1, "{got:?}");
        let g = &got[0];
        assert_eq!((g.key.as_str(), g.severity), ("global", Severity::High));
        assert!(g.ts >= EventTime::from_secs(300 + 60));
        assert_eq!(g.evidence["distinct_ips"], 16);
        assert_eq!(g.evidence["top_reasons"][0]["reason"], "invalid");
        assert!(g.evidence["ratio"].as_f64().unwrap_or(0.0) > 0.5);
    }

    #[test]
    fn one_noisy_ip_is_not_a_global_incident() {
        // A single IP making most of the (quiet) traffic fail: brute_force's job.
        let got = run(|s| (s >= 300 && s % 5 != 0).then(|| "203.0.113.9".to_string()));
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_short_burst_is_not_sustained() {
        // 50 s of failures: the 5 m ratio never holds above half for a minute.
        let got = run(|s| {
            (300..350)
                .contains(&s)
                .then(|| format!("10.0.0.{}", s % 20))
        });
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn per_source_only_with_several_sources_and_cooldown_is_set() {
        let mut d = RejectionRatio::new(&Settings::default());
        let mut f = Findings::default();
        let mut all = Vec::new();
        for s in 0..600i64 {
            for src in 0..2u16 {
                let mut e = ev(
                    s,
                    &format!("10.0.1.{}", s % 9),
                    Some("t"),
                    Outcome::Accepted,
                );
                e.source = src;
                if src == 1 && s >= 200 {
                    e.outcome = Outcome::Rejected(Reason::Expired);
                }
                let o = Obs {
                    source: if src == 0 { "a" } else { "b" },
                    ..obs(&e, true)
                };
                d.observe(&o, &mut f);
            }
            if s % 10 == 0 {
                d.tick(EventTime::from_secs(s), &Health::EMPTY, &mut f);
            }
            all.extend(take(&mut f));
        }
        let keys: Vec<&str> = all.iter().map(|f| f.key.as_str()).collect();
        // Source b fails completely; globally only half fails (not above 0.5).
        assert!(keys.contains(&"b"), "{keys:?}");
        assert!(
            !keys.contains(&"global") && !keys.contains(&"a"),
            "{keys:?}"
        );
        assert!(all.iter().all(|f| f.cooldown_ms == 900_000));
    }

    #[test]
    fn a_second_source_inherits_the_first_ones_history() {
        // Source a fails completely from the start; b joins at 400 s, all accepted. While a
        // is alone only global reports, but a's scope has been in breach (and in cooldown
        // after the finding global made) all along: it reports when that cooldown ends,
        // not a sustain period after b appeared.
        let mut d = RejectionRatio::new(&Settings::default());
        let mut f = Findings::default();
        let mut all = Vec::new();
        for s in 0..1200i64 {
            let mut e = ev(
                s,
                &format!("10.0.2.{}", s % 20),
                Some("t"),
                Outcome::Rejected(Reason::Invalid),
            );
            d.observe(
                &Obs {
                    source: "a",
                    ..obs(&e, true)
                },
                &mut f,
            );
            if s >= 400 {
                e.source = 1;
                e.outcome = Outcome::Accepted;
                d.observe(
                    &Obs {
                        source: "b",
                        ..obs(&e, true)
                    },
                    &mut f,
                );
            }
            if s % 10 == 0 {
                d.tick(EventTime::from_secs(s), &Health::EMPTY, &mut f);
            }
            all.extend(take(&mut f));
        }
        let got: Vec<(&str, i64)> = all
            .iter()
            .map(|f| (f.key.as_str(), f.ts.as_millis() / 1000))
            .collect();
        assert_eq!(got, [("global", 110), ("a", 1010)]);
        assert_eq!(d.tracked(), 2 * 20);
    }

    #[test]
    fn bounded_under_a_flood_of_addresses() {
        let mut d = RejectionRatio::new(&Settings::default());
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
        assert!(d.tracked() <= 2 * Settings::default().max_ips);
        assert!(d.evictions() > 0);
    }
}
