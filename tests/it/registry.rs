//! The detector registry (`src/config/detectors/mod.rs`) decides where each detector runs
//! when the pipeline is split into worker stages: exactly one stage each, the one it
//! declares, so no detector is lost and none fires twice.

use tokenwatch::config::detectors::{Stage as Declared, REGISTRY};
use tokenwatch::config::Config;
use tokenwatch::scale::worker::Stage;

/// Every worker stage there is.
const STAGES: [Stage; 3] = [Stage::Token, Stage::Ip, Stage::Global];

/// The worker stages in which `name` is enabled.
fn stages_running(cfg: &Config, name: &str) -> Vec<Stage> {
    STAGES
        .into_iter()
        .filter(|s| s.config(cfg).detectors.enabled(name))
        .collect()
}

#[test]
fn each_registered_detector_runs_in_exactly_its_declared_worker_stage() {
    let cfg = Config::default();
    for e in REGISTRY {
        let runs = stages_running(&cfg, e.name);
        let want: &[Stage] = match (e.stage, e.name) {
            (Declared::Token, _) => &[Stage::Token],
            (Declared::Ip, _) => &[Stage::Ip],
            (Declared::Global, _) => &[Stage::Global],
        };
        assert_eq!(runs, want, "{} ({:?})", e.name, e.stage);
    }
}

#[test]
fn a_detector_the_config_turned_off_runs_in_no_stage() {
    for e in REGISTRY {
        let mut cfg = Config::default();
        cfg.detectors.keep_stages(|d| d.name != e.name);
        assert_eq!(stages_running(&cfg, e.name), [], "{}", e.name);
    }
}
