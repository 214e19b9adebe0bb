//! The frozen set: which tokens are frozen, since when, until when, and why. Persisted with
//! [`crate::durable::write_state`] (kind [`KIND`], checksummed) on every change and
//! reloaded at start. A damaged file is set aside and reported, and the set starts empty:
//! pending freeze jobs in the journal re-freeze their tokens (`Core::recover`), and the
//! hooks already revoked the rest at the identity provider.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::Detection;

/// Format tag of `frozen.json`.
const VERSION: u32 = 1;
/// The state kind in the file's header.
pub const KIND: &str = "frozen";

/// One frozen token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenEntry {
    /// The token id or fingerprint.
    pub token: String,
    /// When it was frozen (Unix ms, wall clock).
    pub since_ms: i64,
    /// When it will be unfrozen (Unix ms), if a TTL is configured.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub until_ms: Option<i64>,
    /// The record that froze it (the unfreeze hooks receive it again).
    pub detection: Detection,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    frozen: Vec<FrozenEntry>,
}

/// Frozen tokens by token, optionally backed by a file.
#[derive(Debug, Default)]
pub struct FrozenSet {
    entries: BTreeMap<String, FrozenEntry>,
    path: Option<PathBuf>,
    rejected: Option<crate::durable::Rejected>,
    /// Mirror of the entries for `/authz`, the deny file and the `frozen` topic.
    view: Option<super::view::FrozenView>,
    /// No entry expires before this (a lower bound; `None`: none has a TTL). The ticker asks
    /// every second: walking a million entries each time stalled the runtime's core (and
    /// `/authz` answers with it) for milliseconds.
    next_expiry: Option<i64>,
}

/// The earliest TTL end among `entries`.
fn earliest(entries: &BTreeMap<String, FrozenEntry>) -> Option<i64> {
    entries.values().filter_map(|e| e.until_ms).min()
}

impl FrozenSet {
    /// An in-memory set (replay, dry-run).
    pub fn in_memory() -> FrozenSet {
        FrozenSet::default()
    }

    /// Loads `path` (missing ⇒ empty; damaged ⇒ set aside, reported, empty: see
    /// [`FrozenSet::rejected`]); later changes are written back to it.
    pub fn open(path: &Path) -> io::Result<FrozenSet> {
        use crate::durable::{read_state, set_aside, Loaded};
        let (entries, rejected) = match read_state(path, KIND, |b| parse(b).is_ok()) {
            Loaded::Missing => (Vec::new(), None),
            Loaded::Found(bytes) => match parse(&bytes) {
                Ok(f) => (f.frozen, None),
                Err(e) => (Vec::new(), Some(set_aside(path, &e.to_string()))),
            },
            Loaded::Rejected(r) => (Vec::new(), Some(r)),
        };
        let entries = entries.into_iter().map(|e| (e.token.clone(), e)).collect();
        Ok(FrozenSet {
            next_expiry: earliest(&entries),
            entries,
            path: Some(path.to_path_buf()),
            rejected,
            view: None,
        })
    }

    /// Mirrors every entry into `view` from now on (filled at once; marking it loaded is
    /// the caller's, once recovery is done).
    pub fn attach(&mut self, view: super::view::FrozenView) {
        view.replace_all(
            self.entries
                .values()
                .map(|e| (e.token.clone(), super::view::Deny::of(e))),
        );
        self.view = Some(view);
    }

    /// The attached view, if any.
    pub fn view(&self) -> Option<&super::view::FrozenView> {
        self.view.as_ref()
    }

    /// The damaged file this set was opened over, if any (for the caller's metrics).
    pub fn rejected(&self) -> Option<&crate::durable::Rejected> {
        self.rejected.as_ref()
    }

    /// The entry for `token`.
    pub fn get(&self, token: &str) -> Option<&FrozenEntry> {
        self.entries.get(token)
    }

    /// Number of frozen tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing is frozen.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, by token.
    pub fn list(&self) -> Vec<FrozenEntry> {
        self.entries.values().cloned().collect()
    }

    /// Adds (or replaces) an entry and persists.
    pub fn insert(&mut self, e: FrozenEntry) -> io::Result<()> {
        if let Some(v) = &self.view {
            v.upsert(&e.token, super::view::Deny::of(&e));
        }
        if let Some(u) = e.until_ms {
            self.next_expiry = Some(self.next_expiry.map_or(u, |n| n.min(u)));
        }
        self.entries.insert(e.token.clone(), e);
        self.save()
    }

    /// Removes `token` and persists; returns the entry if it was frozen, and how the write
    /// went (the entry is gone from memory either way, so the caller still announces it).
    pub fn remove(&mut self, token: &str) -> (Option<FrozenEntry>, io::Result<()>) {
        let e = self.entries.remove(token);
        if let (Some(v), Some(_)) = (&self.view, &e) {
            v.remove(token);
        }
        let saved = match e.is_some() {
            true => self.save(),
            false => Ok(()),
        };
        (e, saved)
    }

    /// Removes and returns every entry whose TTL ran out at `now_ms` (persisting once), and
    /// how the write went.
    pub fn take_expired(&mut self, now_ms: i64) -> (Vec<FrozenEntry>, io::Result<()>) {
        if self.next_expiry.is_none_or(|n| n > now_ms) {
            return (Vec::new(), Ok(()));
        }
        let due: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.until_ms.is_some_and(|u| u <= now_ms))
            .map(|e| e.token.clone())
            .collect();
        let out: Vec<FrozenEntry> = due.iter().filter_map(|t| self.entries.remove(t)).collect();
        self.next_expiry = earliest(&self.entries);
        if let Some(v) = &self.view {
            for e in &out {
                v.remove(&e.token);
            }
        }
        let saved = match out.is_empty() {
            true => Ok(()),
            false => self.save(),
        };
        (out, saved)
    }

    /// Writes the set now (a retry after a failed write; a no-op for an in-memory set).
    pub fn persist(&self) -> io::Result<()> {
        self.save()
    }

    fn save(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let f = File {
            version: VERSION,
            frozen: self.entries.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&f).map_err(io::Error::other)?;
        crate::durable::write_state(path, KIND, &bytes)
    }
}

fn parse(bytes: &[u8]) -> Result<File, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Action;
    use crate::event::EventTime;
    use crate::event::Severity;

    fn entry(token: &str) -> FrozenEntry {
        FrozenEntry {
            token: token.into(),
            since_ms: 1,
            until_ms: None,
            detection: Detection {
                ts: EventTime::from_millis(0),
                detector: "ip_fanout".into(),
                severity: Severity::High,
                token: Some(token.into()),
                ip: None,
                user: None,
                source: None,
                action: Action::Freeze,
                reason: None,
                evidence: serde_json::json!({}),
                id: format!("id-{token}"),
            },
        }
    }

    #[test]
    fn ttl_expiry_takes_what_is_due_and_skips_the_walk_until_then() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("frozen.json");
        let mut set = FrozenSet::open(&p)?;
        for (t, until) in [("tok_a", Some(200)), ("tok_b", Some(100)), ("tok_c", None)] {
            set.insert(FrozenEntry {
                until_ms: until,
                ..entry(t)
            })?;
        }
        assert_eq!(set.next_expiry, Some(100));
        assert!(set.take_expired(99).0.is_empty());
        let (out, saved) = set.take_expired(150);
        saved?;
        assert_eq!(
            out.iter().map(|e| e.token.as_str()).collect::<Vec<_>>(),
            ["tok_b"]
        );
        assert_eq!(set.next_expiry, Some(200));
        // Reopened, the bound is computed from the file.
        let mut again = FrozenSet::open(&p)?;
        assert_eq!(again.next_expiry, Some(200));
        let (out, _) = again.take_expired(200);
        assert_eq!(out.len(), 1);
        assert_eq!((again.len(), again.next_expiry), (1, None));
        Ok(())
    }

    #[test]
    fn survives_reopen_and_loads_the_old_format() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("frozen.json");
        let mut set = FrozenSet::open(&p)?;
        set.insert(entry("tok_a"))?;
        set.insert(entry("tok_b"))?;
        let again = FrozenSet::open(&p)?;
        assert_eq!(again.list(), set.list());
        assert!(again.rejected().is_none());
        let legacy = serde_json::to_vec(&File {
            version: VERSION,
            frozen: vec![entry("tok_c")],
        })?;
        std::fs::write(&p, legacy)?;
        assert!(FrozenSet::open(&p)?.get("tok_c").is_some());
        Ok(())
    }

    #[test]
    fn flipped_byte_is_set_aside_not_trusted() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("frozen.json");
        FrozenSet::open(&p)?.insert(entry("tok_a"))?;
        let mut bytes = std::fs::read(&p)?;
        // Flip a byte inside the token: still valid JSON, a different token.
        let at = bytes.len() - 20;
        if let Some(b) = bytes.get_mut(at) {
            *b ^= 0x01;
        }
        std::fs::write(&p, &bytes)?;
        let set = FrozenSet::open(&p)?;
        assert!(set.is_empty());
        let r = set.rejected().cloned();
        assert!(r.is_some_and(|r| r.reason.contains("checksum") && r.moved_to.is_some()));
        assert!(!p.exists());
        Ok(())
    }
}
