//! `role = "worker"`: consume the event topics, detect, write detections.
//!
//! Two consumer threads, one per event topic: `by_token` in group `<prefix>-token` runs the
//! per-token detectors (rate_spike, impossible_travel, ip_fanout, off_hours, revoked_reuse),
//! `by_ip` in group `<prefix>-ip` the per-IP ones (brute_force, token_spray,
//! distributed_spray). `rejection_ratio` is global and stays with the edges' counters.
//! Each assigned partition owns one [`Engine`] built with [`Engine::for_config`], so state
//! moves with the partition.
//!
//! # Exactly-once state over at-least-once delivery
//! * Every event carries its id (edge, file, byte offset). Per partition, the highest
//!   offset applied for each `(edge, file)` is kept (the high-water mark); an event at or
//!   below it is a duplicate (an edge re-publishing after its crash, or this partition read
//!   again after a worker crash) and is dropped before the engine sees it.
//! * A partition's snapshot (`state.dir/kafka/<topic>-<partition>.json`: a JSON line with
//!   the next offset and the marks, then the engine's bytes) is written on revoke, at
//!   shutdown and every `[detectors] snapshot_interval_secs`, and only then is that offset
//!   committed. So the committed offset is never past the state on disk: a worker that
//!   takes the partition over restores the snapshot and the group resumes at the committed
//!   offset; whatever lies between (a crash after the write, before the commit) is below
//!   the restored marks and dropped.
//! * The state directory must therefore be shared by the workers that take partitions
//!   over from each other (same host, or a shared volume). A worker that finds no snapshot
//!   starts the partition's learning afresh at the committed offset.
//!
//! # Detections
//! Each record goes to `state.dir/detections.jsonl` (or `[detectors] output`) and, as JSON
//! keyed by its id, to `topics.detections` for the responder. A record re-raised after a
//! crash (events after the last snapshot are applied again) carries the same id.
//!
//! Limits of this first cut: no event-time reorder buffer beyond the engine's own
//! `reorder_tolerance_secs`; no response policy here (every action is `alert`: the
//! responder decides); a source name the worker's config lacks reaches the engine without
//! a name (its detections carry no `source`); detectors that keep no snapshot state
//! (brute_force, token_spray, revoked_reuse) start afresh on a partition that moves, as
//! they do at a restart of `role = "all"`; brute_force, token_spray and distributed_spray
//! judge whether a token is known (was ever accepted) by the tokens accepted within the
//! same `by_ip` partition, where `role = "all"` knows every accepted token, so a token
//! accepted only from addresses of other partitions looks unknown here (a known-tokens
//! feed from the token stage would close this).

use std::collections::HashMap as StdHashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::reorder::Reorder;
use super::wire;
use crate::config::Config;
use crate::detect::{Detection, DetectionSink, Engine, JsonlSink};
use crate::enrich::geo::GeoLookup;
use crate::metrics::{KafkaMetrics, Metrics};
use crate::pipeline::EventSink;

/// Maps on the per-record path hash with foldhash: SipHash showed up at 3 % of a worker's
/// CPU (partition, edge, file and source name lookups for every record).
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

/// Kind of a partition snapshot in its state-file header.
const SNAPSHOT_KIND: &str = "kafka-partition";
/// How often librdkafka reports statistics (the consumer lag gauge), in ms.
pub(super) const STATS_MS: u32 = 5_000;
/// How long one poll waits for a message.
const POLL: Duration = Duration::from_millis(100);
/// How long a detection record waits for room in the producer queue, and the final flush.
const SEND_WAIT: Duration = Duration::from_secs(10);
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

/// One consumer stage: which topic, which group, which detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `topics.by_token`, group `<prefix>-token`: the per-token detectors.
    Token,
    /// `topics.by_ip`, group `<prefix>-ip`: the per-IP detectors.
    Ip,
}

impl Stage {
    /// The metric label (the same as the edge's).
    pub fn label(self) -> &'static str {
        match self {
            Stage::Token => "by_token",
            Stage::Ip => "by_ip",
        }
    }

    /// The suffix of the consumer group.
    fn group(self) -> &'static str {
        match self {
            Stage::Token => "token",
            Stage::Ip => "ip",
        }
    }

    fn topic(self, cfg: &Config) -> String {
        match self {
            Stage::Token => cfg.kafka.topics.by_token.clone(),
            Stage::Ip => cfg.kafka.topics.by_ip.clone(),
        }
    }

    /// `cfg` with only this stage's detectors enabled, as the registry places them (each
    /// event reaches both stages, so a detector enabled in both would fire twice). No
    /// stage owns all traffic yet: of the global detectors, `distributed_spray` runs per
    /// `auth.by_ip` partition and `rejection_ratio` stays with the edges' counters
    /// (README "Kafka").
    pub fn config(self, cfg: &Config) -> Config {
        use crate::config::detectors::Stage as DetectorStage;
        let mut c = cfg.clone();
        c.detectors.keep_stages(|d| match d.stage {
            DetectorStage::Token => self == Stage::Token,
            DetectorStage::Ip => self == Stage::Ip,
            DetectorStage::Global => self == Stage::Ip && d.name == "distributed_spray",
        });
        c
    }
}

/// Where every partition's engine writes: one detection file (lines never interleave)
/// and the detections topic.
#[derive(Clone)]
struct SharedSink {
    file: Arc<Mutex<JsonlSink>>,
    topic: Arc<DetectionsOut>,
}

impl SharedSink {
    fn file(&self) -> MutexGuard<'_, JsonlSink> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DetectionSink for SharedSink {
    fn emit(&mut self, d: &Detection) -> std::io::Result<()> {
        self.topic.send(d);
        // Detections are rare: each is in the file at once, not at the next flush.
        let mut file = self.file();
        file.emit(d)?;
        file.flush()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file().flush()
    }
}

/// Logs detection records the broker did not take (they stay in the JSONL file).
struct DetectionsCtx;

impl ClientContext for DetectionsCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        super::librdkafka_log(level, fac, msg);
    }
}

impl ProducerContext for DetectionsCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            tracing::error!(%e, "worker: a detection record was not delivered to the detections topic");
        }
    }
}

/// The producer of `topics.detections`: each record as JSON (DESIGN §7), keyed by its id,
/// so the responder dedupes re-raised records by key.
struct DetectionsOut {
    producer: ThreadedProducer<DetectionsCtx>,
    topic: String,
}

impl DetectionsOut {
    fn new(cfg: &Config) -> Result<DetectionsOut, KafkaError> {
        let mut c = rdkafka::ClientConfig::new();
        c.set("enable.idempotence", "true").set("linger.ms", "5");
        super::base_client(&mut c, &cfg.kafka);
        Ok(DetectionsOut {
            producer: c.create_with_context(DetectionsCtx)?,
            topic: cfg.kafka.topics.detections.clone(),
        })
    }

    /// Queues `d`; a full queue is waited on for up to [`SEND_WAIT`].
    fn send(&self, d: &Detection) {
        let json = d.to_json_line();
        let deadline = Instant::now() + SEND_WAIT;
        let mut rec = BaseRecord::to(&self.topic).key(&d.id).payload(&json);
        loop {
            match self.producer.send(rec) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    tracing::error!(%e, id = %d.id, "worker: cannot queue a detection record for the detections topic");
                    return;
                }
            }
        }
    }

    /// Waits for outstanding deliveries (at shutdown).
    fn flush(&self) {
        if let Err(e) = self.producer.flush(SEND_WAIT) {
            tracing::warn!(%e, "worker: detection records still undelivered at shutdown");
        }
    }
}

/// The running worker: its consumer threads.
pub struct Worker {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    detections: Arc<DetectionsOut>,
}

impl Worker {
    /// Stops consuming: each thread snapshots its partitions, commits, and leaves the group.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a worker consumer thread panicked");
            }
        }
        self.detections.flush();
    }
}

/// Starts the worker's consumer threads for `cfg` (role worker); `geo` feeds
/// impossible_travel and the country features as in `role = "all"`.
pub fn spawn(
    cfg: &Config,
    metrics: &Metrics,
    geo: Option<Arc<dyn GeoLookup>>,
) -> Result<Worker, WorkerError> {
    let km = KafkaMetrics::register(metrics)?;
    for stage in [Stage::Token, Stage::Ip] {
        km.consume(stage.label());
    }
    let out = cfg
        .detectors
        .output
        .clone()
        .unwrap_or_else(|| cfg.state.dir.join("detections.jsonl"));
    let detections = Arc::new(DetectionsOut::new(cfg)?);
    let sink = SharedSink {
        file: Arc::new(Mutex::new(JsonlSink::append(&out)?)),
        topic: Arc::clone(&detections),
    };
    let dir = cfg.state.dir.join("kafka");
    std::fs::create_dir_all(&dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for stage in [Stage::Token, Stage::Ip] {
        let shared = Shared {
            stage,
            topic: stage.topic(cfg),
            cfg: stage.config(cfg),
            metrics: metrics.clone(),
            km: km.clone(),
            geo: geo.clone(),
            sink: sink.clone(),
            dir: dir.clone(),
            hold: Duration::from_millis(cfg.kafka.reorder_ms),
        };
        match start_stage(cfg, shared, Arc::clone(&stop)) {
            Ok(t) => threads.push(t),
            Err(e) => {
                // The stage already running must not outlive the failed start.
                Worker {
                    stop,
                    threads,
                    detections,
                }
                .stop();
                return Err(e);
            }
        }
    }
    tracing::info!(
        brokers = %cfg.kafka.brokers.join(","),
        groups = %format!("{}, {}", cfg.kafka.group_id("token"), cfg.kafka.group_id("ip")),
        "worker: consuming events from Kafka"
    );
    Ok(Worker {
        stop,
        threads,
        detections,
    })
}

/// Starts one stage's consumer thread.
fn start_stage(
    cfg: &Config,
    shared: Shared,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, WorkerError> {
    let name = format!("worker-{}", shared.stage.group());
    let consumer = consumer(cfg, shared)?;
    let every = Duration::from_secs(cfg.detectors.snapshot_interval_secs.max(1));
    let names = NameTable::new(cfg);
    Ok(std::thread::Builder::new()
        .name(name)
        .spawn(move || run(consumer, names, every, &stop))?)
}

/// Builds and subscribes one stage's consumer.
fn consumer(cfg: &Config, shared: Shared) -> Result<BaseConsumer<Ctx>, WorkerError> {
    let stage = shared.stage;
    let mut c = rdkafka::ClientConfig::new();
    c.set("group.id", cfg.kafka.group_id(stage.group()))
        // Offsets are committed only with a snapshot (see the module docs).
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", STATS_MS.to_string());
    super::base_client(&mut c, &cfg.kafka);
    let topic = shared.topic.clone();
    let ctx = Ctx {
        shared,
        parts: Mutex::new(HashMap::default()),
        parked: Mutex::new(HashMap::default()),
    };
    let consumer: BaseConsumer<Ctx> = c.create_with_context(ctx)?;
    consumer.subscribe(&[&topic])?;
    Ok(consumer)
}

/// Source names → this worker's source indices (the edge's own indices are not ours).
struct NameTable {
    names: HashMap<Box<str>, u16>,
    next: u16,
}

impl NameTable {
    fn new(cfg: &Config) -> NameTable {
        let names: HashMap<Box<str>, u16> = cfg
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str().into(), u16::try_from(i).unwrap_or(u16::MAX)))
            .collect();
        let next = u16::try_from(cfg.sources.len()).unwrap_or(u16::MAX);
        NameTable { names, next }
    }

    /// The index of `name`; a name the config lacks gets the next free index (the engine
    /// knows no name for it).
    fn index(&mut self, name: &str) -> u16 {
        if let Some(i) = self.names.get(name) {
            return *i;
        }
        let i = self.next;
        self.next = self.next.saturating_add(1);
        self.names.insert(name.into(), i);
        i
    }
}

/// What every partition of a stage shares.
struct Shared {
    stage: Stage,
    topic: String,
    cfg: Config,
    metrics: Metrics,
    km: KafkaMetrics,
    geo: Option<Arc<dyn GeoLookup>>,
    sink: SharedSink,
    dir: PathBuf,
    /// `[kafka] reorder_ms`.
    hold: Duration,
}

impl Shared {
    fn path(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("{}-{partition}.json", self.topic))
    }

    /// An engine with `1/share` of the `[detectors] max_state_bytes` budget.
    fn engine(&self, share: usize) -> Engine {
        let mut cfg = self.cfg.clone();
        let share = u64::try_from(share.max(1)).unwrap_or(u64::MAX);
        cfg.detectors.max_state_bytes /= share;
        let mut e = Engine::for_config(&cfg, &self.metrics).with_sink(Box::new(self.sink.clone()));
        if let Some(g) = &self.geo {
            e = e.with_geo(Arc::clone(g));
        }
        e
    }

    /// The partition's state: its snapshot when there is a good one, else empty. `owned`
    /// is how many partitions of this topic the worker owns with it: the state budget is
    /// split over them and over the two stages.
    fn open(&self, partition: i32, owned: usize) -> Partition {
        // Whatever is restored (or nothing) is what the disk holds: current as of now, so
        // the snapshot-age alert also covers a partition whose writes never succeed.
        self.km
            .snapshot_at(self.stage.label(), partition, unix_now());
        let share = owned.max(1).saturating_mul(2);
        let mut p = Partition::new(self.engine(share), self.hold);
        let path = self.path(partition);
        let body = match crate::durable::read_state(&path, SNAPSHOT_KIND, |_| false) {
            crate::durable::Loaded::Found(b) => b,
            _ => return p,
        };
        match p.restore(&body) {
            Ok(()) => tracing::info!(
                topic = %self.topic,
                partition,
                next_offset = ?p.next_offset,
                "worker: partition state restored"
            ),
            Err(e) => {
                crate::durable::set_aside(&path, &e);
                p = Partition::new(self.engine(share), self.hold);
            }
        }
        p
    }
}

/// The first line of a partition snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
struct Head {
    /// The offset to consume next (what is committed with this snapshot).
    next_offset: Option<i64>,
    /// `(edge, file, highest applied byte offset, event time of its last event in ms)`.
    marks: Vec<(String, u64, u64, i64)>,
    /// Events admitted (below the marks) but still in the reorder buffer, as hex wire
    /// records in release order.
    #[serde(default)]
    held: Vec<String>,
}

/// A file's high-water mark.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// Highest byte offset applied.
    offset: u64,
    /// Event time (ms) of the newest event seen from the file.
    seen: i64,
}

/// Marks of files with no event for this long (event time, against the partition's newest)
/// are pruned at the next snapshot: rotated files never come back.
const MARK_TTL_MS: i64 = 24 * 3600 * 1000;

/// One owned partition: its engine, its high-water marks and where it is.
struct Partition {
    engine: Engine,
    /// edge → file → mark.
    marks: HashMap<Box<str>, HashMap<u64, Mark>>,
    next_offset: Option<i64>,
    /// Given back after a rebalance from memory: the offset the group must resume at for
    /// the kept state to be current (checked at the first record).
    verify: Option<i64>,
    /// Admitted events not yet released to the engine (saved in the snapshot with the
    /// marks that admitted them).
    held: Reorder<wire::WireEvent>,
}

impl Partition {
    /// An empty partition around `engine`, holding events for `hold`.
    fn new(engine: Engine, hold: Duration) -> Partition {
        Partition {
            engine,
            marks: HashMap::default(),
            next_offset: None,
            verify: None,
            held: Reorder::new(hold, HELD_CAP),
        }
    }

    /// Hands the engine every held event that is due, in event-time order.
    fn release(&mut self, names: &mut NameTable, now: Instant) {
        while let Some(mut w) = self.held.pop_ready(now) {
            w.event.source = names.index(&w.source_name);
            self.engine.event(w.event);
        }
    }

    /// True (and the mark raised) when the event is new; false for a duplicate.
    fn admit(&mut self, id: &wire::EventId, time_ms: i64) -> bool {
        let files = match self.marks.get_mut(&*id.edge) {
            Some(f) => f,
            None => self.marks.entry(id.edge.clone()).or_default(),
        };
        match files.get_mut(&id.file) {
            Some(m) if id.offset <= m.offset => false,
            Some(m) => {
                m.offset = id.offset;
                m.seen = m.seen.max(time_ms);
                true
            }
            None => {
                let m = Mark {
                    offset: id.offset,
                    seen: time_ms,
                };
                files.insert(id.file, m);
                true
            }
        }
    }

    /// Drops the marks of files silent for [`MARK_TTL_MS`].
    fn prune_marks(&mut self) {
        let newest = self
            .marks
            .values()
            .flat_map(|f| f.values().map(|m| m.seen))
            .max()
            .unwrap_or(i64::MIN);
        let cutoff = newest.saturating_sub(MARK_TTL_MS);
        for files in self.marks.values_mut() {
            files.retain(|_, m| m.seen >= cutoff);
        }
        self.marks.retain(|_, f| !f.is_empty());
    }

    fn snapshot(&self) -> Vec<u8> {
        let head = Head {
            next_offset: self.next_offset,
            marks: self
                .marks
                .iter()
                .flat_map(|(e, f)| {
                    f.iter()
                        .map(|(file, m)| (e.to_string(), *file, m.offset, m.seen))
                })
                .collect(),
            held: self
                .held
                .items()
                .into_iter()
                .map(|w| {
                    let mut b = Vec::new();
                    wire::encode(&w.event, &w.source_name, w.id.id_ref(), &mut b);
                    hex::encode(b)
                })
                .collect(),
        };
        let mut out = serde_json::to_vec(&head).unwrap_or_default();
        out.push(b'\n');
        out
    }

    fn restore(&mut self, body: &[u8]) -> Result<(), String> {
        let nl = memchr::memchr(b'\n', body).ok_or("no head line")?;
        let (head, rest) = body.split_at(nl);
        let head: Head = serde_json::from_slice(head).map_err(|e| e.to_string())?;
        self.engine.restore(rest.get(1..).unwrap_or_default())?;
        self.next_offset = head.next_offset;
        for (edge, file, offset, seen) in head.marks {
            self.marks
                .entry(edge.into_boxed_str())
                .or_default()
                .insert(file, Mark { offset, seen });
        }
        let now = Instant::now();
        for h in head.held {
            let bytes = hex::decode(&h).map_err(|e| format!("held event: {e}"))?;
            let w = wire::decode(&bytes).map_err(|e| format!("held event: {e}"))?;
            self.held.push(w.event.time.as_millis(), w, now);
        }
        Ok(())
    }
}

/// The consumer's context: the owned partitions, saved on revoke, opened on assign.
struct Ctx {
    shared: Shared,
    parts: Mutex<HashMap<i32, Partition>>,
    /// Partitions revoked by the rebalance in progress, kept in memory: an eager
    /// rebalance revokes every partition and gives most of them back, and state the
    /// snapshot does not hold (brute_force, token_spray and revoked_reuse windows) should
    /// not be lost each time a worker joins or leaves. Dropped at the assignment unless
    /// given back.
    parked: Mutex<HashMap<i32, Partition>>,
}

impl Ctx {
    fn parts(&self) -> MutexGuard<'_, HashMap<i32, Partition>> {
        lock(&self.parts)
    }

    /// Writes the snapshot of each partition in `which` (all when `None`) and commits the
    /// offsets they cover; failures are logged, never fatal.
    fn save(&self, c: &BaseConsumer<Ctx>, parts: &mut HashMap<i32, Partition>, which: &[i32]) {
        let mut tpl = TopicPartitionList::new();
        for (&n, p) in parts.iter_mut().filter(|(n, _)| which.contains(n)) {
            p.engine.flush();
            p.prune_marks();
            let head = p.snapshot();
            let engine = p.engine.snapshot();
            let path = self.shared.path(n);
            let r = crate::durable::write_state_parts(&path, SNAPSHOT_KIND, &[&head, &engine]);
            if let Err(e) = r {
                tracing::error!(%e, path = %path.display(), "worker: writing a partition snapshot");
                continue;
            }
            self.shared
                .km
                .snapshot_at(self.shared.stage.label(), n, unix_now());
            if let Some(o) = p.next_offset {
                let _ = tpl.add_partition_offset(&self.shared.topic, n, Offset::Offset(o));
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = c.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(%e, topic = %self.shared.topic, "worker: committing offsets (the snapshots cover them; duplicates are dropped)");
            }
        }
    }

    fn owned_gauge(&self, n: usize) {
        self.shared.km.set_owned(self.shared.stage.label(), n);
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        super::librdkafka_log(level, fac, msg);
    }

    /// librdkafka's statistics (every [`STATS_MS`]): the consumer lag of owned partitions
    /// and the topic's partition count.
    fn stats(&self, s: Statistics) {
        // Delivered by `poll` on the consumer thread, never while it holds the partitions.
        let owned: Vec<i32> = self.parts().keys().copied().collect();
        let topic = s.topics.get(&self.shared.topic);
        apply_stats(&self.shared.km, self.shared.stage.label(), topic, &owned);
    }
}

/// Messages behind in one partition, -1 when unknown. librdkafka's `consumer_lag` counts
/// from the *committed* offset, which this worker advances only with a snapshot (every
/// `snapshot_interval_secs`), so it would read a healthy worker as up to one interval
/// behind; `consumer_lag_stored` counts from the position (the offset after the last
/// message handed to us). Before the first message since the assignment the position is
/// the committed offset, and only `consumer_lag` is known.
fn lag_of(p: &rdkafka::statistics::Partition) -> i64 {
    if p.consumer_lag_stored >= 0 {
        p.consumer_lag_stored
    } else {
        p.consumer_lag
    }
}

/// Sets the lag gauges of `label` from one statistics report of its topic (`None`: not
/// in the report yet): only partitions in `owned` get a series, so a report older than a
/// revoke cannot bring a revoked partition's series back; a partition whose lag librdkafka
/// does not know yet (-1) keeps its last value and adds nothing to the topic's sum.
pub(super) fn apply_stats(
    km: &KafkaMetrics,
    label: &str,
    topic: Option<&rdkafka::statistics::Topic>,
    owned: &[i32],
) {
    let Some(t) = topic else {
        km.lag.with_label_values(&[label]).set(0);
        return;
    };
    let mut sum = 0i64;
    for &n in owned {
        if let Some(p) = t.partitions.get(&n) {
            let lag = lag_of(p);
            km.set_partition_lag(label, n, lag);
            sum = sum.saturating_add(lag.max(0));
        }
    }
    km.lag.with_label_values(&[label]).set(sum);
    // -1 is librdkafka's internal "unassigned" partition; `unknown` ones are desired but
    // not in the broker's metadata. A worker that owns nothing of the topic yet may not
    // have its metadata at all: then it says nothing rather than 0.
    let known = t
        .partitions
        .iter()
        .filter(|(&n, p)| n >= 0 && !p.unknown)
        .count();
    if known > 0 {
        km.topic_partitions
            .with_label_values(&[label])
            .set(i64::try_from(known).unwrap_or(i64::MAX));
    }
}

/// Unix time in seconds (for the snapshot timestamps).
fn unix_now() -> i64 {
    crate::event::EventTime::now().as_millis() / 1000
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            let which: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            let mut parts = self.parts();
            self.save(c, &mut parts, &which);
            let mut parked = lock(&self.parked);
            for &n in &which {
                // Only a partition that knows where it stopped can be checked on return.
                if let Some(p) = parts.remove(&n).filter(|p| p.next_offset.is_some()) {
                    parked.insert(n, p);
                }
                self.shared.km.revoked(self.shared.stage.label(), n);
            }
            self.owned_gauge(parts.len());
            tracing::info!(topic = %self.shared.topic, partitions = ?which, "worker: partitions revoked (state saved)");
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            let mut parts = self.parts();
            let mut which = Vec::new();
            // With the cooperative protocol `tpl` holds only the added partitions.
            let owned = parts.len() + tpl.count();
            let mut parked = lock(&self.parked);
            for e in tpl.elements() {
                let n = e.partition();
                which.push(n);
                parts.entry(n).or_insert_with(|| match parked.remove(&n) {
                    Some(mut p) => {
                        // Trusted only if nobody consumed it meanwhile (see `run`).
                        p.verify = p.next_offset;
                        self.shared
                            .km
                            .snapshot_at(self.shared.stage.label(), n, unix_now());
                        p
                    }
                    None => self.shared.open(n, owned),
                });
            }
            // Partitions that went to other workers: their state is in the snapshots.
            parked.clear();
            self.owned_gauge(parts.len());
            tracing::info!(topic = %self.shared.topic, partitions = ?which, "worker: partitions assigned");
        }
    }
}

/// The consumer loop of one stage, until `stop`.
fn run(consumer: BaseConsumer<Ctx>, mut names: NameTable, every: Duration, stop: &AtomicBool) {
    let ctx = consumer.context();
    let label = ctx.shared.stage.label();
    let records = ctx.shared.km.records(label);
    let (applied, duplicate, undecodable) =
        (records.applied, records.duplicate, records.undecodable);
    let mut last_save = Instant::now();
    let mut last_flush = Instant::now();
    let mut last_release = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let polled = consumer.poll(POLL);
        // One clock read per record: reading it for every step was 16 % of a worker's CPU.
        let now = Instant::now();
        match polled {
            Some(Ok(msg)) => {
                let n = msg.partition();
                let next = msg.offset().saturating_add(1);
                let decoded = wire::decode(msg.payload().unwrap_or_default());
                let mut parts = ctx.parts();
                if !parts.contains_key(&n) {
                    // A message before its assignment callback (not expected): state anyway.
                    ctx.owned_gauge(parts.len() + 1);
                }
                let owned = parts.len() + 1;
                let p = parts.entry(n).or_insert_with(|| ctx.shared.open(n, owned));
                if let Some(v) = p.verify.take() {
                    if msg.offset() != v {
                        // Another worker consumed the partition while it was away from us:
                        // its snapshot is newer than what we kept.
                        tracing::info!(topic = %ctx.shared.topic, partition = n, "worker: partition moved on while away; restoring its snapshot");
                        *p = ctx.shared.open(n, owned);
                    }
                }
                p.next_offset = Some(next);
                match decoded {
                    Err(e) => {
                        undecodable.inc();
                        tracing::debug!(%e, partition = n, "worker: skipping an undecodable record");
                    }
                    Ok(w) if !p.admit(&w.id, w.event.time.as_millis()) => duplicate.inc(),
                    Ok(w) => {
                        p.held.push(w.event.time.as_millis(), w, now);
                        applied.inc();
                        p.release(&mut names, now);
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(%e, topic = %ctx.shared.topic, "worker: consumer error"),
            None => {}
        }
        // Other partitions' held events come due without records of their own.
        if now.saturating_duration_since(last_release) >= RELEASE_EVERY {
            last_release = now;
            for p in ctx.parts().values_mut() {
                p.release(&mut names, now);
            }
        }
        if now.saturating_duration_since(last_flush) >= FLUSH_EVERY {
            last_flush = now;
            for p in ctx.parts().values_mut() {
                p.engine.flush();
            }
        }
        if now.saturating_duration_since(last_save) >= every {
            last_save = now;
            save_all(&consumer);
        }
    }
    save_all(&consumer);
    consumer.unsubscribe();
}

/// Locks `m`, also after a panic elsewhere (the maps stay usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Snapshots and commits every owned partition.
fn save_all(consumer: &BaseConsumer<Ctx>) {
    let ctx = consumer.context();
    let mut parts = ctx.parts();
    let which: Vec<i32> = parts.keys().copied().collect();
    ctx.save(consumer, &mut parts, &which);
}

/// Where a partition's snapshot lives (for tests and tools).
pub fn snapshot_path(state_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    state_dir
        .join("kafka")
        .join(format!("{topic}-{partition}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(edge: &str, file: u64, offset: u64) -> wire::EventId {
        wire::EventId {
            edge: edge.into(),
            file,
            offset,
        }
    }

    fn partition() -> Partition {
        let engine = Engine::for_config(&Config::default(), &Metrics::new());
        Partition::new(engine, Duration::from_secs(3600))
    }

    fn wire_event(edge: &str, offset: u64, secs: i64) -> wire::WireEvent {
        use crate::event::{AuthEvent, EventTime, Outcome, TokenId};
        let event = AuthEvent {
            alias: None,
            time: EventTime::from_secs(1_772_409_600 + secs),
            source: 0,
            token: Some(TokenId::new("tok_a")),
            ip: "192.0.2.7".parse().ok(),
            user: None,
            outcome: Outcome::Accepted,
            status: Some(200),
        };
        wire::WireEvent {
            event,
            source_name: "api".into(),
            id: id(edge, 1, offset),
        }
    }

    #[test]
    fn held_events_are_saved_with_the_marks_and_released_in_time_order_after_restore() {
        let mut p = partition();
        for (edge, off, secs) in [("a", 10, 20), ("b", 5, 10), ("a", 11, 30)] {
            let w = wire_event(edge, off, secs);
            assert!(p.admit(&w.id, w.event.time.as_millis()));
            p.held.push(w.event.time.as_millis(), w, Instant::now());
        }
        let mut body = p.snapshot();
        body.extend_from_slice(&p.engine.snapshot());
        let mut q = Partition::new(
            Engine::for_config(&Config::default(), &Metrics::new()),
            Duration::ZERO,
        );
        q.restore(&body).unwrap();
        // Admitted before the snapshot: duplicates now, and still to be applied.
        assert!(!q.admit(&id("a", 1, 11), 0));
        let order: Vec<u64> = std::iter::from_fn(|| q.held.pop_ready(Instant::now()))
            .map(|w| w.id.offset)
            .collect();
        assert_eq!(order, [5, 10, 11]);
        // A damaged held record is an error, never a panic.
        let bad = b"{\"next_offset\":1,\"marks\":[],\"held\":[\"zz\"]}\n{}";
        assert!(partition().restore(bad).is_err());
    }

    impl Partition {
        fn admit_at(&mut self, id: &wire::EventId) -> bool {
            self.admit(id, 0)
        }
    }

    #[test]
    fn marks_of_files_silent_for_a_day_are_pruned() {
        let mut p = partition();
        assert!(p.admit(&id("a", 1, 10), 0));
        assert!(p.admit(&id("a", 2, 10), MARK_TTL_MS / 2));
        assert!(p.admit(&id("b", 3, 10), MARK_TTL_MS + 1));
        p.prune_marks();
        // File 1 fell silent more than a day before the newest event: its mark is gone.
        assert!(p.admit(&id("a", 1, 10), MARK_TTL_MS + 2));
        assert!(!p.admit(&id("a", 2, 10), MARK_TTL_MS + 2));
        assert!(!p.admit(&id("b", 3, 10), MARK_TTL_MS + 2));
    }

    #[test]
    fn events_at_or_below_the_mark_of_their_edge_and_file_are_duplicates() {
        let mut p = partition();
        assert!(p.admit_at(&id("a", 1, 10)));
        assert!(!p.admit_at(&id("a", 1, 10)));
        assert!(!p.admit_at(&id("a", 1, 5)));
        assert!(p.admit_at(&id("a", 1, 11)));
        // Other files and other edges have their own marks.
        assert!(p.admit_at(&id("a", 2, 0)));
        assert!(p.admit_at(&id("b", 1, 3)));
        assert!(!p.admit_at(&id("b", 1, 3)));
    }

    #[test]
    fn a_snapshot_restores_marks_and_offset() {
        let mut p = partition();
        p.admit_at(&id("a", 1, 10));
        p.admit_at(&id("b", 7, 99));
        p.next_offset = Some(42);
        let mut body = p.snapshot();
        body.extend_from_slice(&p.engine.snapshot());
        let mut q = partition();
        q.restore(&body).unwrap();
        assert_eq!(q.next_offset, Some(42));
        assert!(!q.admit_at(&id("a", 1, 10)));
        assert!(!q.admit_at(&id("b", 7, 50)));
        assert!(q.admit_at(&id("b", 7, 100)));
        // Damage is an error, never a panic.
        assert!(partition().restore(b"{\"next_offset\":1").is_err());
        assert!(partition().restore(b"{}\nnot json").is_err());
    }

    #[test]
    fn each_detector_runs_in_at_most_one_stage_and_rejection_ratio_in_none() {
        let cfg = Config::default();
        let t = Stage::Token.config(&cfg).detectors;
        let i = Stage::Ip.config(&cfg).detectors;
        let pairs = [
            (t.rate_spike.enabled, i.rate_spike.enabled),
            (t.impossible_travel.enabled, i.impossible_travel.enabled),
            (t.ip_fanout.enabled, i.ip_fanout.enabled),
            (t.off_hours.enabled, i.off_hours.enabled),
            (t.revoked_reuse.enabled, i.revoked_reuse.enabled),
            (i.brute_force.enabled, t.brute_force.enabled),
            (i.token_spray.enabled, t.token_spray.enabled),
            (i.distributed_spray.enabled, t.distributed_spray.enabled),
        ];
        for (n, (own, other)) in pairs.iter().enumerate() {
            assert!(*own && !*other, "detector pair {n}");
        }
        assert!(!t.rejection_ratio.enabled && !i.rejection_ratio.enabled);
        // A detector the config turned off stays off.
        let mut off = Config::default();
        off.detectors.ip_fanout.enabled = false;
        assert!(!Stage::Token.config(&off).detectors.ip_fanout.enabled);
    }

    /// A statistics report of one topic: `(partition, consumer_lag, consumer_lag_stored)`.
    fn report(parts: &[(i32, i64, i64)]) -> rdkafka::statistics::Topic {
        let mut t = rdkafka::statistics::Topic::default();
        for &(n, lag, stored) in parts {
            let p = rdkafka::statistics::Partition {
                partition: n,
                consumer_lag: lag,
                consumer_lag_stored: stored,
                ..Default::default()
            };
            t.partitions.insert(n, p);
        }
        t
    }

    fn scrape(m: &Metrics, name: &str) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| l.starts_with(name))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn statistics_set_the_lag_of_owned_partitions_only() {
        let m = Metrics::new();
        let km = KafkaMetrics::register(&m).unwrap();
        km.consume("by_ip");
        // 0: position known; 1: nothing consumed since the assignment (committed lag only);
        // 2: unknown; 3: not ours; -1: librdkafka's internal partition.
        let t = report(&[
            (0, 900, 5),
            (1, 40, -1),
            (2, -1, -1),
            (3, 70, 70),
            (-1, -1, -1),
        ]);
        apply_stats(&km, "by_ip", Some(&t), &[0, 1, 2]);
        assert_eq!(
            scrape(&m, "tokenwatch_kafka_partition_lag{"),
            [
                "tokenwatch_kafka_partition_lag{partition=\"0\",topic=\"by_ip\"} 5",
                "tokenwatch_kafka_partition_lag{partition=\"1\",topic=\"by_ip\"} 40",
            ]
        );
        assert_eq!(
            scrape(&m, "tokenwatch_kafka_consumer_lag{"),
            ["tokenwatch_kafka_consumer_lag{topic=\"by_ip\"} 45"]
        );
        assert_eq!(
            scrape(&m, "tokenwatch_kafka_topic_partitions{"),
            ["tokenwatch_kafka_topic_partitions{topic=\"by_ip\"} 4"]
        );
    }

    #[test]
    fn a_revoked_partition_drops_its_series_and_a_late_report_does_not_bring_them_back() {
        let m = Metrics::new();
        let km = KafkaMetrics::register(&m).unwrap();
        km.consume("by_token");
        let t = report(&[(0, 10, 10), (1, 20, 20)]);
        apply_stats(&km, "by_token", Some(&t), &[0, 1]);
        km.snapshot_at("by_token", 0, 100);
        km.snapshot_at("by_token", 1, 100);
        km.set_owned("by_token", 2);
        // Revoke partition 1 as `pre_rebalance` does, then a report taken before it arrives.
        km.revoked("by_token", 1);
        km.set_owned("by_token", 1);
        apply_stats(&km, "by_token", Some(&t), &[0]);
        let text = m.render();
        assert!(!text.contains("partition=\"1\""), "{text}");
        assert!(
            text.contains("tokenwatch_kafka_partition_lag{partition=\"0\",topic=\"by_token\"} 10")
        );
        assert!(text.contains(
            "tokenwatch_kafka_snapshot_timestamp_seconds{partition=\"0\",topic=\"by_token\"} 100"
        ));
        assert!(text.contains("tokenwatch_kafka_consumer_lag{topic=\"by_token\"} 10"));
        assert!(text.contains("tokenwatch_partitions_owned{topic=\"by_token\"} 1"));
        // A topic absent from the report: no lag, and the partition count is left alone.
        apply_stats(&km, "by_token", None, &[0]);
        let text = m.render();
        assert!(text.contains("tokenwatch_kafka_consumer_lag{topic=\"by_token\"} 0"));
        assert!(text.contains("tokenwatch_kafka_topic_partitions{topic=\"by_token\"} 2"));
    }

    #[test]
    fn unknown_source_names_get_indices_past_the_configured_ones() {
        let mut names = NameTable::new(&Config::default());
        let n = Config::default().sources.len() as u16;
        assert_eq!(names.index("elsewhere"), n);
        assert_eq!(names.index("other"), n + 1);
        assert_eq!(names.index("elsewhere"), n);
    }
}
