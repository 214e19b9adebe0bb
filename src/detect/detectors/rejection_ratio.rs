//! `rejection_ratio` (DESIGN §6). To be implemented.

use serde::{Deserialize, Serialize};

use super::{Common, Detector};
use crate::detect::{Findings, Obs};

/// `[detectors.rejection_ratio]` settings.
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
pub struct RejectionRatio {
    #[allow(dead_code)]
    settings: Settings,
}

impl RejectionRatio {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        RejectionRatio {
            settings: settings.clone(),
        }
    }
}

impl Detector for RejectionRatio {
    fn name(&self) -> &'static str {
        "rejection_ratio"
    }

    fn observe(&mut self, _obs: &Obs<'_>, _out: &mut Findings) {}
}
