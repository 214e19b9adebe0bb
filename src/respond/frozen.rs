//! The frozen set: which tokens are frozen, since when, until when, and why. Persisted with
//! [`crate::durable::write_atomic`] on every change and reloaded at start.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::Detection;

/// Format tag of `frozen.json`.
const VERSION: u32 = 1;

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
}

impl FrozenSet {
    /// An in-memory set (replay, dry-run).
    pub fn in_memory() -> FrozenSet {
        FrozenSet::default()
    }

    /// Loads `path` (missing ⇒ empty); later changes are written back to it.
    pub fn open(path: &Path) -> io::Result<FrozenSet> {
        let valid = |b: &[u8]| serde_json::from_slice::<File>(b).is_ok();
        let entries = match crate::durable::read_with_recovery(path, valid)? {
            None => BTreeMap::new(),
            Some(bytes) => {
                let f: File = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                f.frozen.into_iter().map(|e| (e.token.clone(), e)).collect()
            }
        };
        Ok(FrozenSet {
            entries,
            path: Some(path.to_path_buf()),
        })
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
        self.entries.insert(e.token.clone(), e);
        self.save()
    }

    /// Removes `token` and persists; returns the entry if it was frozen.
    pub fn remove(&mut self, token: &str) -> io::Result<Option<FrozenEntry>> {
        let e = self.entries.remove(token);
        if e.is_some() {
            self.save()?;
        }
        Ok(e)
    }

    /// Removes and returns every entry whose TTL ran out at `now_ms` (persisting once).
    pub fn take_expired(&mut self, now_ms: i64) -> io::Result<Vec<FrozenEntry>> {
        let due: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.until_ms.is_some_and(|u| u <= now_ms))
            .map(|e| e.token.clone())
            .collect();
        let out: Vec<FrozenEntry> = due.iter().filter_map(|t| self.entries.remove(t)).collect();
        if !out.is_empty() {
            self.save()?;
        }
        Ok(out)
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
        crate::durable::write_atomic(path, &bytes)
    }
}
