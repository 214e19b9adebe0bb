//! `[response]`: what happens when a detector fires.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::suggest::unknown_choice;

/// Whether detections lead to freezes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ResponseMode {
    /// Detections are recorded and alerted on; nothing is frozen.
    Off,
    /// Freezes are decided and recorded as `would_freeze`, hooks are not called (the default).
    #[default]
    DryRun,
    /// Freezes are carried out through the revoke hooks.
    Enforce,
}

impl ResponseMode {
    /// Every mode with its config name.
    pub const ALL: [(ResponseMode, &'static str); 3] = [
        (ResponseMode::Off, "off"),
        (ResponseMode::DryRun, "dry-run"),
        (ResponseMode::Enforce, "enforce"),
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            ResponseMode::Off => "off",
            ResponseMode::DryRun => "dry-run",
            ResponseMode::Enforce => "enforce",
        }
    }
}

impl fmt::Display for ResponseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for ResponseMode {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        ResponseMode::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(m, _)| *m)
            .ok_or_else(|| {
                let names = ResponseMode::ALL.map(|(_, n)| n);
                unknown_choice("response mode", &s, &names)
            })
    }
}

impl From<ResponseMode> for String {
    fn from(m: ResponseMode) -> String {
        m.name().to_string()
    }
}

/// `[response]` as read from the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseConfig {
    /// `off` | `dry-run` | `enforce` (default `dry-run`: nothing is frozen until you say so).
    pub mode: ResponseMode,
}
