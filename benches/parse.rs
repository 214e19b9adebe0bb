//! Parser throughput benches (filled in with the parsers).
fn main() {}
