//! A live `tokenwatch run` killed with SIGKILL again and again while a generated log is
//! appended in chunks ends with the detections `tokenwatch replay` finds in the same file:
//! every detector's state survives in the snapshot, and the lines read again after a kill
//! raise the same records under the same ids.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;

use super::crash::{parse_record, snapshot_offset, Rng};
use super::support::{http_get, wait_for, Daemon};
use tokenwatch::detect::Detection;
use tokenwatch::gen::{generate, Expect, GenOptions, Label};

fn write_config(dir: &Path, log: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[state]
dir = "{state}"

[[source]]
name = "gw"
path = "{log}"
format = "nginx"
start_at = "beginning"

[detectors]
snapshot_interval_secs = 1
"#,
        state = dir.join("state").display(),
        log = log.display()
    );
    let path = dir.join("tokenwatch.toml");
    fs::write(&path, text).unwrap();
    path
}

/// Detection ids in a JSON-lines file (a record torn by a kill is read where it can be).
fn ids(path: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut torn = 0;
    text.lines()
        .filter_map(|l| parse_record(l, &mut torn))
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

/// The offset just past the last line of `log` whose time is before `ms` (a chunk that
/// ends there holds everything before that instant).
fn line_end_at(log: &[u8], ms: i64) -> usize {
    let mut at = 0;
    while at < log.len() {
        let next = log[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(log.len(), |i| at + i + 1);
        if line_ms(&log[at..next]) >= ms {
            return at;
        }
        at = next;
    }
    at
}

/// The end of the line holding byte `at` (the log's end if past it).
fn line_end_at_offset(log: &[u8], at: usize) -> usize {
    let at = at.min(log.len());
    log[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(log.len(), |i| at + i + 1)
}

/// A generated line's time (its nginx `[dd/Mon/yyyy:hh:mm:ss +0000]` field), in ms.
fn line_ms(line: &[u8]) -> i64 {
    let open = line.iter().position(|&b| b == b'[').expect("[");
    tokenwatch::parse::time::nginx_local(&line[open + 1..open + 27])
        .expect("nginx time")
        .as_millis()
}

/// Lines the running daemon has read since it started (every parse result).
fn lines_read(addr: &str) -> Option<u64> {
    let (_, m) = http_get(addr, "/metrics")?;
    let n = m
        .lines()
        .filter(|l| l.starts_with("tokenwatch_lines_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(n as u64)
}

/// `gen` into the tailed file chunk by chunk, killing the daemon at start-up, mid-chunk
/// (after a seeded number of lines), or once a snapshot covers the whole file; then the
/// union of ids in `detections.jsonl` must equal `replay`'s.
#[test]
fn kill_9_while_tailing_a_generated_log_ends_with_replays_detections() {
    let dir = tempfile::tempdir().unwrap();
    let (log, state) = (dir.path().join("access.log"), dir.path().join("state"));
    let cfg = write_config(dir.path(), &log);
    let opts = GenOptions {
        tokens: 300,
        days: 2,
        seed: 9,
        ..GenOptions::default()
    };
    let (mut full, mut labels) = (Vec::new(), Vec::new());
    generate(&opts, &mut full, Some(&mut labels)).unwrap();
    let labels = Label::parse_all(std::str::from_utf8(&labels).unwrap()).unwrap();

    // What replay finds in the complete file, with the same config.
    let reference = dir.path().join("reference.log");
    fs::write(&reference, &full).unwrap();
    let replayed = dir.path().join("replayed.jsonl");
    let st = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["replay", "--threads", "1", "-c"])
        .arg(&cfg)
        .arg("--detections")
        .arg(&replayed)
        .arg(&reference)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let want = ids(&replayed);
    assert!(want.len() >= 5, "replay found only {want:?}");

    // Chunk ends: inside every detected attack (halfway from its start to replay's record:
    // the daemon is killed with a snapshot of exactly that point, state mid-attack), and
    // every 5–15 % of the log (killed at start-up, mid-chunk or caught up, seeded).
    let mut rng = Rng(0x5eed_0017_0004_0009);
    let mut ends: Vec<(usize, bool)> = Vec::new();
    for text in fs::read_to_string(&replayed).unwrap().lines() {
        let d: Detection = serde_json::from_str(text).unwrap();
        let fired = d.ts.as_millis();
        let Some(l) = labels.iter().find(|l| {
            l.detector == d.detector && l.expect == Expect::Detect && l.start_ms <= fired
        }) else {
            continue;
        };
        ends.push((
            line_end_at(&full, l.start_ms + (fired - l.start_ms) / 2),
            true,
        ));
    }
    let attacks = ends.len();
    assert!(attacks >= 5, "{attacks} attacks to cut");
    let mut at = 0;
    while at < full.len() {
        at = line_end_at_offset(
            &full,
            at + full.len() / 20 + rng.below(full.len() as u64 / 10) as usize,
        );
        ends.push((at, false));
    }
    ends.sort();
    ends.dedup_by_key(|e| e.0);

    File::create(&log).unwrap();
    let (mut written, mut kills) = (0usize, [0u32; 3]);
    for (end, in_attack) in ends {
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&full[written..end]).unwrap();
        drop(f);
        written = end;

        let resume = snapshot_offset(&state) as usize;
        let behind = full[resume..written]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        let mut d = Daemon::start(&cfg, dir.path(), &[]);
        let addr = d.addr.clone();
        let how = if in_attack { 2 } else { rng.below(3) };
        match how {
            // At start-up: restoring the snapshot, first scan.
            0 => {}
            // Mid-chunk: some lines past the snapshot it restored, before the next.
            1 => {
                let at = 1 + rng.below(behind.max(1));
                wait_for(120, "lines read to the kill point", || {
                    d.assert_running();
                    lines_read(&addr).filter(|&n| n >= at)
                });
            }
            // Caught up: a snapshot covers all that was written.
            _ => {
                wait_for(120, "a snapshot of the whole file", || {
                    d.assert_running();
                    (snapshot_offset(&state) as usize == written).then_some(())
                });
            }
        }
        kills[how as usize] += 1;
        drop(d); // SIGKILL
    }

    // Last start: read to the end and save it, then stop cleanly.
    let mut d = Daemon::start(&cfg, dir.path(), &[]);
    wait_for(120, "a snapshot of the whole file", || {
        d.assert_running();
        (snapshot_offset(&state) as usize == full.len()).then_some(())
    });
    assert!(d.terminate().success());
    let got = ids(&state.join("detections.jsonl"));
    eprintln!(
        "crash_detect: {} kills (start-up {}, mid-chunk {}, caught up {}; {attacks} of them \
         mid-attack), {} lines, {} ids",
        kills.iter().sum::<u32>(),
        kills[0],
        kills[1],
        kills[2],
        full.iter().filter(|&&b| b == b'\n').count(),
        got.len()
    );
    assert!(kills.iter().sum::<u32>() >= 10, "{kills:?}");
    assert_eq!(got, want, "live run with kill -9 vs replay");
}
