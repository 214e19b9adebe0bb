//! The Kafka side of `bench/kafka.sh`: creates topics, tells when an edge has delivered
//! every line or a worker's groups have caught up, measures the bytes on the wire, and
//! times line → detection through the broker. The script starts and stops the processes;
//! this helper only talks to the broker and to their `/metrics`.
//!
//! ```text
//! kafka_bench topics BOOTSTRAP PARTITIONS
//! kafka_bench edge-done EDGE_ADDR LINES T0_NS TIMEOUT_S
//! kafka_bench wire BOOTSTRAP BY_TOKEN_RECORDS BY_IP_RECORDS
//! kafka_bench caught-up BOOTSTRAP GROUP_PREFIX T0_NS TIMEOUT_S BY_TOKEN_RECORDS BY_IP_RECORDS [WORKER_ADDR...]
//! kafka_bench latency LOG DETECTIONS_JSONL BOOTSTRAP EDGE_ADDR TRIALS WARMUP
//! kafka_bench global-latency LOG DETECTIONS_JSONL BOOTSTRAP EDGE_ADDR WORKER_ADDR TRIALS WARMUP
//! ```
//!
//! Times are printed in seconds since `T0_NS` (the script's `date +%s%N` just before the
//! timed step), as `key=value` words on one line.
//!
//! The record counts come from the edge (`tokenwatch_kafka_messages_total{result="delivered"}`),
//! not from the broker's high watermarks: tansu 0.6 answers ListOffsets(latest) with the
//! base offset of the most recently written batch + 1, which is below the log end as soon
//! as a batch holds more than one record. Offsets are contiguous from 0 (idempotent
//! producer, no transactions, no compaction), so a partition's committed offset is the
//! number of its records consumed, and the sum over partitions equals the delivered count
//! exactly when every partition is at its end.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "../benches/support/record.rs"]
mod record;
use record::record_appeared;

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

/// The event topics (the defaults of `[kafka.topics]`) and the detections topic.
const BY_TOKEN: &str = "auth.by_token";
const BY_IP: &str = "auth.by_ip";
const DETECTIONS: &str = "detections";
/// The workers' known-tokens feed.
const KNOWN_TOKENS: &str = "tokens.known";
/// Broker calls (metadata, watermarks, committed offsets) give up after this.
const BROKER_WAIT: Duration = Duration::from_secs(5);
/// A latency trial that has not finished after this counts as missed.
const TRIAL_DEADLINE: Duration = Duration::from_secs(10);
/// How often the detections file is checked during a trial.
const FILE_POLL: Duration = Duration::from_micros(200);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("missing argument {i}; see the usage in the source"))
    };
    match a(0)? {
        "topics" => topics(a(1)?, a(2)?.parse()?),
        "edge-done" => edge_done(a(1)?, a(2)?.parse()?, a(3)?.parse()?, a(4)?.parse()?),
        "wire" => wire(a(1)?, [a(2)?.parse()?, a(3)?.parse()?]),
        "caught-up" => caught_up(
            a(1)?,
            a(2)?,
            a(3)?.parse()?,
            a(4)?.parse()?,
            [a(5)?.parse()?, a(6)?.parse()?],
            args.get(7..).unwrap_or_default(),
        ),
        "latency" => latency(&LatencyArgs {
            log: a(1)?.as_ref(),
            detections: a(2)?.as_ref(),
            bootstrap: a(3)?,
            edge: a(4)?,
            worker: None,
            trials: a(5)?.parse()?,
            warmup: a(6)?.parse()?,
        }),
        "global-latency" => global_latency(&LatencyArgs {
            log: a(1)?.as_ref(),
            detections: a(2)?.as_ref(),
            bootstrap: a(3)?,
            edge: a(4)?,
            worker: Some(a(5)?),
            trials: a(6)?.parse()?,
            warmup: a(7)?.parse()?,
        }),
        other => bail!("unknown command {other:?}"),
    }
}

/// Seconds from `t0_ns` (Unix epoch ns) to now.
fn since(t0_ns: u128) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    now.saturating_sub(t0_ns) as f64 / 1e9
}

// ---------------------------------------------------------------- topics

/// The two event topics with `partitions` each, the one-partition detections topic and
/// the known-tokens feed.
fn topics(bootstrap: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let list = [
        NewTopic::new(BY_TOKEN, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(BY_IP, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(DETECTIONS, 1, TopicReplication::Fixed(1)),
        NewTopic::new(KNOWN_TOKENS, 3, TopicReplication::Fixed(1)).set("cleanup.policy", "compact"),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for r in rt.block_on(admin.create_topics(&list, &AdminOptions::new()))? {
        if let Err((topic, e)) = r {
            bail!("creating {topic}: {e}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- /metrics

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    Some(resp.split_once("\r\n\r\n")?.1.to_string())
}

/// Sum of the samples whose series starts with `name{` and contains every label in `labels`
/// (or is exactly `name` with no labels).
fn sum(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let bare = *series == name;
            let labelled = series
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'));
            (bare && labels.is_empty())
                || (labelled && labels.iter().all(|want| series.contains(want)))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0
}

// ---------------------------------------------------------------- edge

/// Polls the edge's `/metrics` until every line of the file was read and every message
/// the edge made of it was acknowledged by the broker; prints that time and the counts.
fn edge_done(addr: &str, lines: u64, t0_ns: u128, timeout_s: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    loop {
        if let Some(body) = http_get(addr, "/metrics") {
            let read = sum(&body, "tokenwatch_lines_total", &[]);
            let parsed = sum(&body, "tokenwatch_lines_total", &["result=\"parsed\""]);
            let delivered = |t: &str| {
                sum(
                    &body,
                    "tokenwatch_kafka_messages_total",
                    &["result=\"delivered\"", &format!("topic=\"{t}\"")],
                )
            };
            let (by_ip, by_token) = (delivered("by_ip"), delivered("by_token"));
            let pending = sum(&body, "tokenwatch_kafka_pending_batches", &[]);
            let queue = sum(&body, "tokenwatch_kafka_queue_messages", &[]);
            // Every parsed event goes to by_ip; the batches' acks need by_token too.
            if read >= lines as f64 && by_ip >= parsed && pending == 0.0 && queue == 0.0 {
                let failed = sum(
                    &body,
                    "tokenwatch_kafka_messages_total",
                    &["result=\"failed\""],
                );
                let full = sum(
                    &body,
                    "tokenwatch_kafka_messages_total",
                    &["result=\"queue_full\""],
                );
                println!(
                    "done_s={:.3} lines={read} parsed={parsed} by_token={by_token} by_ip={by_ip} failed={failed} queue_full={full}",
                    since(t0_ns)
                );
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the edge did not deliver {lines} lines within {timeout_s} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- wire size

/// A consumer context that keeps librdkafka's last statistics.
#[derive(Default)]
struct StatsCtx(Mutex<Option<Statistics>>);

impl ClientContext for StatsCtx {
    fn stats(&self, s: Statistics) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(s);
        }
    }
}
impl ConsumerContext for StatsCtx {}

fn partitions(c: &BaseConsumer<impl ConsumerContext>, topic: &str) -> Result<i32> {
    let md = c.fetch_metadata(Some(topic), BROKER_WAIT)?;
    let n = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    if n == 0 {
        bail!("topic {topic} has no partitions");
    }
    Ok(i32::try_from(n)?)
}

/// Reads both event topics from the beginning until `want` records of each arrived: per
/// topic the records per partition, the key and value bytes, and the bytes the consumer
/// received from the broker (librdkafka's `rx_bytes`: fetch responses with their
/// record-batch headers, i.e. the records as the broker stores and serves them, plus a
/// little protocol chatter).
fn wire(bootstrap: &str, want: [u64; 2]) -> Result<()> {
    for (topic, want) in [BY_TOKEN, BY_IP].into_iter().zip(want) {
        let c: BaseConsumer<StatsCtx> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "kafka-bench-wire")
            .set("enable.auto.commit", "false")
            .set("statistics.interval.ms", "100")
            // tansu 0.6 sleeps up to half of this in every fetch, data or not.
            .set("fetch.wait.max.ms", "10")
            .create_with_context(StatsCtx::default())?;
        let n = partitions(&c, topic)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..n {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        c.assign(&tpl)?;
        let t0 = Instant::now();
        let (mut got, mut key_bytes, mut value_bytes) = (0u64, 0u64, 0u64);
        let mut ends = vec![0i64; usize::try_from(n)?];
        let deadline = Instant::now() + Duration::from_secs(600);
        while got < want {
            if Instant::now() > deadline {
                bail!("{topic}: read {got} of {want} records");
            }
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    got += 1;
                    key_bytes += m.key().map_or(0, <[u8]>::len) as u64;
                    value_bytes += m.payload().map_or(0, <[u8]>::len) as u64;
                    if let Some(e) = ends.get_mut(usize::try_from(m.partition())?) {
                        *e = (*e).max(m.offset() + 1);
                    }
                }
                Some(Err(e)) => bail!("reading {topic}: {e}"),
                None => {}
            }
        }
        let read_s = t0.elapsed().as_secs_f64();
        // Let one more statistics report in, then take it.
        let until = Instant::now() + Duration::from_millis(400);
        while Instant::now() < until {
            let _ = c.poll(Duration::from_millis(50));
        }
        let rx = c
            .context()
            .0
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|s| s.rx_bytes))
            .unwrap_or(0);
        let per: Vec<String> = ends.iter().map(i64::to_string).collect();
        println!(
            "topic={topic} partitions={n} records={got} per_partition={} key_bytes={key_bytes} value_bytes={value_bytes} rx_bytes={rx} read_s={read_s:.3}",
            per.join(",")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- worker catch-up

/// Polls until both groups (`<prefix>-token` on by_token, `<prefix>-ip` on by_ip) have
/// committed `want` records (summed over partitions). With worker addresses, also the
/// times when the workers' `tokenwatch_kafka_records_total` (applied + duplicate, over all
/// workers) was first above 0 and first reached the total — figures not tied to the
/// snapshot interval, since the worker commits only with a snapshot.
fn caught_up(
    bootstrap: &str,
    prefix: &str,
    t0_ns: u128,
    timeout_s: u64,
    want: [u64; 2],
    workers: &[String],
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let stages = [
        (format!("{prefix}-token"), BY_TOKEN),
        (format!("{prefix}-ip"), BY_IP),
    ];
    let mut probes = Vec::new();
    for ((group, topic), want) in stages.iter().zip(want) {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let n = partitions(&c, topic)?;
        probes.push((c, *topic, n, want));
    }
    let total = (want[0] + want[1]) as f64;
    let (mut first_at, mut applied_at): (Option<f64>, Option<f64>) = (None, None);
    let per_worker = || -> Vec<f64> {
        workers
            .iter()
            .map(|w| {
                http_get(w, "/metrics").map_or(0.0, |b| {
                    sum(
                        &b,
                        "tokenwatch_kafka_records_total",
                        &["result=\"applied\""],
                    ) + sum(
                        &b,
                        "tokenwatch_kafka_records_total",
                        &["result=\"duplicate\""],
                    )
                })
            })
            .collect()
    };
    loop {
        if applied_at.is_none() && !workers.is_empty() {
            let seen: f64 = per_worker().iter().sum();
            if seen > 0.0 && first_at.is_none() {
                first_at = Some(since(t0_ns));
            }
            if seen >= total {
                applied_at = Some(since(t0_ns));
            }
        }
        let committed = probes.iter().all(|(c, topic, n, want)| {
            let mut tpl = TopicPartitionList::new();
            for p in 0..*n {
                tpl.add_partition(topic, p);
            }
            let Ok(done) = c.committed_offsets(tpl, BROKER_WAIT) else {
                return false;
            };
            let at: i64 = (0..*n)
                .map(
                    |p| match done.find_partition(topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => 0,
                    },
                )
                .sum();
            at >= i64::try_from(*want).unwrap_or(i64::MAX)
        });
        if committed {
            let done = since(t0_ns);
            let split: Vec<String> = per_worker().iter().map(|n| n.to_string()).collect();
            println!(
                "committed_s={done:.3} applied_s={:.3} first_s={:.3} records={total} per_worker={}",
                applied_at.unwrap_or(done),
                first_at.unwrap_or(0.0),
                split.join(",")
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("groups {prefix}-* did not catch up within {timeout_s} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- latency

struct LatencyArgs<'a> {
    log: &'a Path,
    detections: &'a Path,
    bootstrap: &'a str,
    edge: &'a str,
    /// The worker (global latency: its global stage must have applied a trial's lead-in).
    worker: Option<&'a str>,
    trials: usize,
    warmup: usize,
}

/// One trial's lines: four uses of a revoked token from one new address, then the fifth,
/// which makes `revoked_reuse` (default: 5 uses in 10 min) fire. Timestamps are "now".
fn trial_line(n: usize) -> String {
    let now = jiff::Timestamp::now().strftime("%d/%b/%Y:%H:%M:%S +0000");
    // 198.18.0.0/15 is for benchmarks (RFC 2544).
    format!(
        "198.18.{}.{} - - [{now}] \"POST /v1/chat/completions HTTP/1.1\" 401 0 \"-\" \"bench/1.0\" \"{}\" \"revoked\"\n",
        (n / 250) % 250,
        n % 250 + 1,
        trial_token(n)
    )
}

fn trial_token(n: usize) -> String {
    format!("ak_klat{n:08}")
}

fn append(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The edge's delivered by_token messages.
fn delivered_by_token(edge: &str) -> Option<f64> {
    let body = http_get(edge, "/metrics")?;
    Some(sum(
        &body,
        "tokenwatch_kafka_messages_total",
        &["result=\"delivered\"", "topic=\"by_token\""],
    ))
}

/// Detection records as they arrive on the topic: (arrival, token).
type Arrivals = mpsc::Receiver<(Instant, String)>;

/// Reads the detections topic from its end in a thread; sends (arrival, token) of each
/// record until `stop`.
fn topic_reader(
    bootstrap: &str,
    stop: Arc<AtomicBool>,
) -> Result<(Arrivals, std::thread::JoinHandle<()>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kafka-bench-latency")
        .set("enable.auto.commit", "false")
        // The reader's own long-poll wait must not add to the figure.
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(DETECTIONS, 0, Offset::End)?;
    c.assign(&tpl)?;
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                let at = Instant::now();
                let v: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
                // Global detections name no token: keyed by their detector.
                let token = match v["token"].as_str() {
                    Some(t) => t.to_string(),
                    None => v["detector"].as_str().unwrap_or_default().to_string(),
                };
                if tx.send((at, token)).is_err() {
                    return;
                }
            }
        }
    });
    Ok((rx, h))
}

/// Nearest-rank percentile in ms; a missed trial ranks above every sample.
fn pct(ok: &[Duration], missed: usize, p: f64) -> String {
    let n = ok.len() + missed;
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
    ok.get(rank - 1)
        .map_or("missed".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
}

fn report(what: &str, mut ok: Vec<Duration>, missed: usize) {
    ok.sort();
    println!(
        "{what} trials={} missed={missed} p50_ms={} p90_ms={} p99_ms={} max_ms={}",
        ok.len() + missed,
        pct(&ok, missed, 0.5),
        pct(&ok, missed, 0.9),
        pct(&ok, missed, 0.99),
        pct(&ok, missed, 1.0)
    );
}

/// `trials` timed trials after `warmup` untimed ones. Before the timed fifth line, the
/// first four must have been delivered by the edge (so the timed write starts from an
/// idle pipeline); the clock starts just before the fifth line's `write`.
fn latency(a: &LatencyArgs<'_>) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let (topic_rx, reader) = topic_reader(a.bootstrap, Arc::clone(&stop))?;
    let opened = Instant::now();
    let mut out = loop {
        // The worker creates the file when it starts.
        match std::fs::File::open(a.detections) {
            Ok(f) => break f,
            Err(e) if opened.elapsed() > Duration::from_secs(60) => {
                return Err(e).with_context(|| format!("opening {}", a.detections.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let (mut file_ok, mut topic_ok) = (Vec::new(), Vec::new());
    let (mut file_missed, mut topic_missed) = (0, 0);
    let mut arrived: HashMap<String, Instant> = HashMap::new();
    let started = Instant::now();
    for n in 0..a.warmup + a.trials {
        let line = trial_line(n);
        let base = delivered_by_token(a.edge).context("scraping the edge")?;
        append(a.log, &line.repeat(4))?;
        let until = Instant::now() + TRIAL_DEADLINE;
        while delivered_by_token(a.edge).unwrap_or(0.0) < base + 4.0 {
            if Instant::now() > until {
                bail!("trial {n}: the edge did not deliver the first four lines");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let token = trial_token(n);
        let mut seen = out.metadata()?.len();
        let t0 = Instant::now();
        append(a.log, &line)?;
        // The file, polled tightly; the topic reader's arrivals meanwhile.
        let mut in_file = None;
        let deadline = t0
            + if n < a.warmup {
                Duration::from_secs(60)
            } else {
                TRIAL_DEADLINE
            };
        while Instant::now() < deadline {
            if record_appeared(&mut out, &mut seen, &token)? {
                in_file = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(FILE_POLL);
        }
        // The topic record usually came first; give it the rest of the deadline.
        let mut on_topic = None;
        loop {
            while let Ok((at, t)) = topic_rx.try_recv() {
                arrived.insert(t, at);
            }
            if let Some(at) = arrived.remove(&token) {
                on_topic = Some(at.saturating_duration_since(t0));
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if n < a.warmup {
            continue;
        }
        match in_file {
            Some(d) => file_ok.push(d),
            None => file_missed += 1,
        }
        match on_topic {
            Some(d) => topic_ok.push(d),
            None => topic_missed += 1,
        }
    }
    stop.store(true, Ordering::Release);
    let _ = reader.join();
    eprintln!(
        "{} trials in {:.1} s",
        a.warmup + a.trials,
        started.elapsed().as_secs_f64()
    );
    report("file", file_ok, file_missed);
    report("topic", topic_ok, topic_missed);
    Ok(())
}

// ---------------------------------------------------------------- global latency

/// Event time of global trial `n` (nginx's format): 2026-03-02T00:00:00Z + `n` × 1000 s +
/// `sec`, so each trial's window (300 s) and cooldown (900 s) are past at the next.
fn global_time(n: usize, sec: usize) -> String {
    let start = jiff::Timestamp::from_second(1_772_409_600).unwrap_or_default();
    let secs = i64::try_from(n * 1000 + sec).unwrap_or(0);
    let t = start
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or(start);
    t.strftime("%d/%b/%Y:%H:%M:%S +0000").to_string()
}

/// One refused check of global trial `n` at second `sec`, from one of 6 addresses.
fn global_line(n: usize, sec: usize, i: usize) -> String {
    format!(
        "198.19.{}.{} - - [{}] \"POST /v1/chat/completions HTTP/1.1\" 401 0 \"-\" \"bench/1.0\" \"ak_glat{n:06}{i}\" \"invalid\"\n",
        n % 250,
        i + 1,
        global_time(n, sec)
    )
}

/// The worker's global stage's applied records.
fn global_applied(worker: &str) -> Option<f64> {
    let body = http_get(worker, "/metrics")?;
    Some(sum(
        &body,
        "tokenwatch_kafka_records_total",
        &["result=\"applied\"", "topic=\"global\""],
    ))
}

/// Whether complete lines appended since `seen` hold a record of `detector`.
fn detector_appeared(out: &mut std::fs::File, seen: &mut u64, detector: &str) -> Result<bool> {
    use std::io::{Seek, SeekFrom};
    let len = out.metadata()?.len();
    if len <= *seen {
        return Ok(false);
    }
    out.seek(SeekFrom::Start(*seen))?;
    let mut new = Vec::new();
    out.take(len - *seen).read_to_end(&mut new)?;
    let Some(end) = new.iter().rposition(|&b| b == b'\n') else {
        return Ok(false);
    };
    *seen += end as u64 + 1;
    let needle = format!("\"detector\":\"{detector}\"");
    Ok(String::from_utf8_lossy(&new[..end]).contains(&needle))
}

/// Line → `rejection_ratio` record through the global stage. Per trial: 180 refused
/// checks over 90 s of event time from 6 addresses (more than half of at least 50 checks
/// fail from the 30th second on), written and applied by the global stage first; then the
/// clock starts before the line at second 90, whose tick finds the condition held for the
/// 60 s `sustain_secs` and fires.
fn global_latency(a: &LatencyArgs<'_>) -> Result<()> {
    let worker = a.worker.context("the worker's address")?;
    let stop = Arc::new(AtomicBool::new(false));
    let (topic_rx, reader) = topic_reader(a.bootstrap, Arc::clone(&stop))?;
    let mut out = std::fs::File::open(a.detections)
        .with_context(|| format!("opening {}", a.detections.display()))?;
    let (mut file_ok, mut topic_ok) = (Vec::new(), Vec::new());
    let (mut file_missed, mut topic_missed) = (0, 0);
    for n in 0..a.warmup + a.trials {
        let base = global_applied(worker).context("scraping the worker")?;
        let lead: String = (0..180).map(|k| global_line(n, k / 2, k % 6)).collect();
        append(a.log, &lead)?;
        let until = Instant::now() + Duration::from_secs(60);
        while global_applied(worker).unwrap_or(0.0) < base + 180.0 {
            if Instant::now() > until {
                bail!("trial {n}: the global stage did not apply the lead-in");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The lead-in's events leave the reorder buffer (up to 1 s): the timed line then
        // meets an idle pipeline.
        std::thread::sleep(Duration::from_millis(1100));
        while topic_rx.try_recv().is_ok() {}
        let mut seen = out.metadata()?.len();
        let t0 = Instant::now();
        append(a.log, &global_line(n, 90, 0))?;
        let deadline = t0 + TRIAL_DEADLINE;
        let mut in_file = None;
        while Instant::now() < deadline {
            if detector_appeared(&mut out, &mut seen, "rejection_ratio")? {
                in_file = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(FILE_POLL);
        }
        let mut on_topic = None;
        while on_topic.is_none() && Instant::now() < deadline {
            while let Ok((at, key)) = topic_rx.try_recv() {
                if key == "rejection_ratio" {
                    on_topic = Some(at.saturating_duration_since(t0));
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if n < a.warmup {
            continue;
        }
        match in_file {
            Some(d) => file_ok.push(d),
            None => file_missed += 1,
        }
        match on_topic {
            Some(d) => topic_ok.push(d),
            None => topic_missed += 1,
        }
    }
    stop.store(true, Ordering::Release);
    let _ = reader.join();
    report("global file", file_ok, file_missed);
    report("global topic", topic_ok, topic_missed);
    Ok(())
}
