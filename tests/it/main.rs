//! Integration tests: one binary, one module per feature.

mod cli;
mod config;
mod detect_engine;
mod detect_ip;
mod detect_token;
mod e2e;
mod geo;
#[cfg(feature = "kafka")]
mod kafka;
mod parse;
mod prometheus;
mod respond;
mod tailer;
