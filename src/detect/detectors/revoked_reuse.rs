//! `revoked_reuse` (DESIGN §6). To be implemented.

use serde::{Deserialize, Serialize};

use super::{Common, Detector};
use crate::detect::{Findings, Obs};

/// `[detectors.revoked_reuse]` settings.
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
pub struct RevokedReuse {
    #[allow(dead_code)]
    settings: Settings,
}

impl RevokedReuse {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        RevokedReuse {
            settings: settings.clone(),
        }
    }
}

impl Detector for RevokedReuse {
    fn name(&self) -> &'static str {
        "revoked_reuse"
    }

    fn observe(&mut self, _obs: &Obs<'_>, _out: &mut Findings) {}
}
