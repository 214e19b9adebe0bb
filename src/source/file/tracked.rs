//! One followed file: its open handle, line splitter and committed offset.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use super::checkpoint::{Live, Registry};
use super::events::TailEvents;
use super::identity::{fingerprint_file, fingerprint_of, DevIno};
use super::lines::LineSplitter;
use super::sink::{Sink, Stopped};
use crate::event::{EventTime, SourceIdx};
use crate::source::wrapper::Unwrapper;
use crate::source::{Ack, LineBatch};

/// Lines per batch: a batch is flushed once it holds this many bytes.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Batches read from one file per pass before the others get a turn.
const BATCHES_PER_PASS: usize = 16;

/// Lines on their way to the pipeline (and their container times, for wrapped files).
struct Batch {
    buf: Vec<u8>,
    stamps: Vec<EventTime>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            buf: Vec::with_capacity(BATCH_BYTES),
            stamps: Vec::new(),
        }
    }
}

/// What one read pass over a file found.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// Bytes were read.
    pub got_data: bool,
    /// The pass stopped early; more data is waiting.
    pub more: bool,
    /// File size minus read offset.
    pub lag: u64,
}

/// A followed file.
pub struct Tracked {
    /// Registry key.
    pub key: u64,
    /// The source this file belongs to.
    pub source: SourceIdx,
    /// Last path it was seen at.
    pub path: PathBuf,
    /// Device and inode of the open handle.
    pub id: DevIno,
    /// Head fingerprint once known.
    pub fp: Option<u64>,
    /// Set while no include path leads to this file any more (renamed away or deleted).
    pub orphan_since: Option<Instant>,
    /// Scan generation that last saw it.
    pub seen_gen: u64,
    /// Compare the head at the next read even if the size looks unchanged (set by the
    /// periodic scan: a truncate-and-regrow to the very same size is otherwise invisible).
    pub check_head: bool,
    last_size: u64,
    file: File,
    split: LineSplitter,
    /// Container log wrapper state (pieces of a line being joined).
    unwrap: Unwrapper,
    /// Physical lines of a wrapped file, before unwrapping (reused).
    phys: Vec<u8>,
    committed: Arc<AtomicU64>,
    sent_end: u64,
    source_name: Arc<str>,
    registry: Arc<Registry>,
    events: Arc<dyn TailEvents>,
}

/// Everything needed to start following a file.
pub struct Opened {
    /// Registry key.
    pub key: u64,
    /// Source index.
    pub source: SourceIdx,
    /// Source name.
    pub source_name: Arc<str>,
    /// Path.
    pub path: PathBuf,
    /// The open handle.
    pub file: File,
    /// Its identity.
    pub id: DevIno,
    /// Its fingerprint.
    pub fp: Option<u64>,
    /// Its container log wrapper (per file: detected from its own first line).
    pub unwrap: Unwrapper,
}

impl Tracked {
    /// Starts following at `split`'s position and registers for checkpointing.
    pub fn new(
        o: Opened,
        split: LineSplitter,
        registry: Arc<Registry>,
        events: Arc<dyn TailEvents>,
    ) -> Self {
        let start = split.line_end();
        let t = Tracked {
            key: o.key,
            source: o.source,
            path: o.path,
            id: o.id,
            fp: o.fp,
            orphan_since: None,
            seen_gen: 0,
            check_head: false,
            last_size: 0,
            file: o.file,
            split,
            unwrap: o.unwrap,
            phys: Vec::new(),
            committed: Arc::new(AtomicU64::new(start)),
            sent_end: start,
            source_name: o.source_name,
            registry,
            events,
        };
        t.publish();
        t
    }

    /// Pushes path, fingerprint and committed-offset cell to the checkpoint registry.
    pub fn publish(&self) {
        let live = Live {
            source: self.source_name.to_string(),
            path: self.path.clone(),
            id: self.id,
            fp: self.fp,
            committed: Arc::clone(&self.committed),
        };
        self.registry.put(self.key, live);
    }

    /// Forgets the file in the registry (it is no longer followed).
    pub fn unregister(&self) {
        self.registry.remove(self.key);
    }

    /// Reads the file again from 0 (truncated or rewritten in place).
    pub fn restart(&mut self, max_line: usize) {
        self.split = LineSplitter::new(0, max_line);
        self.unwrap.reset();
        // A fresh cell: acks of batches from before the truncation still in flight must not
        // push the new offset forward.
        self.committed = Arc::new(AtomicU64::new(0));
        self.sent_end = 0;
        self.fp = fingerprint_file(&self.file).ok().flatten();
        self.publish();
    }

    /// True when the file was truncated (copytruncate): it is shorter than the read offset,
    /// or its head changed (truncated and already written past the offset again).
    fn rewritten(&self, size: u64) -> io::Result<bool> {
        if size < self.split.next_offset() {
            return Ok(true);
        }
        // A 256-byte pread: it catches the truncate-then-outgrow case a size check
        // cannot see.
        self.head_changed()
    }

    /// True when the file's head no longer matches the known fingerprint. Checked after
    /// every read too: a writer always writes a new generation's head before anything we
    /// could read past our offset, so this closes the check-then-read race.
    fn head_changed(&self) -> io::Result<bool> {
        Ok(self.fp.is_some() && fingerprint_file(&self.file)? != self.fp)
    }

    /// Reads what is new, sending complete lines in batches.
    pub fn read(
        &mut self,
        scratch: &mut [u8],
        max_line: usize,
        sink: &Sink,
    ) -> io::Result<Result<ReadOutcome, Stopped>> {
        let mut out = ReadOutcome::default();
        let size = self.file.metadata()?.len();
        let idle = size == self.last_size && size == self.split.next_offset();
        self.last_size = size;
        if idle && !std::mem::take(&mut self.check_head) {
            // Nothing new: one fstat per pass for an idle file, no head read.
            return Ok(Ok(out));
        }
        // Events are reported before the lines they concern are sent, so a consumer that
        // saw the lines also sees the counts.
        if self.rewritten(size)? {
            let (next, fp) = (self.split.next_offset(), self.fp);
            tracing::debug!(path = %self.path.display(), id = ?self.id, size, next, ?fp, "truncated");
            self.restart(max_line);
            self.events.file_truncated(self.source, &self.path);
        }
        let mut batch = Batch::default();
        let mut sent = 0;
        loop {
            let n = self.file.read_at(scratch, self.split.next_offset())?;
            if n == 0 {
                break;
            }
            out.got_data = true;
            if self.head_changed()? {
                // Truncated and rewritten between our size check and this read: the bytes
                // belong to the new generation at a wrong offset. Keep the lines read
                // before, drop these, start over at 0.
                if let Err(s) = self.flush(&mut batch, sink) {
                    return Ok(Err(s));
                }
                self.restart(max_line);
                self.events.file_truncated(self.source, &self.path);
                continue;
            }
            let chunk = scratch.get(..n).unwrap_or_default();
            if self.fp.is_none() {
                self.learn_fp(chunk)?;
            }
            for _ in 0..self.feed(chunk, &mut batch) {
                self.events.line_too_long(self.source);
            }
            if batch.buf.len() >= BATCH_BYTES {
                if let Err(s) = self.flush(&mut batch, sink) {
                    return Ok(Err(s));
                }
                sent += 1;
                if sent >= BATCHES_PER_PASS {
                    out.more = true;
                    break;
                }
            }
        }
        if let Err(s) = self.flush(&mut batch, sink) {
            return Ok(Err(s));
        }
        let size = self.file.metadata()?.len();
        out.lag = size.saturating_sub(self.split.next_offset());
        Ok(Ok(out))
    }

    /// Fingerprints the head from the bytes just read (`chunk`, read at the splitter's
    /// position) before any line of it is sent: once the consumer has the lines, a writer
    /// may rotate, and a head read later could belong to the next generation of the file.
    fn learn_fp(&mut self, chunk: &[u8]) -> io::Result<()> {
        let from_chunk = (self.split.next_offset() == 0)
            .then(|| fingerprint_of(chunk))
            .flatten();
        self.fp = match from_chunk {
            Some(fp) => Some(fp),
            None => fingerprint_file(&self.file)?,
        };
        if self.fp.is_some() {
            self.publish();
        }
        Ok(())
    }

    /// Splits a chunk into lines onto the batch, through the container wrapper unless the
    /// file is plain (plain files take the direct, copy-once path). Returns how many lines
    /// were dropped as too long.
    fn feed(&mut self, chunk: &[u8], batch: &mut Batch) -> u32 {
        if self.unwrap.is_plain() {
            return self.split.feed(chunk, &mut batch.buf);
        }
        // Line starts are counted from the last line end; a dropped or NUL-skipped stretch
        // in between only makes them earlier, so a checkpoint held at a piece's start is
        // conservative (a line read twice, never one lost).
        let base = self.split.line_end();
        self.phys.clear();
        let dropped = self.split.feed(chunk, &mut self.phys);
        dropped
            + self
                .unwrap
                .feed_buf(&self.phys, base, &mut batch.buf, &mut batch.stamps)
    }

    /// Sends the batch (possibly empty, to let dropped or skipped bytes be committed). The
    /// offset never passes the first piece of a container line still being joined.
    fn flush(&mut self, batch: &mut Batch, sink: &Sink) -> Result<(), Stopped> {
        let end = self.unwrap.safe_end(self.split.line_end());
        if batch.buf.is_empty() && end <= self.sent_end {
            return Ok(());
        }
        let Batch { buf, stamps } = std::mem::take(batch);
        let ack = Ack::new(Arc::clone(&self.committed), end).with_file(self.fp.unwrap_or(0));
        sink.send(LineBatch {
            source: self.source,
            buf,
            ack: Some(ack),
            times: stamps,
        })?;
        self.sent_end = end;
        Ok(())
    }
}
