//! `tokenwatch gen`: write a labelled synthetic auth log (for the demo, tests and benchmarks).

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;

use crate::event::EventTime;
use crate::gen::{generate, spray, GenFormat, GenOptions, GenSummary, Scenario};

/// Options of `tokenwatch gen`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Output format: nginx (the `tokenwatch` log format), json or vault.
    #[arg(long, default_value = "nginx", value_name = "FORMAT")]
    pub format: GenFormat,
    /// Number of tokens in the population.
    #[arg(long, default_value_t = 2000)]
    pub tokens: u32,
    /// Days of traffic (attacks that need baselines need at least 6).
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Seed: the same options and seed give byte-identical output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First instant of traffic: RFC 3339 (`2026-03-02T00:00:00Z`) or a UTC date (`2026-03-02`).
    #[arg(long, value_name = "TIME", value_parser = parse_start)]
    pub start: Option<EventTime>,
    /// Attacks to inject: a comma-separated list of scenario names, `all` or `none`.
    #[arg(long, default_value = "all", value_name = "LIST", value_parser = parse_scenarios)]
    pub scenarios: ScenarioList,
    /// Stop after this many lines (normal traffic continues past --days if needed).
    #[arg(long, value_name = "N")]
    pub lines: Option<u64>,
    /// Instead of normal traffic, write N lines of a token spray under load: rejected
    /// (`invalid`) random tokens, each from a new random address (benchmarks).
    #[arg(long, value_name = "N")]
    pub spray: Option<u64>,
    /// Spray lines per second of event time (with --spray).
    #[arg(long, default_value_t = 1000, value_name = "N", requires = "spray")]
    pub spray_rate: u32,
    /// Write the ground-truth labels (JSON lines) to this file.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Write the log here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// A parsed `--scenarios` value.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioList(pub Vec<Scenario>);

fn parse_scenarios(s: &str) -> Result<ScenarioList, String> {
    Scenario::parse_list(s)
        .map(ScenarioList)
        .map_err(|e| e.to_string())
}

fn parse_start(s: &str) -> Result<EventTime, String> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(EventTime::from_millis(ts.as_millisecond()));
    }
    let date: jiff::civil::Date = s
        .parse()
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
    let (y, m, d) = (date.year(), date.month(), date.day());
    let days = crate::event::days_from_civil(i64::from(y), m as u32, d as u32);
    Ok(EventTime::from_secs(days * 86_400))
}

impl GenArgs {
    /// The generator options these arguments ask for.
    pub fn options(&self) -> GenOptions {
        let defaults = GenOptions::default();
        GenOptions {
            format: self.format,
            tokens: self.tokens,
            days: self.days,
            start: self.start.unwrap_or(defaults.start),
            seed: self.seed,
            scenarios: self.scenarios.0.clone(),
            lines: self.lines,
        }
    }
}

/// Runs `tokenwatch gen`.
pub fn run(args: GenArgs) -> anyhow::Result<()> {
    let opts = args.options();
    let began = Instant::now();
    let mut labels = match &args.labels {
        Some(path) => Some(create(path)?),
        None => None,
    };
    let labels_out = labels.as_mut().map(|f| f as &mut dyn Write);
    let write = |out: &mut dyn Write, labels: Option<&mut dyn Write>| match args.spray {
        Some(n) => spray(&opts, n, args.spray_rate, out),
        None => generate(&opts, out, labels),
    };
    let summary = match &args.output {
        Some(path) => {
            let mut file = create(path)?;
            let s = write(&mut file, labels_out)?;
            file.sync_all()
                .with_context(|| format!("cannot flush {}", path.display()))?;
            s
        }
        None => {
            let stdout = io::stdout();
            let mut lock = stdout.lock();
            write(&mut lock, labels_out).context("cannot write the log")?
        }
    };
    report(&summary, began.elapsed().as_secs_f64());
    Ok(())
}

fn create(path: &PathBuf) -> anyhow::Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

/// A one-paragraph summary on standard error (standard output may be the log).
fn report(s: &GenSummary, secs: f64) {
    let rate = s.lines as f64 / secs.max(1e-9);
    let span = match (s.first, s.last) {
        (Some(a), Some(b)) => format!(" from {a} to {b}"),
        _ => String::new(),
    };
    eprintln!(
        "gen: {} lines{span}, {} tokens, {} incidents, {} hard cases in {secs:.2} s ({rate:.0} lines/s)",
        s.lines, s.tokens, s.incidents, s.hard_cases
    );
    if !s.skipped.is_empty() {
        let names: Vec<&str> = s.skipped.iter().map(|s| s.name()).collect();
        eprintln!(
            "gen: skipped {} (they need {} days of history before the attack day, or were cut by --lines)",
            names.join(", "),
            crate::gen::LEARNING_DAYS
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        gen: GenArgs,
    }

    fn parse(args: &[&str]) -> Result<GenArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("gen").chain(args.iter().copied())).map(|c| c.gen)
    }

    #[test]
    fn defaults_match_the_brief() {
        let a = parse(&[]).expect("parse");
        let o = a.options();
        assert_eq!(o, GenOptions::default());
        assert_eq!((o.tokens, o.days, o.seed), (2000, 7, 1));
    }

    #[test]
    fn options_parse() {
        let a = parse(&[
            "--format",
            "json",
            "--scenarios",
            "brute_force,token-spray",
            "--start",
            "2026-04-01",
            "--lines",
            "10",
        ])
        .expect("parse");
        let o = a.options();
        assert_eq!(o.format, GenFormat::Json);
        assert_eq!(o.scenarios, [Scenario::BruteForce, Scenario::TokenSpray]);
        assert_eq!(o.start.to_string(), "2026-04-01T00:00:00.000Z");
        assert_eq!(o.lines, Some(10));
        let t =
            parse(&["--start", "2026-03-02T13:55:36.120Z", "--scenarios", "none"]).expect("parse");
        assert_eq!(t.options().start.as_millis(), 1_772_459_736_120);
        assert!(t.options().scenarios.is_empty());
        assert!(parse(&["--scenarios", "nope"]).is_err());
        assert!(parse(&["--format", "xml"]).is_err());
        assert!(parse(&["--start", "yesterday"]).is_err());
    }

    #[test]
    fn run_writes_log_and_labels_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, labels) = (dir.path().join("auth.log"), dir.path().join("labels.jsonl"));
        let mut a = parse(&["--tokens", "10", "--days", "7", "--lines", "3000"]).expect("parse");
        a.output = Some(log.clone());
        a.labels = Some(labels.clone());
        run(a).expect("run");
        let text = std::fs::read_to_string(&log).expect("log");
        assert_eq!(text.lines().count(), 3000);
        let l = std::fs::read_to_string(&labels).expect("labels");
        assert!(crate::gen::Label::parse_all(&l).is_ok());
    }
}
