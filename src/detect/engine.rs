//! The detection engine: routes each event to every enabled detector, owns the per-token
//! state, applies cooldowns and writes detection records.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::bounded::{Aged, BoundedMap};
use super::detectors::{
    brute_force::BruteForce, distributed_spray::DistributedSpray,
    impossible_travel::ImpossibleTravel, ip_fanout::IpFanout, off_hours::OffHours,
    rate_spike::RateSpike, rejection_ratio::RejectionRatio, revoked_reuse::RevokedReuse,
    token_spray::TokenSpray, Common, Detector, TokenDetector,
};
use super::{Detection, DetectionSink, Findings, Obs};
use crate::config::DetectorsConfig;
use crate::enrich::geo::GeoLookup;
use crate::event::{AuthEvent, EventTime, TokenId};
use crate::metrics::Metrics;
use crate::pipeline::EventSink;

mod rest;
mod split;
mod token;

use rest::RestStage;
pub use split::{default_threads, SplitEngine};
use token::TokenStage;

/// Detectors get a `tick` this often (event time).
const TICK_MS: i64 = 10_000;
/// How often (event time) idle tokens are looked for.
const TOKEN_EXPIRY_EVERY_MS: i64 = 3_600_000;
/// A token idle this long loses its learned state (event time).
const TOKEN_IDLE_MS: i64 = 35 * 86_400_000;
/// Rough bytes per tracked token (map entry + key + state), to turn the byte budget into
/// an entry cap; BENCHMARKS.md has the measured figure.
const BYTES_PER_TOKEN: u64 = 256;

/// Rough bytes per entry of a per-IP detector map (key, window, small token set).
const BYTES_PER_IP: u64 = 512;

/// The per-IP detectors' `max_ips` capped so their maps fit in the 30% of `max_state_bytes`
/// the token map leaves (shared by the five per-IP maps: rejection_ratio's global and
/// per-source scopes, brute_force, token_spray, distributed_spray). With the default 1 GiB
/// budget no default cap changes; a small budget now bounds IP state too (issue 7).
fn ip_caps_within_budget(d: &DetectorsConfig) -> DetectorsConfig {
    let per_map = usize::try_from((d.max_state_bytes / 10).saturating_mul(3) / 5 / BYTES_PER_IP)
        .unwrap_or(usize::MAX)
        .max(1_000);
    let mut d = d.clone();
    d.rejection_ratio.max_ips = d.rejection_ratio.max_ips.min(per_map);
    d.brute_force.max_ips = d.brute_force.max_ips.min(per_map);
    d.token_spray.max_ips = d.token_spray.max_ips.min(per_map);
    d.distributed_spray.max_ips = d.distributed_spray.max_ips.min(per_map);
    d
}

/// The response policy's seam: sets `action` (and `reason`) on a record before it is
/// written anywhere, and may queue the action for hooks. Must not block.
pub trait Decide: Send {
    /// Decides what to do about `d`.
    fn decide(&mut self, d: &mut Detection);
}

/// One token's learned state: each token detector's part, and activity times.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenState {
    /// Last event seen.
    pub last_seen: EventTime,
    /// Last accepted check (older snapshots lack it: 0, as if accepted long ago, until the
    /// token's next accepted check).
    #[serde(default)]
    pub last_accepted: EventTime,
    /// `rate_spike`'s part.
    pub rate: <RateSpike as TokenDetector>::State,
    /// `off_hours`'s part.
    pub hours: <OffHours as TokenDetector>::State,
    /// `impossible_travel`'s part.
    pub travel: <ImpossibleTravel as TokenDetector>::State,
    /// `ip_fanout`'s part.
    pub fanout: <IpFanout as TokenDetector>::State,
}

impl Aged for TokenState {
    fn last_seen(&self) -> EventTime {
        self.last_seen
    }
}

/// A token's linked second handle (Vault's accessor) and when the link was last seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Alias {
    alias: TokenId,
    seen: EventTime,
}

impl Aged for Alias {
    fn last_seen(&self) -> EventTime {
        self.seen
    }
}

/// Cooldown bookkeeping per (detector, key).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Cooldown {
    until: EventTime,
}

impl Aged for Cooldown {
    fn last_seen(&self) -> EventTime {
        self.until
    }
}

/// Engine limits derived from config.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// Tokens with learned state, at most.
    pub max_tokens: usize,
    /// Reorder tolerance in ms.
    pub reorder_tolerance_ms: i64,
    /// IPv6 clients are grouped by this prefix.
    pub ipv6_prefix: u8,
}

impl EngineSettings {
    /// From `[detectors]` and `[geo]`.
    pub fn from_config(d: &DetectorsConfig, ipv6_prefix: u8) -> Self {
        EngineSettings {
            // Divide first: a huge configured budget must not overflow.
            max_tokens: usize::try_from(
                (d.max_state_bytes / 10).saturating_mul(7) / BYTES_PER_TOKEN,
            )
            .unwrap_or(usize::MAX)
            .max(1_000),
            reorder_tolerance_ms: super::record::secs_to_ms(d.reorder_tolerance_secs),
            ipv6_prefix,
        }
    }
}

/// Token detectors, each optional (disabled ⇒ `None`).
pub(crate) struct TokenDetectors {
    rate: Option<RateSpike>,
    hours: Option<OffHours>,
    travel: Option<ImpossibleTravel>,
    fanout: Option<IpFanout>,
}

impl TokenDetectors {
    /// Runs each enabled token detector on its part of `st`.
    fn observe(&mut self, st: &mut TokenState, obs: &Obs<'_>, out: &mut Findings) {
        if let Some(x) = &mut self.rate {
            x.observe(&mut st.rate, obs, out);
        }
        if let Some(x) = &mut self.hours {
            x.observe(&mut st.hours, obs, out);
        }
        if let Some(x) = &mut self.travel {
            x.observe(&mut st.travel, obs, out);
        }
        if let Some(x) = &mut self.fanout {
            x.observe(&mut st.fanout, obs, out);
        }
    }
}

/// The engine; see the module docs. Two stages run in turn on one thread here; a
/// [`SplitEngine`] runs them on two.
pub struct Engine {
    token: TokenStage,
    rest: RestStage,
    /// The token stage's findings for the event at hand.
    found: Findings,
}

/// Advances `last_tick` when `watermark` has entered a new cell of the tick grid: `None`
/// when no tick is due, `Some(Some(hour))` when the tick also crosses into event-time hour
/// `hour` (ms; the idle-expiry cutoff is measured from it), else `Some(None)`.
fn on_tick_grid(watermark: EventTime, last_tick: &mut EventTime) -> Option<Option<i64>> {
    if watermark.as_millis().div_euclid(TICK_MS) == last_tick.as_millis().div_euclid(TICK_MS) {
        return None;
    }
    let hour = |t: EventTime| t.as_millis().div_euclid(TOKEN_EXPIRY_EVERY_MS);
    let crossed = hour(watermark) != hour(*last_tick);
    *last_tick = watermark;
    Some(crossed.then(|| hour(watermark).saturating_mul(TOKEN_EXPIRY_EVERY_MS)))
}

fn enabled<S: Common, D>(s: &S, make: impl FnOnce(&S) -> D) -> Option<D> {
    s.enabled().then(|| make(s))
}

impl Engine {
    /// Builds the engine for `sources` (names indexed by `SourceIdx`).
    pub fn new(cfg: &DetectorsConfig, settings: EngineSettings, sources: Vec<String>) -> Engine {
        let mut others: Vec<Box<dyn Detector>> = Vec::new();
        let mut add = |d: Option<Box<dyn Detector>>| others.extend(d);
        add(enabled(&cfg.rejection_ratio, |s| {
            Box::new(RejectionRatio::new(s)) as Box<dyn Detector>
        }));
        add(enabled(&cfg.brute_force, |s| {
            Box::new(BruteForce::new(s)) as Box<dyn Detector>
        }));
        add(enabled(&cfg.token_spray, |s| {
            Box::new(TokenSpray::new(s)) as Box<dyn Detector>
        }));
        add(enabled(&cfg.distributed_spray, |s| {
            Box::new(DistributedSpray::new(s)) as Box<dyn Detector>
        }));
        add(enabled(&cfg.revoked_reuse, |s| {
            Box::new(RevokedReuse::new(s)) as Box<dyn Detector>
        }));
        let token_detectors = TokenDetectors {
            rate: enabled(&cfg.rate_spike, RateSpike::new),
            hours: enabled(&cfg.off_hours, OffHours::new),
            travel: enabled(&cfg.impossible_travel, ImpossibleTravel::new),
            fanout: enabled(&cfg.ip_fanout, IpFanout::new),
        };
        let sources: Arc<[String]> = sources.into();
        Engine {
            token: TokenStage::new(settings, sources.clone(), token_detectors),
            rest: RestStage::new(sources, others, settings.max_tokens),
            found: Findings::default(),
        }
    }

    /// The engine for a whole config: `[detectors]` limits, `[geo] ipv6_prefix`, the sources'
    /// names, reporting into `metrics` (what `run`, `replay` and `demo` share).
    pub fn for_config(cfg: &crate::config::Config, metrics: &Metrics) -> Engine {
        let settings = EngineSettings::from_config(&cfg.detectors, cfg.geo.ipv6_prefix);
        let names = cfg.sources.iter().map(|s| s.name.clone()).collect();
        let detectors = ip_caps_within_budget(&cfg.detectors);
        Engine::new(&detectors, settings, names).with_metrics(metrics.clone())
    }

    /// Adds a GeoIP database.
    pub fn with_geo(mut self, geo: Arc<dyn GeoLookup>) -> Self {
        self.token.geo = Some(geo);
        self
    }

    /// Adds a record sink.
    pub fn with_sink(mut self, sink: Box<dyn DetectionSink>) -> Self {
        self.rest.sinks.push(sink);
        self
    }

    /// Decides each record's action (response policy) before any sink sees it.
    pub fn with_policy(mut self, policy: Box<dyn Decide>) -> Self {
        self.rest.policy = Some(policy);
        self
    }

    /// Reports into these metrics.
    pub fn with_metrics(mut self, m: Metrics) -> Self {
        self.token.metrics = Some(m.clone());
        self.rest.metrics = Some(m);
        self
    }

    /// Detections emitted so far, by detector.
    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.rest.counts
    }

    /// Events dropped as late.
    pub fn late(&self) -> u64 {
        self.token.late
    }

    /// Tokens with learned state.
    pub fn tracked_tokens(&self) -> usize {
        self.token.tokens.len()
    }

    /// Flushes sinks and publishes gauges (end of batch, shutdown).
    pub fn flush(&mut self) {
        self.rest.flush();
        self.token.publish_gauges();
    }

    /// The two stages, to run on two threads ([`SplitEngine`]).
    fn into_stages(self) -> (TokenStage, RestStage) {
        (self.token, self.rest)
    }

    fn handle(&mut self, ev: &AuthEvent) {
        if let Some(facts) = self.token.observe(ev, &mut self.found) {
            self.rest.handle(ev, facts, &mut self.found);
        }
    }
}

/// IPv4 as is; IPv6 masked to `prefix` (one client usually owns a /64).
pub fn group_ip(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match crate::net::canonical(ip) {
        v4 @ IpAddr::V4(_) => v4,
        v6 => crate::net::mask(v6, v6_prefix),
    }
}

/// The token map as a JSON array of `[id, state]` pairs, like `Vec<(TokenId, TokenState)>`.
struct Pairs<'a>(&'a BoundedMap<TokenId, TokenState>);

impl Serialize for Pairs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// Token links as `[token, alias]` pairs (a link's age is its token's).
struct AliasesRef<'a>(&'a BoundedMap<TokenId, Alias>);

impl Serialize for AliasesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// Cooldowns as `[detector, key, until]` triples.
struct CooldownsRef<'a>(&'a BoundedMap<(&'static str, String), Cooldown>);

impl Serialize for CooldownsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|((d, k), c)| (d, k, c.until)))
    }
}

/// The persisted form of the engine's learned state (as read back).
#[derive(Deserialize)]
struct Snapshot {
    version: u32,
    watermark: EventTime,
    tokens: Vec<(TokenId, TokenState)>,
    #[serde(default)]
    aliases: Vec<(TokenId, Alias)>,
    cooldowns: Vec<(String, String, EventTime)>,
    /// Known tokens' health (older snapshots lack it: it is relearned within minutes).
    #[serde(default)]
    health: Option<super::detectors::health::Health>,
    detectors: BTreeMap<String, serde_json::Value>,
}

/// Current snapshot format version; older versions are ignored with a warning.
const SNAPSHOT_VERSION: u32 = 1;

/// Writes the token stage's part of a snapshot: the opening of the JSON object, the version
/// and the token map (serialised straight from the map, no copy: at the state cap a copy
/// would double the peak memory of every snapshot). [`write_rest_part`] closes it.
fn write_token_part(token: &TokenStage, out: &mut impl std::io::Write) -> std::io::Result<()> {
    write!(out, "{{\"version\":{SNAPSHOT_VERSION},\"tokens\":")?;
    serde_json::to_writer(&mut *out, &Pairs(&token.tokens)).map_err(std::io::Error::other)
}

/// Writes the rest stage's part of a snapshot after [`write_token_part`]'s: the watermark,
/// token links, cooldowns and the other detectors' state, and the closing brace.
fn write_rest_part(rest: &RestStage, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let detectors: BTreeMap<&str, serde_json::Value> = rest
        .others
        .iter()
        .map(|d| (d.name(), d.snapshot()))
        .collect();
    json_field(out, "watermark", &rest.watermark)?;
    json_field(out, "aliases", &AliasesRef(&rest.aliases))?;
    json_field(out, "cooldowns", &CooldownsRef(&rest.cooldowns))?;
    json_field(out, "health", &rest.health)?;
    json_field(out, "detectors", &detectors)?;
    out.write_all(b"}")
}

/// Writes `,"name":value` (a field after the first of a JSON object).
fn json_field(
    out: &mut impl std::io::Write,
    name: &str,
    v: &impl Serialize,
) -> std::io::Result<()> {
    write!(out, ",\"{name}\":")?;
    serde_json::to_writer(&mut *out, v).map_err(std::io::Error::other)
}

impl Engine {
    /// Serialises learned state (baselines, per-token history, cooldowns) for a restart.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into memory fails only if serialisation does, which it does not for these
        // types; an empty snapshot is then refused on restore rather than half-applied.
        if self.write_snapshot_to(&mut out).is_err() {
            out.clear();
        }
        out
    }

    /// Streams [`snapshot`](Engine::snapshot)'s bytes into `out`.
    pub fn write_snapshot_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        write_token_part(&self.token, out)?;
        write_rest_part(&self.rest, out)
    }

    /// Restores a [`snapshot`](Engine::snapshot); a bad or old snapshot is an error and
    /// leaves the engine empty (learning restarts; nothing else is affected).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let snap: Snapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(format!(
                "snapshot version {} (expected {SNAPSHOT_VERSION})",
                snap.version
            ));
        }
        self.token.resume_at(snap.watermark);
        self.rest.resume_at(snap.watermark);
        for (k, v) in snap.tokens {
            self.token.tokens.insert(k, v);
        }
        for (k, v) in snap.aliases {
            self.rest.aliases.insert(k, v);
        }
        if let Some(h) = snap.health {
            self.rest.health = h;
        }
        for (d, k, until) in snap.cooldowns {
            if let Some(name) = crate::metrics::DETECTORS.iter().find(|n| **n == d) {
                self.rest.cooldowns.insert((*name, k), Cooldown { until });
            }
        }
        let mut states = snap.detectors;
        for d in &mut self.rest.others {
            if let Some(v) = states.remove(d.name()) {
                if let Err(e) = d.restore(v) {
                    tracing::warn!(detector = d.name(), %e, "ignoring its snapshot");
                }
            }
        }
        Ok(())
    }
}

impl EventSink for Engine {
    fn snapshot(&mut self) -> Option<Vec<u8>> {
        Some(Engine::snapshot(self))
    }

    fn write_snapshot(
        &mut self,
        mut out: crate::durable::StateWriter,
    ) -> std::io::Result<Option<crate::durable::StateWriter>> {
        self.write_snapshot_to(&mut out)?;
        Ok(Some(out))
    }

    fn event(&mut self, ev: AuthEvent) {
        self.handle(&ev);
    }

    fn flush(&mut self) {
        Engine::flush(self);
    }

    fn detection_counts(&mut self) -> BTreeMap<&'static str, u64> {
        self.rest.counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_state_budget_gives_a_sane_token_cap() {
        for bytes in [0, 1 << 20, 1 << 30, u64::MAX] {
            let d = DetectorsConfig {
                max_state_bytes: bytes,
                ..DetectorsConfig::default()
            };
            let s = EngineSettings::from_config(&d, 64);
            assert!(s.max_tokens >= 1_000, "{bytes}: {}", s.max_tokens);
        }
        let d = DetectorsConfig::default();
        let s = EngineSettings::from_config(&d, 64);
        assert_eq!(s.max_tokens, (1usize << 30) / 10 * 7 / 256);
    }
}
