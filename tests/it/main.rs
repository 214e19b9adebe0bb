//! Integration tests: one binary, one module per feature.

mod cli;
mod config;
mod detect_token;
mod e2e;
mod parse;
mod tailer;
