//! The rest stage: the per-IP and global detectors (and `revoked_reuse`), cooldowns, the
//! response policy and the record sinks. It sees the events the token stage let through, in
//! the same order, with what the token stage knew of each token.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::token::TokenFacts;
use super::{on_tick_grid, Alias, Cooldown, Decide, TOKEN_IDLE_MS};
use crate::detect::bounded::BoundedMap;
use crate::detect::detectors::health::Health;
use crate::detect::detectors::{token_hash, Detector};
use crate::detect::{Detection, DetectionSink, Findings, Obs};
use crate::event::{AuthEvent, EventTime, TokenId};
use crate::metrics::Metrics;

/// See the module docs.
pub(crate) struct RestStage {
    sources: Arc<[String]>,
    pub(super) aliases: BoundedMap<TokenId, Alias>,
    pub(super) others: Vec<Box<dyn Detector>>,
    /// Known tokens' health (the outage guard), counted once for every detector.
    pub(super) health: Health,
    pub(super) cooldowns: BoundedMap<(&'static str, String), Cooldown>,
    pub(super) sinks: Vec<Box<dyn DetectionSink>>,
    pub(super) policy: Option<Box<dyn Decide>>,
    pub(super) metrics: Option<Metrics>,
    pub(super) watermark: EventTime,
    last_tick: EventTime,
    findings: Findings,
    pub(super) counts: BTreeMap<&'static str, u64>,
    published_evictions: BTreeMap<&'static str, u64>,
}

impl RestStage {
    pub(super) fn new(
        sources: Arc<[String]>,
        others: Vec<Box<dyn Detector>>,
        max_tokens: usize,
    ) -> RestStage {
        RestStage {
            sources,
            aliases: BoundedMap::new(max_tokens),
            others,
            health: Health::default(),
            cooldowns: BoundedMap::new(100_000),
            sinks: Vec::new(),
            policy: None,
            metrics: None,
            watermark: EventTime::from_millis(i64::MIN),
            last_tick: EventTime::from_millis(i64::MIN),
            findings: Findings::default(),
            counts: BTreeMap::new(),
            published_evictions: BTreeMap::new(),
        }
    }

    /// Restored state starts from the snapshot's watermark: the next tick falls where it
    /// would have.
    pub(super) fn resume_at(&mut self, watermark: EventTime) {
        self.watermark = watermark;
        self.last_tick = watermark;
    }

    /// Handles one event the token stage let through; `token_found` holds the token
    /// detectors' findings for it (taken), recorded after the other detectors' as in one
    /// engine.
    pub(crate) fn handle(&mut self, ev: &AuthEvent, facts: TokenFacts, token_found: &mut Findings) {
        if ev.time > self.watermark {
            self.watermark = ev.time;
        }
        // Ticks fall on a fixed grid of event time (the first event past each boundary), so
        // a restored engine ticks where an uninterrupted one did and windows close alike.
        if let Some(hour_crossed) = on_tick_grid(self.watermark, &mut self.last_tick) {
            self.tick(self.watermark, hour_crossed);
        }
        self.health.observe(ev, facts.token_known);
        let source = self
            .sources
            .get(usize::from(ev.source))
            .map_or("", String::as_str);
        let obs = Obs {
            ev,
            source,
            ip_key: facts.ip_key,
            token_known: facts.token_known,
            last_accepted: facts.last_accepted,
            // Only token detectors use the location; they run in the token stage.
            location: None,
            token_hash: ev
                .token
                .as_ref()
                .filter(|_| ev.outcome.is_rejected())
                .map(token_hash),
            health: &self.health,
        };
        for d in &mut self.others {
            d.observe(&obs, &mut self.findings);
        }
        if let (Some(tok), Some(alias)) = (&ev.token, &ev.alias) {
            link(&mut self.aliases, tok, alias, ev.time);
        }
        self.findings.append(token_found);
        self.emit_findings(ev.source);
    }

    fn tick(&mut self, now: EventTime, hour_crossed: Option<i64>) {
        for d in &mut self.others {
            d.tick(now, &self.health, &mut self.findings);
        }
        if let Some(on_the_hour) = hour_crossed {
            let idle = EventTime::from_millis(on_the_hour.saturating_sub(TOKEN_IDLE_MS));
            self.aliases.expire(idle);
        }
        self.cooldowns.expire(now);
        self.emit_findings(u16::MAX);
        self.publish_gauges();
    }

    /// Flushes sinks and publishes gauges (end of batch, shutdown).
    pub(crate) fn flush(&mut self) {
        for s in &mut self.sinks {
            if let Err(e) = s.flush() {
                tracing::error!(%e, "writing detections");
            }
        }
        self.publish_gauges();
    }

    fn publish_gauges(&mut self) {
        let Some(m) = &self.metrics else { return };
        let set = |kind: &str, n: usize| {
            m.tracked
                .with_label_values(&[kind])
                .set(i64::try_from(n).unwrap_or(i64::MAX))
        };
        set("cooldown", self.cooldowns.len());
        let mut evicted = vec![("cooldown", self.cooldowns.evictions())];
        for d in &self.others {
            set(d.name(), d.tracked());
            evicted.push((d.name(), d.evictions()));
        }
        // Maps count evictions cumulatively; the counter gets the increase since last time.
        for (kind, total) in evicted {
            let last = self.published_evictions.entry(kind).or_default();
            if total > *last {
                m.evictions.with_label_values(&[kind]).inc_by(total - *last);
                *last = total;
            }
        }
    }

    /// Turns findings into records, honouring cooldowns.
    fn emit_findings(&mut self, source: u16) {
        if self.findings.is_empty() {
            return;
        }
        let found: Vec<_> = self.findings.drain().collect();
        for f in found {
            let key = (f.detector, f.key.clone());
            if let Some(c) = self.cooldowns.get(&key) {
                if f.ts < c.until {
                    continue;
                }
            }
            let until = EventTime::from_millis(f.ts.as_millis().saturating_add(f.cooldown_ms));
            self.cooldowns.insert(key, Cooldown { until });
            *self.counts.entry(f.detector).or_default() += 1;
            if let Some(m) = &self.metrics {
                m.detections
                    .with_label_values(&[f.detector, f.severity.as_str()])
                    .inc();
            }
            let src = self.sources.get(usize::from(source)).map(String::as_str);
            let alias = f
                .token
                .as_ref()
                .and_then(|t| self.aliases.get(t))
                .map(|a| a.alias.as_str().to_string());
            let mut d = Detection::from_finding(f, src);
            // The handle a revoke API takes (Vault's accessor), for hooks' `{{accessor}}`.
            if let (Some(a), Some(ev)) = (alias, d.evidence.as_object_mut()) {
                ev.insert("accessor".into(), serde_json::Value::String(a));
            }
            if let Some(p) = &mut self.policy {
                p.decide(&mut d);
            }
            for s in &mut self.sinks {
                if let Err(e) = s.emit(&d) {
                    tracing::error!(%e, "writing a detection");
                }
            }
        }
    }
}

/// Remembers that `alias` (an accessor) names the same token as `tok`.
fn link(aliases: &mut BoundedMap<TokenId, Alias>, tok: &TokenId, alias: &TokenId, t: EventTime) {
    let e = aliases.entry(
        tok,
        || tok.clone(),
        || Alias {
            alias: alias.clone(),
            seen: t,
        },
    );
    if e.alias != *alias {
        e.alias = alias.clone();
    }
    e.seen = e.seen.max(t);
}
