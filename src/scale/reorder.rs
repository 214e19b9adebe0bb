//! The worker's reorder buffer: edges are not ordered against each other, so a partition
//! holds each event for a short wall-clock time and releases events in event-time order.
//!
//! Two edges tailing the same token's traffic publish concurrently; their messages land in
//! the token's partition interleaved by delivery, not by time. Detectors whose firing
//! event depends on order (the 10th network of a fan-out, the rejection that crosses a
//! threshold) would then fire on another event than a single process would, and the
//! detection id (which names that event's time) would differ. Holding every event for
//! `hold` and always releasing the earliest one puts events that arrive within `hold` of
//! each other back in time order; beyond it, the engine's own lateness tolerance applies.
//!
//! Memory is bounded: past `cap` held events the earliest is released at once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// One held item.
struct Held<T> {
    /// Event time in ms, then arrival order: the release order.
    key: (i64, u64),
    arrived: Instant,
    item: T,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Held<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.key.cmp(&o.key)
    }
}

/// Holds items for `hold` and releases them earliest event time first.
pub struct Reorder<T> {
    heap: BinaryHeap<Reverse<Held<T>>>,
    hold: Duration,
    cap: usize,
    seq: u64,
}

impl<T> Reorder<T> {
    /// A buffer holding each item for `hold` (zero: release at once), at most `cap` items.
    pub fn new(hold: Duration, cap: usize) -> Reorder<T> {
        Reorder {
            heap: BinaryHeap::new(),
            hold,
            cap: cap.max(1),
            seq: 0,
        }
    }

    /// Adds an item with its event time (ms), arrived at `now`.
    pub fn push(&mut self, time_ms: i64, item: T, now: Instant) {
        self.seq = self.seq.wrapping_add(1);
        self.heap.push(Reverse(Held {
            key: (time_ms, self.seq),
            arrived: now,
            item,
        }));
    }

    /// The earliest item, if it has been held for `hold` (or the buffer is over its cap).
    /// Items behind it wait for it: when one edge lags, the other's events wait until the
    /// lagging edge's earlier events have come through (bounded by `cap`), which is the
    /// order a single process would have seen.
    pub fn pop_ready(&mut self, now: Instant) -> Option<T> {
        let Reverse(top) = self.heap.peek()?;
        let waited = now.saturating_duration_since(top.arrived) >= self.hold;
        if waited || self.heap.len() > self.cap {
            return self.heap.pop().map(|Reverse(h)| h.item);
        }
        None
    }

    /// Every held item in release order (a snapshot, a revoke, a stop).
    pub fn drain(&mut self) -> Vec<T> {
        let mut v: Vec<Held<T>> = std::mem::take(&mut self.heap)
            .into_iter()
            .map(|Reverse(h)| h)
            .collect();
        v.sort();
        v.into_iter().map(|h| h.item).collect()
    }

    /// Held items in release order, without removing them (for a snapshot).
    pub fn items(&self) -> Vec<&T> {
        let mut v: Vec<&Held<T>> = self.heap.iter().map(|Reverse(h)| h).collect();
        v.sort();
        v.into_iter().map(|h| &h.item).collect()
    }

    /// How many items are held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_millis(100);

    fn all_ready(r: &mut Reorder<&'static str>, now: Instant) -> Vec<&'static str> {
        std::iter::from_fn(|| r.pop_ready(now)).collect()
    }

    #[test]
    fn interleaved_arrivals_within_the_hold_come_out_in_time_order() {
        let t0 = Instant::now();
        let mut r = Reorder::new(HOLD, 100);
        // Edge A's batch, then edge B's: times interleave.
        r.push(0, "a0", t0);
        r.push(20, "a20", t0);
        r.push(10, "b10", t0 + Duration::from_millis(5));
        r.push(30, "b30", t0 + Duration::from_millis(5));
        assert!(all_ready(&mut r, t0 + Duration::from_millis(50)).is_empty());
        let out = all_ready(&mut r, t0 + Duration::from_millis(105));
        assert_eq!(out, ["a0", "b10", "a20", "b30"]);
        assert!(r.is_empty());
    }

    #[test]
    fn equal_times_keep_arrival_order() {
        let t0 = Instant::now();
        let mut r = Reorder::new(HOLD, 100);
        for s in ["x", "y", "z"] {
            r.push(7, s, t0);
        }
        assert_eq!(all_ready(&mut r, t0 + HOLD), ["x", "y", "z"]);
    }

    #[test]
    fn a_late_event_goes_first_and_what_is_behind_it_waits_for_it() {
        let t0 = Instant::now();
        let mut r = Reorder::new(HOLD, 100);
        r.push(50, "old", t0);
        // Arrives just before "old" is due, with an earlier time: goes first, once held.
        r.push(10, "late", t0 + Duration::from_millis(99));
        assert!(all_ready(&mut r, t0 + HOLD).is_empty());
        let out = all_ready(&mut r, t0 + Duration::from_millis(199));
        assert_eq!(out, ["late", "old"]);
    }

    #[test]
    fn over_the_cap_the_earliest_goes_at_once_and_zero_hold_passes_through() {
        let t0 = Instant::now();
        let mut r = Reorder::new(HOLD, 2);
        r.push(3, "c", t0);
        r.push(1, "a", t0);
        r.push(2, "b", t0);
        assert_eq!(all_ready(&mut r, t0), ["a"]);
        assert_eq!(r.len(), 2);
        let mut z = Reorder::new(Duration::ZERO, 10);
        z.push(5, "now", t0);
        assert_eq!(z.pop_ready(t0), Some("now"));
    }

    #[test]
    fn drain_and_items_are_in_release_order() {
        let t0 = Instant::now();
        let mut r = Reorder::new(HOLD, 10);
        r.push(2, "b", t0);
        r.push(1, "a", t0);
        assert_eq!(r.items(), [&"a", &"b"]);
        assert_eq!(r.drain(), ["a", "b"]);
        assert!(r.is_empty());
    }
}
