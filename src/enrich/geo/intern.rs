//! Shared city names: one `Arc<str>` per distinct name, so a lookup clones a pointer instead
//! of allocating. Bounded: past the cap a name is allocated per lookup (still correct).
//!
//! One interner serves every thread that locates addresses (the detection thread, and
//! each partition's engine in a Kafka worker): a sharded `DashSet` lets them read without
//! queueing on one lock; a miss locks only its shard.

use std::sync::Arc;

use dashmap::DashSet;

/// A capped set of shared strings.
#[derive(Debug)]
pub(crate) struct Interner {
    set: DashSet<Arc<str>>,
    cap: usize,
}

impl Interner {
    /// An empty interner holding at most `cap` names.
    pub(crate) fn new(cap: usize) -> Self {
        Interner {
            set: DashSet::new(),
            cap,
        }
    }

    /// The shared copy of `s`.
    pub(crate) fn get(&self, s: &str) -> Arc<str> {
        if let Some(a) = self.set.get(s) {
            return Arc::clone(&a);
        }
        let a: Arc<str> = Arc::from(s);
        // The length is read without a global lock, so concurrent misses may overshoot the
        // cap by a few names (one per thread): still bounded.
        if self.set.len() < self.cap {
            self.set.insert(Arc::clone(&a));
        }
        a
    }

    /// Names held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_stays_bounded() {
        let i = Interner::new(2);
        let a = i.get("London");
        let b = i.get("London");
        assert!(Arc::ptr_eq(&a, &b));
        i.get("Paris");
        let c = i.get("Tokyo");
        let d = i.get("Tokyo");
        assert_eq!(&*c, "Tokyo");
        assert!(!Arc::ptr_eq(&c, &d), "over the cap: not interned");
        assert_eq!(i.len(), 2);
    }
}
