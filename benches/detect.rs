//! Engine throughput: `Pipeline::process_lines` over a generated 7-day nginx log (1,000
//! tokens, every attack scenario), metrics only versus all detectors on.
//!
//! One iteration takes 0.3–1 s, so 10 samples need about 20 s per benchmark.
//!
//! Each iteration gets a fresh pipeline (and engine), built outside the timing: feeding the
//! same log twice to one engine would measure late-event handling, not detection.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokenwatch::config::Config;
use tokenwatch::detect::{Engine, EngineSettings, JsonlSink};
use tokenwatch::enrich::geo::BuiltinGeo;
use tokenwatch::enrich::Fingerprinter;
use tokenwatch::gen::{generate, GenOptions};
use tokenwatch::metrics::Metrics;
use tokenwatch::pipeline::{EventSink, Pipeline, SourceStage};

/// The generated log and its line count.
fn log() -> (Vec<u8>, u64) {
    let opts = GenOptions {
        tokens: 1000,
        days: 7,
        ..GenOptions::default()
    };
    let mut out = Vec::new();
    let summary = generate(&opts, &mut out, None).expect("generate");
    (out, summary.lines)
}

/// The engine as `run` builds it (metrics, records serialized as JSON lines), with the
/// built-in geo table instead of an .mmdb, and records written to `io::sink()`.
fn engine(cfg: &Config, metrics: &Metrics) -> Box<dyn EventSink> {
    let settings = EngineSettings::from_config(&cfg.detectors, cfg.geo.ipv6_prefix);
    let names = cfg.sources.iter().map(|s| s.name.clone()).collect();
    let engine = Engine::new(&cfg.detectors, settings, names)
        .with_metrics(metrics.clone())
        .with_geo(Arc::new(BuiltinGeo))
        .with_sink(Box::new(JsonlSink::new(Box::new(std::io::sink()))));
    Box::new(engine)
}

/// A pipeline over the default config's single nginx source, with or without the engine.
fn pipeline(cfg: &Config, detect: bool) -> Pipeline {
    let metrics = Metrics::new();
    let src = cfg.sources.first().expect("default source");
    let stage = SourceStage {
        name: src.name.clone(),
        parser: tokenwatch::parse::build(&src.parser_spec()).expect("parser"),
        token_kind: src.token_kind(),
        metrics: metrics.source(&src.name),
    };
    let sink = detect.then(|| engine(cfg, &metrics));
    Pipeline::new(vec![stage], Fingerprinter::new(b"bench-key"), sink)
}

fn bench(c: &mut Criterion) {
    let cfg = Config::embedded_default();
    let (log, lines) = log();
    eprintln!("generated {lines} lines, {} bytes", log.len());
    let mut g = c.benchmark_group("detect");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(lines));
    for (name, detect) in [("metrics_only", false), ("all_detectors", true)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || pipeline(&cfg, detect),
                |mut p| {
                    p.process_lines(0, black_box(&log));
                    // Returned so the engine's teardown is not timed.
                    p
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
