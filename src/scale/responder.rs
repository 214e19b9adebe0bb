//! `role = "responder"`: one active process applies the response policy to every worker's
//! detections, so the global freeze cap, the allowlists and the dedupe hold cluster-wide.
//!
//! The detections topic has one partition and every responder joins the consumer group
//! `<prefix>-respond`: the member the group gives that partition is the active responder,
//! the others are standbys with nothing assigned. When the active one leaves (a clean
//! stop) or dies (its session times out), the group hands the partition to a standby.
//!
//! # Taking over
//! * The partition is paused the moment it is assigned; nothing is consumed until the
//!   process has become active: it holds an exclusive lock on `state.dir/responder.lock`,
//!   it has opened the journal and the frozen set ([`crate::respond::Responder`]: unfinished
//!   hook calls in the journal are retried) and it knows the detection ids decided before
//!   the committed offset (the last [`SEEN_IDS`] records are read back from the topic).
//! * The lock makes sharing a state directory safe: a standby on the same host (or a
//!   shared volume) takes over the frozen set and the journal of the responder it replaces,
//!   and waits while a cut-off predecessor still holds them. With its own state directory a
//!   standby takes over with its own (older) frozen set: hook receivers still dedupe by
//!   the detection id, the idempotency key of every call.
//!
//! # Once per detection
//! * A detection id seen before (a worker raising the same detection again after a crash,
//!   or the topic read again after a takeover) is dropped before the policy sees it.
//! * The offset is committed after the decision is journaled (the journal append is
//!   fsync'd before any hook call), every [`COMMIT_EVERY`] and at revoke and stop; records
//!   after the last commit are decided again after a crash, and those already frozen come
//!   out as `already_frozen`.
//! * Decided records (with action and reason) go to `state.dir/detections.jsonl` (or
//!   `[detectors] output`) and to the admin API's `/api/v1/detections`; the admin API
//!   answers 503 on a standby.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::config::Config;
use crate::detect::bounded::RecentKeys;
use crate::detect::{Decide, Detection, DetectionSink, JsonlSink, Ring};
use crate::enrich::Fingerprinter;
use crate::metrics::{KafkaMetrics, Metrics, RecordCounters};
use crate::respond::{Responder, ResponderHandle};
use crate::server::AdminSlot;

/// Detection ids remembered for dedupe (read back from the topic at takeover).
pub const SEEN_IDS: usize = 100_000;
/// How often the consumed offset is committed while records keep coming.
pub const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// The lock file in the state directory held by the active responder.
pub const LOCK_FILE: &str = "responder.lock";
/// The `topic` label of the detections topic's series (the role's name, not the topic's).
const TOPIC_LABEL: &str = "detections";
/// How long one poll waits for a record.
const POLL: Duration = Duration::from_millis(100);
/// How often a takeover that could not finish (lock held, broker slow) is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Broker round trips at takeover (committed offset, watermarks).
const BROKER_WAIT: Duration = Duration::from_secs(10);
/// How long reading back the decided ids may take at takeover.
const BACKFILL_WAIT: Duration = Duration::from_secs(30);

/// Why the responder role could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResponderRoleError {
    /// The consumer could not be built or could not subscribe.
    #[error("Kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    /// The metrics could not be registered.
    #[error("responder metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The consumer thread could not start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The running responder role: its consumer thread.
pub struct ResponderRole {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl ResponderRole {
    /// Stops consuming: an active responder commits, stops its hook workers (unfinished
    /// calls stay in the journal), releases the lock and leaves the group.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        if self.thread.join().is_err() {
            tracing::error!("the responder consumer thread panicked");
        }
    }
}

/// What the role needs from the daemon besides the config.
pub struct Parts {
    /// Registry of every metric.
    pub metrics: Metrics,
    /// The runtime the hook workers run on.
    pub rt: tokio::runtime::Handle,
    /// Where the active responder's admin routes are served.
    pub admin: AdminSlot,
    /// Decided records for `GET /api/v1/detections`.
    pub ring: Ring,
    /// Turns tokens pasted into the admin API into tracked ids.
    pub fp: Fingerprinter,
}

/// Joins the group `<prefix>-respond` on `topics.detections` and starts the consumer
/// thread; the process acts only while it owns the partition.
pub fn spawn(cfg: &Config, parts: Parts) -> Result<ResponderRole, ResponderRoleError> {
    let topic = cfg.kafka.topics.detections.clone();
    let km = KafkaMetrics::register(&parts.metrics)?;
    km.responder_active.set(0);
    let counters = Counters {
        records: km.consume(TOPIC_LABEL),
        active: km.responder_active.clone(),
        km,
    };
    let state = State {
        cfg: cfg.clone(),
        topic: topic.clone(),
        parts,
        counters,
        assigned: Vec::new(),
        active: None,
        seen: RecentKeys::new(SEEN_IDS),
        next_offset: None,
        committed: None,
        rewind: None,
        last_try: None,
    };
    let mut c = client_config(cfg);
    c.set("group.id", cfg.kafka.group_id("respond"))
        // Offsets are committed after the decision is journaled (see the module docs).
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // The lag of the detections partition (the responder falling behind the workers).
        .set(
            "statistics.interval.ms",
            super::worker::STATS_MS.to_string(),
        );
    let consumer: BaseConsumer<Ctx> = c.create_with_context(Ctx {
        state: Mutex::new(state),
    })?;
    consumer.subscribe(&[&topic])?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("responder".into())
        .spawn(move || run(consumer, &flag))?;
    tracing::info!(
        group = %cfg.kafka.group_id("respond"),
        %topic,
        "responder: joined the group (standby until the detections partition is assigned)"
    );
    Ok(ResponderRole { stop, thread })
}

/// A client with the brokers and the pass-through options; the responder's own settings
/// are set after them.
fn client_config(cfg: &Config) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    super::base_client(&mut c, &cfg.kafka);
    c
}

/// The consumer loop until `stop`.
fn run(consumer: BaseConsumer<Ctx>, stop: &AtomicBool) {
    let ctx = consumer.context();
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Acquire) {
        ctx.state().try_activate(&consumer);
        match consumer.poll(POLL) {
            Some(Ok(msg)) => {
                let payload = msg.payload().unwrap_or_default();
                ctx.state()
                    .record(&consumer, msg.partition(), msg.offset(), payload);
            }
            Some(Err(e)) => tracing::warn!(%e, "responder: consumer error"),
            None => {}
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            last_commit = Instant::now();
            let mut s = ctx.state();
            s.flush();
            s.commit(&consumer, CommitMode::Async);
        }
    }
    ctx.state().deactivate(&consumer, "stopping");
    consumer.unsubscribe();
}

/// The counters the loop bumps.
struct Counters {
    records: RecordCounters,
    active: IntGauge,
    km: KafkaMetrics,
}

/// The active responder's parts.
struct Active {
    policy: Box<dyn Decide>,
    handle: ResponderHandle,
    file: JsonlSink,
    /// Publishes the frozen set's changes to the `frozen` topic for the edges' `/authz`.
    frozen_topic: Option<super::frozen_topic::Publisher>,
    /// Held while active (released when dropped, or by the kernel when the process dies).
    _lock: File,
}

/// Everything the loop and the rebalance callbacks share.
struct State {
    cfg: Config,
    topic: String,
    parts: Parts,
    counters: Counters,
    /// Partitions the group gave us (one, unless the topic was made with more).
    assigned: Vec<i32>,
    active: Option<Active>,
    seen: RecentKeys,
    /// The offset after the last record decided.
    next_offset: Option<i64>,
    /// The last offset committed.
    committed: Option<i64>,
    /// A record consumed before the takeover finished: where to start again.
    rewind: Option<i64>,
    last_try: Option<Instant>,
}

impl State {
    fn tpl(&self, offset: Option<i64>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &n in &self.assigned {
            let o = offset.map_or(Offset::Invalid, Offset::Offset);
            let _ = tpl.add_partition_offset(&self.topic, n, o);
        }
        tpl
    }

    /// Becomes the active responder when the partition is ours and we are not yet;
    /// retried every [`RETRY`] while the lock is held elsewhere or the broker is slow.
    fn try_activate(&mut self, c: &BaseConsumer<Ctx>) {
        if self.assigned.is_empty() || self.active.is_some() {
            return;
        }
        if self.last_try.is_some_and(|t| t.elapsed() < RETRY) {
            return;
        }
        self.last_try = Some(Instant::now());
        match self.activate(c) {
            Ok(()) => {
                if let Err(e) = c.resume(&self.tpl(None)) {
                    tracing::error!(%e, "responder: cannot resume the detections partition");
                }
            }
            Err(e) => tracing::warn!("responder: not active yet: {e}"),
        }
    }

    fn activate(&mut self, c: &BaseConsumer<Ctx>) -> Result<(), String> {
        let dir = self.cfg.state.dir.clone();
        let lock = super::take_lock(&dir.join(LOCK_FILE), "another responder")?;
        let start = self.committed_offset(c)?;
        self.seen = RecentKeys::new(SEEN_IDS);
        if let Some(until) = start {
            self.backfill(c, until)?;
        }
        if let Some(at) = self.rewind.take() {
            // Records were fetched before the takeover finished: read them again.
            for &n in &self.assigned {
                if let Err(e) = c.seek(&self.topic, n, Offset::Offset(at), BROKER_WAIT) {
                    self.rewind = Some(at);
                    return Err(format!("seeking back to offset {at}: {e}"));
                }
            }
        }
        let out = self
            .cfg
            .detectors
            .output
            .clone()
            .unwrap_or_else(|| dir.join("detections.jsonl"));
        let file = JsonlSink::append(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let p = &self.parts;
        let (responder, handle) = Responder::start(&self.cfg, &dir, &p.metrics, p.rt.clone())
            .map_err(|e| e.to_string())?;
        let admin = crate::server::admin::routes(
            handle.control(),
            p.ring.clone(),
            self.cfg.server.admin_token.clone(),
            p.fp.clone(),
        );
        p.admin.set(Some(admin));
        self.committed = start;
        self.next_offset = start;
        let frozen_topic =
            super::frozen_topic::Publisher::start(&self.cfg, handle.frozen_view(), &p.metrics)
                .map_err(|e| tracing::error!(%e, "freezes are not published to the edges"))
                .ok();
        self.active = Some(Active {
            policy: responder.policy(),
            handle,
            file,
            frozen_topic,
            _lock: lock,
        });
        self.counters.active.set(1);
        self.counters.km.set_owned(TOPIC_LABEL, self.assigned.len());
        tracing::info!(
            partitions = ?self.assigned,
            from_offset = ?start,
            remembered_ids = self.seen.len(),
            "responder: ACTIVE (policy, journal and hooks run here)"
        );
        Ok(())
    }

    /// The group's committed offset of the (first) partition; `None` when nothing was
    /// committed yet.
    fn committed_offset(&self, c: &BaseConsumer<Ctx>) -> Result<Option<i64>, String> {
        let tpl = c
            .committed_offsets(self.tpl(None), BROKER_WAIT)
            .map_err(|e| format!("reading the committed offset: {e}"))?;
        Ok(tpl.elements().iter().find_map(|e| match e.offset() {
            Offset::Offset(o) if o > 0 => Some(o),
            _ => None,
        }))
    }

    /// Reads the ids of the records before `until` (at most [`SEEN_IDS`]) into the seen
    /// set: they were decided by our predecessor.
    fn backfill(&mut self, c: &BaseConsumer<Ctx>, until: i64) -> Result<(), String> {
        let Some(&n) = self.assigned.first() else {
            return Ok(());
        };
        let (low, _) = c
            .fetch_watermarks(&self.topic, n, BROKER_WAIT)
            .map_err(|e| format!("reading the watermarks: {e}"))?;
        let window = i64::try_from(SEEN_IDS).unwrap_or(i64::MAX);
        let from = low.max(until.saturating_sub(window));
        if from >= until {
            return Ok(());
        }
        let reader: BaseConsumer = client_config(&self.cfg)
            .set("group.id", self.cfg.kafka.group_id("respond-backfill"))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, n, Offset::Offset(from))
            .map_err(|e| e.to_string())?;
        reader.assign(&tpl).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + BACKFILL_WAIT;
        let mut read = 0usize;
        while Instant::now() < deadline {
            match reader.poll(POLL) {
                Some(Ok(m)) => {
                    if m.offset() >= until {
                        break;
                    }
                    if let Some(id) = record_id(m.payload().unwrap_or_default()) {
                        self.seen.first(id);
                    }
                    read += 1;
                    if m.offset() + 1 >= until {
                        break;
                    }
                }
                Some(Err(e)) => return Err(format!("reading back decided ids: {e}")),
                None => {}
            }
        }
        let want = usize::try_from(until - from).unwrap_or(usize::MAX);
        if read < want {
            // Compacted or deleted records, or a slow broker: dedupe falls back on the
            // frozen set and the receivers' idempotency keys for what is missing.
            tracing::warn!(
                read,
                want,
                "responder: read back fewer decided ids than expected"
            );
        }
        Ok(())
    }

    /// One record from the topic.
    fn record(&mut self, c: &BaseConsumer<Ctx>, partition: i32, offset: i64, payload: &[u8]) {
        let Some(a) = self.active.as_mut() else {
            // Fetched before the takeover finished (the pause came late): not ours yet.
            self.rewind = Some(self.rewind.map_or(offset, |r| r.min(offset)));
            let _ = c.pause(&self.tpl(None));
            tracing::debug!(
                partition,
                offset,
                "responder: record before takeover, read again later"
            );
            return;
        };
        match serde_json::from_slice::<Detection>(payload) {
            Err(e) => {
                self.counters.records.undecodable.inc();
                tracing::warn!(%e, partition, offset, "responder: skipping a record that is not a detection");
            }
            Ok(d) if !self.seen.first(d.id.clone()) => self.counters.records.duplicate.inc(),
            Ok(mut d) => {
                a.policy.decide(&mut d);
                if let Err(e) = a.file.emit(&d) {
                    tracing::error!(%e, id = %d.id, "responder: writing a decided record");
                }
                let _ = self.parts.ring.emit(&d);
                self.counters.records.applied.inc();
            }
        }
        self.next_offset = Some(offset.saturating_add(1));
    }

    fn flush(&mut self) {
        if let Some(a) = self.active.as_mut() {
            if let Err(e) = a.file.flush() {
                tracing::error!(%e, "responder: flushing decided records");
            }
        }
    }

    /// Commits the offset after the last decided record, when it moved.
    fn commit(&mut self, c: &BaseConsumer<Ctx>, mode: CommitMode) {
        let Some(next) = self.next_offset else {
            return;
        };
        if self.active.is_none() || self.committed == Some(next) {
            return;
        }
        match c.commit(&self.tpl(Some(next)), mode) {
            Ok(()) => self.committed = Some(next),
            Err(e) => {
                tracing::warn!(%e, "responder: committing the offset (records after it are decided again after a crash)")
            }
        }
    }

    /// Stops acting: commit, stop the hook workers, release the lock.
    fn deactivate(&mut self, c: &BaseConsumer<Ctx>, why: &str) {
        self.flush();
        self.commit(c, CommitMode::Sync);
        if let Some(a) = self.active.take() {
            self.parts.admin.set(None);
            if let Some(p) = a.frozen_topic {
                p.stop();
            }
            drop(a.policy);
            // Hook calls in flight get their grace; unfinished ones stay in the journal.
            self.parts.rt.block_on(a.handle.shutdown());
            self.counters.active.set(0);
            self.counters.km.set_owned(TOPIC_LABEL, 0);
            for &n in &self.assigned {
                self.counters.km.revoked(TOPIC_LABEL, n);
            }
            self.counters
                .km
                .lag
                .with_label_values(&[TOPIC_LABEL])
                .set(0);
            tracing::info!(
                why,
                "responder: standby (policy and hooks stopped, lock released)"
            );
        }
        self.next_offset = None;
        self.committed = None;
        self.rewind = None;
    }
}

/// The id of a detection record, without decoding the rest.
fn record_id(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_slice::<Id>(payload).ok().map(|r| r.id)
}

/// The consumer's context: the shared state, driven by the rebalance callbacks.
struct Ctx {
    state: Mutex<State>,
}

impl Ctx {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        super::librdkafka_log(level, fac, msg);
    }

    /// librdkafka's statistics: the lag of the partition while this process acts on it.
    /// Delivered by `poll`, never while the loop holds the state.
    fn stats(&self, st: rdkafka::statistics::Statistics) {
        let s = self.state();
        let owned: &[i32] = if s.active.is_some() { &s.assigned } else { &[] };
        let topic = st.topics.get(&s.topic);
        super::worker::apply_stats(&s.counters.km, TOPIC_LABEL, topic, owned);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = r {
            let mut s = self.state();
            s.deactivate(c, "detections partition revoked");
            s.assigned.clear();
        }
    }

    fn post_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            let mut s = self.state();
            s.assigned = tpl.elements().iter().map(|e| e.partition()).collect();
            if s.assigned.is_empty() {
                return;
            }
            if s.assigned.len() > 1 {
                tracing::error!(
                    partitions = s.assigned.len(),
                    "responder: the detections topic has more than one partition; the global freeze cap holds only while one responder owns them all"
                );
            }
            // Nothing is consumed until this process is active (see the module docs).
            if let Err(e) = c.pause(tpl) {
                tracing::warn!(%e, "responder: cannot pause the new partition");
            }
            s.last_try = None;
            tracing::info!(partitions = ?s.assigned, "responder: detections partition assigned, taking over");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_read_without_decoding_the_record() {
        assert_eq!(
            record_id(br#"{"id":"x1","detector":"ip_fanout","evidence":{}}"#),
            Some("x1".into())
        );
        assert_eq!(record_id(b"not json"), None);
        assert_eq!(record_id(br#"{"detector":"ip_fanout"}"#), None);
    }

    #[test]
    fn the_lock_is_exclusive_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let held = super::super::take_lock(&path, "another responder").unwrap();
        let e = super::super::take_lock(&path, "another responder").unwrap_err();
        assert!(e.contains("held by another responder"), "{e}");
        drop(held);
        assert!(super::super::take_lock(&path, "another responder").is_ok());
    }
}
