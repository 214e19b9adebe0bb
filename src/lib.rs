//! tokenwatch: watches authentication logs and stops stolen or abused API tokens.
//!
//! The crate mirrors the pipeline; each stage is a module:
//!
//! ```text
//! source (tail / replay / stdin) ──LineBatch──▶ parse (preset) ──Record──▶ enrich (fingerprint, geo)
//!     ──AuthEvent──▶ detect ──Detection──▶ respond (policy ▶ journal ▶ hooks)
//! metrics: every stage counts into the registry; server: axum serves metrics, health, admin API
//! ```
//!
//! `config` feeds every stage; `cli` holds one file per verb; `main.rs` only dispatches.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod detect;
pub mod durable;
pub mod enrich;
pub mod event;
pub mod gen;
pub mod metrics;
pub mod net;
pub mod parse;
pub mod pipeline;
pub mod respond;
pub mod scale;
pub mod server;
pub mod source;
