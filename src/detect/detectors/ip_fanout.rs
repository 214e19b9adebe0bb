//! `ip_fanout` (DESIGN §6). To be implemented.

use serde::{Deserialize, Serialize};

use super::{Common, TokenDetector};
use crate::detect::{Findings, Obs};

/// `[detectors.ip_fanout]` settings.
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
pub struct IpFanout {
    #[allow(dead_code)]
    settings: Settings,
}

impl IpFanout {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        IpFanout {
            settings: settings.clone(),
        }
    }
}

impl TokenDetector for IpFanout {
    type State = State;

    fn name(&self) -> &'static str {
        "ip_fanout"
    }

    fn observe(&mut self, _st: &mut State, _obs: &Obs<'_>, _out: &mut Findings) {}
}
