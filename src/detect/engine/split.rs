//! The engine on two cores: the token stage runs on the caller's thread (beside parsing),
//! the rest stage on a thread of its own, fed in batches over a bounded channel. Each stage
//! sees every event in file order, and the rest stage records the token stage's findings
//! at the event they came from, so records are byte-identical to one thread's.
//!
//! This is the single-process twin of the Kafka topology (DESIGN §14): state is sharded by
//! the stage that owns it — per token on one side, per address and global on the other —
//! rather than by hashing keys over threads, because the IP and global detectors need every
//! event's token verdict in order and two cores are what the target machines have.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::rest::RestStage;
use super::token::{TokenFacts, TokenStage};
use super::{write_rest_part, write_token_part, Engine};
use crate::detect::record::Finding;
use crate::detect::Findings;
use crate::durable::StateWriter;
use crate::event::AuthEvent;
use crate::pipeline::EventSink;

/// Events per message: large enough to amortise the channel, small enough to keep latency
/// in the microseconds.
const BATCH: usize = 2048;
/// Batches in flight: bounds memory and makes a slow rest stage slow the parser down.
const IN_FLIGHT: usize = 8;

/// 2 when the machine has at least two cores, else 1.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// Events with what the token stage knew of each (`None`: too late, skipped), and its
/// findings by event index. Events travel as parsed, never moved one by one.
#[derive(Default)]
struct Batch {
    events: Vec<AuthEvent>,
    facts: Vec<Option<TokenFacts>>,
    found: Vec<(usize, Finding)>,
}

/// Where a snapshot goes: memory or a state file. One concrete type, so the writer can
/// travel to the rest stage and back.
enum SnapOut {
    Bytes(Vec<u8>),
    File(StateWriter),
}

impl std::io::Write for SnapOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            SnapOut::Bytes(v) => v.write(buf),
            SnapOut::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            SnapOut::Bytes(_) => Ok(()),
            SnapOut::File(f) => f.flush(),
        }
    }
}

enum Msg {
    Events(Batch),
    Flush,
    /// Write the rest stage's part of a snapshot after the token stage's.
    Snapshot(SnapOut, SyncSender<std::io::Result<SnapOut>>),
    Counts(SyncSender<BTreeMap<&'static str, u64>>),
}

/// An [`EventSink`] running the engine's two stages on two threads.
pub struct SplitEngine {
    token: TokenStage,
    found: Findings,
    batch: Batch,
    tx: Option<SyncSender<Msg>>,
    worker: Option<JoinHandle<RestStage>>,
}

impl SplitEngine {
    /// Starts `engine`'s rest stage on a new thread named `detect`.
    pub fn spawn(engine: Engine) -> std::io::Result<SplitEngine> {
        let (token, rest) = engine.into_stages();
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let worker = std::thread::Builder::new()
            .name("detect".into())
            .spawn(move || run(rest, rx))?;
        Ok(SplitEngine {
            token,
            found: Findings::default(),
            batch: Batch::default(),
            tx: Some(tx),
            worker: Some(worker),
        })
    }

    fn send(&mut self, msg: Msg) {
        if let Some(tx) = &self.tx {
            // A send fails only if the rest stage died (it never panics on input); then
            // events are dropped rather than blocking the pipeline forever.
            let _ = tx.send(msg);
        }
    }

    fn send_events(&mut self) {
        if !self.batch.events.is_empty() {
            let full = std::mem::replace(
                &mut self.batch,
                Batch {
                    events: Vec::with_capacity(BATCH),
                    facts: Vec::with_capacity(BATCH),
                    found: Vec::new(),
                },
            );
            self.send(Msg::Events(full));
        }
    }

    /// Runs the token stage on the next event of the batch being built.
    fn observe(&mut self, ev: &AuthEvent) {
        let facts = self.token.observe(ev, &mut self.found);
        let at = self.batch.facts.len();
        self.batch.found.extend(self.found.drain().map(|f| (at, f)));
        self.batch.facts.push(facts);
    }

    /// Streams both stages' parts of the snapshot into `out` and hands it back.
    fn write_parts(&mut self, mut out: SnapOut) -> std::io::Result<SnapOut> {
        self.send_events();
        write_token_part(&self.token, &mut out)?;
        let (tx, rx) = sync_channel(1);
        self.send(Msg::Snapshot(out, tx));
        rx.recv()
            .map_err(|_| std::io::Error::other("the detection thread has stopped"))?
    }

    /// Stops the rest stage after everything sent so far.
    fn stop(&mut self) {
        self.send_events();
        self.tx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn run(mut rest: RestStage, rx: Receiver<Msg>) -> RestStage {
    let mut found = Findings::default();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Events(batch) => {
                let mut pending = batch.found.into_iter().peekable();
                for (i, (ev, facts)) in batch.events.iter().zip(&batch.facts).enumerate() {
                    while let Some((_, f)) = pending.next_if(|(at, _)| *at == i) {
                        found.push(f);
                    }
                    if let Some(facts) = facts {
                        rest.handle(ev, *facts, &mut found);
                    }
                }
            }
            Msg::Flush => rest.flush(),
            Msg::Snapshot(mut out, reply) => {
                let r = write_rest_part(&rest, &mut out).map(|()| out);
                let _ = reply.send(r);
            }
            Msg::Counts(reply) => {
                let _ = reply.send(rest.counts.clone());
            }
        }
    }
    rest.flush();
    rest
}

impl EventSink for SplitEngine {
    fn event(&mut self, ev: AuthEvent) {
        self.observe(&ev);
        self.batch.events.push(ev);
        if self.batch.events.len() >= BATCH {
            self.send_events();
        }
    }

    fn events(&mut self, evs: Vec<AuthEvent>) {
        if !self.batch.events.is_empty() || evs.len() < BATCH / 4 {
            for ev in evs {
                self.event(ev);
            }
            return;
        }
        for ev in &evs {
            self.observe(ev);
        }
        self.batch.events = evs;
        self.send_events();
    }

    fn flush(&mut self) {
        self.send_events();
        self.send(Msg::Flush);
        self.token.publish_gauges();
    }

    fn snapshot(&mut self) -> Option<Vec<u8>> {
        match self.write_parts(SnapOut::Bytes(Vec::new())) {
            Ok(SnapOut::Bytes(v)) => Some(v),
            _ => None,
        }
    }

    fn write_snapshot(&mut self, out: StateWriter) -> std::io::Result<Option<StateWriter>> {
        match self.write_parts(SnapOut::File(out))? {
            SnapOut::File(f) => Ok(Some(f)),
            SnapOut::Bytes(_) => Err(std::io::Error::other("snapshot writer lost")),
        }
    }

    fn detection_counts(&mut self) -> BTreeMap<&'static str, u64> {
        self.send_events();
        let (tx, rx) = sync_channel(1);
        self.send(Msg::Counts(tx));
        rx.recv().unwrap_or_default()
    }
}

impl Drop for SplitEngine {
    fn drop(&mut self) {
        self.stop();
    }
}
