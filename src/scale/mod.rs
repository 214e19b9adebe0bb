//! Scale-out on Kafka (DESIGN §14): the same binary runs one stage of the pipeline per
//! process, and the stages talk through topics.
//!
//! ```text
//!  edge (per gateway host)                Kafka                         workers (phase 2)
//!  tail ▶ parse ▶ enrich ▶ count ──▶ auth.by_token (key = keyed hash of token id) ──▶ group <prefix>-token
//!                               └──▶ auth.by_ip    (key = client IP / IPv6 net) ──▶ group <prefix>-ip
//!                                    detections (1 partition) ◀── workers ──▶ group <prefix>-respond
//! ```
//!
//! Phase 1: [`wire`] (the record and the message keys) and, with the `kafka` feature,
//! [`edge`] (the publishing pipeline thread) over [`publish`] (an idempotent librdkafka
//! producer whose delivery reports gate the tailer's checkpoints). Phase 2a: [`worker`]
//! (`role = "worker"`: consumers on both event topics, one engine per partition,
//! high-water-mark dedupe, partition snapshots committed with their offsets, detections
//! to the JSONL file and the detections topic; its module docs say what is left of the
//! seams below: the reorder buffer and the responder).
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
//! # Seams for phase 2 (workers, responder)
//! * **Decode**: a worker consumes `by_token` (group `<prefix>-token`) and `by_ip` (group
//!   `<prefix>-ip`) and calls [`wire::decode`] per message; a record that fails to decode is
//!   counted (proposed: `tokenwatch_kafka_records_total{result="undecodable"}`) and skipped, never
//!   fatal. `WireEvent::source_name` is mapped to a `SourceIdx` in the worker's own config
//!   (add unknown names to a name table: edges may have sources the worker's config lacks);
//!   the edge-local `event.source` index is informational only.
//! * **Partition state**: one [`crate::detect::Engine`] per assigned partition (built with
//!   `Engine::for_config`, the same detectors as `role = "all"`), so state moves with the
//!   partition. On assignment: restore the partition's snapshot (`Engine::restore`) from
//!   `state.dir/kafka/<topic>-<partition>.json` (or a compacted state topic) and seek to the
//!   offset stored beside it; on revoke and periodically: `EventSink::snapshot` + the next
//!   offset, written with [`crate::durable::write_atomic`], then commit. The token topic's
//!   engine runs the per-token detectors (rate_spike, impossible_travel, ip_fanout,
//!   off_hours, revoked_reuse), the IP topic's the per-IP ones (brute_force, token_spray,
//!   distributed_spray); `rejection_ratio` is global and stays with the edge's counters
//!   (Prometheus computes it from `sum by (source)`) or runs on one designated partition.
//! * **Reorder**: edges are not ordered against each other; feed each partition's engine
//!   through a small event-time reorder buffer (hold events for `reorder_ms`, release in
//!   time order) so windows see one order.
//! * **Dedupe by event id**: per partition keep, for each `(edge, file)`, the highest
//!   offset applied (the high-water mark, saved in the partition snapshot with the state it
//!   produced). An event at or below the mark is a duplicate (edge re-publish after a crash,
//!   or a consumer re-read after a worker crash) and is dropped before the engine sees it, so
//!   state updates are effectively once. Marks of files not seen for a day are pruned. The
//!   reorder buffer dedupes by exact id too, since out-of-order resends can put a duplicate
//!   above the mark.
//! * **Detections**: each worker's engine gets a sink that produces the detection record
//!   (JSON, DESIGN §7) to `topics.detections` keyed by the detection id; the responder
//!   (group `<prefix>-respond`, one partition so one active member) runs the existing
//!   [`crate::respond`] policy, journal and hooks with the detection id as idempotency key.
//! * **Role dispatch**: `cli::run` picks the pipeline thread by [`crate::config::Role`];
//!   a worker replaces the tailer + pipeline pair with a consumer loop and keeps the HTTP
//!   server for `/metrics` (`tokenwatch_partitions_owned`, consumer lag; drop a partition's
//!   series when it is revoked).

pub mod reorder;
pub mod wire;

#[cfg(feature = "kafka")]
pub mod edge;
#[cfg(feature = "kafka")]
pub mod publish;
#[cfg(feature = "kafka")]
pub mod responder;
#[cfg(feature = "kafka")]
pub mod worker;

/// True when the linked librdkafka can speak TLS (not in the default build, which has no
/// OpenSSL; a build with `--features rdkafka/ssl-vendored` can).
pub fn broker_tls_available() -> bool {
    #[cfg(feature = "kafka")]
    {
        rdkafka::ClientConfig::new()
            .create_native_config()
            .and_then(|c| c.get("builtin.features"))
            .is_ok_and(|f| f.split(',').any(|x| x == "ssl"))
    }
    #[cfg(not(feature = "kafka"))]
    {
        false
    }
}
