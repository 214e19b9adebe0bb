//! `tokenwatch parse`: how lines parse, like `fail2ban-regex` — counts of matched, skipped
//! and malformed lines, the first failures with line numbers and reasons.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::Context;

use super::build::offline_fingerprinter;
use super::replay::{parse_preset, replay_config};
use super::CliError;
use crate::enrich::{identify, Fingerprinter, TokenKind};
use crate::parse::{Parsed, Parser, Preset, Record};

/// Arguments of `parse`.
#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// Preset to parse with (default: the config's source, else nginx).
    #[arg(short, long, value_parser = parse_preset)]
    pub format: Option<Preset>,
    /// nginx: log_format (tokenwatch, combined, main, or a log_format string).
    #[arg(long)]
    pub log_format: Option<String>,
    /// Config file whose source settings to use.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Which configured source (default: the first).
    #[arg(long)]
    pub source: Option<String>,
    /// Print every parsed record (tokens shown as their safe id or fingerprint).
    #[arg(short, long)]
    pub verbose: bool,
    /// How many failures to show.
    #[arg(long, default_value_t = 10)]
    pub show_failures: usize,
    /// The log file (`-` for stdin).
    pub file: PathBuf,
}

#[derive(Default)]
struct Counts {
    lines: u64,
    parsed: u64,
    skipped: u64,
    malformed: u64,
    failures: Vec<(u64, String, String)>,
}

/// Runs `parse`.
pub fn run(args: ParseArgs) -> Result<(), CliError> {
    let cfg = replay_config(
        args.config.as_deref(),
        args.source.as_deref(),
        args.format,
        args.log_format.as_deref(),
    )?;
    let src = &cfg.sources[0];
    let mut parser = crate::parse::build(&src.parser_spec())
        .map_err(|e| CliError::Config(format!("source {:?}: {e}", src.name)))?;
    let fp = offline_fingerprinter(&cfg)?;
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(&args.file)
            .with_context(|| format!("opening {}", args.file.display()))?;
        Box::new(BufReader::new(f))
    };
    let counts = scan(reader, parser.as_mut(), &args, src.token_kind(), &fp)?;
    report(&counts, args.show_failures)?;
    Ok(())
}

fn scan(
    mut reader: Box<dyn BufRead>,
    parser: &mut dyn Parser,
    args: &ParseArgs,
    kind: TokenKind,
    fp: &Fingerprinter,
) -> anyhow::Result<Counts> {
    let mut c = Counts::default();
    let mut line = Vec::new();
    let mut out = std::io::stdout().lock();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        c.lines += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        match parser.parse(text) {
            Ok(Parsed::Event(rec)) => {
                c.parsed += 1;
                if args.verbose {
                    writeln!(out, "{:>8}  {}", c.lines, describe(&rec, kind, fp))?;
                }
            }
            Ok(Parsed::Skip) => c.skipped += 1,
            Err(e) => {
                c.malformed += 1;
                if c.failures.len() < args.show_failures {
                    let shown: String = String::from_utf8_lossy(text).chars().take(160).collect();
                    c.failures.push((c.lines, e.to_string(), shown));
                }
            }
        }
    }
    Ok(c)
}

/// One record as a line of text; the token is shown as tokenwatch will know it.
fn describe(r: &Record<'_>, kind: TokenKind, fp: &Fingerprinter) -> String {
    let token = r
        .token
        .as_deref()
        .and_then(|t| identify(t, kind, fp))
        .map_or_else(|| "-".to_string(), |t| t.to_string());
    format!(
        "time={} token={} ip={} user={} status={} outcome={:?}",
        r.time.map_or_else(|| "-".into(), |t| t.to_string()),
        token,
        r.ip.map_or_else(|| "-".into(), |i| i.to_string()),
        r.user.as_deref().unwrap_or("-"),
        r.status.map_or_else(|| "-".into(), |s| s.to_string()),
        r.outcome,
    )
}

fn report(c: &Counts, shown: usize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "Lines: {}", c.lines)?;
    writeln!(out, "Parsed (token checks): {}", c.parsed)?;
    writeln!(out, "Skipped (no token check): {}", c.skipped)?;
    writeln!(out, "Malformed: {}", c.malformed)?;
    if !c.failures.is_empty() {
        writeln!(out, "\nFirst {} failures:", c.failures.len().min(shown))?;
        for (n, reason, text) in &c.failures {
            writeln!(out, "  line {n}: {reason}\n    {text}")?;
        }
    }
    Ok(())
}
