//! Detection: event-time windows, bounded per-key state and the nine detectors of DESIGN §6.
//!
//! The [`Engine`] is the pipeline's event sink. For each event it updates the state of every
//! enabled detector — per token (one [`TokenState`] holding each token detector's part, so
//! a token costs one map entry), per IP, and global — and turns findings into
//! [`Detection`] records after a per-key cooldown. Everything runs on event time, so a
//! replay of the same file gives byte-identical records.

pub mod bounded;
pub mod detectors;
pub mod engine;
pub mod record;
pub mod score;
pub mod sink;
pub mod window;

pub use engine::{default_threads, Decide, Engine, EngineSettings, SplitEngine, TokenState};
pub use record::{Action, Detection, Finding};
pub use sink::{DetectionSink, JsonlSink, Ring, VecSink};

use std::net::IpAddr;

use crate::enrich::geo::Location;
use crate::event::{AuthEvent, EventTime};
use detectors::health::Health;

/// What every detector sees for one event.
pub struct Obs<'a> {
    /// The event.
    pub ev: &'a AuthEvent,
    /// The configured name of the event's source.
    pub source: &'a str,
    /// The client address grouped for counting (IPv4 as is, IPv6 by `geo.ipv6_prefix`).
    pub ip_key: Option<IpAddr>,
    /// True if the token had an accepted check before this event (it has a profile);
    /// "never-seen" tokens are the spray detectors' signal.
    pub token_known: bool,
    /// When the token was last accepted before this event (`None`: never, as far as the
    /// engine remembers). `revoked_reuse` tells "refused on every use since" from "still
    /// accepted, sporadically refused" with it.
    pub last_accepted: Option<EventTime>,
    /// The client's location, if a GeoIP database knows it. Looked up only for events the
    /// token detectors can use (a known token, or an accepted check): `None` otherwise.
    pub location: Option<&'a Location>,
    /// [`token_hash`](detectors::token_hash) of the token on rejected events (the ones the
    /// per-IP detectors count tokens of), hashed once for all of them; `None` otherwise.
    pub token_hash: Option<u64>,
    /// Known tokens' health (the outage guard), with this event already counted.
    pub health: &'a Health,
}

/// Collects what detectors found while handling one event (or one tick).
#[derive(Debug, Default)]
pub struct Findings {
    items: Vec<Finding>,
}

impl Findings {
    /// Records a finding; the engine applies cooldown and writes the record.
    pub fn push(&mut self, f: Finding) {
        self.items.push(f);
    }

    /// Takes everything found so far.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Finding> {
        self.items.drain(..)
    }

    /// Moves everything `other` found after what this holds.
    pub fn append(&mut self, other: &mut Findings) {
        self.items.append(&mut other.items);
    }

    /// True if nothing was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
