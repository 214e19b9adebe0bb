//! The daemon's [`TailEvents`] implementation: every tailer event becomes a metric.

use std::path::Path;

use crate::event::SourceIdx;
use crate::metrics::{Metrics, SourceMetrics};
use crate::source::file::TailEvents;

/// Bumps Prometheus counters for tailer events (and logs the rare ones).
pub struct MetricsTailEvents {
    sources: Vec<SourceMetrics>,
    metrics: Metrics,
}

impl MetricsTailEvents {
    /// Handles for each source, indexed by `SourceIdx`.
    pub fn new(sources: Vec<SourceMetrics>, metrics: Metrics) -> Self {
        MetricsTailEvents { sources, metrics }
    }

    fn source(&self, s: SourceIdx) -> Option<&SourceMetrics> {
        self.sources.get(usize::from(s))
    }
}

impl TailEvents for MetricsTailEvents {
    fn file_added(&self, source: SourceIdx, path: &Path) {
        tracing::info!(path = %path.display(), "following file");
        if let Some(m) = self.source(source) {
            m.files_opened.inc();
        }
    }

    fn file_rotated(&self, source: SourceIdx, path: &Path) {
        tracing::info!(path = %path.display(), "file rotated");
        if let Some(m) = self.source(source) {
            m.rotated.inc();
        }
    }

    fn file_truncated(&self, source: SourceIdx, path: &Path) {
        tracing::info!(path = %path.display(), "file truncated");
        if let Some(m) = self.source(source) {
            m.truncated.inc();
        }
    }

    fn line_too_long(&self, source: SourceIdx) {
        if let Some(m) = self.source(source) {
            m.too_long.inc();
        }
    }

    fn lag_bytes(&self, source: SourceIdx, bytes: u64) {
        if let Some(m) = self.source(source) {
            m.lag_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    fn checkpoint_written(&self) {
        let now = crate::event::EventTime::now().as_millis() / 1000;
        self.metrics.checkpoint_last_success.set(now);
    }

    fn checkpoint_failed(&self, err: &std::io::Error) {
        tracing::error!(%err, "checkpoint write failed");
        self.metrics.checkpoint_failures.inc();
    }

    fn read_error(&self, source: SourceIdx, path: &Path, err: &std::io::Error) {
        tracing::warn!(path = %path.display(), %err, "read error");
        if let Some(m) = self.source(source) {
            m.read_errors.inc();
        }
    }
}
