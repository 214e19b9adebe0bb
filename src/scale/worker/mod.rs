//! `role = "worker"`: consume the event topics, detect, write detections.
//!
//! Three stages, each on a thread of its own ([`Stage`]):
//! * `by_token` in group `<prefix>-token` runs the per-token detectors (rate_spike,
//!   impossible_travel, ip_fanout, off_hours, revoked_reuse) — `consumer`;
//! * `by_ip` in group `<prefix>-ip` the per-IP ones (brute_force, token_spray) —
//!   `consumer`;
//! * the global stage the two that need every address (distributed_spray,
//!   rejection_ratio): one worker of the cluster, elected by the group `<prefix>-global`,
//!   reads every `by_ip` partition into one engine; the others stand by — [`global`].
//!
//! Each partition of the first two owns one [`Engine`](crate::detect::Engine) built with
//! `Engine::for_config`, so state moves with the partition.
//!
//! # Exactly-once state over at-least-once delivery
//! * Every event carries its id (edge, file, byte offset). Per partition, the highest
//!   offset applied for each `(edge, file)` is kept (`marks`); an event at or below it
//!   is a duplicate (an edge re-publishing after its crash, or this partition read again
//!   after a worker crash) and is dropped before the engine sees it.
//! * A partition's snapshot (`state.dir/kafka/<topic>-<partition>.json`: a JSON line with
//!   the next offset, the marks and the held events, then the engine's bytes, streamed as
//!   `tokenwatch run` streams its own: `snapshot`) is written on revoke, at shutdown and
//!   every `[detectors] snapshot_interval_secs`, and only then is that offset committed.
//!   So the committed offset is never past the state on disk: a worker that takes the
//!   partition over restores the snapshot and the group resumes at the committed offset;
//!   whatever lies between (a crash after the write, before the commit) is below the
//!   restored marks and dropped. A failed write is counted in
//!   `tokenwatch_state_file_errors_total{file="detect_snapshot"}`, turns `/readyz` to 503
//!   until a write succeeds, and commits nothing.
//! * The state directory must therefore be shared by the workers that take partitions
//!   over from each other (same host, or a shared volume). A worker that finds no snapshot
//!   starts the partition's learning afresh at the committed offset.
//!
//! # Detections
//! Each record goes to `state.dir/detections.jsonl` (or `[detectors] output`) and, as JSON
//! keyed by its id, to `topics.detections` for the responder (`sink`). A record
//! re-raised after a crash (events after the last snapshot are applied again) carries the
//! same id.
//!
//! Limits: no response policy here (every action is `alert`: the responder decides); a
//! source name the worker's config lacks reaches the engine without a name (its
//! detections carry no `source`); detectors that keep no snapshot state (brute_force,
//! token_spray, revoked_reuse) start afresh on a partition that moves, as they do at a
//! restart of `role = "all"`; brute_force and token_spray judge whether a token is known
//! (was ever accepted) by the tokens accepted within the same `by_ip` partition, where
//! `role = "all"` knows every accepted token (the global stage knows them all).

mod consumer;
pub mod global;
mod known;
mod marks;
mod names;
mod partition;
mod sink;
mod snapshot;
mod stage;
mod stats;

use std::collections::HashMap as StdHashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::KafkaError;

pub use stage::Stage;
pub(crate) use stats::{apply_stats, STATS_MS};

use crate::config::Config;
use crate::enrich::geo::GeoLookup;
use crate::metrics::{KafkaMetrics, Metrics};

/// Maps on the per-record path hash with foldhash: SipHash showed up at 3 % of a worker's
/// CPU (partition, edge, file and source name lookups for every record).
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

/// How long one poll waits for a message.
const POLL: Duration = Duration::from_millis(100);
/// Events a partition holds in its reorder buffer at most (beyond it the earliest goes
/// to the engine at once): about a second of a very busy partition.
const HELD_CAP: usize = 65_536;
/// How often every partition's due held events are released (a partition's own records
/// release its events at once).
const RELEASE_EVERY: Duration = Duration::from_millis(10);
/// How often engines flush their sinks while messages keep coming.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A consumer could not be built or could not subscribe.
    #[error("Kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    /// The metrics could not be registered.
    #[error("worker metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The detections file or the state directory could not be opened.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The running worker: its stage threads.
pub struct Worker {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    sink: sink::SharedSink,
}

impl Worker {
    /// Stops consuming: each thread snapshots its partitions, commits, and leaves its group.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a worker stage thread panicked");
            }
        }
        self.sink.flush_topic();
    }
}

/// Starts the worker's stage threads for `cfg` (role worker); `geo` feeds
/// impossible_travel and the country features as in `role = "all"`.
pub fn spawn(
    cfg: &Config,
    metrics: &Metrics,
    geo: Option<Arc<dyn GeoLookup>>,
) -> Result<Worker, WorkerError> {
    let km = KafkaMetrics::register(metrics)?;
    for stage in Stage::ALL {
        km.consume(stage.label());
    }
    let out = cfg
        .detectors
        .output
        .clone()
        .unwrap_or_else(|| cfg.state.dir.join("detections.jsonl"));
    let sink = sink::SharedSink::open(cfg, &out)?;
    let dir = cfg.state.dir.join("kafka");
    std::fs::create_dir_all(&dir)?;
    let mut worker = Worker {
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
        sink: sink.clone(),
    };
    // A worker that may not lead the global stage does not even stand by for it.
    let stages = Stage::ALL
        .into_iter()
        .filter(|s| *s != Stage::Global || cfg.kafka.global_stage);
    for stage in stages {
        let shared = stage::Shared {
            stage,
            topic: stage.topic(cfg),
            cfg: stage.config(cfg),
            metrics: metrics.clone(),
            km: km.clone(),
            // Only the per-token detectors locate addresses.
            geo: geo.clone().filter(|_| stage == Stage::Token),
            sink: sink.clone(),
            dir: dir.clone(),
            hold: Duration::from_millis(cfg.kafka.reorder_ms),
        };
        let stop = Arc::clone(&worker.stop);
        let started = match stage {
            Stage::Global => global::start(cfg, shared, stop),
            Stage::Token | Stage::Ip => consumer::start(cfg, shared, stop),
        };
        match started {
            Ok(t) => worker.threads.push(t),
            Err(e) => {
                // The stages already running must not outlive the failed start.
                worker.stop();
                return Err(e);
            }
        }
    }
    let groups: Vec<String> = Stage::ALL
        .iter()
        .map(|s| cfg.kafka.group_id(s.group()))
        .collect();
    tracing::info!(
        brokers = %cfg.kafka.brokers.join(","),
        groups = %groups.join(", "),
        "worker: consuming events from Kafka"
    );
    Ok(worker)
}

/// Locks `m`, also after a panic elsewhere (the maps stay usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a partition's snapshot lives (for tests and tools).
pub fn snapshot_path(state_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    snapshot_path_in(&state_dir.join("kafka"), topic, partition)
}

/// A partition's snapshot in the worker's directory (`state.dir/kafka`).
fn snapshot_path_in(dir: &Path, topic: &str, partition: i32) -> PathBuf {
    dir.join(format!("{topic}-{partition}.json"))
}
