//! The detection engine: routes each event to every enabled detector, owns the per-token
//! state, applies cooldowns and writes detection records.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::bounded::{Aged, BoundedMap};
use super::detectors::{
    impossible_travel::ImpossibleTravel, ip_fanout::IpFanout, off_hours::OffHours,
    rate_spike::RateSpike, Detector, TokenDetector,
};
use super::{Detection, DetectionSink, Findings, Obs};
use crate::config::DetectorsConfig;
use crate::enrich::geo::{GeoLookup, Location};
use crate::event::{AuthEvent, EventTime, Outcome, TokenId};
use crate::metrics::Metrics;
use crate::pipeline::EventSink;

/// Detectors get a `tick` this often (event time).
const TICK_MS: i64 = 10_000;
/// A token idle this long loses its learned state (event time).
const TOKEN_IDLE_MS: i64 = 35 * 86_400_000;
/// How often (event time) idle tokens are looked for.
const TOKEN_EXPIRY_EVERY_MS: i64 = 3_600_000;
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
struct Alias {
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
struct Cooldown {
    until: EventTime,
}

impl Aged for Cooldown {
    fn last_seen(&self) -> EventTime {
        self.until
    }
}

/// Engine limits derived from config.
#[derive(Debug, Clone)]
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
struct TokenDetectors {
    rate: Option<RateSpike>,
    hours: Option<OffHours>,
    travel: Option<ImpossibleTravel>,
    fanout: Option<IpFanout>,
}

/// The engine; see the module docs.
pub struct Engine {
    settings: EngineSettings,
    sources: Vec<String>,
    tokens: BoundedMap<TokenId, TokenState>,
    aliases: BoundedMap<TokenId, Alias>,
    token_detectors: TokenDetectors,
    others: Vec<Box<dyn Detector>>,
    geo: Option<Arc<dyn GeoLookup>>,
    geo_cache: BoundedMap<IpAddr, GeoEntry>,
    cooldowns: BoundedMap<(&'static str, String), Cooldown>,
    sinks: Vec<Box<dyn DetectionSink>>,
    policy: Option<Box<dyn Decide>>,
    metrics: Option<Metrics>,
    watermark: EventTime,
    last_tick: EventTime,
    findings: Findings,
    counts: BTreeMap<&'static str, u64>,
    published_evictions: BTreeMap<&'static str, u64>,
    late: u64,
}

/// A cached GeoIP answer (including "not located").
#[derive(Debug, Clone)]
struct GeoEntry {
    loc: Option<Location>,
    used: EventTime,
}

impl Aged for GeoEntry {
    fn last_seen(&self) -> EventTime {
        self.used
    }
}

impl Engine {
    /// Builds the engine for `sources` (names indexed by `SourceIdx`).
    pub fn new(cfg: &DetectorsConfig, settings: EngineSettings, sources: Vec<String>) -> Engine {
        let others = super::detectors::build_own(cfg);
        Engine {
            tokens: BoundedMap::new(settings.max_tokens),
            aliases: BoundedMap::new(settings.max_tokens),
            token_detectors: TokenDetectors {
                rate: (cfg.rate_spike.enabled).then(|| RateSpike::new(&cfg.rate_spike)),
                hours: (cfg.off_hours.enabled).then(|| OffHours::new(&cfg.off_hours)),
                travel: (cfg.impossible_travel.enabled)
                    .then(|| ImpossibleTravel::new(&cfg.impossible_travel)),
                fanout: (cfg.ip_fanout.enabled).then(|| IpFanout::new(&cfg.ip_fanout)),
            },
            others,
            geo: None,
            geo_cache: BoundedMap::new(65_536),
            cooldowns: BoundedMap::new(100_000),
            sinks: Vec::new(),
            policy: None,
            metrics: None,
            watermark: EventTime::from_millis(i64::MIN),
            last_tick: EventTime::from_millis(i64::MIN),
            findings: Findings::default(),
            counts: BTreeMap::new(),
            published_evictions: BTreeMap::new(),
            late: 0,
            settings,
            sources,
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
        self.geo = Some(geo);
        self
    }

    /// Adds a record sink.
    pub fn with_sink(mut self, sink: Box<dyn DetectionSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Decides each record's action (response policy) before any sink sees it.
    pub fn with_policy(mut self, policy: Box<dyn Decide>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Reports into these metrics (every registered detector's series exist from here on,
    /// at zero).
    pub fn with_metrics(mut self, m: Metrics) -> Self {
        for e in crate::config::detectors::REGISTRY {
            m.register_detector(e.name, e.state == crate::config::detectors::StateKind::Own);
        }
        self.metrics = Some(m);
        self
    }

    /// Detections emitted so far, by detector.
    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }

    /// Events dropped as late.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Tokens with learned state.
    pub fn tracked_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Flushes sinks and publishes gauges (end of batch, shutdown).
    pub fn flush(&mut self) {
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
        set("token", self.tokens.len());
        set("cooldown", self.cooldowns.len());
        let mut evicted = vec![
            ("token", self.tokens.evictions()),
            ("cooldown", self.cooldowns.evictions()),
        ];
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

    fn handle(&mut self, ev: &AuthEvent) {
        if ev.time.as_millis()
            < self
                .watermark
                .as_millis()
                .saturating_sub(self.settings.reorder_tolerance_ms)
        {
            self.late += 1;
            if let Some(m) = &self.metrics {
                m.late_events.inc();
            }
            return;
        }
        if ev.time > self.watermark {
            self.watermark = ev.time;
        }
        // Ticks fall on a fixed grid of event time (the first event past each boundary), so a
        // restored engine ticks where an uninterrupted one did and windows close alike.
        if self.watermark.as_millis().div_euclid(TICK_MS)
            != self.last_tick.as_millis().div_euclid(TICK_MS)
        {
            self.tick(self.watermark);
        }
        let ip_key = ev.ip.map(|ip| group_ip(ip, self.settings.ipv6_prefix));
        let location = self.locate(ev);
        let source = self
            .sources
            .get(usize::from(ev.source))
            .map_or("", String::as_str);
        // One lookup per event: the position stays valid until observe_token (nothing in
        // between touches the token map).
        let token_at = ev.token.as_ref().and_then(|t| self.tokens.index_of(t));
        let token_known = token_at.is_some();
        let last_accepted = token_at
            .and_then(|i| self.tokens.at(i))
            .map(|st| st.last_accepted);
        let obs = Obs {
            ev,
            source,
            ip_key,
            token_known,
            last_accepted,
            location: location.as_ref(),
        };
        for d in &mut self.others {
            d.observe(&obs, &mut self.findings);
        }
        if let (Some(tok), Some(alias)) = (&ev.token, &ev.alias) {
            link(&mut self.aliases, tok, alias, ev.time);
        }
        if let Some(tok) = &ev.token {
            observe_token(
                &mut self.tokens,
                token_at,
                &mut self.token_detectors,
                tok,
                &obs,
                &mut self.findings,
            );
        }
        self.emit_findings(ev.source);
    }

    fn locate(&mut self, ev: &AuthEvent) -> Option<Location> {
        let geo = self.geo.as_ref()?;
        ev.token.as_ref()?;
        let ip = ev.ip?;
        let used = ev.time;
        let e = self.geo_cache.entry(
            &ip,
            || ip,
            || GeoEntry {
                loc: geo.locate(ip),
                used,
            },
        );
        e.used = used;
        e.loc.clone()
    }

    fn tick(&mut self, now: EventTime) {
        let hour = |t: EventTime| t.as_millis().div_euclid(TOKEN_EXPIRY_EVERY_MS);
        let new_hour = hour(now) != hour(self.last_tick);
        self.last_tick = now;
        for d in &mut self.others {
            d.tick(now, &mut self.findings);
        }
        // Idle expiry walks every token: once per hour of event time is plenty for a 35-day
        // idle limit, and the cutoff sits on the hour so a restored engine (whose first tick
        // comes at an arbitrary event) expires exactly what an uninterrupted one did.
        if new_hour {
            let on_the_hour = hour(now).saturating_mul(TOKEN_EXPIRY_EVERY_MS);
            let idle = EventTime::from_millis(on_the_hour.saturating_sub(TOKEN_IDLE_MS));
            self.tokens.expire(idle);
            self.aliases.expire(idle);
        }
        self.cooldowns.expire(now);
        self.emit_findings(u16::MAX);
        self.publish_gauges();
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

/// Runs the token detectors on `tok`'s state; a token gets state only once it has been
/// accepted, so random invalid tokens never allocate per-token state.
fn observe_token(
    tokens: &mut BoundedMap<TokenId, TokenState>,
    at: Option<usize>,
    d: &mut TokenDetectors,
    tok: &TokenId,
    obs: &Obs<'_>,
    out: &mut Findings,
) {
    let t = obs.ev.time;
    let st = if let Some(i) = at {
        tokens.at_mut(i)
    } else if obs.ev.outcome == Outcome::Accepted {
        Some(tokens.entry(
            tok,
            || tok.clone(),
            || TokenState {
                last_seen: t,
                last_accepted: t,
                ..TokenState::default()
            },
        ))
    } else {
        None
    };
    let Some(st) = st else { return };
    if t > st.last_seen {
        st.last_seen = t;
    }
    if obs.ev.outcome == Outcome::Accepted && t > st.last_accepted {
        st.last_accepted = t;
    }
    if let Some(x) = &mut d.rate {
        x.observe(&mut st.rate, obs, out);
    }
    if let Some(x) = &mut d.hours {
        x.observe(&mut st.hours, obs, out);
    }
    if let Some(x) = &mut d.travel {
        x.observe(&mut st.travel, obs, out);
    }
    if let Some(x) = &mut d.fanout {
        x.observe(&mut st.fanout, obs, out);
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

/// The persisted form of the engine's learned state (as read back).
#[derive(Deserialize)]
struct Snapshot {
    version: u32,
    watermark: EventTime,
    tokens: Vec<(TokenId, TokenState)>,
    #[serde(default)]
    aliases: Vec<(TokenId, Alias)>,
    cooldowns: Vec<(String, String, EventTime)>,
    detectors: BTreeMap<String, serde_json::Value>,
}

/// Current snapshot format version; older versions are ignored with a warning.
const SNAPSHOT_VERSION: u32 = 1;

impl Engine {
    /// Serialises learned state (baselines, per-token history, cooldowns, every detector's
    /// part) for a restart.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.write_snapshot_to(&mut out) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// Streams [`snapshot`](Engine::snapshot)'s bytes into `out`: the token map and every
    /// detector's state are serialised straight from where they live (no copy first: at
    /// the state cap a copy would double the peak memory of every snapshot).
    pub fn write_snapshot_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let out: &mut dyn std::io::Write = out;
        field(out, "{", "version", &SNAPSHOT_VERSION)?;
        field(out, ",", "watermark", &self.watermark)?;
        field(out, ",", "tokens", &Pairs(&self.tokens))?;
        field(out, ",", "aliases", &AliasesRef(&self.aliases))?;
        field(out, ",", "cooldowns", &CooldownsRef(&self.cooldowns))?;
        out.write_all(b",\"detectors\":")?;
        let mut sep = "{";
        let t = &self.token_detectors;
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
        for d in &self.others {
            detector_part(out, &mut sep, d.name(), |o| d.write_snapshot(o))?;
        }
        if sep == "{" {
            out.write_all(b"{")?;
        }
        out.write_all(b"}}")
    }

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
        let t = &mut self.token_detectors;
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
        for d in &mut self.others {
            let name = d.name();
            give(name, parts.remove(name), |v| d.restore(v));
        }
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
        self.watermark = snap.watermark;
        // The last tick was in the watermark's grid cell: the next falls where it would have.
        self.last_tick = snap.watermark;
        for (k, v) in snap.tokens {
            self.tokens.insert(k, v);
        }
        for (k, v) in snap.aliases {
            self.aliases.insert(k, v);
        }
        for (d, k, until) in snap.cooldowns {
            if let Some(e) = crate::config::detectors::entry(&d) {
                self.cooldowns.insert((e.name, k), Cooldown { until });
            }
        }
        self.restore_detector_parts(snap.detectors);
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
        self.counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::detectors::{StateKind, REGISTRY};

    /// The detectors an engine runs: (name, keeps its state in `TokenState`).
    fn running(cfg: &DetectorsConfig) -> Vec<(&'static str, bool)> {
        let e = Engine::new(cfg, EngineSettings::from_config(cfg, 64), Vec::new());
        let t = &e.token_detectors;
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
            .chain(e.others.iter().map(|d| (d.name(), false)))
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
