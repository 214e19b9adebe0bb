//! The state side of `bench/authz.sh`: writes a frozen set of N fingerprinted tokens into a
//! state directory, as the responder would have persisted it, so `/authz` can be measured
//! against a large set without freezing a million tokens through the API.
//!
//! ```text
//! authz_bench state STATE_DIR N FINGERPRINT_KEY
//! ```
//!
//! The frozen tokens are `sk-bench-0000000000` … (secrets by shape: `/authz` fingerprints
//! them with the key, as the parsers do); `sk-bench-miss-…` are not frozen.

use std::path::Path;

use tokenwatch::detect::{Action, Detection};
use tokenwatch::enrich::Fingerprinter;
use tokenwatch::event::EventTime;
use tokenwatch::event::Severity;
use tokenwatch::respond::FrozenEntry;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, cmd, dir, n, key] = args.as_slice() else {
        return Err("usage: authz_bench state STATE_DIR N FINGERPRINT_KEY".into());
    };
    if cmd != "state" {
        return Err(format!("unknown command {cmd}").into());
    }
    let n: usize = n.parse()?;
    let fp = Fingerprinter::new(key.as_bytes());
    let now = EventTime::now();
    let frozen: Vec<FrozenEntry> = (0..n)
        .map(|i| {
            let token = fp
                .fingerprint(format!("sk-bench-{i:010}").as_bytes())
                .to_string();
            FrozenEntry {
                token: token.clone(),
                since_ms: now.as_millis(),
                until_ms: None,
                detection: Detection {
                    ts: now,
                    detector: "ip_fanout".into(),
                    severity: Severity::High,
                    token: Some(token),
                    ip: None,
                    user: None,
                    source: None,
                    action: Action::Freeze,
                    reason: None,
                    evidence: serde_json::json!({}),
                    id: format!("bench-{i:010}"),
                },
            }
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "version": 1, "frozen": frozen }))?;
    std::fs::create_dir_all(dir)?;
    let path = Path::new(dir).join(tokenwatch::respond::FROZEN_FILE);
    tokenwatch::durable::write_state(&path, tokenwatch::respond::frozen::KIND, &body)?;
    println!(
        "wrote {n} frozen entries ({} bytes) to {}",
        body.len(),
        path.display()
    );
    Ok(())
}
