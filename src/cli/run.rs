//! `tokenwatch run`: the daemon. Load config, build, start the tailer, the pipeline thread
//! and the HTTP server, then wait for a signal: SIGTERM/SIGINT drain and exit 0, SIGHUP
//! reloads the config (validated first; a bad config keeps the running one).
//!
//! # Crash safety: detector state and file offsets move together
//!
//! The tailer checkpoints acked offsets every second; the detector snapshot is written
//! every `[detectors] snapshot_interval_secs`. Restoring an old snapshot next to newer
//! offsets would lose every event in between to detection, so the snapshot carries the
//! offsets it covers:
//!
//! - The pipeline thread takes the engine's snapshot ([`EventSink::snapshot`]; the split
//!   engine hands over every event sent so far first) and then reads the acked offsets. Acks
//!   happen only on that thread, after a batch's events were handed to the engine, so the
//!   offsets are exactly those of the events inside the snapshot.
//! - The snapshot file (`detect-snapshot.json`, checksummed by [`crate::durable`]) is one
//!   JSON line `{"offsets":[...]}` (checkpoint entries) followed by the engine's snapshot.
//! - At start the snapshot is restored first; if it carries offsets, they replace the
//!   checkpoint file before the tailer starts, so detection resumes exactly where its state
//!   ends. Files first opened after the snapshot are found again by the tailer's usual
//!   rules (a rotated file at a known path is read from its start; a new path follows the
//!   source's `start_at`). A missing, damaged or older (offset-less) snapshot leaves the
//!   checkpoints as they are, and learning starts afresh.
//!
//! The price is the checkpoint window: lines between the last snapshot and a crash are read
//! (and counted in `/metrics`) again, at most `snapshot_interval_secs` worth. Detections
//! they re-raise carry the same stable ids, so hook receivers dedupe them by idempotency
//! key, and a token already frozen is not frozen twice (`already_frozen`). A clean stop
//! writes both at the same point and repeats nothing.
//!
//! # State directory faults
//!
//! Every state write reports to `tokenwatch_state_file_errors_total{file,error="write"}`,
//! and a probe writes `.write-probe.<pid>` (then removes it) in the state directory every [`PROBE_EVERY`]. While
//! any last write failed (read-only or full disk) `/readyz` answers 503 with the reason;
//! detection, `/metrics` and hooks keep working, and the next successful write clears it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use super::build::{build_stages, fingerprint_key, load_config};
use super::sources::{self, Listeners};
use super::CliError;
use crate::config::Config;
use crate::detect::Ring;
use crate::enrich::Fingerprinter;
use crate::metrics::{Metrics, StateFile};
use crate::pipeline::parallel::ParallelPipeline;
use crate::pipeline::EventSink;
use crate::pipeline::Pipeline;
use crate::respond::{FrozenView, Responder};
use crate::server::{AppState, Server};
use crate::source::file::checkpoint::{self, Checkpointer, Entry};
use crate::source::file::{Tailer, TailerHandle};
use crate::source::tail_metrics::MetricsTailEvents;

/// Capacity of the reader → pipeline channel, in batches (each ≤ 64 KiB): bounds memory
/// and makes a slow pipeline slow the reader down rather than buffer.
const CHANNEL_BATCHES: usize = 64;

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Config file (default: the embedded default config).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Override `[server] listen` (e.g. `127.0.0.1:0` for a free port).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Write the bound listen address to this file once serving (for scripts and tests).
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// GeoIP database (.mmdb); repeatable; adds to `[geo] mmdb`.
    #[arg(long = "geoip", value_name = "MMDB")]
    pub geoip: Vec<PathBuf>,
    /// Override the config's `role` (all | edge | worker | responder).
    #[arg(long, value_enum)]
    pub role: Option<crate::config::Role>,
}

/// What a signal asks for.
enum Stop {
    Shutdown,
    Reload,
}

/// A running tailer + pipeline pair for one config, with its syslog/journald sources.
struct Running {
    tailer: TailerHandle,
    listeners: Listeners,
    pipeline: JoinHandle<()>,
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(args: RunArgs) -> Result<(), CliError> {
    let mut cfg = load_config(args.config.as_deref())?;
    if let Some(l) = args.listen {
        cfg.server.listen = l;
    }
    cfg.geo.mmdb.extend(args.geoip.iter().cloned());
    cfg.role = args.role.unwrap_or(cfg.role);
    let has_key = cfg.fingerprint.key.is_some();
    let problems = cfg.kafka.role_errors(cfg.role, has_key);
    if !problems.is_empty() {
        return Err(CliError::Config(problems.join("\n")));
    }
    // Parsing and detection run on their own threads; the runtime serves HTTP (`/authz`,
    // admin, metrics) and I/O. More workers than the cores this process may use only
    // trade time slices: pinned to one core, two workers put a scheduler slice (~3.7 ms)
    // into /authz's p99 (BENCHMARKS.md); one worker gives 0.17 ms.
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.clamp(1, 2))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(daemon(cfg, args))
}

async fn daemon(mut cfg: Config, args: RunArgs) -> Result<(), CliError> {
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    std::fs::create_dir_all(&cfg.state.dir)
        .with_context(|| format!("creating state dir {}", cfg.state.dir.display()))?;
    let key = fingerprint_key(&cfg, true)?.unwrap_or_default();
    let fp = Fingerprinter::new(&key);
    let tls = crate::server::tls::from_config(&cfg.server)
        .map_err(|e| CliError::Config(e.to_string()))?;
    let server = Server::bind(cfg.server.listen)
        .await
        .with_context(|| format!("binding {}", cfg.server.listen))?
        .with_tls(tls);
    let addr = server.local_addr().context("reading the bound address")?;
    if let Some(f) = &args.addr_file {
        crate::durable::write_atomic(f, addr.to_string().as_bytes())
            .with_context(|| format!("writing {}", f.display()))?;
    }
    let scheme = if server.is_tls() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "serving /metrics, /healthz, /readyz");
    #[cfg(feature = "kafka")]
    if cfg.role == crate::config::Role::Worker {
        return worker_daemon(cfg, server, metrics, ready).await;
    }
    #[cfg(feature = "kafka")]
    if cfg.role == crate::config::Role::Responder {
        return responder_daemon(cfg, server, metrics, ready, fp).await;
    }
    let (stop_server_tx, stop_server_rx) = tokio::sync::oneshot::channel::<()>();
    let state = AppState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let (responder, responder_handle) = Responder::start(
        &cfg,
        &cfg.state.dir,
        &metrics,
        tokio::runtime::Handle::current(),
    )
    .context("starting the response stage")?;
    let (view, follower) = enforced_view(&cfg, &responder_handle, &metrics)?;
    let enforcer =
        crate::server::authz::Enforcer::start(&cfg.authz, view.clone(), fp.clone(), &metrics)
            .await
            .map_err(|e| CliError::Runtime(e.into()))?;
    // An edge is ready only once its copy of the frozen set is read from the topic.
    let gate = follower.is_some().then_some(view);
    let ring = Ring::new(RING_RECORDS);
    let admin = crate::server::admin::routes(
        responder_handle.control(),
        ring.clone(),
        cfg.server.admin_token.clone(),
        fp.clone(),
    );
    let http = tokio::spawn(server.serve_with(state, admin, async {
        let _ = stop_server_rx.await;
    }));
    let probe = tokio::spawn(probe_state_dir(cfg.state.dir.clone(), metrics.clone()));
    let mut signals = Signals::new().context("installing signal handlers")?;
    loop {
        let outputs = Outputs {
            policy: responder.policy(),
            ring: ring.clone(),
        };
        let running = start(&cfg, &metrics, &fp, outputs)?;
        wait_ready(&running, gate.as_ref(), &ready).await;
        let what = signals.next().await;
        ready.store(false, Ordering::Release);
        stop(running).await?;
        match what {
            Stop::Shutdown => break,
            Stop::Reload => cfg = reload(cfg, args.config.as_deref(), &metrics),
        }
    }
    probe.abort();
    let _ = stop_server_tx.send(());
    let _ = http.await;
    enforcer.stop().await;
    if let Some(f) = follower {
        let _ = tokio::task::spawn_blocking(move || f.stop()).await;
    }
    // After the pipeline: every decided action is journaled; workers get a grace period.
    responder_handle.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Edge with the `frozen` topic follower (when it runs [`Follower`] for enforcement).
#[cfg(feature = "kafka")]
type Follower = crate::scale::frozen_topic::Follower;
/// Without Kafka there is no topic to follow.
#[cfg(not(feature = "kafka"))]
enum Follower {}
#[cfg(not(feature = "kafka"))]
impl Follower {
    fn stop(self) {
        match self {}
    }
}

/// The frozen set `/authz` and the deny file enforce: this process's own, or on an edge
/// (with `[authz]` on) a copy followed from the `frozen` topic.
fn enforced_view(
    cfg: &Config,
    own: &crate::respond::ResponderHandle,
    metrics: &Metrics,
) -> Result<(FrozenView, Option<Follower>), CliError> {
    let enforcing = cfg.authz.listen.is_some() || cfg.authz.deny_file.is_some();
    #[cfg(feature = "kafka")]
    if enforcing && cfg.role == crate::config::Role::Edge {
        let view = FrozenView::new();
        let f =
            Follower::start(cfg, view.clone(), metrics).context("following the frozen topic")?;
        return Ok((view, Some(f)));
    }
    let _ = (enforcing, metrics);
    Ok((own.frozen_view(), None))
}

/// `role = "worker"`: the HTTP server and the Kafka consumers (no tailer, no responder).
#[cfg(feature = "kafka")]
async fn worker_daemon(
    cfg: Config,
    server: Server,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
) -> Result<(), CliError> {
    let geo = super::build::open_geo(&cfg, &[])?;
    let m = metrics.clone();
    consumer_daemon(
        cfg,
        server,
        metrics,
        ready,
        axum::Router::new(),
        "worker",
        |cfg| {
            let w =
                crate::scale::worker::spawn(cfg, &m, geo).context("starting the Kafka worker")?;
            Ok(Box::new(move || w.stop()))
        },
    )
    .await
}

/// `role = "responder"`: the HTTP server (with the admin API while active) and the
/// detections consumer. The journal is checked when this process becomes active, under
/// the state-directory lock: a standby sharing the directory must not touch the active
/// one's journal.
#[cfg(feature = "kafka")]
async fn responder_daemon(
    cfg: Config,
    server: Server,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    fp: Fingerprinter,
) -> Result<(), CliError> {
    use crate::scale::responder;
    let admin = crate::server::AdminSlot::default();
    let routes = admin.router();
    let parts = responder::Parts {
        metrics: metrics.clone(),
        rt: tokio::runtime::Handle::current(),
        admin,
        ring: Ring::new(RING_RECORDS),
        fp,
    };
    consumer_daemon(cfg, server, metrics, ready, routes, "responder", |cfg| {
        let r = responder::spawn(cfg, parts).context("starting the Kafka responder")?;
        Ok(Box::new(move || r.stop()))
    })
    .await
}

/// How a consumer role is stopped (blocking: it saves its state and leaves its group).
#[cfg(feature = "kafka")]
type StopRole = Box<dyn FnOnce() + Send>;

/// The shell of the consumer roles: the HTTP server with `routes`, the state-directory
/// probe, the role started by `start`, until SIGTERM/SIGINT; SIGHUP is logged (a consumer
/// role applies a new config at restart). A standby is ready too: healthy, waiting.
#[cfg(feature = "kafka")]
async fn consumer_daemon(
    cfg: Config,
    server: Server,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    routes: axum::Router,
    name: &'static str,
    start: impl FnOnce(&Config) -> Result<StopRole, CliError>,
) -> Result<(), CliError> {
    let (stop_server_tx, stop_server_rx) = tokio::sync::oneshot::channel::<()>();
    let state = AppState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let http = tokio::spawn(server.serve_with(state, routes, async {
        let _ = stop_server_rx.await;
    }));
    let probe = tokio::spawn(probe_state_dir(cfg.state.dir.clone(), metrics.clone()));
    let mut signals = Signals::new().context("installing signal handlers")?;
    let stop_role = start(&cfg)?;
    ready.store(true, Ordering::Release);
    while let Stop::Reload = signals.next().await {
        tracing::warn!("{name}: config reload is not supported; restart it to apply a new config");
    }
    ready.store(false, Ordering::Release);
    tokio::task::spawn_blocking(stop_role)
        .await
        .with_context(|| format!("stopping the {name}"))?;
    probe.abort();
    let _ = stop_server_tx.send(());
    let _ = http.await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Detections kept in memory for `GET /api/v1/detections`.
const RING_RECORDS: usize = 10_000;

/// Where the engine's records go besides the JSONL file.
struct Outputs {
    policy: Box<dyn crate::detect::Decide>,
    ring: Ring,
}

/// Starts the tailer and the pipeline thread for `cfg`.
fn start(
    cfg: &Config,
    metrics: &Metrics,
    fp: &Fingerprinter,
    outputs: Outputs,
) -> Result<Running, CliError> {
    let stages = build_stages(cfg, metrics)?;
    let events = Arc::new(MetricsTailEvents::new(
        stages.iter().map(|s| s.metrics.clone()).collect(),
        metrics.clone(),
    ));
    let (tx, rx) = mpsc::sync_channel(CHANNEL_BATCHES);
    let tail_cfgs: Vec<_> = cfg
        .sources
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == crate::config::SourceKind::File)
        .map(|(i, s)| s.tail_config(i as u16))
        .collect();
    // Bound before anyone is told we are ready; they feed the same channel as the tailer.
    let listeners = Listeners::start(cfg, metrics, &tx)?;
    let start_tailer = move || {
        Tailer::start(tail_cfgs, Some(cfg.state.dir.clone()), tx, events)
            .context("starting the file tailer")
    };
    #[cfg(feature = "kafka")]
    if cfg.role == crate::config::Role::Edge {
        // An edge keeps no detector state: its checkpoints alone say where to resume.
        let tailer = start_tailer()?;
        let pipeline = crate::scale::edge::spawn(cfg, stages, fp.clone(), metrics, rx)
            .context("starting the Kafka edge")?;
        return Ok(Running {
            tailer,
            listeners,
            pipeline,
        });
    }
    let (engine, resume) = build_live_engine(cfg, metrics, outputs)?;
    prepare_checkpoints(&cfg.state.dir, resume, metrics);
    let tailer = start_tailer()?;
    let threads = crate::detect::default_threads();
    let mut pipeline = if threads > 1 {
        // Parsing on every core; the engine's token stage in order on whichever parser is
        // free, its other detectors on a thread of their own.
        let engine =
            crate::detect::SplitEngine::spawn(engine).context("starting the detect thread")?;
        let mut parsers =
            vec![Pipeline::new(stages, fp.clone(), None)
                .with_lag_histogram(metrics.event_lag.clone())];
        for _ in 1..threads {
            parsers.push(
                Pipeline::new(super::build::build_stages(cfg, metrics)?, fp.clone(), None)
                    .with_lag_histogram(metrics.event_lag.clone()),
            );
        }
        Live::Parallel(
            ParallelPipeline::spawn(parsers, Box::new(engine))
                .context("starting the parse threads")?,
        )
    } else {
        Live::One(Box::new(
            Pipeline::new(stages, fp.clone(), Some(Box::new(engine)))
                .with_lag_histogram(metrics.event_lag.clone()),
        ))
    };
    let snap = Snapshotter {
        path: cfg.state.dir.join(SNAPSHOT_FILE),
        offsets: tailer.checkpointer(),
        metrics: metrics.clone(),
    };
    let every = Duration::from_secs(cfg.detectors.snapshot_interval_secs.max(1));
    let pipeline = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || {
            let mut last = std::time::Instant::now();
            let mut due = every;
            loop {
                // Wake up now and then even when idle, so snapshots happen.
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(batch) => pipeline.process(batch),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // The tailer dropped its sender: everything read has been processed.
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if last.elapsed() >= due {
                    last = std::time::Instant::now();
                    // A failed write (full or read-only disk) is retried sooner.
                    due = match pipeline.save(&snap) {
                        true => every,
                        false => every.min(SNAPSHOT_RETRY),
                    };
                }
            }
            pipeline.save(&snap);
        })
        .context("starting the pipeline thread")?;
    Ok(Running {
        tailer,
        listeners,
        pipeline,
    })
}

/// Learned detector state in the state directory.
const SNAPSHOT_FILE: &str = "detect-snapshot.json";
/// Its kind in the state header.
const SNAPSHOT_KIND: &str = "detect-snapshot";
/// Retry interval of a failed snapshot write.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(10);
/// How often the state directory's writability is probed (for `/readyz`).
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The first line of a snapshot body: the file offsets the engine state covers.
#[derive(serde::Serialize, serde::Deserialize)]
struct Covers {
    offsets: Vec<Entry>,
}

/// Snapshot body: the [`Covers`] line, then the engine's own bytes.
#[cfg(test)]
fn encode_snapshot(offsets: &[Entry], engine: &[u8]) -> Vec<u8> {
    let mut out = covers_line(offsets);
    out.extend_from_slice(engine);
    out
}

/// The first line of a snapshot body: the offsets it covers. The engine's bytes follow it
/// as a second part of the write, never copied behind it (they can be large).
fn covers_line(offsets: &[Entry]) -> Vec<u8> {
    let covers = Covers {
        offsets: offsets.to_vec(),
    };
    let mut out = serde_json::to_vec(&covers).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Splits a snapshot body into the offsets it covers (`None`: an older snapshot without
/// them, which is the engine's bytes alone) and the engine's bytes.
fn decode_snapshot(body: &[u8]) -> (Option<Vec<Entry>>, &[u8]) {
    // The engine's JSON is compact: a raw newline only ever ends the Covers line.
    if let Some(nl) = memchr::memchr(b'\n', body) {
        let (head, rest) = body.split_at(nl);
        if let Ok(c) = serde_json::from_slice::<Covers>(head) {
            return (Some(c.offsets), rest.get(1..).unwrap_or_default());
        }
    }
    (None, body)
}

/// The detection engine for the daemon: records to the configured JSONL file, state
/// restored from the last snapshot; also the offsets that snapshot covers.
fn build_live_engine(
    cfg: &Config,
    metrics: &Metrics,
    outputs: Outputs,
) -> Result<(crate::detect::Engine, Option<Vec<Entry>>), CliError> {
    use crate::detect::{Engine, JsonlSink};
    let out = cfg
        .detectors
        .output
        .clone()
        .unwrap_or_else(|| cfg.state.dir.join("detections.jsonl"));
    let sink = JsonlSink::append(&out).with_context(|| format!("opening {}", out.display()))?;
    let mut engine = Engine::for_config(cfg, metrics)
        .with_policy(outputs.policy)
        .with_sink(Box::new(sink))
        .with_sink(Box::new(outputs.ring));
    if let Some(g) = super::build::open_geo(cfg, &[])? {
        engine = engine.with_geo(g);
    }
    let resume = restore_snapshot(&mut engine, &cfg.state.dir.join(SNAPSHOT_FILE), metrics);
    Ok((engine, resume))
}

/// Restores the engine from `path`; a damaged snapshot (bad header, or the engine refuses
/// it) is set aside, reported and counted, and learning starts afresh.
fn restore_snapshot(
    engine: &mut crate::detect::Engine,
    path: &Path,
    metrics: &Metrics,
) -> Option<Vec<Entry>> {
    use crate::durable::{read_state, set_aside, Loaded};
    let legacy = |b: &[u8]| serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok();
    let body = match read_state(path, SNAPSHOT_KIND, legacy) {
        Loaded::Missing => return None,
        Loaded::Found(b) => b,
        Loaded::Rejected(_) => {
            metrics.state_corrupt(StateFile::DetectSnapshot, 1);
            return None;
        }
    };
    let (offsets, bytes) = decode_snapshot(&body);
    match engine.restore(bytes) {
        Ok(()) => {
            tracing::info!(tokens = engine.tracked_tokens(), "detector state restored");
            offsets
        }
        Err(e) => {
            set_aside(path, &format!("the detector refused it: {e}"));
            metrics.state_corrupt(StateFile::DetectSnapshot, 1);
            None
        }
    }
}

/// Checks the checkpoint file (a damaged one is set aside and counted), then resumes from
/// the snapshot's offsets when there are any (see the module docs).
fn prepare_checkpoints(dir: &Path, resume: Option<Vec<Entry>>, metrics: &Metrics) {
    let current = checkpoint::read(dir).unwrap_or_else(|_| {
        metrics.state_corrupt(StateFile::Checkpoints, 1);
        Vec::new()
    });
    let Some(resume) = resume else {
        return;
    };
    if resume == current {
        return;
    }
    let behind: u64 = current
        .iter()
        .filter_map(|c| {
            let r = resume.iter().find(|r| r.dev_ino() == c.dev_ino())?;
            c.offset.checked_sub(r.offset)
        })
        .sum();
    tracing::info!(
        files = resume.len(),
        reread_bytes = behind,
        "resuming files at the detector snapshot's offsets (lines since it are read again)"
    );
    if let Err(e) = checkpoint::store(dir, &resume) {
        tracing::error!(%e, "cannot rewind the checkpoints to the snapshot; events since it are not seen by detection");
        metrics.state_write(StateFile::Dir, Err(&e));
    }
}

/// The live pipeline: one thread, or parsers on every core.
enum Live {
    One(Box<Pipeline>),
    Parallel(ParallelPipeline),
}

impl Live {
    fn process(&mut self, batch: crate::source::LineBatch) {
        match self {
            Live::One(p) => p.process(batch),
            Live::Parallel(p) => p.process(batch),
        }
    }

    /// Writes the snapshot once every batch handed over so far is in the engine (and
    /// acked); false when the write failed.
    fn save(&mut self, snap: &Snapshotter) -> bool {
        match self {
            Live::One(p) => p.sink_mut().is_none_or(|s| snap.save(s)),
            Live::Parallel(p) => p.with_sink(|s| snap.save(s)).unwrap_or(true),
        }
    }
}

/// Writes the engine's snapshot with the offsets it covers; a failure is logged and
/// counted, never fatal.
struct Snapshotter {
    path: PathBuf,
    offsets: Option<Arc<Checkpointer>>,
    metrics: Metrics,
}

impl Snapshotter {
    /// Must run between batches with every batch handed over so far in the engine and
    /// acked (the pipeline thread is the only one that hands batches over). False when the
    /// write failed.
    fn save(&self, sink: &mut dyn EventSink) -> bool {
        use std::io::Write;
        let started = std::time::Instant::now();
        // The offsets go first in the body. Taking them before the engine writes is the same
        // as after: this thread is the only one that acks and it is busy here, and every
        // acked batch was handed to the sink before the snapshot request (the split engine
        // answers in order).
        let offsets = self
            .offsets
            .as_ref()
            .map(|c| c.entries())
            .unwrap_or_default();
        let r = crate::durable::StateWriter::create(&self.path, SNAPSHOT_KIND)
            .and_then(|mut w| {
                w.write_all(&covers_line(&offsets))?;
                Ok(w)
            })
            .and_then(|w| sink.write_snapshot(w))
            .and_then(|w| w.map(|w| w.commit()).transpose());
        self.metrics
            .state_write(StateFile::DetectSnapshot, r.as_ref().map(|_| ()));
        match r {
            Ok(bytes) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::debug!(?bytes, ms, "detector snapshot written");
                true
            }
            Err(e) => {
                tracing::error!(%e, path = %self.path.display(), "writing the detector snapshot");
                false
            }
        }
    }
}

/// Writes a probe file in the state directory every [`PROBE_EVERY`], so `/readyz` notices
/// a read-only or full disk even when no state write is due; logs only on changes.
async fn probe_state_dir(dir: PathBuf, metrics: Metrics) {
    // Per process: workers (and responders) may share a state directory, and two probes
    // racing on one temporary file would fail each other's renames.
    let path = dir.join(format!(".write-probe.{}", std::process::id()));
    let mut was_ok = true;
    loop {
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || {
            crate::durable::write_atomic(&p, b"ok\n")?;
            std::fs::remove_file(&p)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        metrics.state_write(StateFile::Dir, r.as_ref().map(|_| ()));
        match (&r, was_ok) {
            (Err(e), true) => {
                tracing::error!(%e, dir = %dir.display(), "the state directory cannot be written: detection goes on, but state is not saved; /readyz answers 503")
            }
            (Ok(()), false) => {
                tracing::info!(dir = %dir.display(), "the state directory is writable again")
            }
            _ => {}
        }
        was_ok = r.is_ok();
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Polls the sources' readiness latches (and, on an edge enforcing freezes, the frozen set's
/// load from the topic) into the `/readyz` flag.
async fn wait_ready(running: &Running, frozen: Option<&FrozenView>, ready: &AtomicBool) {
    for _ in 0..3000 {
        if running.tailer.is_ready()
            && running.listeners.is_ready()
            && frozen.is_none_or(FrozenView::is_loaded)
        {
            ready.store(true, Ordering::Release);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!("sources not ready after 30 s; /readyz stays 503");
}

/// Stop order matters: stop reading, let the pipeline drain what was read (acking it), then
/// write the final checkpoint so a restart neither loses nor repeats lines.
async fn stop(running: Running) -> Result<(), CliError> {
    let Running {
        tailer,
        listeners,
        pipeline,
    } = running;
    // Network and journal sources first: they drop their senders, so the pipeline can see
    // the channel's end once the tailer stops too.
    let journald = listeners.stop_reading().await;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        tailer.stop_reading();
        pipeline
            .join()
            .map_err(|_| anyhow::anyhow!("pipeline thread panicked"))?;
        tailer.write_checkpoints().context("final checkpoint")?;
        tailer.join().context("stopping the tailer")?;
        // Every acked entry is in: write the journald cursors.
        sources::finish(journald)
    })
    .await
    .context("joining shutdown task")??;
    Ok(())
}

/// Loads the new config; on any error keeps the old one and says why.
fn reload(old: Config, path: Option<&Path>, metrics: &Metrics) -> Config {
    match load_config(path).and_then(|c| build_stages(&c, &Metrics::new()).map(|_| c)) {
        Ok(mut new) => {
            // The role (perhaps from --role) is fixed until a restart.
            new.role = old.role;
            if new.server.listen != old.server.listen {
                tracing::warn!("server.listen changed: restart tokenwatch to apply it");
                new.server.listen = old.server.listen;
            }
            if (&new.server.tls_cert, &new.server.tls_key)
                != (&old.server.tls_cert, &old.server.tls_key)
            {
                tracing::warn!("server.tls_cert/tls_key changed: restart tokenwatch to apply them");
                new.server.tls_cert = old.server.tls_cert.clone();
                new.server.tls_key = old.server.tls_key.clone();
            }
            if new.response != old.response || new.hooks != old.hooks {
                tracing::warn!(
                    "[response] or [[hook]] changed: restart tokenwatch to apply them \
                     (the running policy and hooks stay in force)"
                );
            }
            metrics.reload(true);
            tracing::info!("config reloaded");
            new
        }
        Err(e) => {
            metrics.reload(false);
            tracing::error!("config reload rejected, keeping the running config:\n{e}");
            old
        }
    }
}

/// SIGTERM, SIGINT and SIGHUP as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.term.recv() => Stop::Shutdown,
            _ = self.int.recv() => Stop::Shutdown,
            _ = self.hup.recv() => Stop::Reload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_body_carries_offsets_and_old_bodies_have_none() {
        let e = Entry {
            source: "gw".into(),
            path: "/l/a.log".into(),
            dev: 1,
            ino: 2,
            fingerprint: None,
            offset: 77,
        };
        let engine = br#"{"version":1,"tokens":[]}"#;
        let body = encode_snapshot(std::slice::from_ref(&e), engine);
        let (offsets, bytes) = decode_snapshot(&body);
        assert_eq!(offsets, Some(vec![e]));
        assert_eq!(bytes, engine);
        // A snapshot from before offsets were carried is the engine's bytes alone.
        assert_eq!(decode_snapshot(engine), (None, &engine[..]));
    }
}
