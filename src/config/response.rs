//! `[response]`: what happens when a detector fires.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::suggest::unknown_choice;
use super::values;
use crate::event::Severity;
use crate::net::Cidr;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseConfig {
    /// `off` | `dry-run` | `enforce` (default `dry-run`: nothing is frozen until you say so).
    pub mode: ResponseMode,
    /// Detectors whose records freeze the token (default `impossible_travel`, `ip_fanout`:
    /// per-token detectors whose findings are rarely innocent); the others only alert.
    pub freeze_detectors: Vec<String>,
    /// Only records of at least this severity freeze (default `high`).
    pub freeze_min_severity: Severity,
    /// Token ids (or `fp:` fingerprints) that are never frozen.
    pub allow_tokens: Vec<String>,
    /// Users whose tokens are never frozen.
    pub allow_users: Vec<String>,
    /// Client networks (CIDRs) whose detections never freeze.
    #[serde(with = "values::cidrs")]
    pub allow_cidrs: Vec<Cidr>,
    /// Circuit breaker: at most this many freezes per window (default 10); beyond it freezes
    /// are `suppressed` with reason `rate_cap`.
    pub max_freezes: u32,
    /// The breaker's sliding window, in seconds (default 600).
    pub window_secs: u64,
    /// Frozen tokens are unfrozen (and the unfreeze hooks called) after this many seconds;
    /// 0 (default) keeps them frozen until unfrozen through the admin API.
    pub freeze_ttl_secs: u64,
    /// Actions waiting per hook in memory (default 1024); beyond it they wait in the journal.
    pub queue_capacity: usize,
    /// The journal is compacted once this many finished entries accumulated (default 1000).
    pub journal_compact_after: usize,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig {
            mode: ResponseMode::default(),
            freeze_detectors: vec!["impossible_travel".into(), "ip_fanout".into()],
            freeze_min_severity: Severity::High,
            allow_tokens: Vec::new(),
            allow_users: Vec::new(),
            allow_cidrs: Vec::new(),
            max_freezes: 10,
            window_secs: 600,
            freeze_ttl_secs: 0,
            queue_capacity: 1024,
            journal_compact_after: 1000,
        }
    }
}

impl ResponseConfig {
    /// Problems serde cannot see: `(key, message)` pairs, keys relative to `[response]`.
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for name in &self.freeze_detectors {
            if super::detectors::entry(name).is_none() {
                let names: Vec<&str> = super::detectors::names().collect();
                let hint = super::suggest::closest(name, &names)
                    .map(|c| format!(" (did you mean {c:?}?)"))
                    .unwrap_or_default();
                out.push((
                    "freeze_detectors",
                    format!("unknown detector {name:?}{hint}"),
                ));
            }
        }
        if self.max_freezes == 0 {
            out.push((
                "max_freezes",
                "must be at least 1 (use mode = \"dry-run\" or \"off\" to freeze nothing)".into(),
            ));
        }
        if self.window_secs == 0 {
            out.push(("window_secs", "must be at least 1".into()));
        }
        if self.queue_capacity == 0 {
            out.push(("queue_capacity", "must be at least 1".into()));
        }
        if self.journal_compact_after == 0 {
            out.push(("journal_compact_after", "must be at least 1".into()));
        }
        out
    }
}
