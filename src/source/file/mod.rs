//! File tailer: follows files through rotation, truncation and restarts.
//!
//! A library with no globals: [`Tailer::start`] spawns a reader thread that reconciles the
//! include patterns with the filesystem (inotify on the parent directories is only a
//! wake-up hint; the periodic stat/glob pass is ground truth), reads complete lines into
//! [`LineBatch`](crate::source::LineBatch)es of one file each, and blocks on the bounded
//! channel when the pipeline is behind. A file is identified by device + inode + a
//! fingerprint of its first line, not by its path. Acked offsets are checkpointed through
//! [`crate::durable`]; internal events go to a [`TailEvents`] implementation.
//!
//! Rotation: rename+create (the old file is read to its end, the new one from 0),
//! delete+create, copytruncate (a size below the read offset, or a changed head on the same
//! inode, restarts at 0). copytruncate is racy by nature: lines written between the copy
//! and the truncate, or before the tailer read them, exist only in the copy; include the
//! rotated name in the pattern to keep them.

use std::time::Duration;

use crate::event::SourceIdx;

pub mod checkpoint;
pub mod discover;
pub mod events;
pub mod identity;
pub mod lines;
mod reader;
pub mod sink;
mod tailer;
mod tracked;
pub mod watch;

pub use events::{NoEvents, TailEvents};
pub use tailer::{Tailer, TailerHandle, CHECKPOINT_EVERY};
pub use tracked::BATCH_BYTES;

/// Where to start in a file that has no checkpoint yet (files that appear after start are
/// always read from their beginning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// Only new lines (the default for a daemon: no backfill storm).
    #[default]
    End,
    /// The whole file.
    Beginning,
}

/// How changes are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchMode {
    /// inotify wake-ups (via `notify`) plus a periodic stat/glob reconcile as ground truth.
    #[default]
    Notify,
    /// Periodic stat/glob only (network filesystems, containers without inotify).
    Poll,
}

/// One source's tailing settings (the runtime form of a `[[source]]` table).
#[derive(Debug, Clone)]
pub struct TailConfig {
    /// The source index that batches are tagged with.
    pub source: SourceIdx,
    /// The source name (for logs and checkpoint keys).
    pub name: String,
    /// Paths or glob patterns.
    pub include: Vec<String>,
    /// Start position for files without a checkpoint.
    pub start_at: StartAt,
    /// Wake-up mechanism.
    pub watch: WatchMode,
    /// Reconcile period (and poll period in `Poll` mode).
    pub poll_interval: Duration,
    /// Lines longer than this are dropped and counted.
    pub max_line_bytes: usize,
    /// Container log wrapper of the files (joined lines are bounded by `max_line_bytes`).
    pub wrapper: crate::source::wrapper::WrapperChoice,
}

impl TailConfig {
    /// Settings with defaults for one path or glob.
    pub fn new(source: SourceIdx, name: impl Into<String>, include: Vec<String>) -> Self {
        TailConfig {
            source,
            name: name.into(),
            include,
            start_at: StartAt::End,
            watch: WatchMode::Notify,
            poll_interval: Duration::from_millis(250),
            max_line_bytes: 102_400,
            wrapper: crate::source::wrapper::WrapperChoice::Auto,
        }
    }
}
