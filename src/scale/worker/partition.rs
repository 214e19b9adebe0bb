//! One owned partition of the token or IP stage: its engine, its high-water marks, the
//! events held for reordering, and where it is in the topic.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::known::{Feed, Taught};
use super::marks::{Marks, SavedMark};
use super::names::NameTable;
use super::{snapshot, HELD_CAP};
use crate::detect::Engine;
use crate::metrics::Metrics;
use crate::pipeline::EventSink;
use crate::scale::reorder::Reorder;
use crate::scale::wire;

/// Kind of a partition snapshot in its state-file header.
pub(super) const SNAPSHOT_KIND: &str = "kafka-partition";

/// The first line of a partition snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Head {
    /// The offset to consume next (what is committed with this snapshot).
    next_offset: Option<i64>,
    /// The high-water marks.
    marks: Vec<SavedMark>,
    /// Events admitted (below the marks) but still in the reorder buffer, as hex wire
    /// records in release order.
    #[serde(default)]
    held: Vec<String>,
}

/// One owned partition.
pub(super) struct Partition {
    /// Its detection state.
    pub(super) engine: Engine,
    marks: Marks,
    /// The offset after the last record consumed.
    pub(super) next_offset: Option<i64>,
    /// Given back after a rebalance from memory: the offset the group must resume at for
    /// the kept state to be current (checked at the first record).
    pub(super) verify: Option<i64>,
    /// Admitted events not yet released to the engine (saved in the snapshot with the
    /// marks that admitted them).
    pub(super) held: Reorder<wire::WireEvent>,
    /// Tokens the known-tokens feed taught this partition's engine.
    taught: Taught,
}

impl Partition {
    /// An empty partition around `engine`, holding events for `hold`.
    pub(super) fn new(engine: Engine, hold: Duration) -> Partition {
        Partition {
            engine,
            marks: Marks::default(),
            next_offset: None,
            verify: None,
            held: Reorder::new(hold, HELD_CAP),
            taught: Taught::default(),
        }
    }

    /// Hands the engine every held event that is due, in event-time order.
    pub(super) fn release(&mut self, names: &mut NameTable, feed: &mut Feed, now: Instant) {
        while let Some(mut w) = self.held.pop_ready(now) {
            w.event.source = names.index(&w.source_name);
            feed.before(&w.event, &mut self.taught, &mut self.engine);
            self.engine.event(w.event);
        }
    }

    /// True (and the mark raised) when the event is new; false for a duplicate.
    pub(super) fn admit(&mut self, id: &wire::EventId, time_ms: i64) -> bool {
        self.marks.admit(id, time_ms)
    }

    /// Writes the snapshot to `path` (the engine flushed, stale marks pruned first).
    pub(super) fn save(&mut self, path: &Path, metrics: &Metrics) -> io::Result<u64> {
        self.engine.flush();
        self.marks.prune();
        let head = Head {
            next_offset: self.next_offset,
            marks: self.marks.saved(),
            held: saved_held(&self.held),
        };
        snapshot::write(path, SNAPSHOT_KIND, &head, &self.engine, metrics)
    }

    /// Restores a snapshot's head and engine bytes.
    pub(super) fn restore(&mut self, head: Head, engine: &[u8]) -> Result<(), String> {
        self.engine.restore(engine)?;
        self.next_offset = head.next_offset;
        self.marks = Marks::from_saved(head.marks);
        restore_held(&mut self.held, head.held)
    }
}

/// Hands `engine` every event of `held` that is due, in event-time order, with this
/// worker's index of its source name (the global stage: it needs no known-tokens feed).
pub(super) fn release(
    held: &mut Reorder<wire::WireEvent>,
    engine: &mut Engine,
    names: &mut NameTable,
    now: Instant,
) {
    while let Some(mut w) = held.pop_ready(now) {
        w.event.source = names.index(&w.source_name);
        engine.event(w.event);
    }
}

/// Held events as hex wire records, in release order.
pub(super) fn saved_held(held: &Reorder<wire::WireEvent>) -> Vec<String> {
    let mut b = Vec::new();
    held.items()
        .into_iter()
        .map(|w| {
            b.clear();
            wire::encode(&w.event, &w.source_name, w.id.id_ref(), &mut b);
            hex::encode(&b)
        })
        .collect()
}

/// Puts a snapshot's held events back in the buffer (held afresh from now).
pub(super) fn restore_held(
    held: &mut Reorder<wire::WireEvent>,
    saved: Vec<String>,
) -> Result<(), String> {
    let now = Instant::now();
    for h in saved {
        let bytes = hex::decode(&h).map_err(|e| format!("held event: {e}"))?;
        let w = wire::decode(&bytes).map_err(|e| format!("held event: {e}"))?;
        held.push(w.event.time.as_millis(), w, now);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::scale::worker::snapshot::Read;

    fn id(edge: &str, file: u64, offset: u64) -> wire::EventId {
        wire::EventId {
            edge: edge.into(),
            file,
            offset,
        }
    }

    fn partition(hold: Duration) -> Partition {
        let engine = Engine::for_config(&Config::default(), &Metrics::new());
        Partition::new(engine, hold)
    }

    fn wire_event(edge: &str, offset: u64, secs: i64) -> wire::WireEvent {
        use crate::event::{AuthEvent, EventTime, Outcome, TokenId};
        let event = AuthEvent {
            alias: None,
            time: EventTime::from_secs(1_772_409_600 + secs),
            source: 0,
            token: Some(TokenId::new("tok_a")),
            ip: "192.0.2.7".parse().ok(),
            user: None,
            outcome: Outcome::Accepted,
            status: None,
        };
        wire::WireEvent {
            event,
            source_name: "api".into(),
            id: id(edge, 1, offset),
        }
    }

    /// `p` saved to a file and read back into a fresh partition.
    fn round_trip(p: &mut Partition) -> Partition {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let m = Metrics::new();
        p.save(&path, &m).unwrap();
        let mut q = partition(Duration::ZERO);
        let r = snapshot::read(&path, SNAPSHOT_KIND, &m, |h, e| q.restore(h, e));
        assert_eq!(r, Read::Restored);
        q
    }

    #[test]
    fn held_events_are_saved_with_the_marks_and_released_in_time_order_after_restore() {
        let mut p = partition(Duration::from_secs(3600));
        for (edge, off, secs) in [("a", 10, 20), ("b", 5, 10), ("a", 11, 30)] {
            let w = wire_event(edge, off, secs);
            assert!(p.admit(&w.id, w.event.time.as_millis()));
            p.held.push(w.event.time.as_millis(), w, Instant::now());
        }
        let mut q = round_trip(&mut p);
        // Admitted before the snapshot: duplicates now, and still to be applied.
        assert!(!q.admit(&id("a", 1, 11), 0));
        let order: Vec<u64> = std::iter::from_fn(|| q.held.pop_ready(Instant::now()))
            .map(|w| w.id.offset)
            .collect();
        assert_eq!(order, [5, 10, 11]);
        // A damaged held record is an error, never a panic.
        let head: Head =
            serde_json::from_str(r#"{"next_offset":1,"marks":[],"held":["zz"]}"#).unwrap();
        assert!(partition(Duration::ZERO).restore(head, b"{}").is_err());
    }

    #[test]
    fn a_snapshot_restores_marks_and_offset() {
        let mut p = partition(Duration::ZERO);
        p.admit(&id("a", 1, 10), 0);
        p.admit(&id("b", 7, 99), 0);
        p.next_offset = Some(42);
        let mut q = round_trip(&mut p);
        assert_eq!(q.next_offset, Some(42));
        assert!(!q.admit(&id("a", 1, 10), 0));
        assert!(!q.admit(&id("b", 7, 50), 0));
        assert!(q.admit(&id("b", 7, 100), 0));
        // Damaged engine bytes are an error, never a panic.
        let head: Head = serde_json::from_str(r#"{"next_offset":1,"marks":[]}"#).unwrap();
        assert!(partition(Duration::ZERO)
            .restore(head, b"not json")
            .is_err());
    }
}
