//! The nine detectors of DESIGN §6, one file each.
//!
//! Two shapes: [`TokenDetector`]s keep their per-token part inside the engine's one
//! [`TokenState`](super::TokenState) per token (so a token costs one map entry, not four);
//! every other detector implements [`Detector`] and owns its state (per IP, per revoked
//! token, global), capped with [`BoundedMap`](super::bounded::BoundedMap).
//!
//! Which detectors exist, their stage and where their state lives is declared once, in the
//! registry (`config::detectors`); their settings live there too (the config feeds the
//! detectors). Adding one: its file here (with `snapshot`/`restore`: no defaults, so what
//! it keeps is always said), its `Settings` file and one registry line in
//! `config/detectors/`, and its arm in [`build_own`] (or, per token, its `TokenState`
//! field). The tests here and in the engine fail until all of them agree.

use serde::de::DeserializeOwned;
use serde::Serialize;

use std::hash::Hash;
use std::io::Write;

use super::bounded::{Aged, BoundedMap};
use super::{Findings, Obs};
use crate::config::detectors::{StateKind, REGISTRY};
use crate::config::DetectorsConfig;
use crate::event::EventTime;
use health::Health;

pub mod brute_force;
pub mod distributed_spray;
pub mod health;
pub mod impossible_travel;
pub mod ip_fanout;
pub mod off_hours;
pub mod rate_spike;
pub mod rejection_ratio;
pub mod revoked_reuse;
pub mod token_spray;
pub(crate) mod token_spray_kit;

pub use token_spray_kit::token_hash;

/// A detector that owns its state.
pub trait Detector: Send {
    /// Stable name (DESIGN §6).
    fn name(&self) -> &'static str;
    /// Sees one event.
    fn observe(&mut self, obs: &Obs<'_>, out: &mut Findings);
    /// Called every few seconds of event time: close windows, expire idle state. `health`
    /// is the known-token outage guard as of `now`.
    fn tick(&mut self, _now: EventTime, _health: &Health, _out: &mut Findings) {}
    /// Live state entries (for `tokenwatch_tracked_entities{kind=name}`).
    fn tracked(&self) -> usize {
        0
    }
    /// Entries evicted so far (for `tokenwatch_evictions_total{kind=name}`).
    fn evictions(&self) -> u64 {
        0
    }
    /// Writes everything it learned as one JSON value straight to `out` (the engine
    /// snapshot's `detectors.NAME` part; no copy of the state is made), so a restored
    /// detector continues as an uninterrupted one would. No default: every detector says
    /// what it keeps.
    fn write_snapshot(&self, out: &mut dyn Write) -> serde_json::Result<()>;
    /// Restores [`write_snapshot`](Detector::write_snapshot) output; errors leave the state
    /// empty.
    fn restore(&mut self, v: serde_json::Value) -> Result<(), String>;
}

/// A detector whose per-token state lives in the engine's `TokenState`.
pub trait TokenDetector: Send {
    /// This detector's part of a token's state.
    type State: Default + Clone + Serialize + DeserializeOwned;
    /// Stable name (DESIGN §6).
    fn name(&self) -> &'static str;
    /// Sees one event of a known token (`obs.ev.token` is `Some`); `st` is that token's part.
    fn observe(&mut self, st: &mut Self::State, obs: &Obs<'_>, out: &mut Findings);
    /// Writes what it keeps outside the tokens' parts (`null`: nothing) to `out`, the engine
    /// snapshot's `detectors.NAME` part. No default: every detector says what it keeps.
    fn write_snapshot(&self, out: &mut dyn Write) -> serde_json::Result<()>;
    /// Restores [`write_snapshot`](TokenDetector::write_snapshot) output; errors leave it
    /// empty.
    fn restore(&mut self, v: serde_json::Value) -> Result<(), String>;
}

/// A [`BoundedMap`] as a JSON array of `[key, value]` pairs in the map's order, written
/// without copying the map.
pub(crate) struct Pairs<'a, K, V>(pub(crate) &'a BoundedMap<K, V>);

impl<K: Serialize + Hash + Eq, V: Serialize + Aged> Serialize for Pairs<'_, K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// Refills `map` with [`Pairs`] read back, in their order: the restored map iterates, and
/// so evaluates and evicts, as the saved one did.
pub(crate) fn refill<K: Hash + Eq, V: Aged>(map: &mut BoundedMap<K, V>, pairs: Vec<(K, V)>) {
    for (k, v) in pairs {
        map.insert(k, v);
    }
}

/// Writes a snapshot part (borrowing the state: no copy of it).
pub(crate) fn write_part(out: &mut dyn Write, state: &impl Serialize) -> serde_json::Result<()> {
    serde_json::to_writer(out, state)
}

/// The snapshot part of a detector that keeps nothing of its own.
pub(crate) fn write_nothing(out: &mut dyn Write) -> serde_json::Result<()> {
    out.write_all(b"null").map_err(serde_json::Error::io)
}

/// Reads a snapshot part back.
pub(crate) fn from_part<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// The enabled detectors that own their state (the registry's `StateKind::Own`), in
/// registry order; the per-token ones are fields of the engine's `TokenState`.
pub fn build_own(cfg: &DetectorsConfig) -> Vec<Box<dyn Detector>> {
    let mut out: Vec<Box<dyn Detector>> = Vec::new();
    for e in REGISTRY.iter().filter(|e| e.state == StateKind::Own) {
        if !cfg.enabled(e.name) {
            continue;
        }
        // One arm per self-contained detector; a registry name without one is caught by
        // the test below, never silently skipped at run time.
        out.push(match e.name {
            "rejection_ratio" => {
                Box::new(rejection_ratio::RejectionRatio::new(&cfg.rejection_ratio))
            }
            "brute_force" => Box::new(brute_force::BruteForce::new(&cfg.brute_force)),
            "token_spray" => Box::new(token_spray::TokenSpray::new(&cfg.token_spray)),
            "distributed_spray" => Box::new(distributed_spray::DistributedSpray::new(
                &cfg.distributed_spray,
            )),
            "revoked_reuse" => Box::new(revoked_reuse::RevokedReuse::new(&cfg.revoked_reuse)),
            _ => continue,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detector file that implements a detector but is not in the registry would never run
    /// (nor be configurable, snapshotted or counted): each must be registered by its name.
    #[test]
    fn every_detector_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/detect/detectors");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let implements = text.lines().any(|l| {
                l.starts_with("impl Detector for") || l.starts_with("impl TokenDetector for")
            });
            if implements {
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                assert!(
                    crate::config::detectors::entry(&stem).is_some(),
                    "{} implements a detector that is not in the registry (config/detectors)",
                    path.display()
                );
                found.push(stem);
            }
        }
        assert_eq!(found.len(), REGISTRY.len(), "{found:?}");
    }

    /// Every registered self-contained detector is built, under its own name.
    #[test]
    fn build_own_builds_every_own_state_entry() {
        let cfg = DetectorsConfig::default();
        let built: Vec<&str> = build_own(&cfg).iter().map(|d| d.name()).collect();
        let own: Vec<&str> = REGISTRY
            .iter()
            .filter(|e| e.state == StateKind::Own)
            .map(|e| e.name)
            .collect();
        assert_eq!(built, own);
    }
}
