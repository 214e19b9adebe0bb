//! Scale-out on Kafka (DESIGN §14): the same binary runs one stage of the pipeline per
//! process, and the stages talk through topics.
//!
//! ```text
//!  edge (per gateway host)                Kafka                         workers
//!  tail ▶ parse ▶ enrich ▶ count ──▶ auth.by_token (key = keyed hash of token id) ──▶ group <prefix>-token
//!                               │                  tokens.known (first acceptances) ◀─┘ │
//!                               └──▶ auth.by_ip    (key = client IP / IPv6 net) ──▶ group <prefix>-ip ◀┘
//!                                                                  └──▶ group <prefix>-global (one elected worker)
//!                                    detections (1 partition) ◀── workers ──▶ group <prefix>-respond
//! ```
//!
//! [`wire`] is the record and the message keys; with the `kafka` feature, [`edge`] is the
//! publishing pipeline thread over [`publish`] (an idempotent librdkafka producer whose
//! delivery reports gate the tailer's checkpoints), [`worker`] consumes both event topics
//! (one engine per partition, [`reorder`] buffer, high-water-mark dedupe, partition
//! snapshots committed with their offsets; the global stage, one elected worker reading
//! every `by_ip` partition for distributed_spray and rejection_ratio; the known-tokens
//! feed from the token stage to the IP stages) and [`responder`] runs the response policy
//! for the whole cluster (one active member of the detections group, standbys waiting).
//!
//! # Guarantees of the edge
//! * Checks and rejections are counted at the edge only (the same `Pipeline` as
//!   `role = "all"`), so `sum by (source)` over all edges is the fleet's total.
//! * A batch's [`Ack`](crate::source::Ack) is released only when every message of that
//!   batch *and of every earlier batch* has a successful delivery report, so the file
//!   checkpoint never passes an undelivered line. A failed delivery is sent again, never
//!   dropped; while anything waits to be sent again, or the producer queue is full, the edge
//!   reads no further (the log file is the buffer).
//! * Delivery is at-least-once: after a crash or a shutdown that outlived
//!   `[kafka.producer] flush_timeout_ms`, lines after the checkpoint are published again with
//!   the same [`wire::EventId`]. App-level resends after a failed delivery may also reorder
//!   messages within a partition. Both are what the worker's dedupe and reorder buffer absorb.
//!
//! # Guarantees of the worker and the responder
//! See [`worker`] (exactly-once state over at-least-once delivery, the reorder buffer) and
//! [`responder`] (takeover under a state-directory lock, dedupe by detection id).

pub mod reorder;
pub mod wire;

#[cfg(feature = "kafka")]
pub mod edge;
#[cfg(feature = "kafka")]
pub mod frozen_topic;
#[cfg(feature = "kafka")]
pub mod publish;
#[cfg(feature = "kafka")]
pub mod responder;
#[cfg(feature = "kafka")]
pub mod worker;

/// Sets `bootstrap.servers` and the `[kafka.options]` pass-through properties (their
/// `env:`/`file:` values resolved) on `c`; callers set their own properties before or
/// after, which decides who wins a key both set.
#[cfg(feature = "kafka")]
pub(crate) fn base_client(c: &mut rdkafka::ClientConfig, k: &crate::config::KafkaConfig) {
    c.set("bootstrap.servers", k.brokers.join(","));
    for (key, v) in &k.options {
        if let Some(v) = v.expose() {
            c.set(key, v);
        }
    }
}

/// Takes the exclusive lock on `path` without waiting; `holder` names who else may hold
/// it (for the message while it is held). The lock dies with the process, `kill -9`
/// included.
#[cfg(feature = "kafka")]
pub(crate) fn take_lock(path: &std::path::Path, holder: &str) -> Result<std::fs::File, String> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "{} is held by {holder} on this state directory (waiting for it to stop)",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}

/// librdkafka's log lines into ours. `[kafka.options]` go to every client a role builds,
/// so librdkafka's notes that a consumer property means nothing to a producer (and the
/// reverse) are expected and logged at debug, not as warnings.
#[cfg(feature = "kafka")]
pub(crate) fn librdkafka_log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    let not_for_this_client = fac == "CONFWARN" && msg.contains("will be ignored by this");
    match level {
        _ if not_for_this_client => tracing::debug!(fac, "librdkafka: {msg}"),
        L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!(fac, "librdkafka: {msg}"),
        L::Warning => tracing::warn!(fac, "librdkafka: {msg}"),
        L::Notice | L::Info => tracing::info!(fac, "librdkafka: {msg}"),
        L::Debug => tracing::debug!(fac, "librdkafka: {msg}"),
    }
}
