//! Synthetic labelled log generator (`tokenwatch gen`).
//!
//! Many tokens over days of realistic traffic (office workers, services, batch jobs, NAT pools,
//! travellers, roaming phones, expiring and rotated keys), plus injected attacks after a learning
//! period, written time-ordered in one of the input formats of DESIGN §4, with a ground-truth
//! labels file. Deterministic: the same options and seed give byte-identical output.
//!
//! Every user, service and attack is an actor with its own random stream; a binary heap merges
//! their time-ordered streams into one log.

mod actor;
mod attacks;
mod clock;
mod ev;
mod geo;
mod labels;
mod machine;
mod merge;
mod person;
mod plan;
mod population;
mod rng;
mod scanner;
mod scenario;
mod spray;
#[cfg(test)]
mod tests;
mod write;

use std::io;

pub use geo::{geo_table, locate, GeoEntry};
pub use labels::{Expect, Label};
pub use scenario::{GenFormat, Scenario, UnknownName};
pub use spray::spray;

use crate::event::{days_from_civil, EventTime};

/// Days of normal history before attacks whose detectors need baselines.
pub const LEARNING_DAYS: u32 = 5;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOptions {
    /// Output format.
    pub format: GenFormat,
    /// Number of tokens (at least the five attack victims are always present).
    pub tokens: u32,
    /// Days of traffic; attacks needing baselines come after a 5-day learning period.
    pub days: u32,
    /// First instant of traffic.
    pub start: EventTime,
    /// Seed of every random choice.
    pub seed: u64,
    /// Attacks to inject.
    pub scenarios: Vec<Scenario>,
    /// Stop after this many lines; normal traffic then runs past `days` if needed (benchmarks).
    pub lines: Option<u64>,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            format: GenFormat::Nginx,
            tokens: 2000,
            days: 7,
            start: EventTime::from_secs(days_from_civil(2026, 3, 2) * 86_400),
            seed: 1,
            scenarios: Scenario::ALL.to_vec(),
            lines: None,
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenSummary {
    /// Lines written.
    pub lines: u64,
    /// Attacks labelled (fully inside the written lines).
    pub incidents: u64,
    /// Hard cases labelled (`expect: none`).
    pub hard_cases: u64,
    /// Distinct token ids in the normal population (rotations add one each).
    pub tokens: u64,
    /// Requested scenarios that did not fit (too few days for a learning period, cut by `lines`).
    pub skipped: Vec<Scenario>,
    /// Time of the first line.
    pub first: Option<EventTime>,
    /// Time of the last line.
    pub last: Option<EventTime>,
}

/// Writes the log to `out` and, if given, the labels (JSON lines) to `labels`.
pub fn generate(
    opts: &GenOptions,
    out: &mut dyn io::Write,
    labels: Option<&mut dyn io::Write>,
) -> io::Result<GenSummary> {
    let plan = plan::Plan::new(opts);
    let mut world = merge::World::build(opts, &plan);
    let run = merge::run(&mut world, opts, out)?;
    let (truths, skipped) = world.truths(&plan, &run);
    if let Some(w) = labels {
        labels::write_labels(w, &truths)?;
    }
    let incidents = truths.iter().filter(|t| t.expect == Expect::Detect).count() as u64;
    Ok(GenSummary {
        lines: run.lines,
        incidents,
        hard_cases: truths.len() as u64 - incidents,
        tokens: world.tokens,
        skipped,
        first: run.first.map(EventTime::from_millis),
        last: run.last.map(EventTime::from_millis),
    })
}
