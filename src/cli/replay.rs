//! `tokenwatch replay`: read files start to end as fast as possible, print a summary.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use super::build::{build_stages, load_config, offline_fingerprinter};
use super::CliError;
use crate::metrics::Metrics;
use crate::parse::Preset;
use crate::pipeline::{Pipeline, Totals};
use crate::source::replay::for_each_chunk;
use crate::source::wrapper::{Unwrapper, WrapperChoice};

/// Arguments of `replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Config file (default: the embedded default config).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Which configured source's parser settings to use (default: the first).
    #[arg(long)]
    pub source: Option<String>,
    /// Override the source's preset (nginx, json, vault, keycloak, oauth2-proxy, regex).
    #[arg(long, value_parser = parse_preset)]
    pub format: Option<Preset>,
    /// nginx: override the log_format (tokenwatch, combined, main, or a log_format string).
    #[arg(long)]
    pub log_format: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write detection records (JSON lines) to this file (`-` for stdout).
    #[arg(long)]
    pub detections: Option<PathBuf>,
    /// GeoIP database (.mmdb, MaxMind City or ip-location-db schema); repeatable; adds to
    /// `[geo] mmdb`. `--geoip builtin:gen` locates `tokenwatch gen` addresses with the
    /// generator's own table (for backtests; no database needed).
    #[arg(long = "geoip", value_name = "MMDB")]
    pub geoip: Vec<PathBuf>,
    /// Call the configured revoke hooks (through the journal in the state directory); by
    /// default replay only records what the policy would do, with no side effects.
    #[arg(long)]
    pub with_hooks: bool,
    /// Threads for the pipeline: 1 parses and detects on one thread; 2 runs detection on a
    /// second thread (same records, byte for byte). Default: 2 when the machine has 2 cores.
    #[arg(long, default_value_t = crate::detect::default_threads())]
    pub threads: usize,
    /// Metrics only: run no detectors (the fastest mode).
    #[arg(long)]
    pub no_detect: bool,
    /// Score detections against a ground-truth labels file (`tokenwatch gen --labels`):
    /// recall, delay and false positives per detector.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Write the final Prometheus exposition to this file (`-` for stdout).
    #[arg(long)]
    pub metrics_out: Option<PathBuf>,
    /// Log files to read in order (`-` for stdin).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Parses a preset name for clap.
pub fn parse_preset(s: &str) -> Result<Preset, String> {
    Preset::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Preset::ALL.iter().map(|(_, n)| *n).collect();
        format!(
            "unknown format {s:?} (expected one of {})",
            names.join(", ")
        )
    })
}

/// Picks the source to replay as and applies the command-line overrides.
pub(crate) fn replay_config(
    config: Option<&std::path::Path>,
    source: Option<&str>,
    format: Option<Preset>,
    log_format: Option<&str>,
) -> Result<crate::config::Config, CliError> {
    let mut cfg = load_config(config)?;
    let idx = match source {
        Some(name) => cfg
            .sources
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| CliError::Config(format!("no source named {name:?} in the config")))?,
        None => 0,
    };
    if cfg.sources.is_empty() {
        cfg.sources.push(crate::config::SourceConfig::default());
    }
    let mut src = cfg.sources.swap_remove(idx.min(cfg.sources.len() - 1));
    if let Some(p) = format.filter(|p| *p != src.format) {
        switch_preset(&mut src, p);
    }
    if let Some(lf) = log_format {
        src.log_format = Some(lf.to_string());
    }
    cfg.sources = vec![src];
    Ok(cfg)
}

/// Gives a source another preset on the command line. The defaults the loader filled in
/// for the old preset go (the nginx `token_field`/`reason_field` defaults once replaced a JSON
/// source's `fields.reason`, so `--format json` read no reasons), and the new preset's come.
fn switch_preset(src: &mut crate::config::SourceConfig, p: Preset) {
    src.format = p;
    src.token_kind = crate::config::TokenKind::default_for(p);
    if p == Preset::Nginx {
        src.log_format.get_or_insert_with(|| "tokenwatch".into());
        src.token_field.get_or_insert_with(|| "token_id".into());
        src.reason_field.get_or_insert_with(|| "auth_reason".into());
    } else {
        src.log_format = None;
        src.token_field = None;
        src.reason_field = None;
    }
    if p == Preset::Json {
        src.fields.get_or_insert_with(Default::default);
    }
    if p == Preset::Regex {
        src.time_format.get_or_insert_with(|| "rfc3339".into());
    }
}

/// Runs `replay`.
pub fn run(args: ReplayArgs) -> Result<(), CliError> {
    let cfg = replay_config(
        args.config.as_deref(),
        args.source.as_deref(),
        args.format,
        args.log_format.as_deref(),
    )?;
    let metrics = Metrics::new();
    let stages = build_stages(&cfg, &metrics)?;
    let fp = offline_fingerprinter(&cfg)?;
    let labels = match &args.labels {
        Some(p) => Some(read_labels(p)?),
        None => None,
    };
    let collected = crate::detect::VecSink::default();
    let hooks = if args.with_hooks && !args.no_detect {
        Some(HookRuntime::start(&cfg, &metrics)?)
    } else {
        None
    };
    let policy = match &hooks {
        Some(h) => h.responder.policy(),
        None => crate::respond::replay_policy(&cfg, Some(&metrics)),
    };
    let engine = if args.no_detect {
        None
    } else {
        let extra = labels
            .is_some()
            .then(|| Box::new(collected.clone()) as Box<dyn crate::detect::DetectionSink>);
        Some(build_engine(
            &cfg,
            &metrics,
            args.detections.as_deref(),
            extra,
            &args.geoip,
            policy,
        )?)
    };
    let started = Instant::now();
    let mut bytes = 0;
    let wrapper = (cfg.sources[0].wrapper, cfg.sources[0].max_line_bytes);
    let (totals, found) = match engine {
        // Parsing on every thread, the engine's two stages in order (records as one thread's).
        Some(e) if args.threads > 1 => {
            let sink =
                crate::detect::SplitEngine::spawn(e).context("starting the detect thread")?;
            let mut parsers = vec![Pipeline::new(stages, fp.clone(), None)];
            for _ in 1..args.threads {
                parsers.push(Pipeline::new(
                    build_stages(&cfg, &metrics)?,
                    fp.clone(),
                    None,
                ));
            }
            let mut pipeline =
                crate::pipeline::parallel::ParallelPipeline::spawn(parsers, Box::new(sink))
                    .context("starting the parse threads")?;
            for path in &args.files {
                bytes += replay_file(path, &mut pipeline, wrapper)?;
            }
            let (totals, mut sink) = pipeline.finish();
            let found = sink
                .as_mut()
                .map(|s| s.detection_counts())
                .unwrap_or_default();
            (totals, found)
        }
        engine => {
            let sink = engine.map(|e| Box::new(e) as Box<dyn crate::pipeline::EventSink>);
            let mut pipeline = Pipeline::new(stages, fp, sink);
            for path in &args.files {
                bytes += replay_file(path, &mut pipeline, wrapper)?;
            }
            let found = pipeline
                .sink_mut()
                .map(|s| s.detection_counts())
                .unwrap_or_default();
            (pipeline.totals().clone(), found)
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(h) = hooks {
        h.finish();
    }
    print_summary(&totals, &found, bytes, elapsed, args.json)?;
    if let Some(labels) = labels {
        let scores = crate::detect::score::score(&labels, &collected.records());
        if args.json {
            println!("{}", serde_json::json!({ "score": scores }));
        } else {
            print!("\n{}", crate::detect::score::table(&scores));
        }
    }
    if let Some(out) = &args.metrics_out {
        write_out(out, metrics.render().as_bytes())?;
    }
    Ok(())
}

/// The detection engine for `cfg`, writing records to `out` (`-` = stdout) if given.
pub(crate) fn build_engine(
    cfg: &crate::config::Config,
    metrics: &Metrics,
    out: Option<&std::path::Path>,
    extra: Option<Box<dyn crate::detect::DetectionSink>>,
    geoip: &[PathBuf],
    policy: Box<dyn crate::detect::Decide>,
) -> anyhow::Result<crate::detect::Engine> {
    use crate::detect::{Engine, JsonlSink};
    let mut engine = Engine::for_config(cfg, metrics).with_policy(policy);
    let builtin = |p: &PathBuf| p.as_os_str() == "builtin:gen";
    if geoip.iter().any(builtin) {
        engine = engine.with_geo(std::sync::Arc::new(crate::enrich::geo::BuiltinGeo));
    } else if let Some(g) = super::build::open_geo(cfg, geoip)? {
        engine = engine.with_geo(g);
    }
    match out {
        Some(p) if p.as_os_str() == "-" => {
            engine = engine.with_sink(Box::new(JsonlSink::new(Box::new(std::io::stdout()))));
        }
        Some(p) => {
            let sink = JsonlSink::append(p).with_context(|| format!("opening {}", p.display()))?;
            engine = engine.with_sink(Box::new(sink));
        }
        None => {}
    }
    if let Some(sink) = extra {
        engine = engine.with_sink(sink);
    }
    Ok(engine)
}

/// The responder and its runtime for `replay --with-hooks`.
struct HookRuntime {
    rt: tokio::runtime::Runtime,
    responder: crate::respond::Responder,
    handle: crate::respond::ResponderHandle,
}

impl HookRuntime {
    fn start(cfg: &crate::config::Config, metrics: &Metrics) -> anyhow::Result<HookRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the hook runtime")?;
        std::fs::create_dir_all(&cfg.state.dir)
            .with_context(|| format!("creating state dir {}", cfg.state.dir.display()))?;
        let (responder, handle) =
            crate::respond::Responder::start(cfg, &cfg.state.dir, metrics, rt.handle().clone())
                .context("starting the response stage")?;
        Ok(HookRuntime {
            rt,
            responder,
            handle,
        })
    }

    /// Lets queued hook calls finish (bounded by the responder's grace period).
    fn finish(self) {
        let HookRuntime { rt, handle, .. } = self;
        rt.block_on(handle.shutdown());
    }
}

/// Reads a labels file written by `tokenwatch gen --labels`.
pub(crate) fn read_labels(p: &std::path::Path) -> Result<Vec<crate::gen::Label>, CliError> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| CliError::Config(format!("{}: {e}", p.display())))?;
    crate::gen::Label::parse_all(&text)
        .map_err(|e| CliError::Config(format!("{}: not a labels file: {e}", p.display())))
}

/// Feeds one file (or stdin for `-`) through the pipeline as source 0, taking the inner
/// lines out of a container log wrapper (`wrapper`, detected per file by default). Plain
/// files go straight through.
pub(crate) fn replay_file(
    path: &std::path::Path,
    p: &mut dyn crate::pipeline::Lines,
    wrapper: (WrapperChoice, usize),
) -> anyhow::Result<u64> {
    let mut feed = Unwrapped::new(wrapper.0, wrapper.1);
    if path.as_os_str() == "-" {
        return Ok(for_each_chunk(std::io::stdin().lock(), |c| {
            feed.chunk(p, c)
        })?);
    }
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    for_each_chunk(f, |c| feed.chunk(p, c)).with_context(|| format!("reading {}", path.display()))
}

/// One replayed file's wrapper state and reusable output buffers.
pub(crate) struct Unwrapped {
    unwrap: Unwrapper,
    out: Vec<u8>,
    stamps: Vec<crate::event::EventTime>,
    /// Joined lines dropped as over `max_line_bytes`.
    pub too_long: u64,
}

impl Unwrapped {
    /// A fresh state for one file.
    pub(crate) fn new(choice: WrapperChoice, max_line: usize) -> Unwrapped {
        Unwrapped {
            unwrap: Unwrapper::new(choice, max_line),
            out: Vec::new(),
            stamps: Vec::new(),
            too_long: 0,
        }
    }

    /// Processes a run of complete lines as source 0.
    pub(crate) fn chunk(&mut self, p: &mut dyn crate::pipeline::Lines, c: &[u8]) {
        if self.unwrap.is_plain() {
            return p.lines(0, c, &[]);
        }
        self.out.clear();
        self.stamps.clear();
        self.too_long += u64::from(self.unwrap.feed_buf(c, 0, &mut self.out, &mut self.stamps));
        p.lines(0, &self.out, &self.stamps);
    }
}

fn write_out(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        std::io::stdout().write_all(bytes)?;
        return Ok(());
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn print_summary(
    t: &Totals,
    found: &std::collections::BTreeMap<&'static str, u64>,
    bytes: u64,
    secs: f64,
    json: bool,
) -> anyhow::Result<()> {
    let rate = if secs > 0.0 {
        t.lines as f64 / secs
    } else {
        0.0
    };
    let mut out = std::io::stdout().lock();
    if json {
        let malformed: serde_json::Map<String, serde_json::Value> = t
            .malformed_by
            .iter()
            .map(|(r, n)| (r.to_string(), (*n).into()))
            .collect();
        let skipped: serde_json::Map<String, serde_json::Value> = t
            .skipped_by
            .iter()
            .map(|(r, n)| (r.to_string(), (*n).into()))
            .collect();
        let v = serde_json::json!({
            "lines": t.lines, "events": t.events, "rejected": t.rejected,
            "skipped": t.skipped, "skipped_by_reason": skipped,
            "malformed": t.malformed, "malformed_by_reason": malformed,
            "bytes": bytes, "seconds": secs, "lines_per_sec": rate.round(),
            "detections": found,
        });
        writeln!(out, "{v}")?;
        return Ok(());
    }
    writeln!(out, "lines      {:>12}", t.lines)?;
    writeln!(out, "events     {:>12}  (token checks)", t.events)?;
    writeln!(out, "rejected   {:>12}", t.rejected)?;
    writeln!(out, "skipped    {:>12}", t.skipped)?;
    for (reason, n) in &t.skipped_by {
        writeln!(out, "  {reason:<18}{n:>8}")?;
    }
    writeln!(out, "malformed  {:>12}", t.malformed)?;
    for (reason, n) in &t.malformed_by {
        writeln!(out, "  {reason:<18}{n:>8}")?;
    }
    let total: u64 = found.values().sum();
    writeln!(out, "detections {total:>12}")?;
    for (d, n) in found {
        writeln!(out, "  {d:<18}{n:>8}")?;
    }
    writeln!(
        out,
        "elapsed    {secs:>12.3} s   {:.0} lines/s   {:.1} MB/s",
        rate,
        bytes as f64 / secs.max(1e-9) / 1e6
    )?;
    Ok(())
}
