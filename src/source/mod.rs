//! Sources: where lines come from (a tailed file, a replayed file, stdin).
//!
//! Every source hands the pipeline [`LineBatch`]es of complete lines; a batch carries an
//! [`Ack`] so checkpoints only ever cover lines the pipeline has processed (at-least-once).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::event::{EventTime, SourceIdx};

pub mod file;
pub mod journald;
pub mod replay;
pub mod syslog;
pub mod tail_metrics;
pub mod wrapper;

/// Complete lines read from one file, each terminated by `\n`. Over-long lines are dropped
/// whole by the reader (and counted); a batch may be empty and still carry an ack, when only
/// dropped lines or skipped NUL runs moved the offset.
#[derive(Debug)]
pub struct LineBatch {
    /// Which configured source the lines belong to.
    pub source: SourceIdx,
    /// The bytes: whole lines, each ending in `\n`.
    pub buf: Vec<u8>,
    /// Acknowledge after processing so the checkpoint may advance past these lines.
    pub ack: Option<Ack>,
    /// Per line, the time its transport recorded (a syslog header, the journal's
    /// `__REALTIME_TIMESTAMP`, the container runtime's time of a Docker/CRI line), used when
    /// the line itself carries none; empty when the source has no such time (plain files).
    pub times: Vec<EventTime>,
}

impl LineBatch {
    /// Iterates the lines without their `\n` (a trailing `\r` is left to the parser).
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let buf = self.buf.as_slice();
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        let empty = body.is_empty() && buf.is_empty();
        body.split(|&b| b == b'\n').filter(move |_| !empty)
    }
}

/// Marks a batch processed: stores the byte offset just past its last line into the file's
/// committed offset, which the checkpointer persists.
#[derive(Debug, Clone)]
pub struct Ack {
    committed: Arc<AtomicU64>,
    end_offset: u64,
    file: u64,
}

impl Ack {
    /// An ack that will publish `end_offset` into `committed`.
    pub fn new(committed: Arc<AtomicU64>, end_offset: u64) -> Self {
        Ack {
            committed,
            end_offset,
            file: 0,
        }
    }

    /// Tags the ack with the file's identity (the tailer's head fingerprint), which the
    /// Kafka edge puts in event ids.
    pub fn with_file(mut self, file: u64) -> Self {
        self.file = file;
        self
    }

    /// The offset just past the batch's last line.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// The file's identity, 0 when unknown.
    pub fn file_id(&self) -> u64 {
        self.file
    }

    /// Publishes the offset (monotonic: never moves a committed offset backwards).
    pub fn ack(self) {
        self.committed.fetch_max(self.end_offset, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split() {
        let b = LineBatch {
            source: 0,
            buf: b"a\nbb\n\nc\n".to_vec(),
            ack: None,
            times: Vec::new(),
        };
        let v: Vec<&[u8]> = b.lines().collect();
        assert_eq!(v, vec![&b"a"[..], b"bb", b"", b"c"]);
        let e = LineBatch {
            source: 0,
            buf: Vec::new(),
            ack: None,
            times: Vec::new(),
        };
        assert_eq!(e.lines().count(), 0);
    }
}
