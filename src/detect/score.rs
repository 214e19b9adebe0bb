//! Scoring detections against a ground-truth labels file (`tokenwatch gen --labels`):
//! recall, detection delay and false positives per detector — the labelled backtest.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Detection;
use crate::gen::{Expect, Label};

/// Grace after a labelled window's end during which a detection still counts as on time.
const GRACE_MS: i64 = 5 * 60_000;

/// One detector's score.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DetectorScore {
    /// Labelled incidents (`expect: detect`).
    pub incidents: u32,
    /// Incidents with a matching detection.
    pub detected: u32,
    /// Benign hard cases (`expect: none`) this detector is labelled for.
    pub hard_cases: u32,
    /// Hard cases it fired on (false positives).
    pub hard_case_hits: u32,
    /// Its detections that match no label at all (possible false positives).
    pub unlabelled: u32,
    /// Median delay from incident start to first detection, seconds.
    pub median_delay_secs: Option<f64>,
}

impl DetectorScore {
    /// detected / incidents (1.0 when there were none).
    pub fn recall(&self) -> f64 {
        if self.incidents == 0 {
            1.0
        } else {
            f64::from(self.detected) / f64::from(self.incidents)
        }
    }
}

fn matches(l: &Label, d: &Detection, grace_ms: i64) -> bool {
    if d.detector != l.detector {
        return false;
    }
    let t = d.ts.as_millis();
    if t < l.start_ms || t > l.end_ms + grace_ms {
        return false;
    }
    // A token label may name the token's id or its linked accessor (Vault labels name the
    // accessor; the vault preset keys by the HMAC'd client token and links the accessor).
    l.key == "global"
        || d.token.as_deref() == Some(l.key.as_str())
        || d.evidence["accessor"].as_str() == Some(l.key.as_str())
        || d.ip.is_some_and(|ip| ip.to_string() == l.key)
}

/// Scores `detections` against `labels`, per detector (every DESIGN detector is listed).
pub fn score(labels: &[Label], detections: &[Detection]) -> BTreeMap<String, DetectorScore> {
    let mut out: BTreeMap<String, DetectorScore> = crate::config::detectors::names()
        .map(|d| (d.to_string(), DetectorScore::default()))
        .collect();
    let mut delays: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for l in labels {
        let s = out.entry(l.detector.clone()).or_default();
        match l.expect {
            Expect::Detect => {
                s.incidents += 1;
                let first = detections
                    .iter()
                    .filter(|d| matches(l, d, GRACE_MS))
                    .map(|d| d.ts.as_millis())
                    .min();
                if let Some(t) = first {
                    s.detected += 1;
                    let delay = (t - l.start_ms).max(0) as f64 / 1000.0;
                    delays.entry(l.detector.clone()).or_default().push(delay);
                }
            }
            Expect::None => {
                s.hard_cases += 1;
                if detections.iter().any(|d| matches(l, d, 0)) {
                    s.hard_case_hits += 1;
                }
            }
        }
    }
    for d in detections {
        let labelled = labels.iter().any(|l| matches(l, d, GRACE_MS));
        if !labelled {
            out.entry(d.detector.clone()).or_default().unlabelled += 1;
        }
    }
    for (det, mut v) in delays {
        v.sort_by(f64::total_cmp);
        if let Some(s) = out.get_mut(&det) {
            s.median_delay_secs = v.get(v.len() / 2).copied();
        }
    }
    out
}

/// The score as a text table.
pub fn table(scores: &BTreeMap<String, DetectorScore>) -> String {
    let mut t = String::from(
        "detector            incidents detected recall  delay(s)  hard-cases hits  unlabelled\n",
    );
    for (d, s) in scores {
        let delay = s
            .median_delay_secs
            .map_or_else(|| "-".to_string(), |x| format!("{x:.0}"));
        t.push_str(&format!(
            "{d:<20}{:>9}{:>9}{:>7.2}{:>10}{:>12}{:>5}{:>12}\n",
            s.incidents,
            s.detected,
            s.recall(),
            delay,
            s.hard_cases,
            s.hard_case_hits,
            s.unlabelled
        ));
    }
    t
}
