//! Fuzzes the `regex` preset through `tokenwatch::parse::build`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwatch::parse::Preset;

fuzz_target!(|data: &[u8]| tokenwatch_fuzz::parse_lines(Preset::Regex, data));
