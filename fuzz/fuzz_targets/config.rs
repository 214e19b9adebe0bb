//! Fuzzes the config loader: TOML text through check-config's validation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tokenwatch_fuzz::config(data));
