//! `role = "edge"`: the pipeline thread that publishes instead of detecting.
//!
//! The tailer, the HTTP server and the stop sequence are the daemon's own (`cli::run`);
//! this replaces only the pipeline thread. Each batch runs line by line through the same
//! [`Pipeline`] as `role = "all"` (so metrics are counted exactly as there), with a sink
//! that encodes each event ([`super::wire`]) and hands it to the [`Publisher`]. The
//! batch's ack is held by the publisher until the broker confirmed every message of it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::publish::{PublishError, Publisher, Topic};
use super::wire::{self, IdRef};
use crate::config::Config;
use crate::enrich::Fingerprinter;
use crate::event::AuthEvent;
use crate::metrics::Metrics;
use crate::pipeline::{EventSink, Pipeline, SourceStage};
use crate::source::LineBatch;

/// How long the loop waits for a batch before serving delivery reports again.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// How long one back-pressure wait serves delivery reports.
const FULL_WAIT: Duration = Duration::from_millis(100);

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    /// The producer could not be built.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The thread could not be spawned.
    #[error("starting the edge thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The position of the line being processed, shared by the loop and the sink.
#[derive(Default)]
struct Cursor {
    batch: AtomicU64,
    file: AtomicU64,
    offset: AtomicU64,
}

/// Encodes events and hands them to the publisher.
struct PublishSink {
    publisher: Arc<Publisher>,
    cursor: Arc<Cursor>,
    fingerprinter: Fingerprinter,
    edge_id: Box<str>,
    source_names: Vec<Box<str>>,
    ipv6_prefix: u8,
    payload: Vec<u8>,
    ip_key: String,
}

impl EventSink for PublishSink {
    fn event(&mut self, ev: AuthEvent) {
        let id = IdRef {
            edge: &self.edge_id,
            file: self.cursor.file.load(Ordering::Relaxed),
            offset: self.cursor.offset.load(Ordering::Relaxed),
        };
        let name = self
            .source_names
            .get(usize::from(ev.source))
            .map_or("", |n| n);
        self.payload.clear();
        wire::encode(&ev, name, id, &mut self.payload);
        let batch = self.cursor.batch.load(Ordering::Relaxed);
        if let Some(t) = &ev.token {
            let key = wire::token_key(&self.fingerprinter, t);
            let key = key.as_str().as_bytes();
            self.publisher
                .send(Topic::ByToken, Some(key), &self.payload, batch);
        }
        let key = ev.ip.map(|ip| {
            wire::ip_key(ip, self.ipv6_prefix, &mut self.ip_key);
            self.ip_key.as_bytes()
        });
        self.publisher.send(Topic::ByIp, key, &self.payload, batch);
    }
}

/// Starts the edge's pipeline thread on `rx` (the tailer's channel). It ends when the
/// tailer drops its sender, after waiting up to `flush_timeout_ms` for deliveries.
pub fn spawn(
    cfg: &Config,
    stages: Vec<SourceStage>,
    fingerprinter: Fingerprinter,
    metrics: &Metrics,
    rx: Receiver<LineBatch>,
) -> Result<JoinHandle<()>, EdgeError> {
    let publisher = Arc::new(Publisher::new(&cfg.kafka, metrics)?);
    let cursor = Arc::new(Cursor::default());
    let sink = PublishSink {
        publisher: Arc::clone(&publisher),
        cursor: Arc::clone(&cursor),
        fingerprinter: fingerprinter.clone(),
        edge_id: cfg.kafka.edge_id.as_str().into(),
        source_names: stages.iter().map(|s| s.name.as_str().into()).collect(),
        ipv6_prefix: cfg.geo.ipv6_prefix,
        payload: Vec::with_capacity(128),
        ip_key: String::with_capacity(40),
    };
    let pipeline = Pipeline::new(stages, fingerprinter, Some(Box::new(sink)))
        .with_lag_histogram(metrics.event_lag.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_signals(Arc::clone(&stop));
    let edge = Edge {
        pipeline,
        publisher,
        cursor,
        stop,
        flush_timeout: Duration::from_millis(cfg.kafka.producer.flush_timeout_ms),
    };
    let handle = std::thread::Builder::new()
        .name("edge".into())
        .spawn(move || {
            edge.run(rx);
            if let Some(w) = watcher {
                w.abort();
            }
        })?;
    tracing::info!(
        brokers = %cfg.kafka.brokers.join(","),
        edge_id = %cfg.kafka.edge_id,
        "edge: publishing events to Kafka"
    );
    Ok(handle)
}

/// A stop or reload signal arms the shutdown deadline, so an edge held up by a down broker
/// still stops within `flush_timeout_ms` (the daemon's own handler stops the tailer).
fn watch_signals(stop: Arc<AtomicBool>) -> Option<tokio::task::AbortHandle> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let task = rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
        stop.store(true, Ordering::Release);
    });
    Some(task.abort_handle())
}

/// The edge's pipeline thread.
struct Edge {
    pipeline: Pipeline,
    publisher: Arc<Publisher>,
    cursor: Arc<Cursor>,
    stop: Arc<AtomicBool>,
    flush_timeout: Duration,
}

impl Edge {
    fn run(mut self, rx: Receiver<LineBatch>) {
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_none() && self.stop.load(Ordering::Acquire) {
                deadline = Some(Instant::now() + self.flush_timeout);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if self.publisher.backlog() > 0 {
                // Back-pressure: read nothing new until the broker takes what waits.
                self.publisher.pump(FULL_WAIT);
                continue;
            }
            match rx.recv_timeout(IDLE_WAIT) {
                Ok(batch) => self.process(batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.publisher.pump(Duration::ZERO);
        }
        self.drain(deadline.unwrap_or_else(|| Instant::now() + self.flush_timeout));
    }

    /// Waits for outstanding deliveries until `deadline`; what is left is read again at
    /// the next start (its checkpoint never advanced).
    fn drain(&self, deadline: Instant) {
        while self.publisher.pending_batches() > 0 && Instant::now() < deadline {
            self.publisher.pump(FULL_WAIT);
        }
        let left = self.publisher.pending_batches();
        if left > 0 {
            tracing::warn!(
                batches = left,
                "edge: stopping with undelivered batches; they are read again at the next start"
            );
        }
    }

    /// Runs one batch line by line, so each event knows its line's byte offset.
    fn process(&mut self, batch: LineBatch) {
        let LineBatch {
            source,
            buf,
            ack,
            times,
        } = batch;
        let (file, end) = ack
            .as_ref()
            .map_or((0, buf.len() as u64), |a| (a.file_id(), a.end_offset()));
        // Offsets count back from the batch's end. A line dropped as over-long later in the
        // same batch shifts the lines before it: their ids stay unique and increasing.
        let base = end.saturating_sub(buf.len() as u64);
        let seq = self.publisher.begin_batch(ack);
        self.cursor.batch.store(seq, Ordering::Relaxed);
        self.cursor.file.store(file, Ordering::Relaxed);
        let mut start = 0;
        let mut line_no = 0;
        while start < buf.len() {
            let end = memchr::memchr(b'\n', buf.get(start..).unwrap_or_default())
                .map_or(buf.len(), |i| start + i + 1);
            self.cursor
                .offset
                .store(base + start as u64, Ordering::Relaxed);
            let line = buf.get(start..end).unwrap_or_default();
            let time = times.get(line_no..=line_no).unwrap_or_default();
            self.pipeline.process_lines_timed(source, line, time);
            line_no += 1;
            start = end;
        }
        self.publisher.end_batch(seq);
    }
}
