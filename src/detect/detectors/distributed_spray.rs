//! `distributed_spray` (DESIGN §6). To be implemented.

use serde::{Deserialize, Serialize};

use super::{Common, Detector};
use crate::detect::{Findings, Obs};

/// `[detectors.distributed_spray]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Whether the detector runs (default true).
    pub enabled: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { enabled: true }
    }
}

impl Common for Settings {
    fn enabled(&self) -> bool {
        self.enabled
    }
}

/// The detector.
pub struct DistributedSpray {
    #[allow(dead_code)]
    settings: Settings,
}

impl DistributedSpray {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        DistributedSpray {
            settings: settings.clone(),
        }
    }
}

impl Detector for DistributedSpray {
    fn name(&self) -> &'static str {
        "distributed_spray"
    }

    fn observe(&mut self, _obs: &Obs<'_>, _out: &mut Findings) {}
}
