//! Integration tests: one binary, one module per feature.

mod config;
mod e2e;
mod parse;
mod tailer;
