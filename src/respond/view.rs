//! The frozen set as the gateways see it ([`FrozenView`]): what `/authz` looks tokens up in,
//! what the deny file and the Kafka `frozen` topic are written from.
//!
//! A concurrent map (`dashmap`, sharded): a lookup on the request path takes one shard's
//! read side for the length of a hash probe and never awaits; a freeze or unfreeze changes
//! one entry (no copy of a million-entry set per change). Writers are the [`FrozenSet`]
//! of the deciding process (every change mirrored as it happens) or, on a Kafka edge, the
//! follower of the `frozen` topic. Every change bumps a generation that watchers (deny
//! file, publisher) wait on, so none of them polls.
//!
//! [`FrozenSet`]: super::frozen::FrozenSet

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::frozen::FrozenEntry;

/// Why a token is refused: enough to name the decision, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deny {
    /// The detector (or `manual`, `alertmanager`) that froze it.
    pub detector: Box<str>,
    /// The detection record's id.
    pub id: Box<str>,
    /// When the freeze was decided (Unix ms).
    #[serde(default)]
    pub since_ms: i64,
    /// When the freeze ends by TTL (Unix ms), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
}

impl Deny {
    /// The refusal for a frozen-set entry.
    pub fn of(e: &FrozenEntry) -> Deny {
        Deny {
            detector: e.detection.detector.as_str().into(),
            id: e.detection.id.as_str().into(),
            since_ms: e.since_ms,
            until_ms: e.until_ms,
        }
    }

    /// True while the freeze is in force at `now_ms` (a TTL that ran out lifts it even
    /// before the expiry tick or the tombstone arrives).
    pub fn active(&self, now_ms: i64) -> bool {
        self.until_ms.is_none_or(|u| now_ms < u)
    }
}

/// `synced_ms` of a view written by the process that decides: always current.
const AUTHORITATIVE: i64 = i64::MAX;

struct Inner {
    map: DashMap<Box<str>, Deny, foldhash::fast::RandomState>,
    loaded: AtomicBool,
    /// When the copy was last known to match its source (Unix ms; 0 never).
    synced_ms: AtomicI64,
    changes: watch::Sender<u64>,
    listen: OnceLock<SocketAddr>,
}

/// The shared view (cheap to clone).
#[derive(Clone)]
pub struct FrozenView(Arc<Inner>);

impl Default for FrozenView {
    fn default() -> Self {
        FrozenView::new()
    }
}

impl std::fmt::Debug for FrozenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenView")
            .field("entries", &self.len())
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl FrozenView {
    /// An empty view, not loaded yet.
    pub fn new() -> FrozenView {
        FrozenView(Arc::new(Inner {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            loaded: AtomicBool::new(false),
            synced_ms: AtomicI64::new(0),
            changes: watch::Sender::new(0),
            listen: OnceLock::new(),
        }))
    }

    /// The refusal for `token` if it is frozen at `now_ms` (the request path: no await).
    pub fn lookup(&self, token: &str, now_ms: i64) -> Option<Deny> {
        let d = self.0.map.get(token)?;
        d.active(now_ms).then(|| d.clone())
    }

    /// Adds or replaces an entry.
    pub fn upsert(&self, token: &str, deny: Deny) {
        self.0.map.insert(token.into(), deny);
        self.changed();
    }

    /// Removes an entry; true if it was there.
    pub fn remove(&self, token: &str) -> bool {
        let had = self.0.map.remove(token).is_some();
        if had {
            self.changed();
        }
        had
    }

    /// Replaces every entry (a load or a rebuild).
    pub fn replace_all(&self, entries: impl IntoIterator<Item = (String, Deny)>) {
        let fresh: std::collections::HashMap<String, Deny> = entries.into_iter().collect();
        self.0.map.retain(|k, _| fresh.contains_key(&**k));
        for (k, v) in fresh {
            self.0.map.insert(k.into_boxed_str(), v);
        }
        self.changed();
    }

    fn changed(&self) {
        self.0.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Number of entries (expired ones included until they are removed).
    pub fn len(&self) -> usize {
        self.0.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.map.is_empty()
    }

    /// Every entry, sorted by token (for the deny file and the publisher's diff).
    pub fn entries(&self) -> Vec<(String, Deny)> {
        let mut v: Vec<(String, Deny)> = self
            .0
            .map
            .iter()
            .map(|r| (r.key().to_string(), r.value().clone()))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Wakes on every change (and at once for the state at subscription).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.0.changes.subscribe();
        rx.mark_changed();
        rx
    }

    /// True once the set is loaded (from disk, or read from the topic to its end): `/authz`
    /// answers 503 before.
    pub fn is_loaded(&self) -> bool {
        self.0.loaded.load(Ordering::Acquire)
    }

    /// Marks the view loaded and written by the process that decides (its age is 0).
    pub fn mark_authoritative(&self) {
        self.0.synced_ms.store(AUTHORITATIVE, Ordering::Release);
        self.0.loaded.store(true, Ordering::Release);
        self.changed();
    }

    /// Marks the copy as matching its source at `now_ms` (a follower that reached the end
    /// of the topic); the first call also marks it loaded.
    pub fn mark_synced(&self, now_ms: i64) {
        self.0.synced_ms.store(now_ms, Ordering::Release);
        if !self.0.loaded.swap(true, Ordering::AcqRel) {
            self.changed();
        }
    }

    /// Seconds since the copy last matched its source (0 for the deciding process; `None`
    /// before it was loaded).
    pub fn age_secs(&self, now_ms: i64) -> Option<f64> {
        match self.0.synced_ms.load(Ordering::Acquire) {
            0 => None,
            AUTHORITATIVE => Some(0.0),
            t => Some(now_ms.saturating_sub(t).max(0) as f64 / 1000.0),
        }
    }

    /// Records the address `/authz` is served on (for `tokenwatch frozen`).
    pub fn set_listen(&self, addr: SocketAddr) {
        let _ = self.0.listen.set(addr);
    }

    /// Where enforcement stands, for the admin API.
    pub fn enforcement(&self, now_ms: i64) -> Enforcement {
        Enforcement {
            authz_listen: self.0.listen.get().map(ToString::to_string),
            loaded: self.is_loaded(),
            entries: self.len(),
            age_secs: self.age_secs(now_ms),
        }
    }
}

/// Where enforcement stands (the `enforcement` field of `GET /api/v1/frozen`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enforcement {
    /// The `/authz` listener's address, `None` when it is off.
    pub authz_listen: Option<String>,
    /// True once the set is loaded (`/authz` answers 503 before).
    pub loaded: bool,
    /// Entries served.
    pub entries: usize,
    /// Seconds since the copy matched its source.
    pub age_secs: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(until: Option<i64>) -> Deny {
        Deny {
            detector: "ip_fanout".into(),
            id: "rec-1".into(),
            since_ms: 0,
            until_ms: until,
        }
    }

    #[test]
    fn lookup_honours_ttl_and_changes_wake_watchers() {
        let v = FrozenView::new();
        let mut rx = v.subscribe();
        assert!(
            rx.has_changed().unwrap_or(false),
            "a new watcher sees the state at once"
        );
        rx.mark_unchanged();
        assert!(!v.is_loaded());
        v.upsert("fp:00", deny(Some(1_000)));
        v.upsert("ak_1", deny(None));
        assert!(rx.has_changed().unwrap_or(false));
        assert!(v.lookup("fp:00", 999).is_some());
        assert!(
            v.lookup("fp:00", 1_000).is_none(),
            "the TTL lifts it at once"
        );
        assert!(v.lookup("ak_2", 0).is_none());
        v.replace_all([("ak_2".to_string(), deny(None))]);
        assert_eq!(v.entries().len(), 1);
        assert!(v.lookup("ak_1", 0).is_none());
        assert!(v.remove("ak_2") && v.is_empty());
        assert_eq!(v.age_secs(5_000), None);
        v.mark_synced(1_000);
        assert!(v.is_loaded());
        assert_eq!(v.age_secs(3_500), Some(2.5));
        v.mark_authoritative();
        assert_eq!(v.age_secs(3_500), Some(0.0));
    }
}
