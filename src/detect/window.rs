//! Event-time sliding windows as rings of fixed buckets: O(1) add, O(N) sum, a few bytes.

use serde::{Deserialize, Serialize};

use crate::event::EventTime;

/// Counts over the last `N` buckets of `width_ms` each (the window is `N * width_ms`).
/// Events older than the window are ignored (the caller counts them as late).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window<const N: usize> {
    #[serde(with = "serde_arrays")]
    counts: [u32; N],
    /// Bucket number (time / width) of the newest bucket.
    head: i64,
}

impl<const N: usize> Default for Window<N> {
    fn default() -> Self {
        Window::EMPTY
    }
}

impl<const N: usize> Window<N> {
    /// Nothing added yet.
    pub const EMPTY: Self = Window {
        counts: [0; N],
        head: i64::MIN,
    };

    /// Adds `n` at time `t`; returns false if `t` fell before the window (late).
    pub fn add(&mut self, t: EventTime, width_ms: i64, n: u32) -> bool {
        let b = t.as_millis().div_euclid(width_ms.max(1));
        self.advance(b);
        if b <= self.head - N as i64 {
            return false;
        }
        let slot = b.rem_euclid(N as i64) as usize;
        self.counts[slot] = self.counts[slot].saturating_add(n);
        true
    }

    /// Moves the head to bucket `b`, zeroing buckets that left the window.
    fn advance(&mut self, b: i64) {
        if self.head == i64::MIN || b - self.head >= N as i64 {
            self.counts = [0; N];
            self.head = b;
            return;
        }
        while self.head < b {
            self.head += 1;
            self.counts[self.head.rem_euclid(N as i64) as usize] = 0;
        }
    }

    /// The total over the window ending at time `now` (buckets older than the window
    /// relative to `now` are excluded without mutating).
    pub fn sum_at(&self, now: EventTime, width_ms: i64) -> u64 {
        if self.head == i64::MIN {
            return 0;
        }
        let b = now.as_millis().div_euclid(width_ms.max(1)).max(self.head);
        let oldest = b - N as i64 + 1;
        (oldest.max(self.head - N as i64 + 1)..=self.head)
            .map(|i| u64::from(self.counts[i.rem_euclid(N as i64) as usize]))
            .sum()
    }

    /// True if nothing was ever added.
    pub fn is_empty(&self) -> bool {
        self.head == i64::MIN
    }
}

/// Serde for `[u32; N]` of any N (serde's derive covers only N ≤ 32).
mod serde_arrays {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(a: &[u32; N], s: S) -> Result<S::Ok, S::Error> {
        a.as_slice().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u32; N], D::Error> {
        let v = Vec::<u32>::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom(format!("expected {N} buckets")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> EventTime {
        EventTime::from_secs(s)
    }

    #[test]
    fn slides_and_forgets() {
        let mut w: Window<10> = Window::default();
        let width = 30_000; // 10 x 30 s = 5 min
        for s in 0..300 {
            assert!(w.add(t(s), width, 1));
        }
        assert_eq!(w.sum_at(t(299), width), 300);
        // Two and a half minutes later half the window has slid out.
        assert_eq!(w.sum_at(t(449), width), 150);
        w.add(t(449), width, 1);
        assert_eq!(w.sum_at(t(449), width), 151);
        // Late: older than the window.
        assert!(!w.add(t(10), width, 1));
        // Far future clears everything.
        w.add(t(10_000), width, 2);
        assert_eq!(w.sum_at(t(10_000), width), 2);
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<Window<10>>(&json).unwrap(), w);
    }
}
