//! The token and IP stages: one consumer group per stage, one [`Partition`] per assigned
//! partition; partitions are saved on revoke, kept in memory while a rebalance gives them
//! back, and opened from their snapshot otherwise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::known::Feed;
use super::names::NameTable;
use super::partition::Partition;
use super::stage::Shared;
use super::stats::{apply_stats, unix_now, STATS_MS};
use super::{lock, HashMap, WorkerError, FLUSH_EVERY, POLL, RELEASE_EVERY};
use crate::config::Config;
use crate::metrics::RecordCounters;
use crate::scale::wire;

/// Starts one stage's consumer thread.
pub(super) fn start(
    cfg: &Config,
    shared: Shared,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, WorkerError> {
    let name = format!("worker-{}", shared.stage.group());
    let turn = Turn {
        names: NameTable::new(cfg),
        feed: Feed::for_stage(shared.stage, cfg, &shared.km),
        records: shared.km.records(shared.stage.label()),
    };
    let consumer = consumer(cfg, shared)?;
    let every = Duration::from_secs(cfg.detectors.snapshot_interval_secs.max(1));
    Ok(std::thread::Builder::new()
        .name(name)
        .spawn(move || run(consumer, turn, every, &stop))?)
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
    crate::scale::base_client(&mut c, &cfg.kafka);
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

    /// Writes the snapshot of each partition in `which` and commits the offsets they
    /// cover; failures are logged and counted, never fatal.
    fn save(&self, c: &BaseConsumer<Ctx>, parts: &mut HashMap<i32, Partition>, which: &[i32]) {
        let mut tpl = TopicPartitionList::new();
        for (&n, p) in parts.iter_mut().filter(|(n, _)| which.contains(n)) {
            // A failed write is logged and counted (`/readyz` 503); its offset is not
            // committed, so the partition resumes from the last good snapshot.
            if p.save(&self.shared.path(n), &self.shared.metrics).is_err() {
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
        crate::scale::librdkafka_log(level, fac, msg);
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

/// What the loop of one stage carries between records.
struct Turn {
    names: NameTable,
    feed: Feed,
    records: RecordCounters,
}

/// The consumer loop of one stage, until `stop`.
fn run(consumer: BaseConsumer<Ctx>, mut turn: Turn, every: Duration, stop: &AtomicBool) {
    let ctx = consumer.context();
    let mut last_save = Instant::now();
    let mut last_flush = Instant::now();
    let mut last_release = Instant::now();
    while !stop.load(Ordering::Acquire) {
        turn.feed.turn();
        let polled = consumer.poll(POLL);
        // One clock read per record: reading it for every step was 16 % of a worker's CPU.
        let now = Instant::now();
        match polled {
            Some(Ok(msg)) => record(ctx, &msg, &mut turn, now),
            Some(Err(e)) => tracing::warn!(%e, topic = %ctx.shared.topic, "worker: consumer error"),
            None => {}
        }
        // Other partitions' held events come due without records of their own.
        if now.saturating_duration_since(last_release) >= RELEASE_EVERY {
            last_release = now;
            for p in ctx.parts().values_mut() {
                p.release(&mut turn.names, &mut turn.feed, now);
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

/// One record: its partition (opened if new, restored if it moved on while away),
/// decoded, deduplicated by the marks, held, released.
fn record(ctx: &Ctx, msg: &BorrowedMessage<'_>, turn: &mut Turn, now: Instant) {
    let n = msg.partition();
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
            // Another worker consumed the partition while it was away from us: its
            // snapshot is newer than what we kept.
            tracing::info!(topic = %ctx.shared.topic, partition = n, "worker: partition moved on while away; restoring its snapshot");
            *p = ctx.shared.open(n, owned);
        }
    }
    p.next_offset = Some(msg.offset().saturating_add(1));
    match decoded {
        Err(e) => {
            turn.records.undecodable.inc();
            tracing::debug!(%e, partition = n, "worker: skipping an undecodable record");
        }
        Ok(w) if !p.admit(&w.id, w.event.time.as_millis()) => turn.records.duplicate.inc(),
        Ok(w) => {
            p.held.push(w.event.time.as_millis(), w, now);
            turn.records.applied.inc();
            p.release(&mut turn.names, &mut turn.feed, now);
        }
    }
}

/// Snapshots and commits every owned partition.
fn save_all(consumer: &BaseConsumer<Ctx>) {
    let ctx = consumer.context();
    let mut parts = ctx.parts();
    let which: Vec<i32> = parts.keys().copied().collect();
    ctx.save(consumer, &mut parts, &which);
}
