//! Where the worker's engines write: one detection file shared by every partition (lines
//! never interleave) and the detections topic, keyed by detection id, for the responder.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::config::Config;
use crate::detect::{Detection, DetectionSink, JsonlSink};

/// How long a detection record waits for room in the producer queue, and the final flush.
const SEND_WAIT: Duration = Duration::from_secs(10);

/// Where every partition's engine writes: one detection file (lines never interleave)
/// and the detections topic.
#[derive(Clone)]
pub(super) struct SharedSink {
    file: Arc<Mutex<JsonlSink>>,
    topic: Arc<DetectionsOut>,
}

impl SharedSink {
    /// Appends to the detections file at `path` and produces to `topics.detections`.
    pub(super) fn open(
        cfg: &Config,
        path: &std::path::Path,
    ) -> Result<SharedSink, super::WorkerError> {
        Ok(SharedSink {
            file: Arc::new(Mutex::new(JsonlSink::append(path)?)),
            topic: Arc::new(DetectionsOut::new(cfg)?),
        })
    }

    /// Waits for the detection records still on their way to the broker (at shutdown).
    pub(super) fn flush_topic(&self) {
        self.topic.flush();
    }

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
        crate::scale::librdkafka_log(level, fac, msg);
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
        crate::scale::base_client(&mut c, &cfg.kafka);
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
