//! Parsing on several threads, detection in file order: the multi-core form of
//! [`Pipeline`].
//!
//! Batches of lines are numbered as they arrive and parsed by a pool of workers, each with
//! its own parsers. A parsed batch is handed to the event sink strictly in arrival order:
//! the worker that finds the sink free takes it and feeds it every batch that is ready in
//! order, while the others go on parsing (an ordered, serial stage of a work-sharing
//! pipeline, as in TBB's `serial_in_order` filters). No worker ever waits for a turn unless
//! too many parsed batches are already waiting, so the cores share parsing and detection
//! as the load falls, whichever part is heavier on a given log. The sink sees the same
//! events in the same order as with one thread, so records are byte-identical.
//!
//! A batch's [`Ack`](crate::source::Ack) is released right after its events were handed to
//! the sink, in order, as [`Pipeline::process`] does.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::{EventSink, Lines, Pipeline, Totals};
use crate::event::{AuthEvent, EventTime, SourceIdx};
use crate::source::{Ack, LineBatch};

/// Parsed batches allowed to wait for the sink: bounds memory when detection is the slower
/// part (the workers then wait, and the reader with them).
const MAX_READY: usize = 8;

/// One numbered batch of lines.
struct Job {
    seq: u64,
    batch: LineBatch,
}

/// A parsed batch waiting for its turn at the sink.
struct Ready {
    events: Vec<AuthEvent>,
    ack: Option<Ack>,
}

/// The ordered stage: the sink and what waits for it.
struct Ordered {
    /// The sink, `None` while a worker is feeding it.
    sink: Option<Box<dyn EventSink>>,
    /// Parsed batches by number.
    ready: BTreeMap<u64, Ready>,
    /// The number of the batch the sink needs next.
    next: u64,
}

struct Shared {
    ordered: Mutex<Ordered>,
    /// Signalled whenever the sink is put back or a ready batch is taken.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ordered> {
        // A worker panicking while holding the lock would be a bug; carry on with the data.
        self.ordered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// [`Pipeline`] over a pool of parsing threads; see the module docs.
pub struct ParallelPipeline {
    jobs: Option<SyncSender<Job>>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<Totals>>,
    sent: u64,
    totals: Totals,
}

impl ParallelPipeline {
    /// Starts one worker per pipeline in `parsers` (each owns its parsers and counts into
    /// the same metrics); events go to `sink`. The pipelines' own sinks are not used.
    pub fn spawn(parsers: Vec<Pipeline>, sink: Box<dyn EventSink>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            ordered: Mutex::new(Ordered {
                sink: Some(sink),
                ready: BTreeMap::new(),
                next: 0,
            }),
            changed: Condvar::new(),
        });
        let (tx, rx) = sync_channel::<Job>(parsers.len().max(1) * 2);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for (i, p) in parsers.into_iter().enumerate() {
            let (rx, shared) = (rx.clone(), shared.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("parse-{i}"))
                    .spawn(move || work(p, &rx, &shared))?,
            );
        }
        Ok(ParallelPipeline {
            jobs: Some(tx),
            shared,
            workers,
            sent: 0,
            totals: Totals::default(),
        })
    }

    /// Queues a batch (blocks while the workers are busy); its ack is released once its
    /// events are in the sink.
    pub fn process(&mut self, batch: LineBatch) {
        let seq = self.sent;
        if let Some(tx) = &self.jobs {
            if tx.send(Job { seq, batch }).is_ok() {
                self.sent += 1;
            }
        }
    }

    /// Waits until every queued batch is in the sink, then lends it out (snapshots, counts).
    pub fn with_sink<T>(&mut self, f: impl FnOnce(&mut dyn EventSink) -> T) -> Option<T> {
        let mut st = self.shared.lock();
        loop {
            if st.next >= self.sent {
                if let Some(sink) = st.sink.as_deref_mut() {
                    return Some(f(sink));
                }
            }
            if self.workers.iter().all(JoinHandle::is_finished) && st.sink.is_none() {
                return None;
            }
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Stops the workers after everything queued and returns the totals and the sink.
    pub fn finish(mut self) -> (Totals, Option<Box<dyn EventSink>>) {
        self.jobs = None;
        for w in std::mem::take(&mut self.workers) {
            if let Ok(t) = w.join() {
                self.totals.add(&t);
            }
        }
        let mut sink = self.shared.lock().sink.take();
        if let Some(s) = &mut sink {
            s.flush();
        }
        (std::mem::take(&mut self.totals), sink)
    }
}

impl Lines for ParallelPipeline {
    fn lines(&mut self, source: SourceIdx, buf: &[u8], times: &[EventTime]) {
        self.process(LineBatch {
            source,
            buf: buf.to_vec(),
            ack: None,
            times: times.to_vec(),
        });
    }
}

impl Drop for ParallelPipeline {
    fn drop(&mut self) {
        self.jobs = None;
        for w in std::mem::take(&mut self.workers) {
            let _ = w.join();
        }
    }
}

/// A worker: parse a batch, then either feed the sink (if free) everything ready in order,
/// or leave the batch for whoever holds it.
fn work(mut p: Pipeline, rx: &Mutex<Receiver<Job>>, shared: &Shared) -> Totals {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => break,
        };
        let Ok(Job { seq, batch }) = job else { break };
        let mut events = Vec::new();
        p.parse_into(batch.source, &batch.buf, &batch.times, &mut events);
        let mut st = shared.lock();
        // Too much parsed and waiting: wait for the sink to catch up, unless this batch is
        // the one it needs (then this worker feeds it below).
        while st.ready.len() >= MAX_READY && seq != st.next {
            st = shared.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.ready.insert(
            seq,
            Ready {
                events,
                ack: batch.ack,
            },
        );
        let Some(mut sink) = st.sink.take() else {
            continue;
        };
        loop {
            let next = st.next;
            let Some(ready) = st.ready.remove(&next) else {
                break;
            };
            drop(st);
            shared.changed.notify_all();
            sink.events(ready.events);
            sink.flush();
            if let Some(ack) = ready.ack {
                ack.ack();
            }
            st = shared.lock();
            st.next = next + 1;
        }
        st.sink = Some(sink);
        drop(st);
        shared.changed.notify_all();
    }
    p.totals().clone()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::enrich::{Fingerprinter, TokenKind};
    use crate::parse::{build, ParserSpec, Preset};
    use crate::pipeline::SourceStage;

    /// Records, per event, its time (ms) and the offset committed when it arrived.
    struct Seen(Arc<Mutex<Vec<(i64, u64)>>>, Arc<AtomicU64>);

    impl EventSink for Seen {
        fn event(&mut self, ev: AuthEvent) {
            let acked = self.1.load(Ordering::SeqCst);
            self.0.lock().unwrap().push((ev.time.as_millis(), acked));
        }
    }

    fn parser(m: &crate::metrics::Metrics) -> Pipeline {
        let spec = ParserSpec {
            preset: Preset::Regex,
            pattern: Some(r"^(?P<token>\S+) (?P<status>\d+) (?P<ts>\d+)$".into()),
            time_format: Some("epoch".into()),
            ..ParserSpec::default()
        };
        let stage = SourceStage {
            name: "s".into(),
            parser: build(&spec).unwrap(),
            token_kind: TokenKind::Id,
            metrics: m.source("s"),
        };
        Pipeline::new(vec![stage], Fingerprinter::new(&[7; 32]), None)
    }

    #[test]
    fn batches_reach_the_sink_in_order_and_acks_follow_them() {
        let m = crate::metrics::Metrics::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let committed = Arc::new(AtomicU64::new(0));
        let parsers = vec![parser(&m), parser(&m), parser(&m)];
        let sink = Seen(seen.clone(), committed.clone());
        let mut p = ParallelPipeline::spawn(parsers, Box::new(sink)).unwrap();
        let base = 1_700_000_000u64;
        let mut lines = 0;
        for b in 0..300u64 {
            // Uneven batch sizes, so parsers finish out of order.
            let n = 1 + (b * 37) % 50;
            let mut buf = Vec::new();
            for i in 0..n {
                buf.extend_from_slice(format!("tok{b}x{i} 200 {}\n", base + b).as_bytes());
            }
            lines += n;
            p.process(LineBatch {
                source: 0,
                buf,
                ack: Some(Ack::new(committed.clone(), b + 1)),
                times: Vec::new(),
            });
        }
        // Once lent, the sink has every batch handed over, and every ack is released.
        let n = p.with_sink(|_| seen.lock().unwrap().len()).unwrap();
        assert_eq!(n as u64, lines);
        assert_eq!(committed.load(Ordering::SeqCst), 300);
        let (totals, sink) = p.finish();
        assert!(sink.is_some());
        assert_eq!(totals.events, lines);
        for (t, acked) in seen.lock().unwrap().iter() {
            let batch = u64::try_from(*t).unwrap() / 1000 - base;
            // Every earlier batch acked, this one not yet: in order, acks after events.
            assert_eq!(*acked, batch, "event of batch {batch}");
        }
    }
}
