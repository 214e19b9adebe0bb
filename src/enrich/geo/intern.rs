//! Shared city names: one `Arc<str>` per distinct name, so a lookup clones a pointer instead
//! of allocating. Bounded: past the cap a name is allocated per lookup (still correct).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// A capped set of shared strings.
#[derive(Debug)]
pub(crate) struct Interner {
    set: Mutex<HashSet<Arc<str>>>,
    cap: usize,
}

impl Interner {
    /// An empty interner holding at most `cap` names.
    pub(crate) fn new(cap: usize) -> Self {
        Interner {
            set: Mutex::new(HashSet::new()),
            cap,
        }
    }

    /// The shared copy of `s`.
    pub(crate) fn get(&self, s: &str) -> Arc<str> {
        // A poisoned lock only means another lookup panicked mid-insert; the set is still
        // a valid set, so keep using it.
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = set.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        if set.len() < self.cap {
            set.insert(Arc::clone(&a));
        }
        a
    }

    /// Names held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.lock().map(|s| s.len()).unwrap_or(0)
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
