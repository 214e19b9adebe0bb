//! The detection record (DESIGN §7): one JSON object a line, stable field names.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{EventTime, Severity, TokenId};

/// What tokenwatch did about a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Reported only.
    Alert,
    /// The token was frozen (enforce mode).
    Freeze,
    /// The token would have been frozen (dry-run).
    WouldFreeze,
    /// A freeze was suppressed (allowlist, rate cap); `reason` says why.
    Suppressed,
}

/// A detector's raw result, before cooldown and id assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Stable detector name (DESIGN §6).
    pub detector: &'static str,
    /// Severity.
    pub severity: Severity,
    /// The cooldown key: token id, IP, source name or `global`; one incident per key.
    pub key: String,
    /// Event time of the finding.
    pub ts: EventTime,
    /// The token concerned, if any.
    pub token: Option<TokenId>,
    /// The client IP concerned, if any.
    pub ip: Option<IpAddr>,
    /// The user concerned, if any.
    pub user: Option<Box<str>>,
    /// Why: the numbers a human needs (baseline vs observed, km and km/h, IP list, counts).
    pub evidence: serde_json::Value,
    /// No further record for the same detector and key within this many milliseconds.
    pub cooldown_ms: i64,
}

impl Finding {
    /// A finding about the token of the event being observed: keyed by the token, with the
    /// event's client address and user.
    pub fn about_token(
        detector: &'static str,
        severity: Severity,
        token: TokenId,
        obs: &super::Obs<'_>,
        evidence: serde_json::Value,
        cooldown_secs: u64,
    ) -> Finding {
        Finding {
            detector,
            severity,
            key: token.as_str().to_string(),
            ts: obs.ev.time,
            token: Some(token),
            ip: obs.ev.ip,
            user: obs.ev.user.clone(),
            evidence,
            cooldown_ms: secs_to_ms(cooldown_secs),
        }
    }

    /// A finding about one client address (per-IP detectors): keyed by the address.
    pub fn about_ip(
        detector: &'static str,
        severity: Severity,
        ip: IpAddr,
        ts: EventTime,
        evidence: serde_json::Value,
        cooldown_secs: u64,
    ) -> Finding {
        Finding {
            detector,
            severity,
            key: ip.to_string(),
            ts,
            token: None,
            ip: Some(ip),
            user: None,
            evidence,
            cooldown_ms: secs_to_ms(cooldown_secs),
        }
    }
}

/// Seconds from config to the engine's milliseconds, saturating.
pub fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// One detection record. Field order is the order of DESIGN §7.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Event time, RFC 3339 UTC with milliseconds.
    #[serde(with = "rfc3339")]
    pub ts: EventTime,
    /// Detector name.
    pub detector: String,
    /// Severity.
    pub severity: Severity,
    /// Token id or fingerprint (never a raw secret).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub token: Option<String>,
    /// Client IP.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ip: Option<IpAddr>,
    /// User.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<String>,
    /// Source name (absent for global detections).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<String>,
    /// What was done.
    pub action: Action,
    /// Why an action was suppressed (or other action detail).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// The detector's evidence.
    pub evidence: serde_json::Value,
    /// Stable id: hash of detector, key and incident start; the hooks' idempotency key.
    pub id: String,
}

impl Detection {
    /// Builds the record for a finding that passed cooldown.
    pub fn from_finding(f: Finding, source: Option<&str>) -> Detection {
        let id = stable_id(f.detector, &f.key, f.ts);
        Detection {
            ts: f.ts,
            detector: f.detector.to_string(),
            severity: f.severity,
            token: f.token.map(|t| t.as_str().to_string()),
            ip: f.ip,
            user: f.user.map(String::from),
            source: source.map(str::to_string),
            action: Action::Alert,
            reason: None,
            evidence: f.evidence,
            id,
        }
    }

    /// The record as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `sha256(detector \0 key \0 ts)` as 16 hex digits: stable across replays and restarts.
pub fn stable_id(detector: &str, key: &str, ts: EventTime) -> String {
    let mut h = Sha256::new();
    h.update(detector.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update([0]);
    h.update(ts.as_millis().to_be_bytes());
    let d = h.finalize();
    hex::encode(&d[..8])
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::event::EventTime;

    pub fn serialize<S: Serializer>(t: &EventTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EventTime, D::Error> {
        let text = String::deserialize(d)?;
        let zone = crate::parse::time::Zone::new(None);
        crate::parse::time::rfc3339(text.as_bytes(), &zone)
            .ok_or_else(|| serde::de::Error::custom(format!("bad timestamp {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_shape_matches_design() {
        let f = Finding {
            detector: "impossible_travel",
            severity: Severity::High,
            key: "ak_3f9c2b11d0aa".into(),
            ts: EventTime::from_millis(1_772_459_736_120),
            token: Some(TokenId::new("ak_3f9c2b11d0aa")),
            ip: Some("203.0.113.9".parse().unwrap()),
            user: Some("alice".into()),
            evidence: serde_json::json!({"km": 5570}),
            cooldown_ms: 0,
        };
        let d = Detection::from_finding(f, Some("gateway"));
        let line = d.to_json_line();
        assert!(line.starts_with(r#"{"ts":"2026-03-02T13:55:36.120Z","detector":"impossible_travel","severity":"high","token":"ak_3f9c2b11d0aa","ip":"203.0.113.9","user":"alice","source":"gateway","action":"alert","evidence":{"km":5570},"id":""#), "{line}");
        let back: Detection = serde_json::from_str(&line).unwrap();
        assert_eq!(back, d);
        assert_eq!(
            d.id,
            stable_id("impossible_travel", "ak_3f9c2b11d0aa", d.ts)
        );
        assert_eq!(d.id.len(), 16);
    }
}
