//! Integration tests: one binary, one module per feature.

mod cli;
mod config;
mod e2e;
mod parse;
mod respond;
mod tailer;
