//! Shared by `benches/latency.rs` and `examples/kafka_bench.rs` (included with `#[path]`):
//! watching a detections file for a record.

use std::io::{Read, Seek, SeekFrom};

/// Whether complete lines appended to the detections file since `seen` name `token`. Only
/// whole lines are consumed: a reader may see a write half done (the file grows page by
/// page), and a record split over two reads would otherwise never match.
pub fn record_appeared(
    out: &mut std::fs::File,
    seen: &mut u64,
    token: &str,
) -> std::io::Result<bool> {
    let len = out.metadata()?.len();
    if len <= *seen {
        return Ok(false);
    }
    out.seek(SeekFrom::Start(*seen))?;
    let mut new = Vec::new();
    out.take(len - *seen).read_to_end(&mut new)?;
    let Some(end) = new.iter().rposition(|&b| b == b'\n') else {
        return Ok(false);
    };
    *seen += end as u64 + 1;
    let needle = format!("\"token\":\"{token}\"");
    Ok(String::from_utf8_lossy(&new[..end]).contains(&needle))
}
