//! The `frozen` topic (`[kafka.topics] frozen`): how a freeze decided by the responder is
//! enforced by every edge's `/authz` and deny file.
//!
//! ```text
//! responder: FrozenSet ─▶ FrozenView ─▶ Publisher ──▶ frozen (compacted)  key = token id / fp:…
//!                                                         │              value = Deny JSON, tombstone = unfreeze
//! edge (each gateway host): Follower ◀────────────────────┘ ─▶ FrozenView ─▶ /authz, deny file
//! ```
//!
//! * The [`Publisher`] runs while its responder is active. It first reads the topic to its
//!   end (what was published before, by it or a predecessor), then after every change of
//!   the view publishes the difference: an upsert per new or changed entry, a tombstone per
//!   entry gone (unfreeze, TTL). A round counts as done only when every message of it was
//!   delivered; otherwise the whole difference is sent again a second later (an upsert or
//!   a tombstone sent twice is harmless on a compacted topic).
//! * A [`Follower`] reads every partition from the beginning, not in a consumer group (each
//!   edge needs the whole set). Its view is loaded once its position reached the high-water
//!   mark of every partition, which the edge's `/readyz` and `/authz` wait for; it is then
//!   marked in sync whenever a watermark check finds it at the end (every second), so
//!   `tokenwatch_authz_snapshot_age_seconds` grows while the broker is out of reach.
//! * Only ids and fingerprints travel: the frozen set never holds a raw token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::config::Config;
use crate::event::EventTime;
use crate::metrics::{KafkaMetrics, Metrics, RecordCounters};
use crate::respond::{Deny, FrozenView};

/// How often a follower checks it is at the end of the topic.
const WATERMARK_EVERY: Duration = Duration::from_secs(1);
/// How long one poll waits for a record.
const POLL: Duration = Duration::from_millis(100);
/// Broker round trips (metadata, watermarks).
const BROKER_WAIT: Duration = Duration::from_secs(5);
/// Pause before trying again after the topic was missing or a round failed.
const RETRY: Duration = Duration::from_secs(1);
/// How long a publishing round may wait for its deliveries.
const FLUSH_WAIT: Duration = Duration::from_secs(10);
/// The `topic` label of the frozen topic's series.
const TOPIC_LABEL: &str = "frozen";

/// Why the frozen topic's reader or writer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrozenTopicError {
    /// A client could not be built.
    #[error("Kafka client for the frozen topic: {0}")]
    Kafka(#[from] KafkaError),
    /// The metrics could not be registered.
    #[error("frozen topic metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The thread could not start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads the whole topic into a view.
struct Reader {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
    counters: RecordCounters,
}

impl Reader {
    fn new(cfg: &Config, who: &str, counters: RecordCounters) -> Result<Reader, KafkaError> {
        let mut c = ClientConfig::new();
        // Never committed: each reader starts from the beginning; the group id only
        // names the client in the broker's logs.
        c.set("group.id", cfg.kafka.group_id(&format!("frozen-{who}")))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // A freeze must reach the gateways within a second: the broker answers a fetch
            // at once when a record arrives, but librdkafka's default lets it wait 500 ms.
            .set("fetch.wait.max.ms", "100");
        super::base_client(&mut c, &cfg.kafka);
        Ok(Reader {
            consumer: c.create()?,
            topic: cfg.kafka.topics.frozen.clone(),
            partitions: Vec::new(),
            counters,
        })
    }

    /// Assigns every partition from the beginning; false while the topic does not exist.
    fn assign(&mut self) -> Result<bool, KafkaError> {
        let md = self
            .consumer
            .fetch_metadata(Some(&self.topic), BROKER_WAIT)?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if parts.is_empty() {
            return Ok(false);
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &parts {
            tpl.add_partition_offset(&self.topic, p, Offset::Beginning)?;
        }
        self.consumer.assign(&tpl)?;
        self.partitions = parts;
        Ok(true)
    }

    /// Applies what one poll brings; true if a record came.
    fn poll_into(&self, view: &FrozenView, wait: Duration) -> bool {
        match self.consumer.poll(wait) {
            None => false,
            Some(Err(e)) => {
                tracing::debug!(%e, "polling the frozen topic");
                false
            }
            Some(Ok(m)) => {
                let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
                match (key, m.payload()) {
                    (Some(k), None) => {
                        view.remove(k);
                        self.counters.applied.inc();
                    }
                    (Some(k), Some(v)) => match serde_json::from_slice::<Deny>(v) {
                        Ok(d) => {
                            view.upsert(k, d);
                            self.counters.applied.inc();
                        }
                        Err(_) => self.counters.undecodable.inc(),
                    },
                    (None, _) => self.counters.undecodable.inc(),
                }
                true
            }
        }
    }

    /// True when the position is at the high-water mark of every partition.
    fn at_end(&self) -> Result<bool, KafkaError> {
        let pos = self.consumer.position()?;
        for &p in &self.partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p, BROKER_WAIT)?;
            let at = pos
                .find_partition(&self.topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let done = match at {
                Some(o) => o >= high,
                None => low >= high,
            };
            if !done {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Assigns (retrying while the topic is missing), then reads until the end or `stop`;
    /// true when it reached the end.
    fn catch_up(&mut self, view: &FrozenView, stop: &AtomicBool) -> bool {
        let mut warned = false;
        let mut last_check: Option<Instant> = None;
        while !stop.load(Ordering::Acquire) {
            if self.partitions.is_empty() {
                match self.assign() {
                    Ok(true) => {}
                    r => {
                        if !warned {
                            warned = true;
                            tracing::warn!(topic = %self.topic, error = ?r.err().map(|e| e.to_string()), "the frozen topic is not there yet (create it compacted); retrying");
                        }
                        std::thread::sleep(RETRY);
                        continue;
                    }
                }
            }
            let got = self.poll_into(view, POLL);
            // While records keep coming there is more to read; check the end when quiet.
            if got && last_check.is_some_and(|t| t.elapsed() < Duration::from_millis(200)) {
                continue;
            }
            last_check = Some(Instant::now());
            if matches!(self.at_end(), Ok(true)) {
                // Apply what is already fetched too: some brokers (tansu 0.6) report the
                // high-water mark as the last batch's first offset + 1.
                while self.poll_into(view, Duration::ZERO) {}
                return true;
            }
        }
        false
    }
}

/// The edge's copy of the frozen set, kept current from the topic.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Follower {
    /// Starts reading the topic into `view` (marked loaded once read to the end).
    pub fn start(
        cfg: &Config,
        view: FrozenView,
        metrics: &Metrics,
    ) -> Result<Follower, FrozenTopicError> {
        let counters = KafkaMetrics::register(metrics)?.records(TOPIC_LABEL);
        let mut reader = Reader::new(cfg, "edge", counters)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("frozen-follow".into())
            .spawn(move || follow(&mut reader, &view, &s))?;
        Ok(Follower { stop, thread })
    }

    /// Stops reading.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        if self.thread.join().is_err() {
            tracing::error!("the frozen-topic follower panicked");
        }
    }
}

fn follow(reader: &mut Reader, view: &FrozenView, stop: &AtomicBool) {
    let t0 = Instant::now();
    if !reader.catch_up(view, stop) {
        return;
    }
    view.mark_synced(EventTime::now().as_millis());
    tracing::info!(
        entries = view.len(),
        ms = t0.elapsed().as_millis() as u64,
        "frozen set read from the topic; /authz answers"
    );
    let mut last_check = Instant::now();
    while !stop.load(Ordering::Acquire) {
        reader.poll_into(view, POLL);
        if last_check.elapsed() >= WATERMARK_EVERY {
            last_check = Instant::now();
            match reader.at_end() {
                Ok(true) => view.mark_synced(EventTime::now().as_millis()),
                Ok(false) => {}
                Err(e) => tracing::debug!(%e, "checking the frozen topic's end"),
            }
        }
    }
}

/// Counts failed deliveries, so a round knows whether all of it arrived.
struct Ctx {
    failed: AtomicU64,
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if r.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The active responder's writer of the topic.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Publisher {
    /// Starts publishing the changes of `view` (after reading what the topic holds).
    pub fn start(
        cfg: &Config,
        view: FrozenView,
        metrics: &Metrics,
    ) -> Result<Publisher, FrozenTopicError> {
        let counters = KafkaMetrics::register(metrics)?.records(TOPIC_LABEL);
        let reader = Reader::new(cfg, "responder", counters)?;
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        super::base_client(&mut c, &cfg.kafka);
        let producer: BaseProducer<Ctx> = c.create_with_context(Ctx {
            failed: AtomicU64::new(0),
        })?;
        let topic = cfg.kafka.topics.frozen.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("frozen-publish".into())
            .spawn(move || publish(reader, producer, &topic, &view, &s))?;
        Ok(Publisher { stop, thread })
    }

    /// Stops publishing (a round in flight finishes first).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        if self.thread.join().is_err() {
            tracing::error!("the frozen-topic publisher panicked");
        }
    }
}

fn publish(
    mut reader: Reader,
    producer: BaseProducer<Ctx>,
    topic: &str,
    view: &FrozenView,
    stop: &AtomicBool,
) {
    let topic_view = FrozenView::new();
    if !reader.catch_up(&topic_view, stop) {
        return;
    }
    drop(reader);
    let mut published: HashMap<String, Deny> = topic_view.entries().into_iter().collect();
    tracing::info!(
        entries = published.len(),
        "frozen topic read; publishing changes"
    );
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(%e, "frozen-topic publisher: no runtime; freezes are not published");
            return;
        }
    };
    let mut changes = view.subscribe();
    let mut retry = false;
    while !stop.load(Ordering::Acquire) {
        // Wake on a change, or every RETRY to look at `stop` and retry a failed round.
        let changed =
            rt.block_on(async { tokio::time::timeout(RETRY, changes.changed()).await.is_ok() });
        if !(changed || retry) {
            continue;
        }
        changes.mark_unchanged();
        retry = !round(&producer, topic, view, &mut published);
    }
}

/// Publishes the difference between `view` and `published`; true when all of it was
/// delivered (and `published` now matches).
fn round(
    producer: &BaseProducer<Ctx>,
    topic: &str,
    view: &FrozenView,
    published: &mut HashMap<String, Deny>,
) -> bool {
    let now: HashMap<String, Deny> = view.entries().into_iter().collect();
    let failed_before = producer.context().failed.load(Ordering::Relaxed);
    let mut sent = 0usize;
    for (k, d) in &now {
        if published.get(k) == Some(d) {
            continue;
        }
        let body = serde_json::to_vec(d).unwrap_or_default();
        send(
            producer,
            BaseRecord::to(topic)
                .key(k.as_bytes())
                .payload(body.as_slice()),
        );
        sent += 1;
    }
    for k in published.keys().filter(|k| !now.contains_key(*k)) {
        send(
            producer,
            BaseRecord::<[u8], [u8]>::to(topic).key(k.as_bytes()),
        );
        sent += 1;
    }
    if sent == 0 {
        return true;
    }
    let flushed = producer.flush(FLUSH_WAIT);
    let failed = producer.context().failed.load(Ordering::Relaxed) != failed_before;
    if flushed.is_err() || failed {
        tracing::warn!(
            sent,
            "publishing to the frozen topic failed; retrying in 1 s"
        );
        return false;
    }
    tracing::debug!(sent, "frozen topic updated");
    *published = now;
    true
}

/// Queues one record, serving delivery reports while the queue is full.
fn send<'a>(producer: &BaseProducer<Ctx>, mut rec: BaseRecord<'a, [u8], [u8]>) {
    loop {
        match producer.send(rec) {
            Ok(()) => return,
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                rec = r;
                producer.poll(Duration::from_millis(100));
            }
            Err((e, _)) => {
                // Counted as a failed delivery, so the round is retried.
                tracing::warn!(%e, "queueing a frozen-topic record");
                producer.context().failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}
