//! `tokenwatch parse`: how lines parse, like `fail2ban-regex` — counts of matched, skipped
//! and malformed lines, the first failures with line numbers and reasons, and the container
//! wrapper and JSON dialect it found.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::Context;

use super::build::offline_fingerprinter;
use super::replay::{parse_preset, replay_config};
use super::CliError;
use crate::enrich::{identify, Fingerprinter, TokenKind};
use crate::parse::{Dialect, Parsed, Parser, Preset, Record};
use crate::source::wrapper::{Fed, Unwrapper, Wrapper, WrapperChoice};

/// Arguments of `parse`.
#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// Preset to parse with (default: the config's source, else nginx).
    #[arg(short, long, value_parser = parse_preset)]
    pub format: Option<Preset>,
    /// nginx: log_format (tokenwatch, combined, main, common, traefik, or a log_format string).
    #[arg(long)]
    pub log_format: Option<String>,
    /// regex: the pattern with named captures (implies `--format regex`), like
    /// `fail2ban-regex LOG REGEX`.
    #[arg(long)]
    pub pattern: Option<String>,
    /// regex: timestamp format (rfc3339, epoch, epoch_ms, nginx, auto or a strftime string).
    #[arg(long)]
    pub time_format: Option<String>,
    /// json: dialect (generic, caddy, traefik, envoy, kong; default: detected from the keys).
    #[arg(long, value_parser = parse_dialect)]
    pub dialect: Option<Dialect>,
    /// Container log wrapper (auto, none, docker, cri; default: the source's, else auto).
    #[arg(long, value_parser = parse_wrapper)]
    pub wrapper: Option<WrapperChoice>,
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
    not_access: Vec<(&'static str, u64)>,
    malformed: u64,
    too_long: u64,
    failures: Vec<(u64, String, String)>,
}

/// Parses a JSON dialect name for clap.
pub fn parse_dialect(s: &str) -> Result<Dialect, String> {
    choose(s, &Dialect::ALL, "dialect")
}

/// Parses a wrapper name for clap.
pub fn parse_wrapper(s: &str) -> Result<WrapperChoice, String> {
    choose(s, &WrapperChoice::ALL, "wrapper")
}

fn choose<T: Copy>(s: &str, all: &[(T, &str)], what: &str) -> Result<T, String> {
    all.iter()
        .find(|(_, n)| *n == s)
        .map(|(v, _)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|(_, n)| *n).collect();
            format!(
                "unknown {what} {s:?} (expected one of {})",
                names.join(", ")
            )
        })
}

/// Runs `parse`.
pub fn run(args: ParseArgs) -> Result<(), CliError> {
    // A pattern on the command line means the regex preset, as with fail2ban-regex.
    let format = args
        .format
        .or(args.pattern.is_some().then_some(Preset::Regex));
    let mut cfg = replay_config(
        args.config.as_deref(),
        args.source.as_deref(),
        format,
        args.log_format.as_deref(),
    )?;
    let src = &mut cfg.sources[0];
    if let Some(p) = &args.pattern {
        src.pattern = Some(p.clone());
    }
    if let Some(t) = &args.time_format {
        src.time_format = Some(t.clone());
    }
    if args.dialect.is_some() {
        src.dialect = args.dialect;
    }
    if let Some(w) = args.wrapper {
        src.wrapper = w;
    }
    if src.format == Preset::Regex && src.pattern.is_none() {
        return Err(CliError::Config(
            "format regex needs a pattern: --pattern '(?P<ip>\\S+) ...' or a config source with pattern".into(),
        ));
    }
    let src = &cfg.sources[0];
    let mut parser = crate::parse::build(&src.parser_spec())
        .map_err(|e| CliError::Config(format!("source {:?}: {e}", src.name)))?;
    let mut unwrap = Unwrapper::new(src.wrapper, src.max_line_bytes);
    let fp = offline_fingerprinter(&cfg)?;
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(&args.file)
            .with_context(|| format!("opening {}", args.file.display()))?;
        Box::new(BufReader::new(f))
    };
    let stages = Stages {
        parser: parser.as_mut(),
        unwrap: &mut unwrap,
    };
    let counts = scan(reader, stages, &args, src.token_kind(), &fp)?;
    report(&counts, &unwrap, parser.as_ref(), args.show_failures)?;
    Ok(())
}

/// The container wrapper and the preset's parser, in the order lines meet them.
struct Stages<'a> {
    parser: &'a mut dyn Parser,
    unwrap: &'a mut Unwrapper,
}

fn scan(
    mut reader: Box<dyn BufRead>,
    st: Stages<'_>,
    args: &ParseArgs,
    kind: TokenKind,
    fp: &Fingerprinter,
) -> anyhow::Result<Counts> {
    let mut c = Counts::default();
    let mut line = Vec::new();
    let (mut inner, mut stamps) = (Vec::new(), Vec::new());
    let mut out = std::io::stdout().lock();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        c.lines += 1;
        let raw = line.strip_suffix(b"\n").unwrap_or(&line);
        inner.clear();
        stamps.clear();
        match st.unwrap.feed(raw, 0, &mut inner, &mut stamps) {
            Fed::Line => {}
            Fed::Pending => continue,
            Fed::TooLong => {
                c.too_long += 1;
                continue;
            }
        }
        let text = inner.strip_suffix(b"\n").unwrap_or(&inner);
        match st.parser.parse(text) {
            Ok(Parsed::Event(mut rec)) => {
                c.parsed += 1;
                rec.time = rec.time.or(stamps.first().copied());
                if args.verbose {
                    writeln!(out, "{:>8}  {}", c.lines, describe(&rec, kind, fp))?;
                }
            }
            Ok(Parsed::Skip) => c.skipped += 1,
            Ok(Parsed::NotAccess(why)) => {
                c.skipped += 1;
                match c.not_access.iter_mut().find(|(w, _)| *w == why) {
                    Some((_, n)) => *n += 1,
                    None => c.not_access.push((why, 1)),
                }
            }
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

fn report(c: &Counts, unwrap: &Unwrapper, parser: &dyn Parser, shown: usize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let wrapper = unwrap.wrapper().map_or("none (no lines)", |w| match w {
        Wrapper::None => "none",
        Wrapper::Docker => "docker (json-file)",
        Wrapper::Cri => "cri",
    });
    writeln!(out, "Wrapper: {wrapper}")?;
    if let Some(d) = parser.detected() {
        writeln!(out, "Dialect: {d}")?;
    }
    writeln!(out, "Lines: {}", c.lines)?;
    writeln!(out, "Parsed (token checks): {}", c.parsed)?;
    writeln!(out, "Skipped (no token check): {}", c.skipped)?;
    for (why, n) in &c.not_access {
        writeln!(out, "  not access lines ({why}): {n}")?;
    }
    writeln!(out, "Malformed: {}", c.malformed)?;
    if c.too_long > 0 {
        writeln!(out, "Too long (dropped): {}", c.too_long)?;
    }
    if !c.failures.is_empty() {
        writeln!(out, "\nFirst {} failures:", c.failures.len().min(shown))?;
        for (n, reason, text) in &c.failures {
            writeln!(out, "  line {n}: {reason}\n    {text}")?;
        }
    }
    Ok(())
}
