//! A capped map for state keyed by attacker-controlled data (tokens, IPs).
//!
//! When full, an insert evicts the least recently seen of the few entries at a clock hand
//! that sweeps the (insertion-ordered) storage, and the new entry takes the victim's place:
//! O(1), no linked list per entry, close to LRU in practice (the hand reaches the entries
//! inserted longest ago first, and of those keeps the ones still in use). Under a flood of
//! new keys (a spray from random addresses) every insert evicts, so the eviction is built
//! for that: the sample is consecutive entries (one new cache line per eviction as the hand
//! advances, where randomly sampled entries cost a cache miss each), and the new entry
//! overwrites the victim in place (no entry moved, nothing reallocated). Deterministic: the
//! same input evicts the same entries, so every detection is reproducible.
//!
//! [`admit`](BoundedMap::admit) adds an admission filter for maps keyed by client addresses:
//! while the map is full, a new key gets an entry only on its second sighting (its first
//! sets a bit in a small two-generation filter). Entries in use are then not pushed out by
//! a flood of addresses that are each seen once, and the flood costs a bit test per event
//! instead of an eviction. Below the cap nothing changes.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use indexmap::IndexMap;

use crate::event::EventTime;

/// State that knows when its key was last active.
pub trait Aged {
    /// Event time of the last activity.
    fn last_seen(&self) -> EventTime;
}

/// How many entries (consecutive, from the clock hand) an eviction compares.
const SAMPLES: usize = 8;

/// foldhash: several times faster than SipHash on short keys, and randomly seeded per
/// process, which is what keeps attacker-chosen keys from colliding on purpose.
type Hasher = foldhash::fast::RandomState;

/// A map with a hard entry cap and idle expiry.
#[derive(Debug, Clone)]
pub struct BoundedMap<K, V> {
    map: IndexMap<K, V, Hasher>,
    cap: usize,
    evictions: u64,
    /// Where the next eviction looks (an index into the entries).
    hand: usize,
    /// Keys seen once while full (built on the first refusal).
    ghost: Option<Box<Ghost>>,
}

/// Keys seen once while the map was full: two generations of a bit set, the older dropped
/// after `cap / 4` new keys, so a second sighting is recognised if it comes within roughly
/// that many other newcomers. A fixed seed keeps admission (and so detection) reproducible;
/// a collision only admits a newcomer early, as if there were no filter.
#[derive(Debug, Clone)]
struct Ghost {
    bits: [Vec<u64>; 2],
    current: usize,
    /// Bits set in the current generation.
    sets: usize,
    /// New keys per generation.
    every: usize,
}

/// The filter's hash (fixed seed: see [`Ghost`]).
const GHOST_HASH: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x7467_6873);

impl Ghost {
    /// About 32 bits per key of a generation: a false "seen" rate near 3 % per generation.
    fn new(cap: usize) -> Ghost {
        let every = (cap / 4).max(1);
        let words = (every / 2).next_power_of_two().max(64);
        Ghost {
            bits: [vec![0; words], vec![0; words]],
            current: 0,
            sets: 0,
            every,
        }
    }

    /// True if `key` was seen before (in either generation); else remembers it.
    fn seen_before<Q: Hash + ?Sized>(&mut self, key: &Q) -> bool {
        let h = GHOST_HASH.hash_one(key);
        let words = self.bits[0].len();
        let (w, bit) = ((h >> 6) as usize & (words - 1), 1u64 << (h & 63));
        let [a, b] = &self.bits;
        if (a[w] | b[w]) & bit != 0 {
            return true;
        }
        self.bits[self.current][w] |= bit;
        self.sets += 1;
        if self.sets >= self.every {
            self.current ^= 1;
            self.bits[self.current].fill(0);
            self.sets = 0;
        }
        false
    }
}

impl<K: Hash + Eq, V: Aged> BoundedMap<K, V> {
    /// An empty map holding at most `cap` entries (at least 1).
    pub fn new(cap: usize) -> Self {
        BoundedMap {
            map: IndexMap::with_hasher(Hasher::default()),
            cap: cap.max(1),
            evictions: 0,
            hand: 0,
            ghost: None,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries evicted (by the cap or by expiry) since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The entry for `key`, if present.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key)
    }

    /// The entry for `key`, mutable, if present.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_mut(key)
    }

    /// The position of `key`, if present (valid until the map is next changed).
    pub fn index_of<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_index_of(key)
    }

    /// The entry at a position from [`index_of`](Self::index_of).
    pub fn at(&self, i: usize) -> Option<&V> {
        self.map.get_index(i).map(|(_, v)| v)
    }

    /// The entry at a position from [`index_of`](Self::index_of), mutable.
    pub fn at_mut(&mut self, i: usize) -> Option<&mut V> {
        self.map.get_index_mut(i).map(|(_, v)| v)
    }

    /// The entry for `key`, inserting `make()` (evicting first if full). The key is only
    /// built (`to_key`) on a miss, so hits allocate nothing.
    pub fn entry<Q>(
        &mut self,
        key: &Q,
        to_key: impl FnOnce() -> K,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(i) = self.map.get_index_of(key) {
            return &mut self.map[i];
        }
        let i = self.put(to_key(), make());
        &mut self.map[i]
    }

    /// Like [`entry`](Self::entry), but while the map is full a new key is admitted only on
    /// its second sighting (see the module docs): `None` for a first sighting, which counts
    /// as an eviction (the state it would have started is dropped at once).
    pub fn admit<Q>(
        &mut self,
        key: &Q,
        to_key: impl FnOnce() -> K,
        make: impl FnOnce() -> V,
    ) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(i) = self.map.get_index_of(key) {
            return Some(&mut self.map[i]);
        }
        if self.map.len() >= self.cap {
            let cap = self.cap;
            let ghost = self.ghost.get_or_insert_with(|| Box::new(Ghost::new(cap)));
            if !ghost.seen_before(key) {
                self.evictions += 1;
                return None;
            }
        }
        let i = self.put(to_key(), make());
        Some(&mut self.map[i])
    }

    /// Inserts a key known to be absent, in an evicted entry's place when full; returns its
    /// position.
    fn put(&mut self, key: K, value: V) -> usize {
        if self.map.len() < self.cap {
            return self.map.insert_full(key, value).0;
        }
        let victim = self.victim();
        // The key is absent, so the replacement cannot collide; if it somehow did, the
        // existing entry is the one to update.
        let i = match self.map.replace_index(victim, key) {
            Ok(_) => {
                self.evictions += 1;
                victim
            }
            Err((existing, _)) => existing,
        };
        self.map[i] = value;
        i
    }

    /// Removes `key`.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.swap_remove(key)
    }

    /// Drops entries idle since before `cutoff`; returns how many.
    pub fn expire(&mut self, cutoff: EventTime) -> usize {
        let before = self.map.len();
        self.map.retain(|_, v| v.last_seen() >= cutoff);
        let n = before - self.map.len();
        self.evictions += n as u64;
        n
    }

    /// Iterates entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    /// Iterates entries mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.map.iter_mut()
    }

    /// Inserts directly (snapshot restore), respecting the cap.
    pub fn insert(&mut self, key: K, value: V) {
        match self.map.get_index_of(&key) {
            Some(i) => self.map[i] = value,
            None => {
                self.put(key, value);
            }
        }
    }

    /// The least recently seen of the `SAMPLES` entries from the hand (wrapping); the hand
    /// moves on by one, so each entry is compared on several evictions before it can be
    /// passed, and one just put in the victim's place is the most recent of its window.
    fn victim(&mut self) -> usize {
        let n = self.map.len();
        let start = if self.hand < n { self.hand } else { 0 };
        self.hand = start + 1;
        let mut victim = start;
        let mut oldest = self.map[start].last_seen();
        for k in 1..SAMPLES.min(n) {
            let i = if start + k < n {
                start + k
            } else {
                start + k - n
            };
            let seen = self.map[i].last_seen();
            if seen < oldest {
                (victim, oldest) = (i, seen);
            }
        }
        victim
    }
}

/// Keys seen recently, at most `cap` of them (oldest forgotten first): dedupe of ids that
/// arrive again (Alertmanager fingerprints, detection ids at the responder).
#[derive(Debug)]
pub struct RecentKeys {
    set: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
    cap: usize,
}

impl RecentKeys {
    /// Remembers at most `cap` keys.
    pub fn new(cap: usize) -> RecentKeys {
        RecentKeys {
            set: std::collections::HashSet::new(),
            order: std::collections::VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// True the first time `key` is offered (among the last `cap`).
    pub fn first(&mut self, key: String) -> bool {
        if self.set.contains(&key) {
            return false;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.set.insert(key);
        true
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keys_forget_the_oldest_beyond_the_cap() {
        let mut s = RecentKeys::new(2);
        assert!(s.first("a".into()));
        assert!(!s.first("a".into()));
        assert!(s.first("b".into()));
        assert!(s.first("c".into()));
        assert_eq!(s.len(), 2);
        // "a" was forgotten, "b" and "c" are remembered.
        assert!(s.first("a".into()));
        assert!(!s.first("c".into()));
    }

    #[derive(Debug, Clone)]
    struct S(EventTime);
    impl Aged for S {
        fn last_seen(&self) -> EventTime {
            self.0
        }
    }

    #[test]
    fn cap_holds_and_prefers_old_victims() {
        let mut m: BoundedMap<String, S> = BoundedMap::new(100);
        for i in 0..10_000i64 {
            let k = format!("k{i}");
            m.entry(k.as_str(), || k.clone(), || S(EventTime::from_secs(i)));
        }
        assert_eq!(m.len(), 100);
        assert_eq!(m.evictions(), 9_900);
        // Sampled LRU keeps mostly recent keys.
        let recent = m
            .iter()
            .filter(|(_, v)| v.0 >= EventTime::from_secs(9_000))
            .count();
        assert!(recent > 80, "only {recent} recent keys kept");
    }

    #[test]
    fn when_full_a_newcomer_needs_a_second_sighting() {
        let t = EventTime::from_secs;
        let mut m: BoundedMap<u64, S> = BoundedMap::new(1000);
        // Below the cap every key is admitted, as with `entry`.
        for k in 0..1000u64 {
            assert!(m.admit(&k, || k, || S(t(1))).is_some());
        }
        assert_eq!((m.len(), m.evictions()), (1000, 0));
        // Full: a flood of keys seen once mostly gets no entry (a few percent slip through
        // the filter's false positives); each costs one eviction, refused or admitted.
        let mut admitted = 0;
        for k in 1000..101_000u64 {
            admitted += usize::from(m.admit(&k, || k, || S(t(2))).is_some());
        }
        assert!(
            admitted < 10_000,
            "{admitted} of 100000 one-time keys admitted"
        );
        assert_eq!((m.evictions(), m.len()), (100_000, 1000));
        // A key seen twice in a row gets in, evicting the least recent at the hand.
        assert!(m.admit(&7_000_000, || 7_000_000, || S(t(3))).is_none());
        assert!(m.admit(&7_000_000, || 7_000_000, || S(t(3))).is_some());
        assert!(m.get(&7_000_000).is_some() && m.len() == 1000);
    }

    #[test]
    fn hits_do_not_insert_and_expiry_counts() {
        let mut m: BoundedMap<String, S> = BoundedMap::new(10);
        m.entry("a", || "a".to_string(), || S(EventTime::from_secs(1)));
        m.entry("a", || unreachable!(), || unreachable!()).0 = EventTime::from_secs(50);
        m.entry("b", || "b".to_string(), || S(EventTime::from_secs(2)));
        assert_eq!(m.expire(EventTime::from_secs(10)), 1);
        assert!(m.get("a").is_some() && m.get("b").is_none());
    }
}
