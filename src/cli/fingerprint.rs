//! `tokenwatch fingerprint`: read a token on stdin, print how tokenwatch will show it.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;

use super::build::{load_config, offline_fingerprinter};
use super::CliError;
use crate::enrich::{identify, TokenKind};

/// Arguments of `fingerprint`.
#[derive(Debug, clap::Args)]
pub struct FingerprintArgs {
    /// Config file (its `[fingerprint] key` or state dir key is used).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Treat the value as an id (print it as is) instead of always fingerprinting it.
    #[arg(long)]
    pub auto: bool,
}

/// Runs `fingerprint`: one token per line on stdin, one fingerprint per line out.
pub fn run(args: FingerprintArgs) -> Result<(), CliError> {
    let cfg = load_config(args.config.as_deref())?;
    let fp = offline_fingerprinter(&cfg)?;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading stdin")?;
    let kind = if args.auto {
        TokenKind::Auto
    } else {
        TokenKind::Secret
    };
    let mut any = false;
    for line in input.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(id) = identify(line, kind, &fp) {
            println!("{id}");
            any = true;
        }
    }
    if !any {
        return Err(CliError::Config("no token on stdin".into()));
    }
    Ok(())
}
