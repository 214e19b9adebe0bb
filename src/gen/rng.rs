//! A tiny deterministic PRNG (xoshiro256** seeded through SplitMix64), so `gen` needs no `rand`
//! and the same seed gives the same stream on every build.

/// One SplitMix64 step: expands a seed into well-mixed words.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mix64(*state)
}

/// The SplitMix64 finaliser: a good 64-bit hash of one word.
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256**: fast, small, good enough for synthetic traffic.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded from one word.
    pub(crate) fn new(seed: u64) -> Rng {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    /// An independent stream number `stream` under `seed`: entities get their own stream so one
    /// entity's draws never shift another's.
    pub(crate) fn stream(seed: u64, stream: u64) -> Rng {
        Rng::new(mix64(seed) ^ mix64(stream.wrapping_add(0x5851_F42D_4C95_7F2D)))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); 0 when `n` is 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [lo, hi); `lo` when the range is empty.
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo) as u64) as i64
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// An exponential gap with the given mean, in whole milliseconds (at least 1).
    pub(crate) fn exp_ms(&mut self, mean_ms: f64) -> i64 {
        let gap = -(1.0 - self.f64()).ln() * mean_ms;
        (gap as i64).max(1)
    }

    /// A uniformly chosen index into a slice of length `len` (0 when empty).
    pub(crate) fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let a: Vec<u64> = (0..8).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = Rng::stream(7, 1);
        let mut y = Rng::stream(7, 2);
        assert_ne!(x.next_u64(), y.next_u64());
    }

    #[test]
    fn bounded_draws_stay_in_range() {
        let mut r = Rng::new(3);
        for _ in 0..10_000 {
            assert!(r.below(10) < 10);
            let v = r.range(-5, 5);
            assert!((-5..5).contains(&v));
            let f = r.f64();
            assert!((0.0..1.0).contains(&f));
            assert!(r.exp_ms(1000.0) >= 1);
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.range(4, 4), 4);
    }

    #[test]
    fn exponential_mean_is_close() {
        let mut r = Rng::new(11);
        let n = 20_000;
        let sum: i64 = (0..n).map(|_| r.exp_ms(1000.0)).sum();
        let mean = sum as f64 / n as f64;
        assert!((950.0..1050.0).contains(&mean), "mean {mean}");
    }
}
