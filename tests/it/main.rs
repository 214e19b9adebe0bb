//! Integration tests: one binary, one module per feature.

mod admin_security;
mod architecture;
mod authz;
mod cli;
mod config;
mod crash;
mod crash_detect;
mod detect_engine;
mod detect_formats;
mod detect_ip;
mod detect_token;
mod e2e;
mod faults;
mod formats;
mod geo;
mod hostile;
mod journald;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "kafka")]
mod kafka_authz;
#[cfg(feature = "kafka")]
mod kafka_cluster;
#[cfg(feature = "kafka")]
mod kafka_responder;
#[cfg(feature = "kafka")]
mod kafka_worker;
mod parse;
mod prometheus;
#[cfg(feature = "kafka")]
mod registry;
mod respond;
mod secrets;
mod support;
mod syslog;
mod tailer;
