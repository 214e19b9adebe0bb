//! Live detection latency (issue 6), measured on the real release binary over loopback:
//!
//! - line written → detection record in `detections.jsonl`, and → the
//!   `tokenwatch_detections_total{detector="revoked_reuse"}` counter risen on `/metrics`,
//!   with `watch = "notify"` and with `watch = "poll"` (250 ms);
//! - line written → webhook received (a `[[hook]]` with `on = ["alert"]`, dry-run mode).
//!
//! A trial uses a new token (so no cooldown interferes) from a new client address (so the
//! per-IP detectors stay quiet), writes four `401 "revoked"` lines, then times the fifth:
//! the default `revoked_reuse` threshold (5 uses in 10 min) makes exactly that line fire.
//! Line timestamps are "now", so nothing is late.
//!
//! Run: `cargo bench --bench latency` (prints a Markdown table). `LATENCY_TRIALS` and
//! `LATENCY_POLL_TRIALS` override the trial counts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "support/record.rs"]
mod record;
use record::record_appeared;

use anyhow::{bail, Context, Result};

/// Trials not counted, so connection set-up and first-use costs do not skew the figures.
const WARMUP: usize = 10;
/// A trial that has not finished after this is counted as missed.
const TRIAL_DEADLINE: Duration = Duration::from_secs(5);
/// How often the detections file's size is checked.
const FILE_POLL: Duration = Duration::from_micros(200);
/// Pause between two `/metrics` scrapes (a scrape itself takes a few hundred µs).
const SCRAPE_PAUSE: Duration = Duration::from_millis(1);
/// The series whose rise marks a detection on `/metrics`.
const DETECTIONS: &str = "tokenwatch_detections_total{";
const DETECTOR_LABEL: &str = "detector=\"revoked_reuse\"";
const REVOKED: &str = "auth_token_rejected_total{reason=\"revoked\",source=\"bench\"}";
const HOOK_KEY_ENV: &str = "TW_BENCH_HOOK_KEY";

fn main() -> Result<()> {
    let bin = binary()?;
    let trials = env_count("LATENCY_TRIALS", 1000)?;
    let poll_trials = env_count("LATENCY_POLL_TRIALS", 200)?;
    println!("binary: {}", bin.display());
    let mut rows = Vec::new();

    let (file, metric) = file_and_metrics(&bin, Watch::Notify, trials)?;
    rows.push(Row::new(
        "notify: line → detections.jsonl",
        file,
        "p99 < 50 ms",
    ));
    rows.push(Row::new(
        "notify: line → /metrics counter",
        metric,
        "p99 < 50 ms",
    ));

    let (file, metric) = file_and_metrics(&bin, Watch::Poll(250), poll_trials)?;
    rows.push(Row::new(
        "poll 250 ms: line → detections.jsonl",
        file,
        "p99 < 270 ms",
    ));
    rows.push(Row::new(
        "poll 250 ms: line → /metrics counter",
        metric,
        "p99 < 270 ms",
    ));

    let hook = hook_latency(&bin, trials)?;
    rows.push(Row::new(
        "notify: line → webhook received",
        hook,
        "p99 < 100 ms",
    ));

    print_table(&rows);
    Ok(())
}

/// The release binary cargo built for this bench (or `TOKENWATCH_BIN`).
fn binary() -> Result<PathBuf> {
    let p = std::env::var_os("TOKENWATCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tokenwatch")));
    if !p.is_file() {
        bail!("{} not found: run `cargo build --release`", p.display());
    }
    Ok(p)
}

fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------- the daemon

/// How the source is watched.
#[derive(Clone, Copy)]
enum Watch {
    Notify,
    /// Poll with this interval in milliseconds.
    Poll(u64),
}

/// A running `tokenwatch run` on a temp dir, killed on drop.
struct Daemon {
    child: Child,
    addr: String,
    log: PathBuf,
    detections: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(bin: &Path, watch: Watch, hook_url: Option<&str>) -> Result<Daemon> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("access.log");
        std::fs::write(&log, b"")?;
        let state = dir.path().join("state");
        let cfg = dir.path().join("tokenwatch.toml");
        std::fs::write(&cfg, config(&state, &log, watch, hook_url))?;
        let addr_file = dir.path().join("addr");
        let child = Command::new(bin)
            .args(["run", "-c"])
            .arg(&cfg)
            .arg("--addr-file")
            .arg(&addr_file)
            .env(HOOK_KEY_ENV, "bench-hook-signing-key")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut d = Daemon {
            child,
            addr: String::new(),
            log,
            detections: state.join("detections.jsonl"),
            _dir: dir,
        };
        d.addr = wait_for("the listen address", Duration::from_secs(30), || {
            std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|s| !s.is_empty())
        })?;
        wait_for("/readyz 200", Duration::from_secs(30), || {
            http_get(&d.addr, "/readyz").filter(|(s, _)| *s == 200)
        })?;
        Ok(d)
    }

    fn append(&self, text: &str) -> Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.log)?;
        f.write_all(text.as_bytes())?;
        Ok(())
    }

    fn metrics(&self) -> Option<String> {
        http_get(&self.addr, "/metrics").map(|(_, body)| body)
    }
}

fn config(state: &Path, log: &Path, watch: Watch, hook_url: Option<&str>) -> String {
    let (mode, poll) = match watch {
        Watch::Notify => ("notify", 250),
        Watch::Poll(ms) => ("poll", ms),
    };
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[state]
dir = "{state}"

[[source]]
name = "bench"
path = "{log}"
format = "nginx"
start_at = "beginning"
watch = "{mode}"
poll_interval_ms = {poll}
"#,
        state = state.display(),
        log = log.display(),
    );
    if let Some(url) = hook_url {
        text += &format!(
            r#"
[response]
mode = "dry-run"

[[hook]]
name = "bench"
type = "webhook"
url = "{url}"
on = ["alert"]
hmac_key = "env:{HOOK_KEY_ENV}"
timeout_ms = 2000
"#
        );
    }
    text
}

// ---------------------------------------------------------------- trials

/// One trial's lines: four uses of a revoked token, then the fifth, which fires.
struct Trial {
    token: String,
    ip: String,
}

impl Trial {
    fn new(n: usize) -> Trial {
        Trial {
            token: format!("ak_lat{n:08}"),
            // 198.18.0.0/15 is for benchmarks (RFC 2544); a new address per trial.
            ip: format!("198.18.{}.{}", (n / 250) % 250, n % 250 + 1),
        }
    }

    fn line(&self) -> String {
        let now = jiff::Timestamp::now().strftime("%d/%b/%Y:%H:%M:%S +0000");
        format!(
            "{} - - [{now}] \"POST /v1/chat/completions HTTP/1.1\" 401 0 \"-\" \"bench/1.0\" \"{}\" \"revoked\"\n",
            self.ip, self.token
        )
    }

    fn first_four(&self) -> String {
        (0..4).map(|_| self.line()).collect()
    }
}

/// Writes the first four lines and lets them be read before the timed one: with inotify, by
/// waiting until they are counted; when polling, by sleeping a random part of the interval
/// so the timed write lands at a uniformly random phase of the poll cycle.
fn prepare(d: &Daemon, trial: &Trial, n: usize, watch: Watch, rng: &mut Rng) -> Result<()> {
    d.append(&trial.first_four())?;
    match watch {
        Watch::Notify => {
            let want = (5 * n + 4) as f64;
            wait_for("the first four lines", TRIAL_DEADLINE, || {
                let body = d.metrics()?;
                (sample(&body, REVOKED)? >= want).then_some(())
            })
        }
        Watch::Poll(ms) => {
            std::thread::sleep(Duration::from_micros(rng.below(ms * 1000)));
            Ok(())
        }
    }
}

/// Sum of `tokenwatch_detections_total{detector="revoked_reuse",...}` (0 before any).
fn detections(body: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(DETECTIONS) && l.contains(DETECTOR_LABEL))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Line → record in the file, and line → counter on `/metrics`, measured concurrently.
fn file_and_metrics(bin: &Path, watch: Watch, trials: usize) -> Result<(Samples, Samples)> {
    let d = Daemon::start(bin, watch, None)?;
    let mut out = std::fs::File::open(&d.detections).context("opening detections.jsonl")?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut file, mut metric) = (Samples::default(), Samples::default());
    let started = Instant::now();
    for n in 0..WARMUP + trials {
        let trial = Trial::new(n);
        prepare(&d, &trial, n, watch, &mut rng)?;
        let base = detections(&d.metrics().context("scraping /metrics")?);
        let mut seen = out.metadata()?.len();
        let line = trial.line();
        let t0 = Instant::now();
        d.append(&line)?;
        let (f, m) = std::thread::scope(|s| {
            let scraper = s.spawn(|| {
                poll_until(t0, SCRAPE_PAUSE, || {
                    d.metrics().is_some_and(|b| detections(&b) > base)
                })
            });
            let f = poll_until(t0, FILE_POLL, || {
                record_appeared(&mut out, &mut seen, &trial.token).unwrap_or(false)
            });
            (f, scraper.join().ok().flatten())
        });
        if f.is_none() {
            let all = std::fs::read_to_string(&d.detections).unwrap_or_default();
            eprintln!(
                "trial {n}: no record seen in time; the file holds it now: {}",
                all.contains(&format!("\"token\":\"{}\"", trial.token))
            );
        }
        if n >= WARMUP {
            file.push(f);
            metric.push(m);
        }
    }
    eprintln!(
        "{} trials in {:.1} s",
        WARMUP + trials,
        started.elapsed().as_secs_f64()
    );
    Ok((file, metric))
}

/// Time from `t0` until `done()` holds, checking every `pause`; `None` past the deadline.
fn poll_until(t0: Instant, pause: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    loop {
        if done() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > TRIAL_DEADLINE {
            return None;
        }
        std::thread::sleep(pause);
    }
}

/// Line → webhook request fully received by a receiver on 127.0.0.1.
fn hook_latency(bin: &Path, trials: usize) -> Result<Samples> {
    let (url, rx) = receiver()?;
    let d = Daemon::start(bin, Watch::Notify, Some(&url))?;
    let mut rng = Rng(1);
    let mut hook = Samples::default();
    let started = Instant::now();
    for n in 0..WARMUP + trials {
        let trial = Trial::new(n);
        prepare(&d, &trial, n, Watch::Notify, &mut rng)?;
        let needle = format!("\"token\":\"{}\"", trial.token);
        let line = trial.line();
        let t0 = Instant::now();
        d.append(&line)?;
        let got = loop {
            let left = TRIAL_DEADLINE.saturating_sub(t0.elapsed());
            match rx.recv_timeout(left) {
                // Other alerts (e.g. rejection_ratio) may arrive too: only ours counts.
                Ok((at, body)) if body.contains(&needle) => break Some(at - t0),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        if n >= WARMUP {
            hook.push(got);
        }
    }
    eprintln!(
        "{} trials in {:.1} s",
        WARMUP + trials,
        started.elapsed().as_secs_f64()
    );
    Ok(hook)
}

/// A tiny HTTP/1.1 server answering 200 to everything; sends (time received, body).
fn receiver() -> Result<(String, mpsc::Receiver<(Instant, String)>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || serve(stream, &tx));
        }
    });
    Ok((url, rx))
}

/// Serves requests on one connection (keep-alive) until the client closes it.
fn serve(stream: TcpStream, tx: &mpsc::Sender<(Instant, String)>) {
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    while let Some(body) = read_request(&mut r) {
        let _ = tx.send((Instant::now(), body));
        if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// One request's body (Content-Length framing, as the webhook sends), `None` at EOF.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        if h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

// ---------------------------------------------------------------- helpers

/// A minimal HTTP/1.1 GET returning (status, body).
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_nodelay(true).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.get(9..12)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The value of one exact series, e.g. `auth_token_check_total{source="gw"}`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Polls `f` every 200 µs until it returns `Some`; an error after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// xorshift64: enough randomness for poll phases, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

// ---------------------------------------------------------------- statistics

/// Latencies of one measurement; `None` is a trial past the deadline.
#[derive(Default)]
struct Samples {
    ok: Vec<Duration>,
    missed: usize,
}

impl Samples {
    fn push(&mut self, d: Option<Duration>) {
        match d {
            Some(d) => self.ok.push(d),
            None => self.missed += 1,
        }
    }
}

/// One table row.
struct Row {
    name: &'static str,
    samples: Samples,
    target: &'static str,
}

impl Row {
    fn new(name: &'static str, mut samples: Samples, target: &'static str) -> Row {
        samples.ok.sort();
        Row {
            name,
            samples,
            target,
        }
    }

    /// Nearest-rank percentile in milliseconds; a missed trial ranks above every sample.
    fn pct(&self, p: f64) -> String {
        let n = self.samples.ok.len() + self.samples.missed;
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        match self.samples.ok.get(rank - 1) {
            Some(d) => format!("{:.2}", d.as_secs_f64() * 1e3),
            None => "missed".into(),
        }
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| measurement | trials | missed | p50 ms | p90 ms | p99 ms | max ms | target |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.samples.ok.len() + r.samples.missed,
            r.samples.missed,
            r.pct(0.50),
            r.pct(0.90),
            r.pct(0.99),
            r.pct(1.0),
            r.target
        );
    }
}
