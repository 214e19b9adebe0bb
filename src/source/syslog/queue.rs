//! The bounded hand-off from the socket to the pipeline.
//!
//! A syslog sender cannot be slowed down (UDP has no back-pressure, and a blocked TCP
//! reader only moves the loss into the sender), so unlike the file tailer this queue drops:
//! at most `cap` messages wait between the socket and the pipeline, the rest are counted in
//! `tokenwatch_source_dropped_total{reason="queue_full"}`. One forwarder thread moves
//! batches into the pipeline's channel, blocking there while the pipeline is busy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::event::{EventTime, SourceIdx};
use crate::source::LineBatch;

/// A batch is handed over at this many messages…
pub const BATCH_MESSAGES: usize = 1024;
/// …or bytes…
pub const BATCH_BYTES: usize = 64 * 1024;
/// …or once its first message is this old.
pub const FLUSH_AFTER: Duration = Duration::from_millis(20);

/// The producer side: shared by the UDP thread and every TCP connection.
#[derive(Clone)]
pub struct Queue {
    tx: SyncSender<LineBatch>,
    queued: Arc<AtomicUsize>,
    cap: usize,
    dropped: IntCounter,
}

impl Queue {
    /// A queue of at most `cap` messages and its forwarder thread into `out`. The thread
    /// ends once every `Queue` clone is dropped and what they queued is forwarded.
    pub fn start(
        cap: usize,
        out: SyncSender<LineBatch>,
        dropped: IntCounter,
    ) -> std::io::Result<(Queue, JoinHandle<()>)> {
        // Batches hold at least one message, so `cap` slots always suffice; a smaller
        // channel is enough in practice (batches are large under load) and a full one
        // counts as a full queue too.
        let (tx, rx) = mpsc::sync_channel(cap.clamp(1, 4096));
        let queued = Arc::new(AtomicUsize::new(0));
        let fwd = Arc::clone(&queued);
        let handle = thread::Builder::new()
            .name("syslog-forward".into())
            .spawn(move || forward(rx, out, fwd, Stream::new()))?;
        let q = Queue {
            tx,
            queued,
            cap: cap.max(1),
            dropped,
        };
        Ok((q, handle))
    }

    /// Queues a batch, or drops and counts it whole when it does not fit.
    pub fn offer(&self, batch: LineBatch) {
        let n = batch.times.len();
        if self.queued.fetch_add(n, Ordering::AcqRel) + n > self.cap {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.dropped.inc_by(n as u64);
            return;
        }
        match self.tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(n, Ordering::AcqRel);
                self.dropped.inc_by(n as u64);
            }
        }
    }
}

/// Positions for a stream that has no file offsets (syslog, journald).
///
/// The Kafka edge names each event by (edge, file id, byte offset) and workers drop an
/// event at or below the highest offset seen for that file as a duplicate. A stream gets a
/// file id of its own for this process's life and counts its bytes, so its events keep
/// distinct, increasing ids (an ack on such a batch commits nothing: nothing to resume).
pub struct Stream {
    id: u64,
    bytes: u64,
    committed: Arc<std::sync::atomic::AtomicU64>,
}

impl Stream {
    /// A new stream with an id unique to this process run.
    pub fn new() -> Stream {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        Stream {
            id: h.finish() | 1,
            bytes: 0,
            committed: Arc::default(),
        }
    }

    /// The stream id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Counts `len` more bytes: the offset just past them.
    pub fn advance(&mut self, len: usize) -> u64 {
        self.bytes += len as u64;
        self.bytes
    }

    /// An ack naming the stream and the offset after `batch` (which it counts).
    fn stamp(&mut self, batch: &mut LineBatch) {
        let end = self.advance(batch.buf.len());
        batch.ack =
            Some(crate::source::Ack::new(Arc::clone(&self.committed), end).with_file(self.id));
    }
}

impl Default for Stream {
    fn default() -> Self {
        Stream::new()
    }
}

/// Moves batches on in the order they were queued, stamping their position.
fn forward(
    rx: Receiver<LineBatch>,
    out: SyncSender<LineBatch>,
    queued: Arc<AtomicUsize>,
    mut stream: Stream,
) {
    while let Ok(mut batch) = rx.recv() {
        queued.fetch_sub(batch.times.len(), Ordering::AcqRel);
        stream.stamp(&mut batch);
        if out.send(batch).is_err() {
            return; // the pipeline is gone (shutting down)
        }
    }
}

/// Collects messages into a batch for one producer.
pub struct Batcher {
    source: SourceIdx,
    /// Messages per batch: a quarter of the queue at most, so a small queue still takes
    /// several batches instead of refusing each one whole.
    limit: usize,
    buf: Vec<u8>,
    times: Vec<EventTime>,
    started: Option<Instant>,
    queue: Queue,
}

impl Batcher {
    /// An empty batch for `source`'s messages.
    pub fn new(source: SourceIdx, queue: Queue) -> Self {
        Batcher {
            source,
            limit: (queue.cap / 4).clamp(1, BATCH_MESSAGES),
            buf: Vec::with_capacity(BATCH_BYTES),
            times: Vec::with_capacity(BATCH_MESSAGES),
            started: None,
            queue,
        }
    }

    /// Adds one message as one line (a trailing newline is dropped; newlines inside it
    /// become spaces, since the pipeline's unit is a line); hands the batch over when full.
    pub fn push(&mut self, msg: &[u8], time: EventTime) {
        let msg = msg.strip_suffix(b"\n").unwrap_or(msg);
        let msg = msg.strip_suffix(b"\r").unwrap_or(msg);
        let at = self.buf.len();
        self.buf.extend_from_slice(msg);
        for b in &mut self.buf[at..] {
            if *b == b'\n' {
                *b = b' ';
            }
        }
        self.buf.push(b'\n');
        self.times.push(time);
        self.started.get_or_insert_with(Instant::now);
        if self.times.len() >= self.limit || self.buf.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// True when the batch holds messages older than [`FLUSH_AFTER`].
    pub fn due(&self) -> bool {
        self.started.is_some_and(|t| t.elapsed() >= FLUSH_AFTER)
    }

    /// Hands the batch over (if it holds anything).
    pub fn flush(&mut self) {
        if self.times.is_empty() {
            return;
        }
        let batch = LineBatch {
            source: self.source,
            buf: std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH_BYTES)),
            ack: None,
            times: std::mem::replace(&mut self.times, Vec::with_capacity(BATCH_MESSAGES)),
        };
        self.started = None;
        self.queue.offer(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_whole_batches() {
        let (out, pipeline) = mpsc::sync_channel(1);
        let dropped = IntCounter::new("d", "d").unwrap();
        let (q, fwd) = Queue::start(3, out, dropped.clone()).unwrap();
        let mut b = Batcher::new(0, q);
        // The pipeline takes nothing: one batch sits in its channel, one in the forwarder's
        // hands, and the queue holds at most 3 messages.
        for i in 0..20u8 {
            b.push(&[b'a' + i, b'\n', b'x'], EventTime::from_millis(1));
            b.flush();
        }
        assert!(dropped.get() >= 20 - 5, "dropped {}", dropped.get());
        drop(b);
        let got: Vec<LineBatch> = pipeline.iter().collect();
        fwd.join().unwrap();
        assert_eq!(got.len() as u64 + dropped.get(), 20);
        assert_eq!(got[0].buf, b"a x\n");
        assert_eq!(got[0].times, vec![EventTime::from_millis(1)]);
    }
}
