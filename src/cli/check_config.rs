//! `tokenwatch check-config`: validate a config file, print the effective config.

use std::path::PathBuf;

use super::build::{build_stages, load_config};
use super::CliError;
use crate::metrics::Metrics;

/// Arguments of `check-config`.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// The config file to check.
    pub file: PathBuf,
    /// Only validate; do not print the effective config.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `check-config`: exit 0 and the effective config, or every problem and exit 2.
pub fn run(args: CheckConfigArgs) -> Result<(), CliError> {
    let cfg = load_config(Some(&args.file))?;
    // Building the parsers catches what only the parser knows (e.g. a log_format variable).
    build_stages(&cfg, &Metrics::new())?;
    // The TLS files too: a certificate that `run` would refuse is a config error here.
    crate::server::tls::from_config(&cfg.server).map_err(|e| CliError::Config(e.to_string()))?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    if !args.quiet {
        print!("{}", cfg.to_effective_toml());
    }
    eprintln!("{}: OK", args.file.display());
    Ok(())
}
