//! Engine-wide guarantees: replay is deterministic, and a restart from a snapshot keeps
//! what was learned (detections after the restart equal those of an uninterrupted run).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use tokenwatch::config::Config;
use tokenwatch::detect::{Detection, Engine, EngineSettings, VecSink};
use tokenwatch::enrich::geo::BuiltinGeo;
use tokenwatch::enrich::Fingerprinter;
use tokenwatch::gen::{generate, Expect, GenOptions, Label};
use tokenwatch::metrics::Metrics;
use tokenwatch::pipeline::{Pipeline, SourceStage};

fn log() -> Vec<u8> {
    let opts = GenOptions {
        tokens: 300,
        days: 7,
        seed: 11,
        ..GenOptions::default()
    };
    let mut out = Vec::new();
    generate(&opts, &mut out, None).expect("generate");
    out
}

fn engine(cfg: &Config, sink: &VecSink) -> Engine {
    let settings = EngineSettings::from_config(&cfg.detectors, cfg.geo.ipv6_prefix);
    Engine::new(&cfg.detectors, settings, vec!["demo".into()])
        .with_geo(std::sync::Arc::new(BuiltinGeo))
        .with_sink(Box::new(sink.clone()))
}

fn pipeline(cfg: &Config, engine: Engine) -> Pipeline {
    pipeline_with(cfg, Box::new(engine))
}

fn pipeline_with(cfg: &Config, sink: Box<dyn tokenwatch::pipeline::EventSink>) -> Pipeline {
    parser(cfg, Some(sink))
}

fn parser(cfg: &Config, sink: Option<Box<dyn tokenwatch::pipeline::EventSink>>) -> Pipeline {
    let src = cfg.sources.first().expect("default source");
    let stage = SourceStage {
        name: src.name.clone(),
        parser: tokenwatch::parse::build(&src.parser_spec()).expect("parser"),
        token_kind: src.token_kind(),
        metrics: Metrics::new().source(&src.name),
    };
    Pipeline::new(vec![stage], Fingerprinter::new(b"k"), sink)
}

fn replay(cfg: &Config, bytes: &[u8]) -> Vec<Detection> {
    let sink = VecSink::default();
    let mut p = pipeline(cfg, engine(cfg, &sink));
    p.process_lines(0, bytes);
    sink.records()
}

/// The same, with the engine's two stages on two threads (`replay --threads 2`, the
/// daemon); also returns the split engine's snapshot at the end.
fn replay_threaded(cfg: &Config, bytes: &[u8]) -> (Vec<Detection>, Vec<u8>) {
    let sink = VecSink::default();
    let threaded =
        tokenwatch::detect::SplitEngine::spawn(engine(cfg, &sink)).expect("detect thread");
    let mut p = pipeline_with(cfg, Box::new(threaded));
    // Feed in pieces, as a tailer would, to exercise batching across calls.
    let mut start = 0;
    while start < bytes.len() {
        let mut end = (start + (1 << 16)).min(bytes.len());
        while end < bytes.len() && bytes[end - 1] != b'\n' {
            end += 1;
        }
        p.process_lines(0, &bytes[start..end]);
        start = end;
    }
    let snap = p.sink_mut().and_then(|s| s.snapshot()).expect("snapshot");
    drop(p);
    (sink.records(), snap)
}

/// The same through two parser threads feeding the split engine in order (`replay
/// --threads 2`); the totals are the parsers' sum.
fn replay_parallel(cfg: &Config, bytes: &[u8]) -> (Vec<Detection>, tokenwatch::pipeline::Totals) {
    use tokenwatch::pipeline::{parallel::ParallelPipeline, Lines};
    let sink = VecSink::default();
    let engine = tokenwatch::detect::SplitEngine::spawn(engine(cfg, &sink)).expect("detect thread");
    let parsers = (0..2).map(|_| parser(cfg, None)).collect();
    let mut p = ParallelPipeline::spawn(parsers, Box::new(engine)).expect("parsers");
    // Small pieces, so many batches are in flight and finish out of order.
    for piece in bytes
        .split_inclusive(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .chunks(97)
    {
        p.lines(0, &piece.concat(), &[]);
    }
    let (totals, sink_back) = p.finish();
    assert!(sink_back.is_some(), "the sink comes back");
    (sink.records(), totals)
}

fn as_lines(d: &[Detection]) -> Vec<String> {
    d.iter().map(Detection::to_json_line).collect()
}

#[test]
fn replay_is_deterministic_and_restart_keeps_learning() {
    let cfg = Config::embedded_default();
    let log = log();
    let full = replay(&cfg, &log);
    assert!(!full.is_empty(), "the generated attacks must be detected");
    assert_eq!(
        as_lines(&full),
        as_lines(&replay(&cfg, &log)),
        "replay must be deterministic"
    );
    let (parallel, totals) = replay_parallel(&cfg, &log);
    assert_eq!(
        as_lines(&full),
        as_lines(&parallel),
        "two parser threads feeding the split engine must give the same records"
    );
    assert_eq!(
        totals.lines,
        log.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64
    );
    let (threaded, threaded_snap) = replay_threaded(&cfg, &log);
    assert_eq!(
        as_lines(&full),
        as_lines(&threaded),
        "detection on two threads must give the same records"
    );
    let one_thread_snap = {
        let mut p = pipeline(&cfg, engine(&cfg, &VecSink::default()));
        p.process_lines(0, &log);
        p.sink_mut().and_then(|s| s.snapshot()).expect("snapshot")
    };
    assert!(
        threaded_snap == one_thread_snap,
        "the split engine's snapshot must be the one-thread engine's, byte for byte"
    );

    // Stop after day 5 (learning done), snapshot, restore into a fresh engine, go on.
    let day6 = memchr_find(&log, b"[07/Mar/2026:00:").expect("a line on day 6");
    let cut = log[..day6]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let snap = {
        let mut p = pipeline(&cfg, engine(&cfg, &VecSink::default()));
        p.process_lines(0, &log[..cut]);
        p.sink_mut().and_then(|s| s.snapshot()).expect("snapshot")
    };
    assert!(snap.len() > 10_000, "snapshot of {} bytes", snap.len());
    let resumed_sink = VecSink::default();
    let mut resumed = engine(&cfg, &resumed_sink);
    resumed.restore(&snap).expect("restore");
    pipeline(&cfg, resumed).process_lines(0, &log[cut..]);

    // Windows of the per-IP detectors are at most an hour; after that, identical output.
    let settle = tokenwatch::event::EventTime::from_millis(cut_time_ms(&log, cut) + 3_600_000);
    let after = |v: &[Detection]| -> Vec<String> {
        as_lines(
            &v.iter()
                .filter(|d| d.ts >= settle)
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    let expected = after(&full);
    assert!(!expected.is_empty(), "attacks happen on the last day");
    assert_eq!(after(&resumed_sink.records()), expected);
}

/// What one uninterrupted replay of [`log`] saw at each detector's cut point: the snapshot
/// taken there and how many records preceded it, plus every record of the whole run.
struct Interrupted {
    log: Vec<u8>,
    /// Per detector: (cut byte offset, snapshot at the cut, records before the cut, end of
    /// the detector's labelled attack in ms).
    cuts: BTreeMap<String, (usize, Vec<u8>, usize, i64)>,
    records: Vec<Detection>,
}

/// Cuts each labelled attack of [`log`] halfway between its start and the detector's first
/// record (state mid-attack is what a restart must keep), snapshotting one uninterrupted
/// engine at every cut.
fn interrupted() -> &'static Interrupted {
    static ONCE: OnceLock<Interrupted> = OnceLock::new();
    ONCE.get_or_init(|| {
        let opts = GenOptions {
            tokens: 300,
            days: 7,
            seed: 11,
            ..GenOptions::default()
        };
        let (mut log, mut labels) = (Vec::new(), Vec::new());
        generate(&opts, &mut log, Some(&mut labels)).expect("generate");
        let labels = Label::parse_all(std::str::from_utf8(&labels).expect("utf8")).expect("labels");
        let cfg = Config::embedded_default();
        let first_pass = replay(&cfg, &log);
        let mut wanted: Vec<(usize, String, i64)> = Vec::new();
        for name in tokenwatch::config::detectors::names() {
            let Some(l) = labels
                .iter()
                .find(|l| l.detector == name && l.expect == Expect::Detect)
            else {
                continue;
            };
            let Some(fired) = first_pass
                .iter()
                .filter(|d| d.detector == name && d.ts.as_millis() >= l.start_ms)
                .map(|d| d.ts.as_millis())
                .min()
            else {
                continue;
            };
            let cut_ms = l.start_ms + (fired - l.start_ms) / 2;
            wanted.push((first_line_at(&log, cut_ms), name.to_string(), l.end_ms));
        }
        wanted.sort();
        let sink = VecSink::default();
        let mut p = pipeline(&cfg, engine(&cfg, &sink));
        let (mut cuts, mut done) = (BTreeMap::new(), 0);
        for (cut, name, end) in wanted {
            p.process_lines(0, &log[done..cut]);
            done = cut;
            let snap = p.sink_mut().and_then(|s| s.snapshot()).expect("snapshot");
            cuts.insert(name, (cut, snap, sink.records().len(), end));
        }
        p.process_lines(0, &log[done..]);
        drop(p);
        let records = sink.records();
        log.shrink_to_fit();
        Interrupted { log, cuts, records }
    })
}

/// The byte offset of the first line whose time is at or after `ms`.
fn first_line_at(log: &[u8], ms: i64) -> usize {
    let mut at = 0;
    while at < log.len() {
        if cut_time_ms(log, at) >= ms {
            return at;
        }
        at = memchr_find(&log[at..], b"\n").map_or(log.len(), |n| at + n + 1);
    }
    at
}

/// Restores `detector`'s cut snapshot into a fresh engine and replays the rest of the log:
/// the records must be those the uninterrupted engine wrote after the cut. A fresh engine
/// without the snapshot must get that detector's records wrong (else the cut proves nothing).
fn resumes_mid_attack(detector: &str) {
    let run = interrupted();
    let (cut, snap, before, end_ms) = run
        .cuts
        .get(detector)
        .unwrap_or_else(|| panic!("no labelled {detector} attack in the generated log"));
    let cfg = Config::embedded_default();
    let expected = as_lines(&run.records[*before..]);
    assert!(
        run.records[*before..]
            .iter()
            .any(|d| d.detector == detector),
        "{detector} must fire after its cut"
    );

    let sink = VecSink::default();
    let mut resumed = engine(&cfg, &sink);
    resumed.restore(snap).expect("restore");
    let mut p = pipeline(&cfg, resumed);
    p.process_lines(0, &run.log[*cut..]);
    drop(p);
    assert_eq!(
        as_lines(&sink.records()),
        expected,
        "{detector}: resumed != uninterrupted"
    );

    // Without the snapshot, the attack's second half alone: that detector's records differ.
    let fresh_sink = VecSink::default();
    let until = first_line_at(&run.log, end_ms + 3_600_000);
    let mut p = pipeline(&cfg, engine(&cfg, &fresh_sink));
    p.process_lines(0, &run.log[*cut..until.max(*cut)]);
    drop(p);
    let ours = |v: &[Detection]| -> Vec<String> {
        as_lines(
            &v.iter()
                .filter(|d| d.detector == detector)
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    let horizon = tokenwatch::event::EventTime::from_millis(end_ms + 3_600_000);
    let expected_ours: Vec<Detection> = run.records[*before..]
        .iter()
        .filter(|d| d.ts < horizon)
        .cloned()
        .collect();
    assert_ne!(
        ours(&fresh_sink.records()),
        ours(&expected_ours),
        "{detector}: a fresh engine gives the same records, so the cut tests nothing"
    );
}

#[test]
fn restart_mid_attack_rejection_ratio() {
    resumes_mid_attack("rejection_ratio");
}

#[test]
fn restart_mid_attack_brute_force() {
    resumes_mid_attack("brute_force");
}

#[test]
fn restart_mid_attack_token_spray() {
    resumes_mid_attack("token_spray");
}

#[test]
fn restart_mid_attack_distributed_spray() {
    resumes_mid_attack("distributed_spray");
}

#[test]
fn restart_mid_attack_rate_spike() {
    resumes_mid_attack("rate_spike");
}

#[test]
fn restart_mid_attack_impossible_travel() {
    resumes_mid_attack("impossible_travel");
}

#[test]
fn restart_mid_attack_ip_fanout() {
    resumes_mid_attack("ip_fanout");
}

#[test]
fn restart_mid_attack_off_hours() {
    resumes_mid_attack("off_hours");
}

#[test]
fn restart_mid_attack_revoked_reuse() {
    resumes_mid_attack("revoked_reuse");
}

/// The restart tests above cover every registered detector (a new one needs its own).
#[test]
fn restart_tests_cover_the_registry() {
    let src = include_str!("detect_engine.rs");
    for name in tokenwatch::config::detectors::names() {
        assert!(
            src.contains(&format!("fn restart_mid_attack_{name}()")),
            "no restart_mid_attack_{name} test"
        );
    }
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Event time of the first line at `cut` (the nginx `[dd/Mon/yyyy:hh:mm:ss +0000]` field).
fn cut_time_ms(log: &[u8], cut: usize) -> i64 {
    let line = &log[cut..];
    let open = line.iter().position(|&b| b == b'[').expect("[");
    let text = std::str::from_utf8(&line[open + 1..open + 27]).expect("utf8");
    tokenwatch::parse::time::nginx_local(text.as_bytes())
        .expect("nginx time")
        .as_millis()
}

/// Resident set size in bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rss pages");
    pages * 4096
}

/// Memory under a spray of 10 M random invalid tokens from random IPs stays bounded: random
/// tokens get no per-token state and per-IP maps are capped.
/// `cargo test --release --test it spray_memory -- --ignored --nocapture` (alone).
#[test]
#[ignore]
fn spray_memory_is_bounded() {
    use tokenwatch::event::{AuthEvent, EventTime, Outcome, Reason, TokenId};
    use tokenwatch::pipeline::EventSink;
    let n: u64 = std::env::var("SPRAY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let cfg = Config::embedded_default();
    let settings = EngineSettings::from_config(&cfg.detectors, 64);
    let mut eng = Engine::new(&cfg.detectors, settings, vec!["t".into()])
        .with_sink(Box::new(VecSink::default()));
    let t0 = 20_514 * 86_400_000i64;
    let mut x: u64 = 0x1234_5678;
    let before = rss_bytes();
    let mut peak = 0;
    for i in 0..n {
        // xorshift: a different token and IP every event.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let ip = std::net::IpAddr::from([
            (x >> 56) as u8 | 1,
            (x >> 48) as u8,
            (x >> 40) as u8,
            (x >> 32) as u8,
        ]);
        eng.event(AuthEvent {
            alias: None,
            time: EventTime::from_millis(t0 + (i / 100) as i64),
            source: 0,
            token: Some(TokenId::new(format!("sk-{x:016x}"))),
            ip: Some(ip),
            user: None,
            outcome: Outcome::Rejected(Reason::Invalid),
            status: Some(401),
        });
        if i % 1_000_000 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    peak = peak.max(rss_bytes());
    let grown = peak.saturating_sub(before) as f64 / (1 << 20) as f64;
    eprintln!("{n} random invalid tokens from random IPs: RSS grew {grown:.1} MiB (peak)");
    assert_eq!(
        eng.tracked_tokens(),
        0,
        "invalid tokens must not get per-token state"
    );
    assert!(grown < 512.0, "grew {grown} MiB");
}
