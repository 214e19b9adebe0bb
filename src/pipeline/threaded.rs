//! A second core for detection: parsing stays on the caller's thread, the event sink (the
//! detection engine) runs on its own thread and receives events in batches over a bounded
//! channel. One engine thread keeps event order, so records are byte-identical to the
//! single-threaded pipeline.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::EventSink;
use crate::durable::StateWriter;
use crate::event::AuthEvent;

/// Events per message: large enough to amortise the channel, small enough to keep latency
/// in the microseconds.
const BATCH: usize = 2048;
/// Batches in flight: bounds memory and makes a slow engine slow the parser down.
const IN_FLIGHT: usize = 8;

/// 2 when the machine has at least two cores, else 1.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

enum Msg {
    Events(Vec<AuthEvent>),
    Flush,
    Snapshot(SyncSender<Option<Vec<u8>>>),
    WriteSnapshot(
        StateWriter,
        SyncSender<std::io::Result<Option<StateWriter>>>,
    ),
    Counts(SyncSender<BTreeMap<&'static str, u64>>),
}

/// An [`EventSink`] that forwards to another sink running on its own thread.
pub struct ThreadedSink {
    buf: Vec<AuthEvent>,
    tx: Option<SyncSender<Msg>>,
    worker: Option<JoinHandle<Box<dyn EventSink>>>,
}

impl ThreadedSink {
    /// Moves `inner` to a new thread named `detect`.
    pub fn spawn(inner: Box<dyn EventSink>) -> std::io::Result<ThreadedSink> {
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let worker = std::thread::Builder::new()
            .name("detect".into())
            .spawn(move || run(inner, rx))?;
        Ok(ThreadedSink {
            buf: Vec::with_capacity(BATCH),
            tx: Some(tx),
            worker: Some(worker),
        })
    }

    fn send(&mut self, msg: Msg) {
        if let Some(tx) = &self.tx {
            // A send fails only if the worker died (it never panics on input); then events
            // are dropped rather than blocking the pipeline forever.
            let _ = tx.send(msg);
        }
    }

    fn send_events(&mut self) {
        if !self.buf.is_empty() {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH));
            self.send(Msg::Events(full));
        }
    }

    /// Stops the worker after everything sent so far and returns the inner sink.
    pub fn finish(mut self) -> Option<Box<dyn EventSink>> {
        self.send_events();
        self.tx = None;
        self.worker.take().and_then(|w| w.join().ok())
    }

    fn ask<T: Default>(&mut self, make: impl FnOnce(SyncSender<T>) -> Msg) -> T {
        self.send_events();
        let (tx, rx) = sync_channel(1);
        self.send(make(tx));
        rx.recv().unwrap_or_default()
    }
}

fn run(mut inner: Box<dyn EventSink>, rx: Receiver<Msg>) -> Box<dyn EventSink> {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Events(evs) => {
                for ev in evs {
                    inner.event(ev);
                }
            }
            Msg::Flush => inner.flush(),
            Msg::Snapshot(reply) => {
                let _ = reply.send(inner.snapshot());
            }
            Msg::WriteSnapshot(out, reply) => {
                let _ = reply.send(inner.write_snapshot(out));
            }
            Msg::Counts(reply) => {
                let _ = reply.send(inner.detection_counts());
            }
        }
    }
    inner.flush();
    inner
}

impl EventSink for ThreadedSink {
    fn event(&mut self, ev: AuthEvent) {
        self.buf.push(ev);
        if self.buf.len() >= BATCH {
            self.send_events();
        }
    }

    fn flush(&mut self) {
        self.send_events();
        self.send(Msg::Flush);
    }

    fn snapshot(&mut self) -> Option<Vec<u8>> {
        self.ask(Msg::Snapshot)
    }

    fn write_snapshot(&mut self, out: StateWriter) -> std::io::Result<Option<StateWriter>> {
        self.send_events();
        let (tx, rx) = sync_channel(1);
        self.send(Msg::WriteSnapshot(out, tx));
        rx.recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the detection thread has stopped")))
    }

    fn detection_counts(&mut self) -> BTreeMap<&'static str, u64> {
        self.ask(Msg::Counts)
    }
}

impl Drop for ThreadedSink {
    fn drop(&mut self) {
        self.send_events();
        self.tx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
