//! `tokenwatch demo`: the zero-config first run. Generates a labelled synthetic log, replays
//! it through the pipeline with the embedded default config while serving `/metrics`, and
//! prints what it saw and where to look.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::build::build_stages;
use super::CliError;
use crate::config::Config;
use crate::detect::{Detection, Engine, JsonlSink, VecSink};
use crate::enrich::geo::BuiltinGeo;
use crate::enrich::Fingerprinter;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::server::{AppState, Server};
use crate::source::replay::for_each_chunk;

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to write the generated log and labels (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Address to serve /metrics on (a busy port falls back to a free one).
    #[arg(long, default_value = "127.0.0.1:9847")]
    pub listen: SocketAddr,
    /// Tokens in the generated population.
    #[arg(long, default_value_t = 2000)]
    pub tokens: u32,
    /// Days of traffic to generate.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Keep serving after the report until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
}

/// Runs `demo`.
pub fn run(args: DemoArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> Result<(), CliError> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tokenwatch-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (log, labels) = (dir.join("access.log"), dir.join("labels.jsonl"));
    eprintln!(
        "tokenwatch demo: generating {} days of traffic for {} tokens ...",
        args.days, args.tokens
    );
    generate(&args, &log, &labels)?;

    let mut cfg = Config::embedded_default();
    cfg.sources.truncate(1);
    let metrics = Metrics::new();
    let stages = build_stages(&cfg, &metrics)?;
    let server = match Server::bind(args.listen).await {
        Ok(s) => s,
        Err(_) => Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding a local port")?,
    };
    let addr = server.local_addr().context("bound address")?;
    let state = AppState {
        metrics: metrics.clone(),
        ready: Arc::new(AtomicBool::new(true)),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(server.serve(state, async {
        let _ = stop_rx.await;
    }));

    // The demo's GeoIP is the generator's own table: no download needed.
    let collected = VecSink::default();
    let det_path = dir.join("detections.jsonl");
    let _ = std::fs::remove_file(&det_path);
    let engine = Engine::for_config(&cfg, &metrics)
        .with_geo(Arc::new(BuiltinGeo))
        .with_policy(crate::respond::replay_policy(&cfg, Some(&metrics)))
        .with_sink(Box::new(collected.clone()))
        .with_sink(Box::new(
            JsonlSink::append(&det_path).context("detections file")?,
        ));
    // A demo key: the generated ids are not secrets, and nothing is persisted.
    let mut pipeline = Pipeline::new(
        stages,
        Fingerprinter::new(b"tokenwatch-demo"),
        Some(Box::new(engine)),
    );
    let log2 = log.clone();
    let (pipeline, secs) = tokio::task::spawn_blocking(move || {
        replay_with_progress(&log2, &mut pipeline).map(|s| (pipeline, s))
    })
    .await
    .context("replay task")??;
    let records = collected.records();
    let truth = super::replay::read_labels(&labels)?;
    report(&pipeline, secs, &log, &labels, addr)?;
    report_detections(&records, &truth, &det_path)?;
    if args.keep_running {
        eprintln!("serving on http://{addr}/metrics until Ctrl-C ...");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(());
    let _ = http.await;
    Ok(())
}

fn generate(
    args: &DemoArgs,
    log: &std::path::Path,
    labels: &std::path::Path,
) -> anyhow::Result<()> {
    let opts = crate::gen::GenOptions {
        tokens: args.tokens,
        days: args.days,
        ..crate::gen::GenOptions::default()
    };
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?,
    );
    let mut lab = std::io::BufWriter::new(std::fs::File::create(labels)?);
    crate::gen::generate(&opts, &mut out, Some(&mut lab)).context("generating the demo log")?;
    out.flush()?;
    lab.flush()?;
    Ok(())
}

/// Replays `log` as source 0, drawing a progress bar on stderr; returns elapsed seconds.
fn replay_with_progress(log: &std::path::Path, p: &mut Pipeline) -> anyhow::Result<f64> {
    let size = std::fs::metadata(log)?.len().max(1);
    let f = std::fs::File::open(log)?;
    let started = Instant::now();
    let mut done = 0u64;
    let mut last_pct = u64::MAX;
    // A redrawn bar on a terminal; every 25 % otherwise (logs, CI).
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    for_each_chunk(f, |chunk| {
        p.process_lines(0, chunk);
        done += chunk.len() as u64;
        let pct = done * 100 / size;
        if pct != last_pct && (tty || pct.is_multiple_of(25)) {
            last_pct = pct;
            let bar = "#".repeat((pct / 4) as usize);
            if tty {
                eprint!("\r  replaying [{bar:<25}] {pct:>3}%");
            } else {
                eprintln!("  replaying {pct:>3}%");
            }
        }
    })?;
    if tty {
        eprintln!();
    }
    Ok(started.elapsed().as_secs_f64())
}

fn report(
    p: &Pipeline,
    secs: f64,
    log: &std::path::Path,
    labels: &std::path::Path,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let t = p.totals();
    let mut o = std::io::stdout().lock();
    writeln!(o, "\ntokenwatch demo report")?;
    writeln!(o, "  log           {}", log.display())?;
    writeln!(o, "  ground truth  {}", labels.display())?;
    writeln!(
        o,
        "  lines         {}  ({:.0} lines/s)",
        t.lines,
        t.lines as f64 / secs.max(1e-9)
    )?;
    writeln!(o, "  token checks  {}", t.events)?;
    writeln!(
        o,
        "  rejected      {}  ({:.1} %)",
        t.rejected,
        100.0 * t.rejected as f64 / (t.events.max(1)) as f64
    )?;
    writeln!(o, "  malformed     {}", t.malformed)?;
    writeln!(o, "\nLook at:")?;
    writeln!(
        o,
        "  http://{addr}/metrics   e.g. auth_token_check_total, auth_token_rejected_total"
    )?;
    writeln!(o, "  http://{addr}/readyz")?;
    writeln!(
        o,
        "  tokenwatch parse --format nginx {} | head",
        log.display()
    )?;
    Ok(())
}

/// Detections by detector, one example of each with its evidence, and the labelled score.
fn report_detections(
    records: &[Detection],
    truth: &[crate::gen::Label],
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "\nDetections: {}  (all records: {})",
        records.len(),
        path.display()
    )?;
    let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
    for d in records {
        *by.entry(d.detector.as_str()).or_default() += 1;
    }
    for (det, n) in &by {
        writeln!(o, "  {det:<18} {n:>6}")?;
    }
    writeln!(o, "\nOne example of each (time, key, action, evidence):")?;
    let mut seen = std::collections::BTreeSet::new();
    for d in records {
        if seen.insert(d.detector.clone()) {
            let who = d
                .token
                .clone()
                .or_else(|| d.ip.map(|i| i.to_string()))
                .unwrap_or_else(|| "global".into());
            writeln!(
                o,
                "  {:<18} {:<6} {}  {:<18} {:<12} {}",
                d.detector,
                d.severity.as_str(),
                d.ts,
                who,
                serde_json::to_value(d.action)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                d.evidence
            )?;
        }
    }
    let freezes: Vec<&Detection> = records
        .iter()
        .filter(|d| d.action == crate::detect::Action::WouldFreeze)
        .collect();
    writeln!(
        o,
        "\nWould freeze (dry-run: the embedded config never revokes): {}",
        freezes.len()
    )?;
    for d in freezes.iter().take(10) {
        writeln!(
            o,
            "  {}  {:<18} {}",
            d.token.as_deref().unwrap_or("-"),
            d.detector,
            d.reason.as_deref().unwrap_or("")
        )?;
    }
    let scores = crate::detect::score::score(truth, records);
    writeln!(o, "\nAgainst the generator's ground truth:")?;
    write!(o, "{}", crate::detect::score::table(&scores))?;
    Ok(())
}
