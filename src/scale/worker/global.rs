//! The global stage: `distributed_spray` and `rejection_ratio` need every address, so one
//! worker of the cluster reads every partition of `topics.by_ip` into one engine.
//!
//! # Election
//! Every worker joins the group `<prefix>-global` on `topics.by_ip` with a *lease*
//! consumer that pauses whatever it is given and never reads: the member given
//! partition 0 is the leader, the others stand by (`tokenwatch_partitions_owned{topic="global"}`
//! is the partition count on the leader, 0 on a standby). The leader then takes the
//! exclusive lock `state.dir/kafka/global.lock`, restores `state.dir/kafka/global.json`
//! and reads each partition with a second consumer (`assign`, no group) from the offset
//! in that snapshot (from the beginning when it has none).
//!
//! # Failure
//! * The offsets live in the snapshot with the state they produced (there is no commit
//!   to race with): a new leader resumes exactly where the last snapshot ends, and
//!   events the old leader applied after it are applied again — detections they raise
//!   carry the same ids, and the responder drops the repeats.
//! * A leader that stops, or loses partition 0 in a rebalance, saves and releases the
//!   lock; one that dies (`kill -9`) is replaced after the group expires its session.
//!   The lock keeps a cut-off leader and its successor from running at once, so **the
//!   workers must share the state directory**, as they must for partition takeover.
//! * An eager rebalance that gives partition 0 back keeps the stage in memory (the lock
//!   is held meanwhile; nothing is read until the assignment).
//! * Partitions added to `topics.by_ip` later are read from the next election on.
//!
//! # Order and dedupe
//! Events of all partitions go through one reorder buffer (`[kafka] reorder_ms`), so
//! the engine sees them in time order as one process would; each partition keeps its own
//! high-water marks (a file's events are in order within a partition, not across them).

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::marks::{Marks, SavedMark};
use super::names::NameTable;
use super::partition::{release, restore_held, saved_held};
use super::snapshot::{self, Read};
use super::stage::{Shared, Stage};
use super::stats::{apply_stats, unix_now, STATS_MS};
use super::{lock, HashMap, WorkerError, FLUSH_EVERY, HELD_CAP, POLL, RELEASE_EVERY};
use crate::config::Config;
use crate::detect::Engine;
use crate::metrics::RecordCounters;
use crate::scale::reorder::Reorder;
use crate::scale::wire;

/// The snapshot file in `state.dir/kafka`.
pub const SNAPSHOT_FILE: &str = "global.json";
/// The lock file in `state.dir/kafka` held by the leader.
pub const LOCK_FILE: &str = "global.lock";
/// Kind of the snapshot in its state-file header.
const SNAPSHOT_KIND: &str = "kafka-global";
/// How often an election won but not taken up (lock held, broker slow) is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Records one turn of the loop takes at most (between two polls of the lease).
const BATCH: usize = 256;
/// Broker round trips at takeover (the topic's partitions).
const BROKER_WAIT: Duration = Duration::from_secs(10);

/// The first line of the snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
struct Head {
    /// Per partition: where to resume and its marks.
    partitions: Vec<SavedPart>,
    /// Admitted events still in the reorder buffer, as hex wire records.
    #[serde(default)]
    held: Vec<String>,
}

/// One partition in the snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedPart {
    partition: i32,
    next_offset: Option<i64>,
    marks: Vec<SavedMark>,
}

/// Where the leader is in one partition.
#[derive(Default)]
struct Part {
    next_offset: Option<i64>,
    marks: Marks,
}

/// Starts the stage's thread: it stands by until elected.
pub(super) fn start(
    cfg: &Config,
    shared: Shared,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, WorkerError> {
    let mut c = rdkafka::ClientConfig::new();
    c.set("group.id", cfg.kafka.group_id(Stage::Global.group()))
        // The lease reads nothing (its partitions are paused) and commits nothing.
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .set("statistics.interval.ms", STATS_MS.to_string());
    crate::scale::base_client(&mut c, &cfg.kafka);
    let topic = shared.topic.clone();
    let state = State {
        every: Duration::from_secs(cfg.detectors.snapshot_interval_secs.max(1)),
        names: NameTable::new(cfg),
        records: shared.km.records(Stage::Global.label()),
        client: cfg.kafka.clone(),
        shared,
        leader: false,
        active: None,
        parked: false,
        last_try: None,
    };
    let lease: BaseConsumer<LeaseCtx> = c.create_with_context(LeaseCtx {
        state: Mutex::new(state),
    })?;
    lease.subscribe(&[&topic])?;
    Ok(std::thread::Builder::new()
        .name("worker-global".into())
        .spawn(move || run(&lease, &stop))?)
}

/// The stage's loop until `stop`.
fn run(lease: &BaseConsumer<LeaseCtx>, stop: &AtomicBool) {
    let ctx = lease.context();
    while !stop.load(Ordering::Acquire) {
        let consuming = {
            let mut s = ctx.state();
            s.try_activate();
            s.active.is_some() && !s.parked
        };
        // Drives the rebalance callbacks; the lease's own partitions are paused.
        let _ = lease.poll(if consuming { Duration::ZERO } else { POLL });
        if consuming {
            ctx.state().step();
        }
    }
    ctx.state().deactivate("stopping");
    lease.unsubscribe();
}

/// The lease consumer's context: the stage's state, driven by the rebalance callbacks.
struct LeaseCtx {
    state: Mutex<State>,
}

impl LeaseCtx {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// The stage on one worker.
struct State {
    shared: Shared,
    client: crate::config::KafkaConfig,
    every: Duration,
    names: NameTable,
    records: RecordCounters,
    /// Partition 0 of the lease is ours.
    leader: bool,
    active: Option<Active>,
    /// Revoked by a rebalance in progress: kept (and locked) until the assignment says
    /// whether it is still ours.
    parked: bool,
    last_try: Option<Instant>,
}

/// The elected stage: its reader, its engine, where it is.
struct Active {
    reader: BaseConsumer<ReaderCtx>,
    engine: Engine,
    parts: HashMap<i32, Part>,
    held: Reorder<wire::WireEvent>,
    last_save: Instant,
    last_flush: Instant,
    last_release: Instant,
    _lock: File,
}

impl State {
    /// Becomes the leader's stage when elected and not yet; retried every [`RETRY`].
    fn try_activate(&mut self) {
        if !self.leader || self.active.is_some() {
            return;
        }
        if self.last_try.is_some_and(|t| t.elapsed() < RETRY) {
            return;
        }
        self.last_try = Some(Instant::now());
        match self.activate() {
            Ok(a) => {
                tracing::info!(
                    partitions = a.parts.len(),
                    "worker: global stage ACTIVE (distributed_spray, rejection_ratio run here)"
                );
                self.active = Some(a);
            }
            Err(e) => tracing::warn!("worker: global stage not active yet: {e}"),
        }
    }

    fn activate(&self) -> Result<Active, String> {
        let s = &self.shared;
        let held_lock =
            crate::scale::take_lock(&s.dir.join(LOCK_FILE), "another worker's global stage")?;
        let (mut engine, mut parts, mut held) = self.fresh();
        let path = s.dir.join(SNAPSHOT_FILE);
        let read = snapshot::read(&path, SNAPSHOT_KIND, &s.metrics, |h: Head, bytes| {
            engine.restore(bytes)?;
            for p in h.partitions {
                let part = Part {
                    next_offset: p.next_offset,
                    marks: Marks::from_saved(p.marks),
                };
                parts.insert(p.partition, part);
            }
            restore_held(&mut held, h.held)
        });
        if read == Read::Damaged {
            (engine, parts, held) = self.fresh();
        }
        let reader = self.reader()?;
        let md = reader
            .fetch_metadata(Some(&s.topic), BROKER_WAIT)
            .map_err(|e| format!("reading {}'s partitions: {e}", s.topic))?;
        let count = md
            .topics()
            .iter()
            .find(|t| t.name() == s.topic)
            .map_or(0, |t| t.partitions().len());
        if count == 0 {
            return Err(format!("{} has no partitions (yet)", s.topic));
        }
        let mut tpl = TopicPartitionList::new();
        let now = unix_now();
        for n in (0..count).filter_map(|n| i32::try_from(n).ok()) {
            let part = parts.entry(n).or_default();
            let at = part.next_offset.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(&s.topic, n, at)
                .map_err(|e| e.to_string())?;
            s.km.snapshot_at(Stage::Global.label(), n, now);
        }
        reader
            .assign(&tpl)
            .map_err(|e| format!("assigning {}: {e}", s.topic))?;
        *lock(&reader.context().owned) = parts.keys().copied().collect();
        s.km.set_owned(Stage::Global.label(), parts.len());
        let at = Instant::now();
        Ok(Active {
            reader,
            engine,
            parts,
            held,
            last_save: at,
            last_flush: at,
            last_release: at,
            _lock: held_lock,
        })
    }

    /// An empty engine (a third of the state budget: one of three stages), no partitions,
    /// an empty reorder buffer.
    fn fresh(&self) -> (Engine, HashMap<i32, Part>, Reorder<wire::WireEvent>) {
        let engine = self.shared.engine(Stage::ALL.len());
        let held = Reorder::new(self.shared.hold, HELD_CAP);
        (engine, HashMap::default(), held)
    }

    /// The consumer that reads every partition (assigned, not subscribed).
    fn reader(&self) -> Result<BaseConsumer<ReaderCtx>, String> {
        let mut c = rdkafka::ClientConfig::new();
        // librdkafka assigns only with a group id; this one never joins (no subscribe)
        // nor commits.
        c.set(
            "group.id",
            format!("{}-reader", self.client.group_id(Stage::Global.group())),
        )
        .set("enable.auto.commit", "false")
        // A saved offset gone by retention: from the oldest kept, as the groups do.
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", STATS_MS.to_string());
        crate::scale::base_client(&mut c, &self.client);
        let ctx = ReaderCtx {
            shared_km: self.shared.km.clone(),
            topic: self.shared.topic.clone(),
            owned: Mutex::new(Vec::new()),
        };
        c.create_with_context(ctx)
            .map_err(|e| format!("the global stage's reader: {e}"))
    }

    /// Up to [`BATCH`] records (waiting [`POLL`] for the first), then what is due:
    /// release, flush, snapshot. Batches keep the lease's poll and the state's lock off
    /// the per-record path.
    fn step(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mut now = Instant::now();
        for i in 0..BATCH {
            let polled = a.reader.poll(if i == 0 { POLL } else { Duration::ZERO });
            // One clock read per record, as in the other stages.
            now = Instant::now();
            match polled {
                Some(Ok(msg)) => {
                    let to = Apply {
                        parts: &mut a.parts,
                        held: &mut a.held,
                        engine: &mut a.engine,
                    };
                    to.record(&msg, &self.records, &mut self.names, now);
                }
                Some(Err(e)) => {
                    tracing::warn!(%e, "worker: global stage consumer error");
                    break;
                }
                None => break,
            }
        }
        if now.saturating_duration_since(a.last_release) >= RELEASE_EVERY {
            a.last_release = now;
            release(&mut a.held, &mut a.engine, &mut self.names, now);
        }
        if now.saturating_duration_since(a.last_flush) >= FLUSH_EVERY {
            a.last_flush = now;
            a.engine.flush();
        }
        if now.saturating_duration_since(a.last_save) >= self.every {
            a.last_save = now;
            a.save(&self.shared);
        }
    }

    /// Saves and stops being the leader's stage (the lock is released).
    fn deactivate(&mut self, why: &str) {
        self.parked = false;
        let Some(mut a) = self.active.take() else {
            return;
        };
        a.save(&self.shared);
        for &n in a.parts.keys() {
            self.shared.km.revoked(Stage::Global.label(), n);
        }
        self.shared.km.set_owned(Stage::Global.label(), 0);
        tracing::info!("worker: global stage standing by ({why}; state saved)");
    }
}

/// Where a record goes (the parts of [`Active`] the reader's message does not borrow).
struct Apply<'a> {
    parts: &'a mut HashMap<i32, Part>,
    held: &'a mut Reorder<wire::WireEvent>,
    engine: &'a mut Engine,
}

impl Apply<'_> {
    /// Admits one record: decoded, deduplicated by its partition's marks, held, released.
    fn record(
        self,
        msg: &BorrowedMessage<'_>,
        records: &RecordCounters,
        names: &mut NameTable,
        now: Instant,
    ) {
        let part = self.parts.entry(msg.partition()).or_default();
        part.next_offset = Some(msg.offset().saturating_add(1));
        match wire::decode(msg.payload().unwrap_or_default()) {
            Err(e) => {
                records.undecodable.inc();
                tracing::debug!(%e, partition = msg.partition(), "worker: global stage skips an undecodable record");
            }
            Ok(w) if !part.marks.admit(&w.id, w.event.time.as_millis()) => records.duplicate.inc(),
            Ok(w) => {
                self.held.push(w.event.time.as_millis(), w, now);
                records.applied.inc();
                release(self.held, self.engine, names, now);
            }
        }
    }
}

impl Active {
    /// Writes the snapshot with the offsets it covers; failures are logged and counted.
    fn save(&mut self, s: &Shared) {
        self.engine.flush();
        let mut partitions = Vec::with_capacity(self.parts.len());
        for (&partition, p) in &mut self.parts {
            p.marks.prune();
            partitions.push(SavedPart {
                partition,
                next_offset: p.next_offset,
                marks: p.marks.saved(),
            });
        }
        let head = Head {
            partitions,
            held: saved_held(&self.held),
        };
        let path = s.dir.join(SNAPSHOT_FILE);
        if snapshot::write(&path, SNAPSHOT_KIND, &head, &self.engine, &s.metrics).is_ok() {
            let now = unix_now();
            for &n in self.parts.keys() {
                s.km.snapshot_at(Stage::Global.label(), n, now);
            }
        }
    }
}

impl ClientContext for LeaseCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        crate::scale::librdkafka_log(level, fac, msg);
    }

    /// On a standby: the topic's partition count with none owned, so that while no
    /// worker leads, `TokenwatchKafkaPartitionsUnowned` sees the global stage's partitions
    /// unowned (the leader's reader reports them, with their lag, while it runs). Delivered
    /// by the lease's `poll`, never while the loop holds the state.
    fn stats(&self, st: Statistics) {
        let s = self.state();
        if s.active.is_none() {
            let topic = st.topics.get(&s.shared.topic);
            apply_stats(&s.shared.km, Stage::Global.label(), topic, &[]);
        }
    }
}

impl ConsumerContext for LeaseCtx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = r {
            let mut s = self.state();
            s.leader = false;
            // Kept until the assignment: most rebalances give partition 0 back.
            s.parked = s.active.is_some();
        }
    }

    fn post_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            // The lease never reads (see the module docs).
            if tpl.count() > 0 {
                if let Err(e) = c.pause(tpl) {
                    tracing::warn!(%e, "worker: cannot pause the global stage's lease");
                }
            }
            let mut s = self.state();
            s.leader = tpl.elements().iter().any(|e| e.partition() == 0);
            if s.leader {
                s.parked = false;
                s.last_try = None;
            } else if s.active.is_some() {
                s.deactivate("another worker was elected");
            }
        }
    }
}

/// The reader's context: the lag of every partition while active.
struct ReaderCtx {
    shared_km: crate::metrics::KafkaMetrics,
    topic: String,
    owned: Mutex<Vec<i32>>,
}

impl ClientContext for ReaderCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        crate::scale::librdkafka_log(level, fac, msg);
    }

    fn stats(&self, s: Statistics) {
        let owned = lock(&self.owned).clone();
        apply_stats(
            &self.shared_km,
            Stage::Global.label(),
            s.topics.get(&self.topic),
            &owned,
        );
    }
}

impl ConsumerContext for ReaderCtx {}
