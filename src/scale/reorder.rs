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

/// Slots kept allocated while nothing is held (a steady trickle reuses them).
const SHRINK_ABOVE: usize = 1024;

/// Holds items for `hold` and releases them earliest event time first.
///
/// The heap orders small keys (time, arrival number, slot); the items themselves stay put
/// in a slab. Under a backlog the buffer sits at `cap`, and moving ~150-byte events
/// through 16 heap levels on every push and pop doubled a worker's CPU per record.
pub struct Reorder<T> {
    /// `(event time ms, arrival number, slot)`, earliest first.
    heap: BinaryHeap<Reverse<(i64, u64, u32)>>,
    /// Held items with their arrival time; `None` marks a free slot.
    slab: Vec<Option<(Instant, T)>>,
    free: Vec<u32>,
    hold: Duration,
    cap: usize,
    seq: u64,
}

impl<T> Reorder<T> {
    /// A buffer holding each item for `hold` (zero: release at once), at most `cap` items.
    pub fn new(hold: Duration, cap: usize) -> Reorder<T> {
        Reorder {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            hold,
            cap: cap.clamp(1, u32::MAX as usize),
            seq: 0,
        }
    }

    /// Adds an item with its event time (ms), arrived at `now`.
    pub fn push(&mut self, time_ms: i64, item: T, now: Instant) {
        self.seq = self.seq.wrapping_add(1);
        let slot = match self.free.pop() {
            Some(i) => {
                if let Some(s) = self.slab.get_mut(i as usize) {
                    *s = Some((now, item));
                }
                i
            }
            None => {
                self.slab.push(Some((now, item)));
                u32::try_from(self.slab.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.heap.push(Reverse((time_ms, self.seq, slot)));
    }

    /// The earliest item, if it has been held for `hold` (or the buffer is over its cap).
    /// Items behind it wait for it: when one edge lags, the other's events wait until the
    /// lagging edge's earlier events have come through (bounded by `cap`), which is the
    /// order a single process would have seen.
    pub fn pop_ready(&mut self, now: Instant) -> Option<T> {
        let &Reverse((_, _, slot)) = self.heap.peek()?;
        let arrived = self.slab.get(slot as usize)?.as_ref()?.0;
        let waited = now.saturating_duration_since(arrived) >= self.hold;
        if waited || self.heap.len() > self.cap {
            self.heap.pop();
            return self.take(slot);
        }
        None
    }

    fn take(&mut self, slot: u32) -> Option<T> {
        let item = self.slab.get_mut(slot as usize)?.take().map(|(_, t)| t);
        self.free.push(slot);
        if self.heap.is_empty() {
            self.slab.clear();
            self.free.clear();
            if self.slab.capacity() > SHRINK_ABOVE {
                // Nothing held: give the memory of a past burst back.
                self.slab = Vec::new();
                self.free = Vec::new();
            }
        }
        item
    }

    /// Every held item in release order (a revoke, a stop).
    pub fn drain(&mut self) -> Vec<T> {
        let mut keys: Vec<_> = std::mem::take(&mut self.heap)
            .into_iter()
            .map(|Reverse(k)| k)
            .collect();
        keys.sort_unstable();
        let out = keys
            .into_iter()
            .filter_map(|(_, _, slot)| self.slab.get_mut(slot as usize)?.take())
            .map(|(_, t)| t)
            .collect();
        self.slab = Vec::new();
        self.free = Vec::new();
        out
    }

    /// Held items in release order, without removing them (for a snapshot).
    pub fn items(&self) -> Vec<&T> {
        let mut keys: Vec<_> = self.heap.iter().map(|Reverse(k)| *k).collect();
        keys.sort_unstable();
        keys.into_iter()
            .filter_map(|(_, _, slot)| self.slab.get(slot as usize)?.as_ref())
            .map(|(_, t)| t)
            .collect()
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

    #[test]
    fn slots_are_reused_so_a_steady_stream_keeps_memory_flat() {
        let t0 = Instant::now();
        let mut r = Reorder::new(HOLD, 4);
        for n in 0..1000i64 {
            r.push(n % 7, n, t0);
            let _ = r.pop_ready(t0);
        }
        assert!(
            r.len() <= 4 && r.slab.len() <= 5,
            "{} {}",
            r.len(),
            r.slab.len()
        );
        let out = r.drain();
        assert!(out.windows(2).all(|w| w[0] % 7 <= w[1] % 7), "{out:?}");
        assert!(r.slab.is_empty());
    }
}
