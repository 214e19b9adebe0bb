//! The worker's three stages and what the partitions of one stage share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::partition::{Partition, SNAPSHOT_KIND};
use super::sink::SharedSink;
use super::snapshot::{self, Read};
use super::stats::unix_now;
use crate::config::Config;
use crate::detect::Engine;
use crate::enrich::geo::GeoLookup;
use crate::metrics::{KafkaMetrics, Metrics};

/// One consumer stage: which topic, which group, which detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `topics.by_token`, group `<prefix>-token`: the per-token detectors.
    Token,
    /// `topics.by_ip`, group `<prefix>-ip`: the per-IP detectors.
    Ip,
    /// Every partition of `topics.by_ip` in one engine, run by the one worker the group
    /// `<prefix>-global` elects: the detectors that need all traffic.
    Global,
}

impl Stage {
    /// Every stage, in the order a worker starts them.
    pub const ALL: [Stage; 3] = [Stage::Token, Stage::Ip, Stage::Global];

    /// The metric label (the same as the edge's for the event topics).
    pub fn label(self) -> &'static str {
        match self {
            Stage::Token => "by_token",
            Stage::Ip => "by_ip",
            Stage::Global => "global",
        }
    }

    /// The suffix of the consumer group.
    pub(super) fn group(self) -> &'static str {
        match self {
            Stage::Token => "token",
            Stage::Ip => "ip",
            Stage::Global => "global",
        }
    }

    /// The topic the stage consumes.
    pub(super) fn topic(self, cfg: &Config) -> String {
        match self {
            Stage::Token => cfg.kafka.topics.by_token.clone(),
            Stage::Ip | Stage::Global => cfg.kafka.topics.by_ip.clone(),
        }
    }

    /// `cfg` with only this stage's detectors enabled (each event reaches every stage, so
    /// a detector enabled in two would fire twice).
    pub fn config(self, cfg: &Config) -> Config {
        use crate::config::detectors::Stage as DetectorStage;
        let mut c = cfg.clone();
        c.detectors.keep_stages(|d| match d.stage {
            DetectorStage::Token => self == Stage::Token,
            DetectorStage::Ip => self == Stage::Ip,
            DetectorStage::Global => self == Stage::Global,
        });
        c
    }
}

/// What every partition of a stage shares.
pub(super) struct Shared {
    pub(super) stage: Stage,
    pub(super) topic: String,
    /// The stage's config (only its detectors enabled).
    pub(super) cfg: Config,
    pub(super) metrics: Metrics,
    pub(super) km: KafkaMetrics,
    pub(super) geo: Option<Arc<dyn GeoLookup>>,
    pub(super) sink: SharedSink,
    /// `state.dir/kafka`.
    pub(super) dir: PathBuf,
    /// `[kafka] reorder_ms`.
    pub(super) hold: Duration,
}

impl Shared {
    /// Where a partition's snapshot lives.
    pub(super) fn path(&self, partition: i32) -> PathBuf {
        super::snapshot_path_in(&self.dir, &self.topic, partition)
    }

    /// An engine with `1/share` of the `[detectors] max_state_bytes` budget.
    pub(super) fn engine(&self, share: usize) -> Engine {
        let mut cfg = self.cfg.clone();
        let share = u64::try_from(share.max(1)).unwrap_or(u64::MAX);
        cfg.detectors.max_state_bytes /= share;
        let mut e = Engine::for_config(&cfg, &self.metrics).with_sink(Box::new(self.sink.clone()));
        if let Some(g) = &self.geo {
            e = e.with_geo(Arc::clone(g));
        }
        e
    }

    /// The partition's state: its snapshot when there is a good one, else empty. `owned`
    /// is how many partitions of this topic the worker owns with it: the state budget is
    /// split over them and over the three stages.
    pub(super) fn open(&self, partition: i32, owned: usize) -> Partition {
        // Whatever is restored (or nothing) is what the disk holds: current as of now, so
        // the snapshot-age alert also covers a partition whose writes never succeed.
        self.km
            .snapshot_at(self.stage.label(), partition, unix_now());
        let share = owned.max(1).saturating_mul(Stage::ALL.len());
        let mut p = Partition::new(self.engine(share), self.hold);
        let path = self.path(partition);
        match snapshot::read(&path, SNAPSHOT_KIND, &self.metrics, |h, e| p.restore(h, e)) {
            Read::Missing => {}
            Read::Restored => tracing::info!(
                topic = %self.topic,
                partition,
                next_offset = ?p.next_offset,
                "worker: partition state restored"
            ),
            Read::Damaged => p = Partition::new(self.engine(share), self.hold),
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_detector_runs_in_exactly_one_stage() {
        let cfg = Config::default();
        let [t, i, g] = Stage::ALL.map(|s| s.config(&cfg).detectors);
        let d = |x: &crate::config::DetectorsConfig| {
            [
                x.rate_spike.enabled,
                x.impossible_travel.enabled,
                x.ip_fanout.enabled,
                x.off_hours.enabled,
                x.revoked_reuse.enabled,
                x.brute_force.enabled,
                x.token_spray.enabled,
                x.distributed_spray.enabled,
                x.rejection_ratio.enabled,
            ]
        };
        let (t, i, g) = (d(&t), d(&i), d(&g));
        let want_stage = [0, 0, 0, 0, 0, 1, 1, 2, 2];
        for (n, stage) in want_stage.iter().enumerate() {
            let on = [t[n], i[n], g[n]];
            let want: Vec<bool> = (0..3).map(|s| s == *stage).collect();
            assert_eq!(on.to_vec(), want, "detector {n}");
        }
        // A detector the config turned off stays off.
        let mut off = Config::default();
        off.detectors.distributed_spray.enabled = false;
        assert!(
            !Stage::Global
                .config(&off)
                .detectors
                .distributed_spray
                .enabled
        );
    }
}
