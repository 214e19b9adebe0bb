//! High-water marks: per `(edge, file)` the highest byte offset applied, so an event at or
//! below it (an edge re-publishing after its crash, a partition read again after a worker
//! crash) is dropped before the engine sees it.
//!
//! Events of one file are in offset order within a partition (one producer, resends aside),
//! not across partitions: each partition keeps marks of its own, also in the global stage.

use super::HashMap;
use crate::scale::wire;

/// Marks of files with no event for this long (event time, against the newest) are
/// pruned at the next snapshot: rotated files never come back.
pub(super) const MARK_TTL_MS: i64 = 24 * 3600 * 1000;

/// A file's high-water mark.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// Highest byte offset applied.
    offset: u64,
    /// Event time (ms) of the newest event seen from the file.
    seen: i64,
}

/// One mark as saved: `(edge, file, highest applied byte offset, event time of its last
/// event in ms)`.
pub(super) type SavedMark = (String, u64, u64, i64);

/// The marks of one partition: edge → file → mark.
#[derive(Debug, Default)]
pub(super) struct Marks {
    edges: HashMap<Box<str>, HashMap<u64, Mark>>,
}

impl Marks {
    /// True (and the mark raised) when the event is new; false for a duplicate.
    pub(super) fn admit(&mut self, id: &wire::EventId, time_ms: i64) -> bool {
        // Looked up by `&str` first: the edge's name is allocated once, not per record.
        let files = match self.edges.get_mut(&*id.edge) {
            Some(f) => f,
            None => self.edges.entry(id.edge.clone()).or_default(),
        };
        match files.get_mut(&id.file) {
            Some(m) if id.offset <= m.offset => false,
            Some(m) => {
                m.offset = id.offset;
                m.seen = m.seen.max(time_ms);
                true
            }
            None => {
                let m = Mark {
                    offset: id.offset,
                    seen: time_ms,
                };
                files.insert(id.file, m);
                true
            }
        }
    }

    /// Drops the marks of files silent for [`MARK_TTL_MS`].
    pub(super) fn prune(&mut self) {
        let newest = self
            .edges
            .values()
            .flat_map(|f| f.values().map(|m| m.seen))
            .max()
            .unwrap_or(i64::MIN);
        let cutoff = newest.saturating_sub(MARK_TTL_MS);
        for files in self.edges.values_mut() {
            files.retain(|_, m| m.seen >= cutoff);
        }
        self.edges.retain(|_, f| !f.is_empty());
    }

    /// Every mark, for a snapshot.
    pub(super) fn saved(&self) -> Vec<SavedMark> {
        self.edges
            .iter()
            .flat_map(|(e, f)| {
                f.iter()
                    .map(|(file, m)| (e.to_string(), *file, m.offset, m.seen))
            })
            .collect()
    }

    /// The marks of a snapshot.
    pub(super) fn from_saved(saved: Vec<SavedMark>) -> Marks {
        let mut m = Marks::default();
        for (edge, file, offset, seen) in saved {
            m.edges
                .entry(edge.into_boxed_str())
                .or_default()
                .insert(file, Mark { offset, seen });
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(edge: &str, file: u64, offset: u64) -> wire::EventId {
        wire::EventId {
            edge: edge.into(),
            file,
            offset,
        }
    }

    #[test]
    fn marks_of_files_silent_for_a_day_are_pruned() {
        let mut m = Marks::default();
        assert!(m.admit(&id("a", 1, 10), 0));
        assert!(m.admit(&id("a", 2, 10), MARK_TTL_MS / 2));
        assert!(m.admit(&id("b", 3, 10), MARK_TTL_MS + 1));
        m.prune();
        // File 1 fell silent more than a day before the newest event: its mark is gone.
        assert!(m.admit(&id("a", 1, 10), MARK_TTL_MS + 2));
        assert!(!m.admit(&id("a", 2, 10), MARK_TTL_MS + 2));
        assert!(!m.admit(&id("b", 3, 10), MARK_TTL_MS + 2));
    }

    #[test]
    fn events_at_or_below_the_mark_of_their_edge_and_file_are_duplicates() {
        let mut m = Marks::default();
        assert!(m.admit(&id("a", 1, 10), 0));
        assert!(!m.admit(&id("a", 1, 10), 0));
        assert!(!m.admit(&id("a", 1, 5), 0));
        assert!(m.admit(&id("a", 1, 11), 0));
        // Other files and other edges have their own marks.
        assert!(m.admit(&id("a", 2, 0), 0));
        assert!(m.admit(&id("b", 1, 3), 0));
        assert!(!m.admit(&id("b", 1, 3), 0));
        // And they survive a snapshot.
        let mut back = Marks::from_saved(m.saved());
        assert!(!back.admit(&id("a", 1, 11), 0));
        assert!(back.admit(&id("b", 1, 4), 0));
    }
}
