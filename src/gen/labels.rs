//! The ground-truth labels file: one JSON object a line, an attack that must be detected or a
//! hard case that must not be.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::event::EventTime;

/// What a detector should do about a labelled window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// An injected attack: the named detector must fire for this key inside the window.
    Detect,
    /// Benign traffic that looks suspicious: the named detector must stay quiet for this key.
    None,
}

/// One line of the labels file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// Stable id within the file, e.g. `atk-03` or `hc-0042`.
    pub id: String,
    /// Scenario name (`brute_force`, …, or a hard case such as `traveller`).
    pub scenario: String,
    /// The detector concerned (DESIGN §6 name).
    pub detector: String,
    /// Token id, IP, or `global`.
    pub key: String,
    /// Window start, RFC 3339 with milliseconds.
    pub start: String,
    /// Window end (inclusive), RFC 3339 with milliseconds.
    pub end: String,
    /// Window start in ms since the epoch.
    pub start_ms: i64,
    /// Window end (inclusive) in ms since the epoch.
    pub end_ms: i64,
    /// Detect or stay quiet.
    pub expect: Expect,
}

impl Label {
    /// True if `t` lies in the window (both ends inclusive).
    pub fn contains(&self, t: EventTime) -> bool {
        (self.start_ms..=self.end_ms).contains(&t.as_millis())
    }

    /// Reads a whole labels file.
    pub fn parse_all(text: &str) -> Result<Vec<Label>, serde_json::Error> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect()
    }
}

/// A label before it has an id: what actors and attack builders report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Truth {
    pub scenario: &'static str,
    pub detector: &'static str,
    pub key: String,
    pub start: i64,
    pub end: i64,
    pub expect: Expect,
}

impl Truth {
    /// A hard case: `detector` must not fire for `key` in `[start, end]`.
    pub(crate) fn hard(
        scenario: &'static str,
        detector: &'static str,
        key: String,
        start: i64,
        end: i64,
    ) -> Truth {
        Truth {
            scenario,
            detector,
            key,
            start,
            end,
            expect: Expect::None,
        }
    }
}

/// Writes labels: attacks first (`atk-NN`), then hard cases (`hc-NNNN`), one JSON object a line.
pub(crate) fn write_labels(out: &mut dyn Write, truths: &[Truth]) -> io::Result<()> {
    let mut w = io::BufWriter::new(out);
    let (mut atk, mut hc) = (0u32, 0u32);
    for expect in [Expect::Detect, Expect::None] {
        for t in truths.iter().filter(|t| t.expect == expect) {
            let id = match expect {
                Expect::Detect => {
                    atk += 1;
                    format!("atk-{atk:02}")
                }
                Expect::None => {
                    hc += 1;
                    format!("hc-{hc:04}")
                }
            };
            let label = Label {
                id,
                scenario: t.scenario.to_string(),
                detector: t.detector.to_string(),
                key: t.key.clone(),
                start: EventTime::from_millis(t.start).to_string(),
                end: EventTime::from_millis(t.end).to_string(),
                start_ms: t.start,
                end_ms: t.end,
                expect,
            };
            serde_json::to_writer(&mut w, &label)?;
            w.write_all(b"\n")?;
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_attacks_come_first() {
        let truths = vec![
            Truth::hard("traveller", "impossible_travel", "ak_1".into(), 1000, 2000),
            Truth {
                expect: Expect::Detect,
                ..Truth::hard("brute_force", "brute_force", "203.0.113.7".into(), 5, 9)
            },
        ];
        let mut out = Vec::new();
        write_labels(&mut out, &truths).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        let labels = Label::parse_all(&text).expect("parse");
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[0].id, "atk-01");
        assert_eq!(labels[0].expect, Expect::Detect);
        assert_eq!(labels[1].id, "hc-0001");
        assert_eq!(labels[1].start, "1970-01-01T00:00:01.000Z");
        assert!(labels[1].contains(EventTime::from_millis(2000)));
        assert!(!labels[1].contains(EventTime::from_millis(2001)));
    }
}
