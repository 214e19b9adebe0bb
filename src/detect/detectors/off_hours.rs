//! `off_hours` (DESIGN §6). To be implemented.

use serde::{Deserialize, Serialize};

use super::{Common, TokenDetector};
use crate::detect::{Findings, Obs};

/// `[detectors.off_hours]` settings.
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

/// This detector's part of a token's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {}

/// The detector.
pub struct OffHours {
    #[allow(dead_code)]
    settings: Settings,
}

impl OffHours {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        OffHours {
            settings: settings.clone(),
        }
    }
}

impl TokenDetector for OffHours {
    type State = State;

    fn name(&self) -> &'static str {
        "off_hours"
    }

    fn observe(&mut self, _st: &mut State, _obs: &Obs<'_>, _out: &mut Findings) {}
}
