//! What the tailer reports, as one trait (Vector's `internal_events` idea): the daemon's
//! implementation bumps Prometheus counters, a test's implementation counts.

use std::io;
use std::path::Path;

use crate::event::SourceIdx;

/// Receives the tailer's internal events; every method defaults to doing nothing.
#[allow(unused_variables)]
pub trait TailEvents: Send + Sync {
    /// A file started being followed (at start or when it appeared).
    fn file_added(&self, source: SourceIdx, path: &Path) {}
    /// A path now holds a different file (rename+create, delete+create, inode reuse).
    fn file_rotated(&self, source: SourceIdx, path: &Path) {}
    /// A file shrank below the read offset (copytruncate): reading restarts at 0.
    fn file_truncated(&self, source: SourceIdx, path: &Path) {}
    /// A line over `max_line_bytes` was dropped whole.
    fn line_too_long(&self, source: SourceIdx) {}
    /// Bytes not yet read, summed over the source's files (after each read pass).
    fn lag_bytes(&self, source: SourceIdx, bytes: u64) {}
    /// The checkpoint file was written.
    fn checkpoint_written(&self) {}
    /// Writing (or loading) the checkpoint file failed.
    fn checkpoint_failed(&self, err: &io::Error) {}
    /// Opening, statting or reading a file failed (the tailer keeps going).
    fn read_error(&self, source: SourceIdx, path: &Path, err: &io::Error) {}
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl TailEvents for NoEvents {}
