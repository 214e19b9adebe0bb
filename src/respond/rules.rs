//! The static part of the policy: which records may freeze at all (mode, detectors,
//! severity, token present) and the allowlists.

use std::collections::HashSet;

use crate::config::{ResponseConfig, ResponseMode};
use crate::detect::Detection;
use crate::event::Severity;
use crate::net::Cidr;

/// Detector names used for records that did not come from a detector.
pub mod origin {
    /// A freeze asked for through `POST /api/v1/frozen/{token}`.
    pub const MANUAL: &str = "manual";
    /// A freeze asked for by an Alertmanager alert.
    pub const ALERTMANAGER: &str = "alertmanager";
    /// The breaker-open notice.
    pub const BREAKER: &str = "freeze_breaker";
}

/// What the static rules say about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Alert only, with the reason no freeze applies.
    Alert(&'static str),
    /// Allowlisted: suppressed with this reason.
    Allowed(String),
    /// A freeze candidate (still subject to dedupe and the breaker).
    Freeze,
}

/// Mode, freeze selection and allowlists from `[response]`.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The configured mode.
    pub mode: ResponseMode,
    detectors: HashSet<String>,
    min_severity: Severity,
    tokens: HashSet<String>,
    users: HashSet<String>,
    cidrs: Vec<Cidr>,
}

impl Rules {
    /// From `[response]`.
    pub fn new(cfg: &ResponseConfig) -> Rules {
        Rules {
            mode: cfg.mode,
            detectors: cfg.freeze_detectors.iter().cloned().collect(),
            min_severity: cfg.freeze_min_severity,
            tokens: cfg.allow_tokens.iter().cloned().collect(),
            users: cfg.allow_users.iter().cloned().collect(),
            cidrs: cfg.allow_cidrs.clone(),
        }
    }

    /// Judges `d`; manual and Alertmanager freezes skip the detector and severity choice
    /// (someone asked for them) but not the mode or the allowlists.
    pub fn verdict(&self, d: &Detection) -> Verdict {
        if self.mode == ResponseMode::Off {
            return Verdict::Alert("mode_off");
        }
        let Some(token) = d.token.as_deref() else {
            return Verdict::Alert("no_token");
        };
        let asked = matches!(d.detector.as_str(), origin::MANUAL | origin::ALERTMANAGER);
        if !asked && !self.detectors.contains(&d.detector) {
            return Verdict::Alert("detector_alerts_only");
        }
        if !asked && d.severity < self.min_severity {
            return Verdict::Alert("below_freeze_min_severity");
        }
        if self.tokens.contains(token) {
            return Verdict::Allowed("allowlist:token".into());
        }
        if d.user.as_deref().is_some_and(|u| self.users.contains(u)) {
            return Verdict::Allowed("allowlist:user".into());
        }
        if let Some(c) =
            d.ip.and_then(|ip| self.cidrs.iter().find(|c| c.contains(ip)))
        {
            return Verdict::Allowed(format!("allowlist:cidr {c}"));
        }
        Verdict::Freeze
    }
}
