//! Crash safety (issue 7 parts 3–4): `kill -9` of a real `tokenwatch run` at seeded random
//! points while a writer appends a numbered log, damaged state files at start, and a state
//! directory that stops accepting writes.
//!
//! How lines are told apart: every line carries its own token, rejected as revoked, and
//! `revoked_reuse` runs with `min_uses = 1`, so every line the engine processes yields one
//! record with a stable id in `detections.jsonl`. Records are flushed at the end of each
//! batch and a snapshot is only taken after that flush, so a line whose record is missing
//! was lost, and a record seen twice is a line read twice. One line in 50 comes from a
//! non-allowlisted address and freezes its token through a webhook that is down during
//! some kills.

use super::support::wait_for;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{http_get, sample};

/// One line in this many freezes its token.
const FREEZE_EVERY: u64 = 50;

/// A daemon killed (SIGKILL) on drop, so a failing test never leaks one.
struct Daemon {
    child: Child,
    addr: Option<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts `tokenwatch run`; stderr goes to `dir/stderr.log` (appended).
    fn spawn(dir: &Path) -> Daemon {
        let addr_file = dir.join("addr");
        let _ = fs::remove_file(&addr_file);
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
            .args(["run", "-c"])
            .arg(dir.join("tokenwatch.toml"))
            .arg("--addr-file")
            .arg(&addr_file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn tokenwatch run");
        Daemon { child, addr: None }
    }

    /// Waits for the bound address.
    fn addr(&mut self, dir: &Path) -> String {
        if let Some(a) = &self.addr {
            return a.clone();
        }
        let child = &mut self.child;
        let a = wait_for(30, "listen address", || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("tokenwatch exited early: {st}");
            }
            fs::read_to_string(dir.join("addr"))
                .ok()
                .filter(|s| !s.is_empty())
        });
        self.addr = Some(a.clone());
        a
    }

    fn metrics(&self) -> Option<String> {
        http_get(self.addr.as_deref()?, "/metrics").map(|(_, b)| b)
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let child = &mut self.child;
        let st = wait_for(30, "exit after SIGTERM", || child.try_wait().ok().flatten());
        assert_eq!(st.code(), Some(0));
    }
}

/// xorshift64*: seeded, so a failure replays with the same kill points (also `crash_detect`'s).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Line `i`: its own token and timestamp; every [`FREEZE_EVERY`]th from a non-allowlisted
/// address (a freeze), the rest from 10/8 (allowlisted: the record says "suppressed").
fn line(i: u64) -> String {
    let ip = match i % FREEZE_EVERY {
        0 => format!("198.18.{}.{}", (i >> 8) & 255, i & 255),
        _ => format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
    };
    let t = 1_000 + i / 50;
    format!(
        "{ip} - - [23/Nov/2026:{:02}:{:02}:{:02} +0000] \"POST /v1/chat HTTP/1.1\" 401 12 \"-\" \"crash-test\" \"tk_crash{i:07}\" \"revoked\"\n",
        t / 3600 % 24,
        t / 60 % 60,
        t % 60
    )
}

fn write_config(dir: &Path, log: &Path, hook_url: &str) {
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
token_kind = "id"

[detectors]
snapshot_interval_secs = 1

[detectors.revoked_reuse]
min_uses = 1
min_streak_secs = 0

[response]
mode = "enforce"
freeze_detectors = ["revoked_reuse"]
freeze_min_severity = "medium"
allow_cidrs = ["10.0.0.0/8"]
max_freezes = 100000

[[hook]]
name = "revoke"
type = "webhook"
url = "{hook_url}"
on = ["freeze"]
backoff_ms = 20
backoff_max_ms = 100
max_attempts = 100000
timeout_ms = 1000
"#,
        state = dir.join("state").display(),
        log = log.display()
    );
    fs::write(dir.join("tokenwatch.toml"), text).unwrap();
}

/// A webhook receiver that records the `id` of each body; while `down`, it drops every
/// connection unanswered (the hook sees a network error and retries).
struct Receiver {
    addr: SocketAddr,
    ids: Arc<Mutex<BTreeSet<String>>>,
    down: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ids = Arc::new(Mutex::new(BTreeSet::new()));
        let down = Arc::new(AtomicBool::new(false));
        let (i, d) = (ids.clone(), down.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if d.load(Ordering::Acquire) {
                    continue; // dropped: connection closed without an answer
                }
                let ids = i.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(&stream);
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    if let Some(id) = v["id"].as_str() {
                        ids.lock().unwrap().insert(id.to_string());
                    }
                    let _ = (&stream).write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                });
            }
        });
        Receiver { addr, ids, down }
    }
}

/// Appends numbered lines at a steady pace until stopped; `written` is the count so far.
fn writer(
    log: PathBuf,
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        while !stop.load(Ordering::Acquire) {
            let i = written.load(Ordering::Acquire);
            let chunk: String = (i..i + 4).map(line).collect();
            f.write_all(chunk.as_bytes()).unwrap();
            written.store(i + 4, Ordering::Release);
            // Pacing the producer (not synchronisation): ~800 lines/s.
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Every framed state file in `state` must pass its header check.
fn assert_state_files_sound(state: &Path) {
    for (name, kind) in [
        ("checkpoints.json", "checkpoints"),
        ("detect-snapshot.json", "detect-snapshot"),
        ("frozen.json", "frozen"),
    ] {
        let Ok(bytes) = fs::read(state.join(name)) else {
            continue;
        };
        let body = tokenwatch::durable::unframe(kind, &bytes);
        assert!(matches!(body, Ok(Some(_))), "{name}: {body:?}");
    }
    let aside: Vec<_> = fs::read_dir(state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert!(aside.is_empty(), "state files set aside: {aside:?}");
}

/// The log offset the detector snapshot covers (what the next start resumes from).
pub(super) fn snapshot_offset(state: &Path) -> u64 {
    let Ok(bytes) = fs::read(state.join("detect-snapshot.json")) else {
        return 0;
    };
    let body = tokenwatch::durable::unframe("detect-snapshot", &bytes)
        .unwrap()
        .unwrap();
    let first = body.split(|b| *b == b'\n').next().unwrap();
    let covers: serde_json::Value = serde_json::from_slice(first).unwrap();
    covers["offsets"][0]["offset"].as_u64().unwrap_or(0)
}

/// One record from a line of `detections.jsonl`. A kill -9 can cut a record in two (the
/// sink's buffer is flushed in pieces), and the next start appends right after the cut: the
/// whole record that follows on the same line is still read; the cut one is counted.
pub(super) fn parse_record(l: &str, torn: &mut usize) -> Option<serde_json::Value> {
    if let Ok(v) = serde_json::from_str(l) {
        return Some(v);
    }
    *torn += 1;
    l.match_indices("{\"").find_map(|(i, _)| {
        let v: serde_json::Value = serde_json::from_str(l.get(i..)?).ok()?;
        v.get("detector").is_some().then_some(v)
    })
}

/// Records in `detections.jsonl` of `revoked_reuse`: id → (token, action), the total, and
/// the number of torn records.
fn records(state: &Path) -> (BTreeMap<String, (String, String)>, usize, usize) {
    let text = fs::read_to_string(state.join("detections.jsonl")).unwrap_or_default();
    // The last line may be mid-write while we read.
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    let mut by_id = BTreeMap::new();
    let (mut total, mut torn) = (0, 0);
    for l in complete.lines() {
        let Some(v) = parse_record(l, &mut torn) else {
            continue;
        };
        if v["detector"] != "revoked_reuse" {
            continue;
        }
        total += 1;
        let id = v["id"].as_str().unwrap().to_string();
        let token = v["token"].as_str().unwrap().to_string();
        let action = v["action"].as_str().unwrap().to_string();
        by_id.entry(id).or_insert((token, action));
    }
    (by_id, total, torn)
}

fn frozen_ids(state: &Path) -> BTreeSet<String> {
    let bytes = fs::read(state.join("frozen.json")).unwrap_or_default();
    let Ok(Some(body)) = tokenwatch::durable::unframe("frozen", &bytes) else {
        return BTreeSet::new();
    };
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["frozen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detection"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn corrupt_count(m: &str) -> f64 {
    [
        "checkpoints",
        "detect_snapshot",
        "frozen",
        "journal",
        "state_dir",
    ]
    .iter()
    .filter_map(|f| {
        sample(
            m,
            &format!("tokenwatch_state_file_errors_total{{error=\"corrupt\",file=\"{f}\"}}"),
        )
    })
    .sum()
}

#[test]
fn kill_9_twenty_times_loses_nothing_and_repeats_only_the_window() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let state = dir.path().join("state");
    File::create(&log).unwrap();
    let rx = Receiver::start();
    write_config(dir.path(), &log, &format!("http://{}/revoke", rx.addr));
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(log.clone(), written.clone(), stop.clone());
    let mut rng = Rng(0x7e57_c0de_2026_0007);
    let (mut window_bytes, mut max_window_bytes) = (0u64, 0u64);
    let mut killed_before_ready = 0;
    for _ in 0..20 {
        rx.down.store(rng.below(3) == 0, Ordering::Release);
        let mut d = Daemon::spawn(dir.path());
        let addr = d.addr(dir.path());
        // Kill points: during start-up (snapshot restore, first scan), or at a random time
        // up to 2.5 s (two and a half snapshot intervals) into the incarnation, while
        // checking every scrape for damaged state.
        let after = match rng.below(5) {
            0 => None,
            _ => Some(Duration::from_millis(rng.below(2500))),
        };
        match after {
            None => killed_before_ready += 1,
            Some(after) => {
                let t0 = Instant::now();
                wait_for(20, "the kill point", || {
                    if let Some((_, m)) = http_get(&addr, "/metrics") {
                        assert_eq!(corrupt_count(&m), 0.0, "a state file was damaged");
                    }
                    (t0.elapsed() >= after).then_some(())
                });
            }
        }
        d.kill9();
        let size = fs::metadata(&log).unwrap().len();
        let resume = snapshot_offset(&state);
        assert!(resume <= size);
        window_bytes += size - resume;
        max_window_bytes = max_window_bytes.max(size - resume);
        assert_state_files_sound(&state);
    }
    stop.store(true, Ordering::Release);
    w.join().unwrap();
    let n = written.load(Ordering::Acquire);
    rx.down.store(false, Ordering::Release);

    // Last start: read to the end, deliver every pending action, stop cleanly. Every line
    // here is a revoked token in its cooldown, all of it in each 1 s snapshot since
    // revoked_reuse's streaks are saved: a debug build on a busy machine needs ~40 s.
    let mut d = Daemon::spawn(dir.path());
    d.addr(dir.path());
    let (by_id, total, torn) = wait_for(120, "a record for every line", || {
        let r = records(&state);
        (r.0.len() as u64 >= n).then_some(r)
    });
    let tokens: BTreeSet<&String> = by_id.values().map(|(t, _)| t).collect();
    assert_eq!(tokens.len() as u64, n, "every line reached detection once");
    assert_eq!(
        by_id.len() as u64,
        n,
        "one id per line: re-reads reuse the id"
    );
    let frozen = wait_for(20, "frozen set complete", || {
        let f = frozen_ids(&state);
        (f.len() as u64 == n.div_ceil(FREEZE_EVERY)).then_some(f)
    });
    wait_for(20, "every freeze delivered", || {
        rx.ids.lock().unwrap().is_superset(&frozen).then_some(())
    });
    let m = d.metrics().unwrap();
    assert_eq!(corrupt_count(&m), 0.0);
    d.terminate();
    assert_state_files_sound(&state);

    // Duplicates only from the checkpoint window: bounded by the bytes between each
    // kill and the snapshot it resumed from.
    let dups = total as u64 - n;
    let min_len = (1..1000).map(|i| line(i).len() as u64).min().unwrap();
    let window_lines = window_bytes / min_len;
    assert!(
        dups <= window_lines,
        "{dups} duplicates, window {window_lines} lines"
    );
    eprintln!(
        "crash: 20 kill -9 ({killed_before_ready} during start-up), {n} lines, {dups} read twice \
         (window bound {window_lines} lines, largest {} lines), {} freezes survived and \
         delivered, {torn} detection records torn by a kill, {:.1} s",
        max_window_bytes / min_len,
        frozen.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Waits for `/readyz` to answer `status`; returns the body.
fn readyz(addr: &str, status: u16) -> String {
    wait_for(20, &format!("/readyz {status}"), || {
        http_get(addr, "/readyz").and_then(|(s, b)| (s == status).then_some(b))
    })
}

fn append_lines(log: &Path, range: std::ops::Range<u64>) {
    let text: String = range.map(line).collect();
    let mut f = OpenOptions::new().append(true).open(log).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn scrape_until(addr: &str, series: &str, at_least: f64) -> String {
    wait_for(20, &format!("{series} >= {at_least}"), || {
        let m = http_get(addr, "/metrics")?.1;
        (sample(&m, series)? >= at_least).then_some(m)
    })
}

const CHECKS: &str = "auth_token_check_total{source=\"gw\"}";

fn corrupt_of(m: &str, file: &str) -> Option<f64> {
    sample(
        m,
        &format!("tokenwatch_state_file_errors_total{{error=\"corrupt\",file=\"{file}\"}}"),
    )
}

#[test]
fn damaged_state_files_are_set_aside_reported_and_the_daemon_starts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let state = dir.path().join("state");
    File::create(&log).unwrap();
    let rx = Receiver::start();
    rx.down.store(true, Ordering::Release); // keeps a freeze pending in the journal
    write_config(dir.path(), &log, &format!("http://{}/revoke", rx.addr));
    append_lines(&log, 0..120);
    let mut d = Daemon::spawn(dir.path());
    let addr = d.addr(dir.path());
    scrape_until(&addr, CHECKS, 120.0);
    wait_for(20, "freezes recorded", || {
        (frozen_ids(&state).len() == 3).then_some(())
    });
    d.terminate();

    // A flipped byte in the snapshot, a truncated checkpoint, a flipped byte in the frozen
    // set (still valid JSON: only the checksum can tell), a damaged journal line.
    let flip = |name: &str, from_end: usize| {
        let p = state.join(name);
        let mut b = fs::read(&p).unwrap();
        let at = b.len() - from_end;
        b[at] ^= 0x01;
        fs::write(&p, b).unwrap();
    };
    flip("detect-snapshot.json", 10);
    let frozen = fs::read_to_string(state.join("frozen.json")).unwrap();
    let at = frozen.find("tk_crash").unwrap() + 9;
    flip("frozen.json", frozen.len() - at);
    let ck = state.join("checkpoints.json");
    let bytes = fs::read(&ck).unwrap();
    fs::write(&ck, &bytes[..bytes.len() / 2]).unwrap();
    let mut j = OpenOptions::new()
        .append(true)
        .open(state.join("response-journal.jsonl"))
        .unwrap();
    j.write_all(b"0123456789abcdef {\"v\":1,\"op\":\"done\",\"seq\":1}\n")
        .unwrap();
    drop(j);

    let mut d = Daemon::spawn(dir.path());
    let addr = d.addr(dir.path());
    readyz(&addr, 200);
    let m = http_get(&addr, "/metrics").unwrap().1;
    for f in ["checkpoints", "detect_snapshot", "frozen", "journal"] {
        assert_eq!(corrupt_of(&m, f), Some(1.0), "{f}");
    }
    // Fresh state: the log is read again from its start (start_at = beginning).
    scrape_until(&addr, CHECKS, 120.0);
    let err = fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    for name in ["detect-snapshot.json", "checkpoints.json", "frozen.json"] {
        assert!(
            err.lines().any(|l| l.contains("ERROR")
                && l.contains("damaged state file set aside")
                && l.contains(name)),
            "no ERROR naming {name}:\n{err}"
        );
    }
    assert!(err.contains("skipped damaged journal lines"));
    let aside = fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .count();
    assert_eq!(aside, 4, "each damaged file kept for a human");
    // The pending freezes were in the journal: the frozen set is whole again, and the
    // receiver gets them once it is back.
    assert_eq!(frozen_ids(&state).len(), 3);
    rx.down.store(false, Ordering::Release);
    wait_for(20, "pending freezes delivered", || {
        (rx.ids.lock().unwrap().len() == 3).then_some(())
    });
    d.terminate();

    // No crash loop: the next start finds sound files and reports nothing.
    let mut d = Daemon::spawn(dir.path());
    let addr = d.addr(dir.path());
    readyz(&addr, 200);
    let m = http_get(&addr, "/metrics").unwrap().1;
    assert_eq!(corrupt_count(&m), 0.0);
    d.terminate();
    assert_state_files_sound_but_for_aside(&state);
}

/// [`assert_state_files_sound`] without the check for set-aside files.
fn assert_state_files_sound_but_for_aside(state: &Path) {
    for (name, kind) in [
        ("checkpoints.json", "checkpoints"),
        ("detect-snapshot.json", "detect-snapshot"),
        ("frozen.json", "frozen"),
    ] {
        let bytes = fs::read(state.join(name)).unwrap();
        let body = tokenwatch::durable::unframe(kind, &bytes);
        assert!(matches!(body, Ok(Some(_))), "{name}: {body:?}");
    }
}

/// Makes a directory refuse new entries for as long as it lives: `chattr +i` as root
/// (root ignores permissions), mode 0555 otherwise. `None` when neither works here.
struct ReadOnlyDir {
    path: PathBuf,
    immutable: bool,
}

impl ReadOnlyDir {
    fn new(path: &Path) -> Option<ReadOnlyDir> {
        let probe = |p: &Path| File::create(p.join(".probe-test")).is_err();
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok && probe(path) {
            return Some(ReadOnlyDir {
                path: path.to_path_buf(),
                immutable: true,
            });
        }
        let _ = Command::new("chattr").arg("-i").arg(path).status();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o555)).ok()?;
        let guard = ReadOnlyDir {
            path: path.to_path_buf(),
            immutable: false,
        };
        probe(path).then_some(guard)
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&self.path, fs::Permissions::from_mode(0o755));
        }
    }
}

/// A fresh `log` with lines 1..=10, a daemon tailing it (hooks to a live receiver), and its
/// address once all ten are counted: the start of the fault tests.
fn running_with_ten_lines(dir: &Path, log: &Path) -> (Receiver, Daemon, String) {
    File::create(log).unwrap();
    let rx = Receiver::start();
    write_config(dir, log, &format!("http://{}/revoke", rx.addr));
    append_lines(log, 1..11);
    let mut d = Daemon::spawn(dir);
    let addr = d.addr(dir);
    scrape_until(&addr, CHECKS, 10.0);
    (rx, d, addr)
}

#[test]
fn read_only_state_dir_keeps_detecting_and_readyz_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let state = dir.path().join("state");
    let (_rx, d, addr) = running_with_ten_lines(dir.path(), &log);
    readyz(&addr, 200);
    let Some(ro) = ReadOnlyDir::new(&state) else {
        eprintln!("skipped: cannot make a directory read-only here (no chattr, running as root)");
        return;
    };
    let why = readyz(&addr, 503);
    assert!(why.contains("state cannot be written"), "{why}");
    // Detection and /metrics go on; line 50 freezes a token while frozen.json cannot be
    // written (the freeze stands in memory and in the journal).
    append_lines(&log, 11..21);
    append_lines(&log, 50..51);
    let m = scrape_until(&addr, CHECKS, 21.0);
    let detections = "tokenwatch_detections_total{detector=\"revoked_reuse\",severity=\"medium\"}";
    let m = match sample(&m, detections) {
        Some(n) if n >= 20.0 => m,
        _ => scrape_until(&addr, detections, 20.0),
    };
    let writes: f64 = ["detect_snapshot", "state_dir"]
        .iter()
        .filter_map(|f| {
            sample(
                &m,
                &format!("tokenwatch_state_file_errors_total{{error=\"write\",file=\"{f}\"}}"),
            )
        })
        .sum();
    assert!(writes >= 1.0, "write failures counted");
    assert_eq!(http_get(&addr, "/healthz").map(|r| r.0), Some(200));
    wait_for(20, "the failed frozen-set write reported", || {
        let b = http_get(&addr, "/readyz")?.1;
        b.contains("frozen").then_some(())
    });
    assert!(frozen_ids(&state).is_empty(), "not on disk yet");
    // Let at least one retry fail (the probe fails again ≥ 2 s later; retries are every
    // second): the failure must still be reported, not forgotten.
    let probe = "tokenwatch_state_file_errors_total{error=\"write\",file=\"state_dir\"}";
    let seen = sample(&http_get(&addr, "/metrics").unwrap().1, probe).unwrap_or(0.0);
    scrape_until(&addr, probe, seen + 2.0);
    let why = http_get(&addr, "/readyz").unwrap().1;
    assert!(why.contains("frozen"), "{why}");
    drop(ro);
    readyz(&addr, 200);
    // The retry wrote the freeze made while the directory was read-only.
    assert_eq!(frozen_ids(&state).len(), 1);
    d.terminate();
}

#[test]
fn log_directory_deleted_and_recreated_is_followed_again() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let log = logs.join("access.log");
    let (_rx, d, addr) = running_with_ten_lines(dir.path(), &log);
    fs::remove_dir_all(&logs).unwrap();
    fs::create_dir(&logs).unwrap();
    File::create(&log).unwrap();
    append_lines(&log, 11..21);
    scrape_until(&addr, CHECKS, 20.0);
    append_lines(&log, 21..31);
    scrape_until(&addr, CHECKS, 30.0);
    let m = d.metrics().unwrap();
    assert_eq!(sample(&m, CHECKS), Some(30.0), "nothing read twice");
    d.terminate();
}

/// A small tmpfs mounted over a directory for as long as it lives (root only).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path) -> Option<Tmpfs> {
        fs::create_dir_all(path).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tokenwatch-test"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_state_dir_keeps_detecting_and_readyz_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let state = dir.path().join("state");
    let Some(_fs) = Tmpfs::mount(&state) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let (_rx, d, addr) = running_with_ten_lines(dir.path(), &log);
    readyz(&addr, 200);
    // Fill the disk.
    let filler = state.join("filler");
    let mut f = File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    drop(f);
    let why = readyz(&addr, 503);
    assert!(why.contains("No space left"), "{why}");
    append_lines(&log, 11..21);
    scrape_until(&addr, CHECKS, 20.0);
    let detections = "tokenwatch_detections_total{detector=\"revoked_reuse\",severity=\"medium\"}";
    scrape_until(&addr, detections, 20.0);
    fs::remove_file(&filler).unwrap();
    readyz(&addr, 200);
    d.terminate();
    assert_state_files_sound(&state);
}
