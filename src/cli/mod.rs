//! Command-line verbs: one file per verb; this file parses arguments and maps errors to
//! exit codes (0 ok, 1 runtime error, 2 usage or config error).

use clap::{Parser, Subcommand};

pub mod admin;
mod build;
pub mod check_config;
pub mod demo;
pub mod fingerprint;
pub mod gen;
pub mod parse;
pub mod replay;
pub mod run;
mod sources;

pub use build::{load_config, Built};

/// tokenwatch: watches authentication logs and stops stolen or abused API tokens.
#[derive(Debug, Parser)]
#[command(name = "tokenwatch", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing syntax, e.g. `info`, `tokenwatch=debug`); also RUST_LOG.
    #[arg(long, global = true, default_value = "info", env = "TOKENWATCH_LOG")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs (DESIGN §2).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: tail sources, serve HTTP, detect, respond.
    Run(run::RunArgs),
    /// Read files start to end as fast as possible and print a summary.
    Replay(replay::ReplayArgs),
    /// Zero-config first run on a generated log.
    Demo(demo::DemoArgs),
    /// Generate a labelled synthetic auth log.
    Gen(gen::GenArgs),
    /// Show how lines parse (like fail2ban-regex).
    Parse(parse::ParseArgs),
    /// Validate a config file and print the effective config.
    CheckConfig(check_config::CheckConfigArgs),
    /// Read a token on stdin and print its fingerprint.
    Fingerprint(fingerprint::FingerprintArgs),
    /// List the tokens the running daemon has frozen (admin API).
    Frozen(admin::FrozenArgs),
    /// Freeze a token by hand, through the same policy and hooks (admin API).
    Freeze(admin::TokenArgs),
    /// Lift a freeze; the unfreeze hooks are called (admin API).
    Unfreeze(admin::TokenArgs),
}

/// A verb's failure, carrying its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or configuration (exit 2).
    #[error("{0}")]
    Config(String),
    /// Anything that went wrong at run time (exit 1).
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) => 2,
            CliError::Runtime(_) => 1,
        }
    }
}

/// Parses `std::env::args`, runs the verb, returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Gen(a) => gen::run(a).map_err(CliError::Runtime),
        Command::Parse(a) => parse::run(a),
        Command::CheckConfig(a) => check_config::run(a),
        Command::Fingerprint(a) => fingerprint::run(a),
        Command::Frozen(a) => admin::frozen(a),
        Command::Freeze(a) => admin::freeze(a),
        Command::Unfreeze(a) => admin::unfreeze(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            match &e {
                CliError::Config(msg) => eprintln!("{msg}"),
                CliError::Runtime(err) => eprintln!("error: {err:#}"),
            }
            e.exit_code()
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
