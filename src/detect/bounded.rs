//! A capped map for state keyed by attacker-controlled data (tokens, IPs).
//!
//! When full, an insert evicts the least recently seen of a few randomly sampled entries
//! (Redis's sampled LRU): O(1), no linked list per entry, close to true LRU in practice.
//! Sampling uses a fixed-seed PRNG and insertion-ordered storage, so eviction — and with it
//! every detection — is deterministic for a given input.

use std::borrow::Borrow;
use std::hash::Hash;

use indexmap::IndexMap;

use crate::event::EventTime;

/// State that knows when its key was last active.
pub trait Aged {
    /// Event time of the last activity.
    fn last_seen(&self) -> EventTime;
}

/// How many entries an eviction samples.
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
    rng: u64,
}

impl<K: Hash + Eq, V: Aged> BoundedMap<K, V> {
    /// An empty map holding at most `cap` entries (at least 1).
    pub fn new(cap: usize) -> Self {
        BoundedMap {
            map: IndexMap::with_hasher(Hasher::default()),
            cap: cap.max(1),
            evictions: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
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
        if self.map.len() >= self.cap {
            self.evict_one();
        }
        let (i, _) = self.map.insert_full(to_key(), make());
        &mut self.map[i]
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
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            self.evict_one();
        }
        self.map.insert(key, value);
    }

    fn evict_one(&mut self) {
        let n = self.map.len();
        if n == 0 {
            return;
        }
        let mut victim = self.next_index(n);
        for _ in 1..SAMPLES.min(n) {
            let i = self.next_index(n);
            if self.map[i].last_seen() < self.map[victim].last_seen() {
                victim = i;
            }
        }
        self.map.swap_remove_index(victim);
        self.evictions += 1;
    }

    /// SplitMix64 step, reduced to `0..n`.
    fn next_index(&mut self, n: usize) -> usize {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((u128::from(z) * n as u128) >> 64) as usize
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
    fn hits_do_not_insert_and_expiry_counts() {
        let mut m: BoundedMap<String, S> = BoundedMap::new(10);
        m.entry("a", || "a".to_string(), || S(EventTime::from_secs(1)));
        m.entry("a", || unreachable!(), || unreachable!()).0 = EventTime::from_secs(50);
        m.entry("b", || "b".to_string(), || S(EventTime::from_secs(2)));
        assert_eq!(m.expire(EventTime::from_secs(10)), 1);
        assert!(m.get("a").is_some() && m.get("b").is_none());
    }
}
