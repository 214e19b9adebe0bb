//! Checkpoints: the committed offset of every followed file, persisted as one versioned,
//! checksummed JSON file through [`crate::durable`] (kind [`KIND`]).
//!
//! Only committed (acked) offsets are written, so a restart re-reads at most the lines the
//! pipeline had not finished: at-least-once, never a skipped line. A damaged checkpoint
//! file is set aside and reported; the tailer then starts as if fresh. The daemon may
//! [`store`] older offsets before the tailer starts (those of the detector snapshot, see
//! `cli::run`), so detector state and file positions resume from the same point.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::events::TailEvents;
use super::identity::{fp_from_hex, fp_to_hex, DevIno};
use crate::durable;

/// The checkpoint file's name inside the checkpoint directory.
pub const FILE_NAME: &str = "checkpoints.json";
/// The state kind in the file's header.
pub const KIND: &str = "checkpoints";
const VERSION: u32 = 1;

/// One file's persisted position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The source's name.
    pub source: String,
    /// The path it was last seen at (informational: identity is dev+ino+fingerprint).
    pub path: String,
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Hex fingerprint of the head, if the file had a complete first line.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Offset just past the last committed line.
    pub offset: u64,
}

impl Entry {
    /// Device and inode.
    pub fn dev_ino(&self) -> DevIno {
        DevIno {
            dev: self.dev,
            ino: self.ino,
        }
    }

    /// The parsed fingerprint.
    pub fn fp(&self) -> Option<u64> {
        self.fingerprint.as_deref().and_then(fp_from_hex)
    }
}

#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    files: Vec<Entry>,
}

/// A followed file as the checkpointer sees it.
#[derive(Debug, Clone)]
pub struct Live {
    /// The source's name.
    pub source: String,
    /// Current path.
    pub path: PathBuf,
    /// Device and inode.
    pub id: DevIno,
    /// Head fingerprint once known.
    pub fp: Option<u64>,
    /// The committed offset that acks advance.
    pub committed: Arc<AtomicU64>,
}

/// The followed files shared between the reader and the checkpointer.
#[derive(Debug, Default)]
pub struct Registry {
    files: Mutex<BTreeMap<u64, Live>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Live>> {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a file under `key`.
    pub fn put(&self, key: u64, live: Live) {
        self.lock().insert(key, live);
    }

    /// Forgets a file.
    pub fn remove(&self, key: u64) {
        self.lock().remove(&key);
    }

    /// The entries to persist now, in a stable order.
    pub fn snapshot(&self) -> Vec<Entry> {
        let mut v: Vec<Entry> = self.lock().values().map(to_entry).collect();
        v.sort_by(|a, b| (&a.source, a.dev, a.ino).cmp(&(&b.source, b.dev, b.ino)));
        v
    }
}

fn to_entry(l: &Live) -> Entry {
    Entry {
        source: l.source.clone(),
        path: l.path.to_string_lossy().into_owned(),
        dev: l.id.dev,
        ino: l.id.ino,
        fingerprint: l.fp.map(fp_to_hex),
        offset: l.committed.load(Ordering::Acquire),
    }
}

/// Writes the registry to the checkpoint file when it changed.
pub struct Checkpointer {
    path: PathBuf,
    registry: Arc<Registry>,
    last: Mutex<Option<Vec<Entry>>>,
    events: Arc<dyn TailEvents>,
}

impl Checkpointer {
    /// A checkpointer writing `dir/checkpoints.json`.
    pub fn new(dir: &Path, registry: Arc<Registry>, events: Arc<dyn TailEvents>) -> Self {
        Checkpointer {
            path: dir.join(FILE_NAME),
            registry,
            last: Mutex::new(None),
            events,
        }
    }

    /// Writes now if anything changed since the last write (or always when `force`).
    pub fn write(&self, force: bool) -> io::Result<()> {
        // Holding the lock serialises writers: the tmp file has a single name.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let entries = self.registry.snapshot();
        if !force && last.as_ref() == Some(&entries) {
            return Ok(());
        }
        match write_file(&self.path, &entries) {
            Ok(()) => {
                self.events.checkpoint_written();
                *last = Some(entries);
                Ok(())
            }
            Err(e) => {
                self.events.checkpoint_failed(&e);
                Err(e)
            }
        }
    }

    /// The offsets a checkpoint written now would hold (every acked batch, no more).
    pub fn entries(&self) -> Vec<Entry> {
        self.registry.snapshot()
    }
}

fn write_file(path: &Path, entries: &[Entry]) -> io::Result<()> {
    let body = CheckpointFile {
        version: VERSION,
        files: entries.to_vec(),
    };
    let bytes = serde_json::to_vec_pretty(&body).map_err(io::Error::other)?;
    durable::write_state(path, KIND, &bytes)
}

/// Replaces the checkpoint file in `dir` with `entries` (resuming from an older, consistent
/// point: the tailer re-reads what follows).
pub fn store(dir: &Path, entries: &[Entry]) -> io::Result<()> {
    write_file(&dir.join(FILE_NAME), entries)
}

/// Reads the checkpoint file in `dir`: empty when missing; a damaged one (bad header, bad
/// JSON, unknown version) is set aside and returned as the error.
pub fn read(dir: &Path) -> Result<Vec<Entry>, durable::Rejected> {
    let path = dir.join(FILE_NAME);
    match durable::read_state(&path, KIND, |b| parse(b).is_ok()) {
        durable::Loaded::Missing => Ok(Vec::new()),
        durable::Loaded::Found(bytes) => {
            parse(&bytes).map_err(|e| durable::set_aside(&path, &e.to_string()))
        }
        durable::Loaded::Rejected(r) => Err(r),
    }
}

/// Loads the checkpoint file; a missing file is empty, a damaged one is set aside, reported
/// and ignored (the tailer then starts as if fresh).
pub fn load(dir: &Path, events: &dyn TailEvents) -> Vec<Entry> {
    read(dir).unwrap_or_else(|r| {
        events.checkpoint_failed(&io::Error::new(io::ErrorKind::InvalidData, r));
        Vec::new()
    })
}

fn parse(bytes: &[u8]) -> io::Result<Vec<Entry>> {
    let file: CheckpointFile =
        serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if file.version != VERSION {
        let msg = format!("unsupported checkpoint version {}", file.version);
        return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
    }
    Ok(file.files)
}

/// What a checkpoint says about a file found at start.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// The same file: continue at this offset.
    At(u64),
    /// The checkpointed file at this inode or path was replaced or truncated while we were
    /// down: read the current one from its beginning.
    Replaced {
        /// True when the same inode shrank (copytruncate), false for a new file.
        truncated: bool,
    },
    /// Nothing known: apply the source's start position.
    Unknown,
}

/// Matches a file found at start against the loaded entries of its source, removing the
/// entry it consumes. Identity first (dev+ino with an agreeing fingerprint), then the
/// fingerprint alone (a copy or a file moved across devices keeps its offset).
pub fn take_match(
    entries: &mut Vec<Entry>,
    source: &str,
    path: &Path,
    id: DevIno,
    fp: Option<u64>,
    size: u64,
) -> Resume {
    let agrees = |e: &Entry| match (e.fp(), fp) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    let mine = |e: &Entry| e.source == source;
    let by_id = entries
        .iter()
        .position(|e| mine(e) && e.dev_ino() == id && agrees(e));
    let by_fp = || fp.and_then(|f| entries.iter().position(|e| mine(e) && e.fp() == Some(f)));
    if let Some(i) = by_id.or_else(by_fp) {
        let e = entries.remove(i);
        return match e.offset <= size {
            true => Resume::At(e.offset),
            false => Resume::Replaced { truncated: true },
        };
    }
    let same_ino = entries.iter().any(|e| mine(e) && e.dev_ino() == id);
    let same_path = entries
        .iter()
        .any(|e| mine(e) && Path::new(&e.path) == path);
    match (same_ino, same_path) {
        (true, _) => Resume::Replaced { truncated: true },
        (false, true) => Resume::Replaced { truncated: false },
        _ => Resume::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ino: u64, fp: Option<u64>, offset: u64) -> Entry {
        Entry {
            source: "s".into(),
            path: "/l/app.log".into(),
            dev: 1,
            ino,
            fingerprint: fp.map(fp_to_hex),
            offset,
        }
    }

    #[test]
    fn matching_rules() {
        let id = |ino| DevIno { dev: 1, ino };
        let p = Path::new("/l/app.log");
        let other = Path::new("/l/app.log.1");
        let mut v = vec![entry(5, Some(9), 100)];
        assert_eq!(
            take_match(&mut v, "s", other, id(5), Some(9), 200),
            Resume::At(100)
        );
        assert!(v.is_empty());
        // Copied elsewhere (new inode, same head).
        let mut v = vec![entry(5, Some(9), 100)];
        assert_eq!(
            take_match(&mut v, "s", other, id(6), Some(9), 200),
            Resume::At(100)
        );
        // Same inode, other head: truncated and rewritten.
        let mut v = vec![entry(5, Some(9), 100)];
        let r = take_match(&mut v, "s", p, id(5), Some(8), 500);
        assert_eq!(r, Resume::Replaced { truncated: true });
        // New file at the old path: rotated while down.
        let r = take_match(&mut v, "s", p, id(7), Some(8), 500);
        assert_eq!(r, Resume::Replaced { truncated: false });
        assert_eq!(take_match(&mut v, "x", p, id(7), None, 0), Resume::Unknown);
        // Shrunk below the offset.
        let mut v = vec![entry(5, None, 100)];
        let r = take_match(&mut v, "s", p, id(5), None, 50);
        assert_eq!(r, Resume::Replaced { truncated: true });
    }

    #[test]
    fn corrupt_checkpoint_is_ignored() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(FILE_NAME), b"{not json")?;
        assert!(load(dir.path(), &super::super::events::NoEvents).is_empty());
        assert!(!dir.path().join(FILE_NAME).exists(), "set aside");
        Ok(())
    }

    #[test]
    fn store_read_truncated_and_legacy() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let entries = vec![entry(5, Some(9), 100), entry(6, None, 7)];
        store(dir.path(), &entries)?;
        assert_eq!(read(dir.path()), Ok(entries.clone()));
        // A file from before the header still loads.
        let legacy = serde_json::to_vec(&CheckpointFile {
            version: VERSION,
            files: entries.clone(),
        })?;
        std::fs::write(dir.path().join(FILE_NAME), &legacy)?;
        assert_eq!(read(dir.path()), Ok(entries));
        // Truncated by a crash of the disk, not of us: detected, set aside, fresh start.
        let p = dir.path().join(FILE_NAME);
        store(dir.path(), &[entry(5, None, 1)])?;
        let bytes = std::fs::read(&p)?;
        std::fs::write(&p, &bytes[..bytes.len() / 2])?;
        let r = read(dir.path()).err();
        assert!(r.is_some_and(|r| r.moved_to.is_some() && r.reason.contains("truncated")));
        assert_eq!(read(dir.path()), Ok(Vec::new()));
        Ok(())
    }
}
