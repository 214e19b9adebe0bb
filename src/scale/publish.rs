//! The edge's producer: an idempotent librdkafka producer polled on the pipeline thread,
//! and the bookkeeping that turns delivery reports into in-order batch acks.
//!
//! Nothing here blocks except [`Publisher::pump`], which waits on librdkafka's event queue
//! for at most the time it is given. A message that cannot be queued (queue full) or whose
//! delivery failed is kept in a resend queue, in order, and sent again by `pump`; the edge
//! reads no new batch while that queue is not empty.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::source::Ack;

/// Which event topic a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// `topics.by_token`.
    ByToken,
    /// `topics.by_ip`.
    ByIp,
}

/// The `result` label values of `tokenwatch_kafka_messages_total`.
const RESULTS: [&str; 3] = ["delivered", "failed", "queue_full"];

impl Topic {
    /// Both topics, in the order of their discriminants.
    const ALL: [Topic; 2] = [Topic::ByToken, Topic::ByIp];

    fn label(self) -> &'static str {
        match self {
            Topic::ByToken => "by_token",
            Topic::ByIp => "by_ip",
        }
    }
}

/// Why the producer could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// librdkafka refused the configuration.
    #[error("kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    /// The metric families could not be registered.
    #[error("kafka metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Producer metrics, registered for the life of one publisher.
#[derive(Clone)]
struct PublishMetrics {
    /// `tokenwatch_kafka_messages_total{topic, result}`: delivered | failed | queue_full.
    messages: IntCounterVec,
    /// Its series, resolved once: `[topic][result]` in [`Topic::ALL`] × [`RESULTS`] order
    /// (a label lookup per delivery report cost 2 % of the edge's CPU).
    series: [[IntCounter; 3]; 2],
    /// `tokenwatch_kafka_queue_messages`: in the producer plus waiting to be sent again.
    queue: IntGauge,
    /// `tokenwatch_kafka_pending_batches`: read batches whose ack waits on deliveries.
    pending: IntGauge,
}

impl PublishMetrics {
    fn register(m: &Metrics) -> Result<Self, prometheus::Error> {
        let messages = IntCounterVec::new(
            Opts::new(
                "tokenwatch_kafka_messages_total",
                "Event messages by topic and result: delivered, failed (sent again), queue_full (attempts the full producer queue refused)",
            ),
            &["topic", "result"],
        )?;
        let queue = IntGauge::new(
            "tokenwatch_kafka_queue_messages",
            "Messages in the producer queue or waiting to be sent again",
        )?;
        let pending = IntGauge::new(
            "tokenwatch_kafka_pending_batches",
            "Batches of lines read but not yet acknowledged by the broker",
        )?;
        let r = m.registry();
        r.register(Box::new(messages.clone()))?;
        r.register(Box::new(queue.clone()))?;
        r.register(Box::new(pending.clone()))?;
        let series =
            Topic::ALL.map(|t| RESULTS.map(|r| messages.with_label_values(&[t.label(), r])));
        Ok(PublishMetrics {
            messages,
            series,
            queue,
            pending,
        })
    }

    fn unregister(&self, m: &Metrics) {
        let r = m.registry();
        let _ = r.unregister(Box::new(self.messages.clone()));
        let _ = r.unregister(Box::new(self.queue.clone()));
        let _ = r.unregister(Box::new(self.pending.clone()));
    }

    fn count(&self, topic: Topic, result: &str, n: u64) {
        match RESULTS.iter().position(|x| *x == result) {
            Some(r) => self.series[topic as usize][r].inc_by(n),
            None => self
                .messages
                .with_label_values(&[topic.label(), result])
                .inc_by(n),
        }
    }
}

/// A message waiting to be sent (again).
struct Resend {
    topic: Topic,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    batch: u64,
}

/// One read batch: how many of its messages are not yet delivered, and its ack.
struct Pending {
    outstanding: u64,
    closed: bool,
    ack: Option<Ack>,
}

/// Batches in read order and the resend queue.
#[derive(Default)]
struct Tracker {
    batches: VecDeque<Pending>,
    /// Sequence number of `batches[0]`.
    first: u64,
    resend: VecDeque<Resend>,
}

impl Tracker {
    /// Removes the leading run of complete batches and returns their acks, oldest first:
    /// a batch whose messages are all delivered still waits for every earlier batch.
    fn take_ready(&mut self) -> Vec<Ack> {
        let mut done = Vec::new();
        while self
            .batches
            .front()
            .is_some_and(|p| p.closed && p.outstanding == 0)
        {
            if let Some(p) = self.batches.pop_front() {
                done.extend(p.ack);
            }
            self.first += 1;
        }
        done
    }

    fn batch_mut(&mut self, seq: u64) -> Option<&mut Pending> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.batches.get_mut(i)
    }
}

/// The librdkafka context: delivery reports land here (on the thread that polls).
struct Ctx {
    tracker: Mutex<Tracker>,
    metrics: PublishMetrics,
    topics: [String; 2],
}

impl Ctx {
    fn lock(&self) -> MutexGuard<'_, Tracker> {
        // Only the pipeline thread takes this lock; poisoning would mean it panicked.
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn topic_of(&self, name: &str) -> Topic {
        if name == self.topics[0] {
            Topic::ByToken
        } else {
            Topic::ByIp
        }
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        super::librdkafka_log(level, fac, msg);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Connection failures are already in librdkafka's own log lines above; librdkafka
        // retries by itself and back-pressure does the rest.
        let transport = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
        );
        if transport {
            tracing::debug!(%error, "kafka: {reason}");
        } else {
            tracing::warn!(%error, "kafka: {reason}");
        }
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: usize) {
        let batch = batch as u64;
        match result {
            Ok(m) => {
                let topic = self.topic_of(m.topic());
                self.metrics.count(topic, "delivered", 1);
                if let Some(p) = self.lock().batch_mut(batch) {
                    p.outstanding = p.outstanding.saturating_sub(1);
                }
            }
            Err((e, _)) if is_purge(e) => {
                // The producer is being dropped at shutdown: these lines are read again at
                // the next start, as their batches were never acked.
            }
            Err((e, m)) => {
                let topic = self.topic_of(m.topic());
                self.metrics.count(topic, "failed", 1);
                tracing::warn!(error = %e, topic = m.topic(), "delivery failed; sending again");
                self.lock().resend.push_back(Resend {
                    topic,
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    batch,
                });
            }
        }
    }
}

fn is_purge(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
    )
}

/// The edge's producer and its delivery bookkeeping.
pub struct Publisher {
    producer: BaseProducer<Ctx>,
    topics: [String; 2],
    metrics: Metrics,
}

/// Builds the librdkafka configuration for the edge's producer.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("enable.idempotence", "true")
        // Where Java clients put keys, so other producers and consumers agree.
        .set("partitioner", "murmur2_random")
        // The log file is the buffer: a message waits for the broker as long as it takes
        // (the queue limits stop reading meanwhile).
        .set("message.timeout.ms", "2147483647")
        .set(
            "queue.buffering.max.messages",
            cfg.producer.queue_messages.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            cfg.producer.queue_kbytes.to_string(),
        )
        .set("linger.ms", cfg.producer.linger_ms.to_string());
    // The pass-through options last: they win over the defaults above (the loader refuses
    // the keys tokenwatch must own).
    super::base_client(&mut c, cfg);
    c
}

impl Publisher {
    /// Creates the producer (it connects in the background) and registers its metrics.
    pub fn new(cfg: &KafkaConfig, metrics: &Metrics) -> Result<Publisher, PublishError> {
        let pm = PublishMetrics::register(metrics)?;
        let topics = [cfg.topics.by_token.clone(), cfg.topics.by_ip.clone()];
        let ctx = Ctx {
            tracker: Mutex::new(Tracker::default()),
            metrics: pm.clone(),
            topics: topics.clone(),
        };
        match client_config(cfg).create_with_context(ctx) {
            Ok(producer) => Ok(Publisher {
                producer,
                topics,
                metrics: metrics.clone(),
            }),
            Err(e) => {
                pm.unregister(metrics);
                Err(e.into())
            }
        }
    }

    fn ctx(&self) -> &Ctx {
        self.producer.context()
    }

    /// Starts tracking a batch; its ack is released once every message given to
    /// [`Self::send`] under the returned number is delivered and the batch is closed.
    pub fn begin_batch(&self, ack: Option<Ack>) -> u64 {
        let mut t = self.ctx().lock();
        t.batches.push_back(Pending {
            outstanding: 0,
            closed: false,
            ack,
        });
        t.first + t.batches.len() as u64 - 1
    }

    /// No more messages for `batch`.
    pub fn end_batch(&self, batch: u64) {
        if let Some(p) = self.ctx().lock().batch_mut(batch) {
            p.closed = true;
        }
    }

    /// Queues one message; never blocks. When the producer queue is full (or earlier
    /// messages wait to be sent again) it joins the resend queue.
    pub fn send(&self, topic: Topic, key: Option<&[u8]>, payload: &[u8], batch: u64) {
        let waiting = {
            let mut t = self.ctx().lock();
            if let Some(p) = t.batch_mut(batch) {
                p.outstanding += 1;
            }
            !t.resend.is_empty()
        };
        if waiting || self.try_send(topic, key, payload, batch).is_err() {
            self.ctx().lock().resend.push_back(Resend {
                topic,
                key: key.map(<[u8]>::to_vec),
                payload: payload.to_vec(),
                batch,
            });
        }
    }

    /// One produce call; `Err` when it was not queued.
    fn try_send(
        &self,
        topic: Topic,
        key: Option<&[u8]>,
        payload: &[u8],
        batch: u64,
    ) -> Result<(), ()> {
        let name = match topic {
            Topic::ByToken => &self.topics[0],
            Topic::ByIp => &self.topics[1],
        };
        let mut rec =
            BaseRecord::<[u8], [u8], usize>::with_opaque_to(name, batch as usize).payload(payload);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        match self.producer.send(rec) {
            Ok(()) => Ok(()),
            Err((e, _)) => {
                let full = e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull);
                let result = if full { "queue_full" } else { "failed" };
                self.ctx().metrics.count(topic, result, 1);
                if !full {
                    tracing::warn!(error = %e, topic = %name, "cannot queue a message; will retry");
                }
                Err(())
            }
        }
    }

    /// Serves delivery reports for up to `wait`, sends queued resends in order, releases
    /// the acks of completed batches (in read order) and updates the gauges.
    pub fn pump(&self, wait: Duration) {
        self.producer.poll(wait);
        self.resend();
        self.release_acks();
        let (backlog, pending) = {
            let t = self.ctx().lock();
            (t.resend.len(), t.batches.len())
        };
        let m = &self.ctx().metrics;
        m.queue
            .set(i64::from(self.producer.in_flight_count()) + backlog as i64);
        m.pending.set(pending as i64);
    }

    fn resend(&self) {
        loop {
            let Some(r) = self.ctx().lock().resend.pop_front() else {
                return;
            };
            if self
                .try_send(r.topic, r.key.as_deref(), &r.payload, r.batch)
                .is_err()
            {
                self.ctx().lock().resend.push_front(r);
                return;
            }
        }
    }

    fn release_acks(&self) {
        let done = self.ctx().lock().take_ready();
        for ack in done {
            ack.ack();
        }
    }

    /// Messages waiting to be sent again (the edge reads nothing new while this is not 0).
    pub fn backlog(&self) -> usize {
        self.ctx().lock().resend.len()
    }

    /// Batches not yet acknowledged.
    pub fn pending_batches(&self) -> usize {
        self.ctx().lock().batches.len()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.ctx().metrics.unregister(&self.metrics);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    fn open(t: &mut Tracker, outstanding: u64, end: u64, cell: &Arc<AtomicU64>) {
        t.batches.push_back(Pending {
            outstanding,
            closed: true,
            ack: Some(Ack::new(Arc::clone(cell), end)),
        });
    }

    #[test]
    fn acks_are_released_in_read_order_only() {
        let cell = Arc::new(AtomicU64::new(0));
        let mut t = Tracker::default();
        open(&mut t, 1, 100, &cell);
        open(&mut t, 0, 200, &cell);
        assert!(t.take_ready().is_empty(), "batch 1 must wait for batch 0");
        t.batch_mut(0).unwrap().outstanding = 0;
        t.batches.push_back(Pending {
            outstanding: 0,
            closed: false,
            ack: None,
        });
        let acks = t.take_ready();
        assert_eq!(acks.len(), 2);
        for a in acks {
            a.ack();
        }
        assert_eq!(cell.load(Ordering::Acquire), 200);
        assert_eq!((t.first, t.batches.len()), (2, 1), "an open batch stays");
        assert!(t.batch_mut(1).is_none() && t.batch_mut(2).is_some());
    }
}
