//! The Alertmanager webhook receiver (payload version 4): every firing alert carrying a
//! `token` label freezes that token under the response policy. Resolved alerts are ignored;
//! an alert already handled (same fingerprint and start time) is not handled again.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::detect::record::stable_id;
use crate::detect::{Action, Detection};
use crate::event::EventTime;
use crate::event::Severity;
use crate::respond::{origin, Control};

/// The webhook payload (only the fields used; unknown ones are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// Must be `"4"`.
    pub version: String,
    /// The alerts of the group.
    #[serde(default)]
    pub alerts: Vec<Alert>,
    /// The receiver's name.
    #[serde(default)]
    pub receiver: String,
}

/// One alert.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Labels (`token`, and optionally `user`, `ip`, `alertname`, `severity`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations (kept as evidence).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 start time.
    #[serde(default)]
    pub starts_at: String,
    /// Alertmanager's identity of the alert.
    #[serde(default)]
    pub fingerprint: String,
}

/// What happened to one alert.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// The token label.
    pub token: String,
    /// The policy's action.
    pub action: Action,
    /// Its reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The record id (idempotency key of the freeze).
    pub id: String,
}

/// The receiver's answer.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Firing alerts with a token that went through the policy.
    pub results: Vec<Outcome>,
    /// Alerts not acted on (resolved, no `token` label, already seen).
    pub ignored: usize,
}

/// Fingerprints already handled, bounded (oldest forgotten first).
pub use crate::detect::bounded::RecentKeys as Seen;

/// Handles one payload; `Err` names what is wrong with it.
/// `token_id` maps a `token` label to the id tokenwatch tracks (a raw secret to its
/// fingerprint), so a label carrying a secret never travels further.
pub fn handle(
    control: &Control,
    seen: &mut Seen,
    p: Payload,
    token_id: &dyn Fn(&str) -> Option<String>,
) -> Result<Summary, String> {
    if p.version != "4" {
        return Err(format!(
            "unsupported Alertmanager webhook version {:?} (expected \"4\")",
            p.version
        ));
    }
    let mut results = Vec::new();
    let mut ignored = 0;
    for a in p.alerts {
        let Some(token) = a.labels.get("token").and_then(|t| token_id(t)) else {
            ignored += 1;
            continue;
        };
        if a.status != "firing" || !seen.first(format!("{}\0{}", a.fingerprint, a.starts_at)) {
            ignored += 1;
            continue;
        }
        let mut d = record(&a, &token, &p.receiver);
        control.decide(&mut d);
        results.push(Outcome {
            fingerprint: a.fingerprint,
            token,
            action: d.action,
            reason: d.reason,
            id: d.id,
        });
    }
    Ok(Summary { results, ignored })
}

fn record(a: &Alert, token: &str, receiver: &str) -> Detection {
    let zone = crate::parse::time::Zone::new(None);
    let started = crate::parse::time::rfc3339(a.starts_at.as_bytes(), &zone);
    let ts = started.unwrap_or_else(EventTime::now);
    let severity = match a.labels.get("severity").map(String::as_str) {
        Some("info" | "low") => Severity::Low,
        Some("warning" | "medium") => Severity::Medium,
        _ => Severity::High,
    };
    Detection {
        ts,
        detector: origin::ALERTMANAGER.into(),
        severity,
        token: Some(token.to_string()),
        ip: a.labels.get("ip").and_then(|s| s.parse::<IpAddr>().ok()),
        user: a.labels.get("user").cloned(),
        source: None,
        action: Action::Alert,
        reason: None,
        evidence: serde_json::json!({
            "receiver": receiver,
            "fingerprint": a.fingerprint,
            "labels": a.labels,
            "annotations": a.annotations,
        }),
        id: stable_id(
            origin::ALERTMANAGER,
            &format!("{token}\0{}", a.fingerprint),
            ts,
        ),
    }
}
