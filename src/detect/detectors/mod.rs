//! The nine detectors of DESIGN §6, one file each.
//!
//! Two shapes: [`TokenDetector`]s keep their per-token part inside the engine's one
//! [`TokenState`](super::TokenState) per token (so a token costs one map entry, not four);
//! every other detector implements [`Detector`] and owns its state (per IP, per revoked
//! token, global), capped with [`BoundedMap`](super::bounded::BoundedMap).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Findings, Obs};
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
    /// State to persist across restarts.
    fn snapshot(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Restores [`snapshot`](Detector::snapshot) output; errors leave the state empty.
    fn restore(&mut self, _v: serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

/// A detector whose per-token state lives in the engine's `TokenState`.
pub trait TokenDetector: Send {
    /// This detector's part of a token's state.
    type State: Default + Clone + Serialize + DeserializeOwned;
    /// Stable name (DESIGN §6).
    fn name(&self) -> &'static str;
    /// Sees one event of a known token (`obs.ev.token` is `Some`); `st` is that token's part.
    fn observe(&mut self, st: &mut Self::State, obs: &Obs<'_>, out: &mut Findings);
}

/// Settings every detector has.
pub trait Common {
    /// Whether the detector runs.
    fn enabled(&self) -> bool;
}
