//! The Prometheus registry and typed metric handles.
//!
//! Handles are resolved once per source at build time (labels come from config and closed
//! enums, never from log input), and the pipeline counts into plain integers that it flushes
//! once per batch, so the per-line cost is an integer add.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::event::Reason;

/// Result label of `tokenwatch_lines_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineResult {
    /// Parsed into a token check.
    Parsed,
    /// Well-formed but not a token check.
    Skipped,
    /// Could not be parsed (counted by reason in `tokenwatch_malformed_lines_total`).
    Malformed,
}

impl LineResult {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            LineResult::Parsed => "parsed",
            LineResult::Skipped => "skipped",
            LineResult::Malformed => "malformed",
        }
    }
}

/// Reason label of `tokenwatch_source_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue between the socket and the pipeline was full (the pipeline is behind).
    QueueFull,
    /// Over `max_line_bytes` (a datagram, or a TCP frame, which also closes the connection).
    TooLong,
    /// Not syslog (no `<PRI>`), or a broken TCP frame header.
    Malformed,
    /// A TCP connection over `max_connections`, closed at once (counts connections).
    ConnectionLimit,
}

impl DropReason {
    /// Every reason, for the zero-valued series.
    pub const ALL: [DropReason; 4] = [
        DropReason::QueueFull,
        DropReason::TooLong,
        DropReason::Malformed,
        DropReason::ConnectionLimit,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::TooLong => "too_long",
            DropReason::Malformed => "malformed",
            DropReason::ConnectionLimit => "connection_limit",
        }
    }
}

/// Every metric family tokenwatch exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    checks: IntCounterVec,
    rejected: IntCounterVec,
    lines: IntCounterVec,
    malformed: IntCounterVec,
    skipped_by: IntCounterVec,
    too_long: IntCounterVec,
    lag_bytes: IntGaugeVec,
    rotations: IntCounterVec,
    files_opened: IntCounterVec,
    read_errors: IntCounterVec,
    dropped: IntCounterVec,
    /// Unix time of the last successful checkpoint write.
    pub checkpoint_last_success: IntGauge,
    /// Failed checkpoint writes.
    pub checkpoint_failures: IntCounter,
    /// Wall clock minus event time, sampled once per batch.
    pub event_lag: Histogram,
    reloads: IntCounterVec,
    /// `tokenwatch_detections_total{detector,severity}`.
    pub detections: IntCounterVec,
    /// `tokenwatch_tracked_entities{kind}`: live per-key state entries (token, ip, ...).
    pub tracked: IntGaugeVec,
    /// `tokenwatch_evictions_total{kind}`: state entries dropped to stay within the caps.
    pub evictions: IntCounterVec,
    /// `tokenwatch_late_events_total`: events older than the reorder tolerance.
    pub late_events: IntCounter,
    /// `tokenwatch_actions_total{action,hook,result}`.
    pub actions: IntCounterVec,
    /// `tokenwatch_frozen_tokens`: tokens currently frozen.
    pub frozen_tokens: IntGauge,
    /// `tokenwatch_hook_duration_seconds{hook}`.
    pub hook_duration: prometheus::HistogramVec,
    /// `tokenwatch_hook_queue_depth`: actions waiting for a hook.
    pub hook_queue_depth: IntGauge,
    /// `tokenwatch_freeze_breaker_open`: 1 while the freeze rate cap suppresses freezes.
    pub breaker_open: IntGauge,
    state_errors: IntCounterVec,
    /// State files whose last write failed, with the error (drives `/readyz`).
    unwritable: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<StateFile, String>>>,
    /// The Kafka roles' families, once registered (see [`KafkaMetrics::register`]).
    kafka: std::sync::Arc<std::sync::Mutex<Option<KafkaMetrics>>>,
}

/// The state files of `tokenwatch_state_file_errors_total{file}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateFile {
    /// Tailer checkpoints (`checkpoints.json`).
    Checkpoints,
    /// The detector snapshot (`detect-snapshot.json`).
    DetectSnapshot,
    /// The frozen set (`frozen.json`).
    Frozen,
    /// The response journal (`response-journal.jsonl`).
    Journal,
    /// The state directory itself (the periodic write probe).
    Dir,
}

impl StateFile {
    /// Every state file, for the zero-valued series.
    pub const ALL: [StateFile; 5] = [
        StateFile::Checkpoints,
        StateFile::DetectSnapshot,
        StateFile::Frozen,
        StateFile::Journal,
        StateFile::Dir,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            StateFile::Checkpoints => "checkpoints",
            StateFile::DetectSnapshot => "detect_snapshot",
            StateFile::Frozen => "frozen",
            StateFile::Journal => "journal",
            StateFile::Dir => "state_dir",
        }
    }
}

/// Kinds of per-key state the engine itself keeps (`tokenwatch_tracked_entities{kind}`):
/// learned tokens and cooldown entries; each self-contained detector adds its own name
/// ([`Metrics::register_detector`]).
pub const ENTITY_KINDS: [&str; 2] = ["token", "cooldown"];

/// Detection severities.
pub const SEVERITIES: [&str; 3] = ["low", "medium", "high"];

/// Registration cannot fail for the fixed, distinct names below; a failure is a programming
/// error caught by the unit test, so it panics with the metric's name.
fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric registration: {e}"));
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    reg(r, c)
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    reg(r, g)
}

impl Metrics {
    /// Builds and registers every family (plus process metrics and build info).
    pub fn new() -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            checks: counter_vec(
                &r,
                "auth_token_check_total",
                "Token checks seen in auth logs.",
                &["source"],
            ),
            rejected: counter_vec(
                &r,
                "auth_token_rejected_total",
                "Token checks that were rejected, by reason.",
                &["source", "reason"],
            ),
            lines: counter_vec(
                &r,
                "tokenwatch_lines_total",
                "Log lines read, by parse result.",
                &["source", "result"],
            ),
            skipped_by: counter_vec(
                &r,
                "tokenwatch_skipped_lines_total",
                "Lines skipped as recognisably not access lines (error logs, server messages), by reason.",
                &["source", "reason"],
            ),
            malformed: counter_vec(
                &r,
                "tokenwatch_malformed_lines_total",
                "Lines that could not be parsed, by reason.",
                &["source", "reason"],
            ),
            too_long: counter_vec(
                &r,
                "tokenwatch_lines_too_long_total",
                "Lines over max_line_bytes, dropped.",
                &["source"],
            ),
            lag_bytes: gauge_vec(
                &r,
                "tokenwatch_source_lag_bytes",
                "Bytes written to a source's files but not yet read.",
                &["source"],
            ),
            rotations: counter_vec(
                &r,
                "tokenwatch_file_rotations_total",
                "File rotations and truncations seen.",
                &["source", "kind"],
            ),
            files_opened: counter_vec(
                &r,
                "tokenwatch_files_opened_total",
                "Files the tailer started following.",
                &["source"],
            ),
            read_errors: counter_vec(
                &r,
                "tokenwatch_read_errors_total",
                "I/O errors reading a source's files.",
                &["source"],
            ),
            dropped: counter_vec(
                &r,
                "tokenwatch_source_dropped_total",
                "Messages a syslog or journald source dropped before parsing, by reason (connection_limit counts TCP connections).",
                &["source", "reason"],
            ),
            checkpoint_last_success: reg(
                &r,
                IntGauge::new(
                    "tokenwatch_checkpoint_last_success_timestamp_seconds",
                    "Unix time of the last successful checkpoint write.",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            checkpoint_failures: reg(
                &r,
                IntCounter::new(
                    "tokenwatch_checkpoint_failures_total",
                    "Checkpoint writes that failed.",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            event_lag: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tokenwatch_event_lag_seconds",
                        "Wall clock minus event time of processed lines, sampled per batch.",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0,
                    ]),
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            reloads: counter_vec(
                &r,
                "tokenwatch_config_reloads_total",
                "Config reloads (SIGHUP), by result.",
                &["result"],
            ),
            detections: counter_vec(
                &r,
                "tokenwatch_detections_total",
                "Detection records emitted, by detector and severity.",
                &["detector", "severity"],
            ),
            tracked: gauge_vec(
                &r,
                "tokenwatch_tracked_entities",
                "Live per-key detector state entries, by kind.",
                &["kind"],
            ),
            evictions: counter_vec(
                &r,
                "tokenwatch_evictions_total",
                "State entries evicted to stay within memory caps, by kind.",
                &["kind"],
            ),
            late_events: reg(
                &r,
                IntCounter::new(
                    "tokenwatch_late_events_total",
                    "Events older than the reorder tolerance (counted, not used for windows).",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            actions: counter_vec(
                &r,
                "tokenwatch_actions_total",
                "Response actions, by action, hook and result.",
                &["action", "hook", "result"],
            ),
            frozen_tokens: reg(
                &r,
                IntGauge::new("tokenwatch_frozen_tokens", "Tokens currently frozen.")
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            hook_duration: reg(
                &r,
                prometheus::HistogramVec::new(
                    HistogramOpts::new("tokenwatch_hook_duration_seconds", "Hook call latency.")
                        .buckets(vec![
                            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                        ]),
                    &["hook"],
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            hook_queue_depth: reg(
                &r,
                IntGauge::new(
                    "tokenwatch_hook_queue_depth",
                    "Actions waiting for a hook call.",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            breaker_open: reg(
                &r,
                IntGauge::new(
                    "tokenwatch_freeze_breaker_open",
                    "1 while the freeze rate cap is suppressing freezes.",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            state_errors: counter_vec(
                &r,
                "tokenwatch_state_file_errors_total",
                "State file problems: damaged on load (set aside) or failed writes.",
                &["file", "error"],
            ),
            unwritable: Default::default(),
            kafka: Default::default(),
            registry: r,
        };
        m.register_static();
        m
    }

    fn register_static(&self) {
        let info = IntGaugeVec::new(
            Opts::new("tokenwatch_build_info", "Build information; always 1."),
            &["version"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        reg(&self.registry, info);
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            // Process metrics are a convenience: a sandbox without /proc must not stop us.
            let _ = self.registry.register(Box::new(pc));
        }
        for r in ["success", "failure"] {
            self.reloads.with_label_values(&[r]);
        }
        for kind in ENTITY_KINDS {
            self.tracked.with_label_values(&[kind]);
            self.evictions.with_label_values(&[kind]);
        }
        for f in StateFile::ALL {
            for e in ["corrupt", "write"] {
                self.state_errors.with_label_values(&[f.as_str(), e]);
            }
        }
    }

    /// Creates the zero-valued series of the detector called `name` (each severity, and
    /// with `own_state` its tracked/evicted kind), so increase() sees its first detection
    /// and dashboards show 0. The engine calls it for every registered detector.
    pub fn register_detector(&self, name: &str, own_state: bool) {
        for s in SEVERITIES {
            self.detections.with_label_values(&[name, s]);
        }
        if own_state {
            self.tracked.with_label_values(&[name]);
            self.evictions.with_label_values(&[name]);
        }
    }

    /// Counts a state file found damaged (or damaged lines in the journal) at load.
    pub fn state_corrupt(&self, file: StateFile, n: u64) {
        self.state_errors
            .with_label_values(&[file.as_str(), "corrupt"])
            .inc_by(n);
    }

    /// Records the outcome of a state write: a failure is counted and keeps `/readyz` at 503
    /// until the next successful write of the same file.
    pub fn state_write(&self, file: StateFile, result: Result<(), &std::io::Error>) {
        let mut bad = self.unwritable.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                bad.remove(&file);
            }
            Err(e) => {
                self.state_errors
                    .with_label_values(&[file.as_str(), "write"])
                    .inc();
                bad.insert(file, e.to_string());
            }
        }
    }

    /// Why state cannot be written now (`None`: every last write succeeded).
    pub fn state_unwritable(&self) -> Option<String> {
        let bad = self.unwritable.lock().unwrap_or_else(|p| p.into_inner());
        let parts: Vec<String> = bad
            .iter()
            .map(|(f, e)| format!("{}: {e}", f.as_str()))
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Resolves the labelled handles for one source and creates its zero-valued series, so
    /// `rate()` and dashboards see the source before its first line.
    pub fn source(&self, name: &str) -> SourceMetrics {
        let rejected = Reason::ALL.map(|r| self.rejected.with_label_values(&[name, r.as_str()]));
        for kind in ["rotated", "truncated"] {
            self.rotations.with_label_values(&[name, kind]);
        }
        SourceMetrics {
            name: name.to_string(),
            checks: self.checks.with_label_values(&[name]),
            rejected,
            parsed: self
                .lines
                .with_label_values(&[name, LineResult::Parsed.as_str()]),
            skipped: self
                .lines
                .with_label_values(&[name, LineResult::Skipped.as_str()]),
            malformed: self
                .lines
                .with_label_values(&[name, LineResult::Malformed.as_str()]),
            malformed_by: self.malformed.clone(),
            skipped_by: self.skipped_by.clone(),
            too_long: self.too_long.with_label_values(&[name]),
            lag_bytes: self.lag_bytes.with_label_values(&[name]),
            rotated: self.rotations.with_label_values(&[name, "rotated"]),
            truncated: self.rotations.with_label_values(&[name, "truncated"]),
            files_opened: self.files_opened.with_label_values(&[name]),
            read_errors: self.read_errors.with_label_values(&[name]),
        }
    }

    /// `tokenwatch_source_dropped_total{source,reason}` for one source and reason.
    pub fn source_dropped(&self, source: &str, reason: DropReason) -> IntCounter {
        self.dropped.with_label_values(&[source, reason.as_str()])
    }

    /// Counts a config reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    /// The registry, for components that register their own families.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders the text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for families we built ourselves.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Results of `tokenwatch_kafka_records_total` (the same for event and detection topics).
pub const RECORD_RESULTS: [&str; 3] = ["applied", "duplicate", "undecodable"];

/// The families of the Kafka consumer roles (worker, responder). Registered only by those
/// roles, so the `/metrics` of `role = "all"` (and of an edge) does not change.
///
/// Topic labels are the roles' stable names (`by_token`, `by_ip`, `detections`), not the
/// configured topic names, so rules and dashboards need no per-site edits. Per-partition
/// series exist only while this process owns the partition: [`KafkaMetrics::revoked`]
/// removes them, so `sum by (topic)` over all workers counts every partition once.
#[derive(Clone)]
pub struct KafkaMetrics {
    /// `tokenwatch_partitions_owned{topic}`: partitions this process owns.
    pub owned: IntGaugeVec,
    /// `tokenwatch_kafka_records_total{topic,result}`: see [`RECORD_RESULTS`].
    pub records: IntCounterVec,
    /// `tokenwatch_kafka_consumer_lag{topic}`: messages behind, over the owned partitions.
    pub lag: IntGaugeVec,
    /// `tokenwatch_kafka_partition_lag{topic,partition}`: messages behind, per owned partition.
    pub partition_lag: IntGaugeVec,
    /// `tokenwatch_kafka_snapshot_timestamp_seconds{topic,partition}`: when the partition's
    /// state on disk was last current (its last snapshot, or its assignment).
    pub snapshot_time: IntGaugeVec,
    /// `tokenwatch_kafka_topic_partitions{topic}`: partitions the topic has.
    pub topic_partitions: IntGaugeVec,
    /// `tokenwatch_responder_active`: 1 while this process is the responder that owns the
    /// detections partition and acts on it; 0 in standby responders and in workers.
    pub responder_active: IntGauge,
}

/// One topic's `tokenwatch_kafka_records_total` handles.
#[derive(Clone)]
pub struct RecordCounters {
    /// `result="applied"`: new records, acted on.
    pub applied: IntCounter,
    /// `result="duplicate"`: already applied (a re-publish or a re-read), dropped.
    pub duplicate: IntCounter,
    /// `result="undecodable"`: not a record this version reads, skipped.
    pub undecodable: IntCounter,
}

impl KafkaMetrics {
    /// Registers the families in `m` (once: later calls on the same `m` return the same
    /// handles, so a worker and a responder may share one process).
    pub fn register(m: &Metrics) -> Result<KafkaMetrics, prometheus::Error> {
        let mut slot = m.kafka.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let k = KafkaMetrics::new()?;
        for c in k.collectors() {
            m.registry.register(c)?;
        }
        *slot = Some(k.clone());
        Ok(k)
    }

    fn new() -> Result<KafkaMetrics, prometheus::Error> {
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        Ok(KafkaMetrics {
            owned: gauges(
                "tokenwatch_partitions_owned",
                "Topic partitions this process owns (state and detection)",
                &["topic"],
            )?,
            records: IntCounterVec::new(
                Opts::new(
                    "tokenwatch_kafka_records_total",
                    "Records consumed by topic and result: applied, duplicate (already applied, dropped), undecodable (skipped)",
                ),
                &["topic", "result"],
            )?,
            lag: gauges(
                "tokenwatch_kafka_consumer_lag",
                "Messages not yet consumed in the partitions this process owns (librdkafka statistics, every 5 s)",
                &["topic"],
            )?,
            partition_lag: gauges(
                "tokenwatch_kafka_partition_lag",
                "Messages not yet consumed in one owned partition (librdkafka statistics; absent while unknown or not owned)",
                &["topic", "partition"],
            )?,
            snapshot_time: gauges(
                "tokenwatch_kafka_snapshot_timestamp_seconds",
                "Unix time of the last successful snapshot of an owned partition (its assignment time until the first)",
                &["topic", "partition"],
            )?,
            topic_partitions: gauges(
                "tokenwatch_kafka_topic_partitions",
                "Partitions the consumed topic has (from the client's metadata)",
                &["topic"],
            )?,
            responder_active: IntGauge::new(
                "tokenwatch_responder_active",
                "1 while this process is the active responder (owns the detections partition); 0 otherwise",
            )?,
        })
    }

    /// Every family, in registration order.
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.owned.clone()),
            Box::new(self.records.clone()),
            Box::new(self.lag.clone()),
            Box::new(self.partition_lag.clone()),
            Box::new(self.snapshot_time.clone()),
            Box::new(self.topic_partitions.clone()),
            Box::new(self.responder_active.clone()),
        ]
    }

    /// The names of the families [`KafkaMetrics::register`] creates (some have no series
    /// until a partition is owned, so a scrape does not show them all).
    pub fn family_names(&self) -> Vec<String> {
        self.collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }

    /// The record counters of `topic`, with their zero series created so `rate()` and the
    /// dashboards see the topic before its first record.
    pub fn records(&self, topic: &str) -> RecordCounters {
        let [applied, duplicate, undecodable] =
            RECORD_RESULTS.map(|r| self.records.with_label_values(&[topic, r]));
        RecordCounters {
            applied,
            duplicate,
            undecodable,
        }
    }

    /// Zero series of a consumed topic (owned, lag, records) before its first assignment.
    pub fn consume(&self, topic: &str) -> RecordCounters {
        self.owned.with_label_values(&[topic]).set(0);
        self.lag.with_label_values(&[topic]).set(0);
        self.records(topic)
    }

    /// Sets how many partitions of `topic` this process owns.
    pub fn set_owned(&self, topic: &str, n: usize) {
        self.owned
            .with_label_values(&[topic])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records a successful snapshot (or the assignment) of an owned partition at `unix` s.
    pub fn snapshot_at(&self, topic: &str, partition: i32, unix: i64) {
        self.snapshot_time
            .with_label_values(&[topic, &partition.to_string()])
            .set(unix);
    }

    /// Sets an owned partition's lag; a negative lag (librdkafka's "unknown") is skipped.
    pub fn set_partition_lag(&self, topic: &str, partition: i32, lag: i64) {
        if lag >= 0 {
            self.partition_lag
                .with_label_values(&[topic, &partition.to_string()])
                .set(lag);
        }
    }

    /// Drops a revoked partition's series: its new owner exports them now, and a series left
    /// here would be counted twice (or go stale at its last value) in `sum by (topic)`.
    pub fn revoked(&self, topic: &str, partition: i32) {
        let labels = [topic, &partition.to_string()];
        // Absent series (never measured) are fine: nothing to drop.
        let _ = self.partition_lag.remove_label_values(&labels);
        let _ = self.snapshot_time.remove_label_values(&labels);
    }
}

/// One source's resolved handles.
#[derive(Clone)]
pub struct SourceMetrics {
    name: String,
    /// `auth_token_check_total{source}`.
    pub checks: IntCounter,
    /// `auth_token_rejected_total{source,reason}`, indexed like [`Reason::ALL`].
    pub rejected: [IntCounter; 5],
    /// `tokenwatch_lines_total{result="parsed"}`.
    pub parsed: IntCounter,
    /// `tokenwatch_lines_total{result="skipped"}`.
    pub skipped: IntCounter,
    /// `tokenwatch_lines_total{result="malformed"}`.
    pub malformed: IntCounter,
    malformed_by: IntCounterVec,
    skipped_by: IntCounterVec,
    /// `tokenwatch_lines_too_long_total`.
    pub too_long: IntCounter,
    /// `tokenwatch_source_lag_bytes`.
    pub lag_bytes: IntGauge,
    /// Rotations (rename/delete + create, inode change).
    pub rotated: IntCounter,
    /// Truncations (copytruncate).
    pub truncated: IntCounter,
    /// Files opened.
    pub files_opened: IntCounter,
    /// Read errors.
    pub read_errors: IntCounter,
}

impl SourceMetrics {
    /// Counts skipped non-access lines by a bounded reason label (`error_log`, `server_log`).
    pub fn skipped_reason(&self, reason: &'static str, n: u64) {
        self.skipped_by
            .with_label_values(&[&self.name, reason])
            .inc_by(n);
    }

    /// Counts malformed lines by a bounded reason label (from `ParseError::reason`).
    pub fn malformed_reason(&self, reason: &'static str, n: u64) {
        self.malformed_by
            .with_label_values(&[&self.name, reason])
            .inc_by(n);
    }
}

/// Index of a reason in [`Reason::ALL`] (and in [`SourceMetrics::rejected`]).
pub const fn reason_index(r: Reason) -> usize {
    match r {
        Reason::Expired => 0,
        Reason::Invalid => 1,
        Reason::Revoked => 2,
        Reason::Forbidden => 3,
        Reason::Other => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_zero_series() {
        let m = Metrics::new();
        let s = m.source("gw");
        s.checks.inc_by(3);
        s.rejected[reason_index(Reason::Revoked)].inc();
        s.malformed_reason("json", 2);
        let text = m.render();
        assert!(text.contains("auth_token_check_total{source=\"gw\"} 3"));
        assert!(text.contains("auth_token_rejected_total{reason=\"revoked\",source=\"gw\"} 1"));
        assert!(text.contains("auth_token_rejected_total{reason=\"expired\",source=\"gw\"} 0"));
        assert!(text.contains("tokenwatch_malformed_lines_total{reason=\"json\",source=\"gw\"} 2"));
        assert!(text.contains("tokenwatch_build_info{version="));
        for r in Reason::ALL {
            assert_eq!(Reason::ALL[reason_index(r)], r);
        }
    }

    #[test]
    fn state_errors_count_and_unwritable_clears() {
        let m = Metrics::new();
        let zero = "tokenwatch_state_file_errors_total{error=\"write\",file=\"frozen\"} 0";
        assert!(m.render().contains(zero));
        let e = std::io::Error::other("read-only file system");
        m.state_write(StateFile::Frozen, Err(&e));
        m.state_corrupt(StateFile::Journal, 2);
        let text = m.render();
        assert!(
            text.contains("tokenwatch_state_file_errors_total{error=\"write\",file=\"frozen\"} 1")
        );
        assert!(text
            .contains("tokenwatch_state_file_errors_total{error=\"corrupt\",file=\"journal\"} 2"));
        assert_eq!(
            m.state_unwritable().as_deref(),
            Some("frozen: read-only file system")
        );
        m.state_write(StateFile::Frozen, Ok(()));
        assert_eq!(m.state_unwritable(), None);
    }

    #[test]
    fn kafka_families_only_where_registered_and_once() {
        let m = Metrics::new();
        let k = KafkaMetrics::register(&m).unwrap();
        let names = k.family_names();
        assert_eq!(names.len(), 7);
        assert!(names
            .iter()
            .all(|n| !Metrics::new().render().contains(n.as_str())));
        // A second registration (a worker and a responder in one process) shares the handles.
        let again = KafkaMetrics::register(&m).unwrap();
        again.set_owned("by_ip", 3);
        assert!(m
            .render()
            .contains("tokenwatch_partitions_owned{topic=\"by_ip\"} 3"));
        let zero = k.records("detections");
        zero.duplicate.inc();
        let text = m.render();
        for r in RECORD_RESULTS {
            assert!(text.contains(&format!(
                "tokenwatch_kafka_records_total{{result=\"{r}\",topic=\"detections\"}}"
            )));
        }
        assert!(text.contains("tokenwatch_responder_active 0"));
    }

    #[test]
    fn a_revoked_partition_loses_its_series_and_unknown_lag_is_skipped() {
        let m = Metrics::new();
        let k = KafkaMetrics::register(&m).unwrap();
        k.consume("by_token");
        k.set_partition_lag("by_token", 0, 12);
        k.set_partition_lag("by_token", 1, -1);
        k.snapshot_at("by_token", 0, 1_700_000_000);
        k.snapshot_at("by_token", 1, 1_700_000_001);
        let text = m.render();
        assert!(
            text.contains("tokenwatch_kafka_partition_lag{partition=\"0\",topic=\"by_token\"} 12")
        );
        assert!(!text.contains("tokenwatch_kafka_partition_lag{partition=\"1\""));
        assert!(text.contains(
            "tokenwatch_kafka_snapshot_timestamp_seconds{partition=\"1\",topic=\"by_token\"} 1700000001"
        ));
        k.revoked("by_token", 0);
        k.revoked("by_token", 1);
        // Revoking twice, or a partition never measured, is harmless.
        k.revoked("by_token", 1);
        k.revoked("by_ip", 7);
        let text = m.render();
        assert!(!text.contains("partition=\""), "{text}");
        assert!(text.contains("tokenwatch_partitions_owned{topic=\"by_token\"} 0"));
    }
}
