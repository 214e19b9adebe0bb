//! `token_spray` (DESIGN §6). To be implemented.

use serde::{Deserialize, Serialize};

use super::{Common, Detector};
use crate::detect::{Findings, Obs};

/// `[detectors.token_spray]` settings.
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
pub struct TokenSpray {
    #[allow(dead_code)]
    settings: Settings,
}

impl TokenSpray {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        TokenSpray {
            settings: settings.clone(),
        }
    }
}

impl Detector for TokenSpray {
    fn name(&self) -> &'static str {
        "token_spray"
    }

    fn observe(&mut self, _obs: &Obs<'_>, _out: &mut Findings) {}
}
