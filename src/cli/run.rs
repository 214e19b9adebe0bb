//! `tokenwatch run`: the daemon. Load config, build, start the tailer, the pipeline thread
//! and the HTTP server, then wait for a signal: SIGTERM/SIGINT drain and exit 0, SIGHUP
//! reloads the config (validated first; a bad config keeps the running one).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use super::build::{build_stages, fingerprint_key, load_config};
use super::CliError;
use crate::config::Config;
use crate::detect::Ring;
use crate::enrich::Fingerprinter;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::respond::Responder;
use crate::server::{AppState, Server};
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
    /// Override the config's `role` (all | edge; worker and responder come later).
    #[arg(long, value_enum)]
    pub role: Option<crate::config::Role>,
}

/// What a signal asks for.
enum Stop {
    Shutdown,
    Reload,
}

/// A running tailer + pipeline pair for one config.
struct Running {
    tailer: TailerHandle,
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
    let server = Server::bind(cfg.server.listen)
        .await
        .with_context(|| format!("binding {}", cfg.server.listen))?;
    let addr = server.local_addr().context("reading the bound address")?;
    if let Some(f) = &args.addr_file {
        crate::durable::write_atomic(f, addr.to_string().as_bytes())
            .with_context(|| format!("writing {}", f.display()))?;
    }
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
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
    let ring = Ring::new(RING_RECORDS);
    let admin = responder_handle.admin_routes(ring.clone(), cfg.server.admin_token.clone());
    let http = tokio::spawn(server.serve_with(state, admin, async {
        let _ = stop_server_rx.await;
    }));
    let mut signals = Signals::new().context("installing signal handlers")?;
    loop {
        let outputs = Outputs {
            policy: responder.policy(),
            ring: ring.clone(),
        };
        let running = start(&cfg, &metrics, &fp, outputs)?;
        wait_ready(&running.tailer, &ready).await;
        let what = signals.next().await;
        ready.store(false, Ordering::Release);
        stop(running).await?;
        match what {
            Stop::Shutdown => break,
            Stop::Reload => cfg = reload(cfg, args.config.as_deref(), &metrics),
        }
    }
    let _ = stop_server_tx.send(());
    let _ = http.await;
    // After the pipeline: every decided action is journaled; workers get a grace period.
    responder_handle.shutdown().await;
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
    let tail_cfgs = cfg
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| s.tail_config(i as u16))
        .collect();
    let tailer = Tailer::start(tail_cfgs, Some(cfg.state.dir.clone()), tx, events)
        .context("starting the file tailer")?;
    #[cfg(feature = "kafka")]
    if cfg.role == crate::config::Role::Edge {
        let pipeline = crate::scale::edge::spawn(cfg, stages, fp.clone(), metrics, rx)
            .context("starting the Kafka edge")?;
        return Ok(Running { tailer, pipeline });
    }
    let mut engine = build_live_engine(cfg, metrics, outputs)?;
    if crate::pipeline::threaded::default_threads() > 1 {
        // Detection on its own core; the pipeline thread keeps parsing and counting.
        engine = Box::new(
            crate::pipeline::threaded::ThreadedSink::spawn(engine)
                .context("starting the detect thread")?,
        );
    }
    let mut pipeline = Pipeline::new(stages, fp.clone(), Some(engine))
        .with_lag_histogram(metrics.event_lag.clone());
    let snap_path = cfg.state.dir.join(SNAPSHOT_FILE);
    let every = Duration::from_secs(cfg.detectors.snapshot_interval_secs.max(1));
    let pipeline = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || {
            let mut last = std::time::Instant::now();
            loop {
                // Wake up now and then even when idle, so snapshots happen.
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(batch) => pipeline.process(batch),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // The tailer dropped its sender: everything read has been processed.
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if last.elapsed() >= every {
                    last = std::time::Instant::now();
                    save_snapshot(&mut pipeline, &snap_path);
                }
            }
            save_snapshot(&mut pipeline, &snap_path);
        })
        .context("starting the pipeline thread")?;
    Ok(Running { tailer, pipeline })
}

/// Learned detector state in the state directory.
const SNAPSHOT_FILE: &str = "detect-snapshot.json";

/// The detection engine for the daemon: records to the configured JSONL file, state
/// restored from the last snapshot.
fn build_live_engine(
    cfg: &Config,
    metrics: &Metrics,
    outputs: Outputs,
) -> Result<Box<dyn crate::pipeline::EventSink>, CliError> {
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
    let snap = cfg.state.dir.join(SNAPSHOT_FILE);
    match crate::durable::read_with_recovery(&snap, |b| {
        serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
    }) {
        Ok(Some(bytes)) => match engine.restore(&bytes) {
            Ok(()) => tracing::info!(tokens = engine.tracked_tokens(), "detector state restored"),
            Err(e) => tracing::warn!(%e, "ignoring the detector snapshot; learning starts afresh"),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(%e, "cannot read the detector snapshot; learning starts afresh"),
    }
    Ok(Box::new(engine))
}

/// Writes the engine's snapshot atomically; a failure is logged, never fatal.
fn save_snapshot(p: &mut Pipeline, path: &Path) {
    let Some(bytes) = p.sink_mut().and_then(|s| s.snapshot()) else {
        return;
    };
    if let Err(e) = crate::durable::write_atomic(path, &bytes) {
        tracing::error!(%e, path = %path.display(), "writing the detector snapshot");
    }
}

/// Polls the tailer's readiness latch into the `/readyz` flag.
async fn wait_ready(tailer: &TailerHandle, ready: &AtomicBool) {
    for _ in 0..3000 {
        if tailer.is_ready() {
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
    let Running { tailer, pipeline } = running;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        tailer.stop_reading();
        pipeline
            .join()
            .map_err(|_| anyhow::anyhow!("pipeline thread panicked"))?;
        tailer.write_checkpoints().context("final checkpoint")?;
        tailer.join().context("stopping the tailer")?;
        Ok(())
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
