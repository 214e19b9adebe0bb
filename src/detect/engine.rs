//! The detection engine: routes each event to every enabled detector, owns the per-token
//! state, applies cooldowns and writes detection records.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::bounded::{Aged, BoundedMap};
use super::detectors::{
    impossible_travel::ImpossibleTravel, ip_fanout::IpFanout, off_hours::OffHours,
    rate_spike::RateSpike, TokenDetector,
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

impl Engine {
    /// Builds the engine for `sources` (names indexed by `SourceIdx`).
    pub fn new(cfg: &DetectorsConfig, settings: EngineSettings, sources: Vec<String>) -> Engine {
        let others = super::detectors::build_own(cfg);
        let token_detectors = TokenDetectors {
            rate: (cfg.rate_spike.enabled).then(|| RateSpike::new(&cfg.rate_spike)),
            hours: (cfg.off_hours.enabled).then(|| OffHours::new(&cfg.off_hours)),
            travel: (cfg.impossible_travel.enabled)
                .then(|| ImpossibleTravel::new(&cfg.impossible_travel)),
            fanout: (cfg.ip_fanout.enabled).then(|| IpFanout::new(&cfg.ip_fanout)),
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

    /// Reports into these metrics (every registered detector's series exist from here on,
    /// at zero).
    pub fn with_metrics(mut self, m: Metrics) -> Self {
        for e in crate::config::detectors::REGISTRY {
            m.register_detector(e.name, e.state == crate::config::detectors::StateKind::Own);
        }
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
    /// The token detectors' own parts (older snapshots had them in `detectors`).
    #[serde(default)]
    token_detectors: BTreeMap<String, serde_json::Value>,
}

/// Current snapshot format version; older versions are ignored with a warning.
const SNAPSHOT_VERSION: u32 = 1;

/// Writes the token stage's part of a snapshot: the opening of the JSON object, the version,
/// the token map and the token detectors' own parts (each serialised straight from where it
/// lives, no copy: at the state cap a copy would double the peak memory of every snapshot).
/// [`write_rest_part`] closes it.
fn write_token_part(token: &TokenStage, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let out: &mut dyn std::io::Write = out;
    field(out, "{", "version", &SNAPSHOT_VERSION)?;
    field(out, ",", "tokens", &Pairs(&token.tokens))?;
    out.write_all(b",\"token_detectors\":")?;
    let mut sep = "{";
    let t = &token.detectors;
    if let Some(d) = &t.rate {
        detector_part(out, &mut sep, d.name(), |o| d.write_snapshot(o))?;
    }
    if let Some(d) = &t.hours {
        detector_part(out, &mut sep, d.name(), |o| d.write_snapshot(o))?;
    }
    if let Some(d) = &t.travel {
        detector_part(out, &mut sep, d.name(), |o| d.write_snapshot(o))?;
    }
    if let Some(d) = &t.fanout {
        detector_part(out, &mut sep, d.name(), |o| d.write_snapshot(o))?;
    }
    close_object(out, sep)
}

/// Writes the rest stage's part of a snapshot after [`write_token_part`]'s: the watermark,
/// token links, cooldowns, known tokens' health and the other detectors' parts, and the
/// closing brace.
fn write_rest_part(rest: &RestStage, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let out: &mut dyn std::io::Write = out;
    field(out, ",", "watermark", &rest.watermark)?;
    field(out, ",", "aliases", &AliasesRef(&rest.aliases))?;
    field(out, ",", "cooldowns", &CooldownsRef(&rest.cooldowns))?;
    field(out, ",", "health", &rest.health)?;
    out.write_all(b",\"detectors\":")?;
    let mut sep = "{";
    for d in &rest.others {
        detector_part(out, &mut sep, d.name(), |o| d.write_snapshot(o))?;
    }
    close_object(out, sep)?;
    out.write_all(b"}")
}

/// Closes an object of detector parts (`sep` still `{`: there were none).
fn close_object(out: &mut dyn std::io::Write, sep: &str) -> std::io::Result<()> {
    if sep == "{" {
        out.write_all(b"{")?;
    }
    out.write_all(b"}")
}

/// Writes `sep`, `"name":` and `v` (one field of the snapshot object).
fn field(
    out: &mut dyn std::io::Write,
    sep: &str,
    name: &str,
    v: &impl Serialize,
) -> std::io::Result<()> {
    out.write_all(sep.as_bytes())?;
    serde_json::to_writer(&mut *out, name).map_err(std::io::Error::other)?;
    out.write_all(b":")?;
    serde_json::to_writer(&mut *out, v).map_err(std::io::Error::other)
}

/// Writes `sep`, `"name":` and a detector's part (from `write`); `sep` becomes `,`.
fn detector_part(
    out: &mut dyn std::io::Write,
    sep: &mut &str,
    name: &str,
    write: impl FnOnce(&mut dyn std::io::Write) -> serde_json::Result<()>,
) -> std::io::Result<()> {
    out.write_all(sep.as_bytes())?;
    *sep = ",";
    serde_json::to_writer(&mut *out, name).map_err(std::io::Error::other)?;
    out.write_all(b":")?;
    write(out).map_err(std::io::Error::other)
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
            if let Some(e) = crate::config::detectors::entry(&d) {
                self.rest.cooldowns.insert((e.name, k), Cooldown { until });
            }
        }
        let mut parts = snap.detectors;
        parts.extend(snap.token_detectors);
        self.restore_detector_parts(parts);
        Ok(())
    }
}

impl Engine {
    /// Hands each detector its part of a snapshot; a part it cannot read is ignored (that
    /// detector starts afresh, the others keep theirs).
    fn restore_detector_parts(&mut self, mut parts: BTreeMap<String, serde_json::Value>) {
        fn give(
            name: &str,
            part: Option<serde_json::Value>,
            restore: impl FnOnce(serde_json::Value) -> Result<(), String>,
        ) {
            let Some(v) = part.filter(|v| !v.is_null()) else {
                return;
            };
            if let Err(e) = restore(v) {
                tracing::warn!(detector = name, %e, "ignoring its snapshot");
            }
        }
        let t = &mut self.token.detectors;
        if let Some(d) = &mut t.rate {
            give(d.name(), parts.remove(d.name()), |v| d.restore(v));
        }
        if let Some(d) = &mut t.hours {
            give(d.name(), parts.remove(d.name()), |v| d.restore(v));
        }
        if let Some(d) = &mut t.travel {
            give(d.name(), parts.remove(d.name()), |v| d.restore(v));
        }
        if let Some(d) = &mut t.fanout {
            give(d.name(), parts.remove(d.name()), |v| d.restore(v));
        }
        for d in &mut self.rest.others {
            let name = d.name();
            give(name, parts.remove(name), |v| d.restore(v));
        }
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
    use crate::config::detectors::{StateKind, REGISTRY};

    /// The detectors an engine runs: (name, keeps its state in `TokenState`).
    fn running(cfg: &DetectorsConfig) -> Vec<(&'static str, bool)> {
        let e = Engine::new(cfg, EngineSettings::from_config(cfg, 64), Vec::new());
        let t = &e.token.detectors;
        let per_token = [
            t.rate.as_ref().map(|d| d.name()),
            t.hours.as_ref().map(|d| d.name()),
            t.travel.as_ref().map(|d| d.name()),
            t.fanout.as_ref().map(|d| d.name()),
        ];
        let mut out: Vec<(&'static str, bool)> = per_token
            .into_iter()
            .flatten()
            .map(|n| (n, true))
            .chain(e.rest.others.iter().map(|d| (d.name(), false)))
            .collect();
        out.sort();
        out
    }

    /// Each registered detector runs exactly once, in the shape the registry gives it, and
    /// its `enabled` switch removes exactly it.
    #[test]
    fn the_engine_runs_each_registered_detector_once() {
        let mut all: Vec<(&str, bool)> = REGISTRY
            .iter()
            .map(|e| (e.name, e.state == StateKind::PerToken))
            .collect();
        all.sort();
        assert_eq!(running(&DetectorsConfig::default()), all);
        for off in REGISTRY {
            let mut cfg = DetectorsConfig::default();
            cfg.keep_stages(|e| e.name != off.name);
            let want: Vec<_> = all.iter().copied().filter(|d| d.0 != off.name).collect();
            assert_eq!(running(&cfg), want, "{} off", off.name);
        }
    }

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
