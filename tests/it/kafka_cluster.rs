//! The whole scale-out topology on a real broker (`tansu` on loopback): two edges tailing
//! two log files that split one token's traffic, two workers, two responders (one active,
//! one standby on the same state directory) and a webhook receiver.
//!
//! A fan-out attack and an impossible-travel pair are spread over both files, so no single
//! edge sees either. The detections must be `tokenwatch replay`'s on the merged log (same
//! ids), each written once by the workers; the receiver must get one freeze per attacked
//! token, also when a worker and then the active responder are killed with `kill -9`
//! mid-stream; the edges' counters must sum to the lines written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::kafka::{append, create_topics, free_port, metric, start_tansu, wait_for};
use super::kafka_worker::{
    create_detections_topic, detections, group_caught_up, replay_into, start, Dump,
};
use super::support::{http, Receiver};

const FP_KEY: &str = "kafka-cluster-test-fingerprint-key-32+";
const ADMIN: &str = "cluster-test-admin-token";
/// `session.timeout.ms` of every consumer in the test.
const SESSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6);
/// The attacks and the tokens they freeze.
const ATTACKS: [(&str, &str); 2] = [
    ("ip_fanout", "tok_fanout"),
    ("impossible_travel", "tok_travel"),
];

/// 2026-03-02T12:00:00Z plus `sec`.
fn json_line(sec: u32, token: &str, ip: &str) -> String {
    let (h, m, s) = (12 + sec / 3600, (sec / 60) % 60, sec % 60);
    format!(
        "{{\"ts\":\"2026-03-02T{h:02}:{m:02}:{s:02}Z\",\"token_id\":\"{token}\",\"ip\":\"{ip}\",\"method\":\"GET\",\"path\":\"/v1/chat\",\"status\":200}}\n"
    )
}

/// Seconds `from..to` of the scenario as (file A lines, file B lines):
/// * background: 20 tokens, one check every 2 s, alternating between the files;
/// * `tok_fanout` from a new network every 10 s until second 120, even networks through
///   gateway A, odd ones through B (the 10th network, at second 90, fires ip_fanout);
/// * `tok_travel` from London every 300 s through A (seconds 0–900), then from Sydney 20
///   minutes later through B (second 2100: impossible_travel).
fn scenario(from: u32, to: u32) -> (String, String) {
    let (mut a, mut b) = (String::new(), String::new());
    for s in from..to {
        if s % 2 == 0 {
            let n = (s / 2) % 20;
            let line = json_line(s, &format!("tok_bg_{n:02}"), &format!("10.0.{n}.1"));
            if n % 2 == 0 {
                a += &line;
            } else {
                b += &line;
            }
        }
        if s % 10 == 0 && s < 120 {
            let n = s / 10;
            let line = json_line(s, "tok_fanout", &format!("198.51.{n}.7"));
            if n % 2 == 0 {
                a += &line;
            } else {
                b += &line;
            }
        }
        if s % 300 == 0 && s <= 900 {
            a += &json_line(s, "tok_travel", "81.2.69.5");
        }
        if s == 2100 {
            b += &json_line(s, "tok_travel", "1.120.10.5");
        }
    }
    (a, b)
}

/// The GeoIP fixture (London, Sydney, ...) built by `tests/support/mmdb_fixture.py`.
fn geo_fixture(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mmdb_fixture.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "GeoIP fixture (needs pip install mmdb-writer): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("maxmind-city.mmdb")
}

/// One config per process: its state dir, its log (edges), the shared key, the GeoIP
/// fixture, the webhook; `edge_id` names the edge.
fn write_config(dir: &Path, name: &str, state: &str, log: &Path, ctx: &Ctx) -> PathBuf {
    let cfg = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_token = "file:{admin}"

[state]
dir = "{state}"

[fingerprint]
key = "file:{key}"

[geo]
mmdb = ["{mmdb}"]

[detectors]
snapshot_interval_secs = 1

[response]
mode = "enforce"

[[hook]]
name = "revoke"
type = "webhook"
url = "{url}"
hmac_key = "file:{key}"
on = ["freeze"]
backoff_ms = 20
backoff_max_ms = 200

[[source]]
name = "api"
path = "{log}"
format = "json"
start_at = "beginning"

[kafka]
brokers = ["{bootstrap}"]
edge_id = "{name}"

[kafka.producer]
linger_ms = 1

[kafka.options]
"session.timeout.ms" = "6000"
"#,
        admin = ctx.admin.display(),
        state = dir.join(state).display(),
        key = ctx.key.display(),
        mmdb = ctx.mmdb.display(),
        url = ctx.url,
        log = log.display(),
        bootstrap = ctx.bootstrap,
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

struct Ctx {
    key: PathBuf,
    admin: PathBuf,
    mmdb: PathBuf,
    url: String,
    bootstrap: String,
}

/// The attacks' records in a set of JSONL files: id → (detector, times written).
fn attack_records(files: &[PathBuf]) -> BTreeMap<String, (String, usize)> {
    let mut out: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for f in files {
        for (id, (det, n)) in detections(f) {
            if ATTACKS.iter().any(|(d, _)| *d == det) {
                out.entry(id).or_insert((det, 0)).1 += n;
            }
        }
    }
    out
}

/// `tokenwatch replay` of the merged log (file A then B, sorted by time by the engine's
/// reorder tolerance): the attacks' ids.
fn replay(cfg: &Path, logs: &[&Path], dir: &Path) -> BTreeMap<String, (String, usize)> {
    let out = dir.join("replay.jsonl");
    let mut lines: Vec<String> = logs
        .iter()
        .flat_map(|l| {
            std::fs::read_to_string(l)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    // Time order, as a single gateway would have logged it (ts is the first field).
    lines.sort();
    let merged = dir.join("merged.log");
    std::fs::write(&merged, lines.join("\n") + "\n").unwrap();
    replay_into(cfg, &merged, &out);
    attack_records(&[out])
}

/// Freezes the receiver got: token → idempotency keys (one entry per request).
fn freezes(rx: &Receiver) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rx.requests() {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let token = v["token"].as_str().unwrap_or_default().to_string();
        out.entry(token)
            .or_default()
            .push(r.header("idempotency-key").to_string());
    }
    out
}

fn active(addr: &str) -> Option<f64> {
    metric(addr, "tokenwatch_responder_active")
}

fn caught_up(bootstrap: &str) {
    for (group, topic) in [
        ("tokenwatch-token", "auth.by_token"),
        ("tokenwatch-ip", "auth.by_ip"),
    ] {
        wait_for(90, &format!("{group} caught up on {topic}"), || {
            group_caught_up(bootstrap, group, topic).then_some(())
        });
    }
}

fn log_has(dir: &Path, name: &str, text: &str) -> bool {
    std::fs::read_to_string(dir.join(format!("{name}.err")))
        .unwrap_or_default()
        .contains(text)
}

#[test]
fn edges_workers_and_responders_freeze_each_attacked_token_once_across_crashes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _dump = Dump(dir.to_path_buf());
    let rx = Receiver::start(|_, _| (204, std::time::Duration::ZERO));
    let port = free_port();
    let _tansu = start_tansu(port, port);
    let bootstrap = format!("127.0.0.1:{port}");
    create_topics(&bootstrap);
    create_detections_topic(&bootstrap);
    let ctx = Ctx {
        key: dir.join("fp.key"),
        admin: dir.join("admin.token"),
        mmdb: geo_fixture(dir),
        url: rx.url("/revoke"),
        bootstrap: bootstrap.clone(),
    };
    std::fs::write(&ctx.key, FP_KEY).unwrap();
    std::fs::write(&ctx.admin, ADMIN).unwrap();
    let (log_a, log_b) = (dir.join("gw-a.log"), dir.join("gw-b.log"));
    std::fs::write(&log_a, "").unwrap();
    std::fs::write(&log_b, "").unwrap();
    let cfg = |name: &str, state: &str, log: &Path| write_config(dir, name, state, log, &ctx);
    let edge_a = cfg("edge-a", "state-edge-a", &log_a);
    let edge_b = cfg("edge-b", "state-edge-b", &log_b);
    // The workers share one state directory (partitions move between them with their
    // snapshots) and write their detections to files of their own.
    let worker_cfg = |name: &str| {
        let path = cfg(name, "state-workers", &log_a);
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "[detectors]\n",
            &format!(
                "[detectors]\noutput = \"{}\"\n",
                dir.join(format!("{name}.jsonl")).display()
            ),
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let worker_1 = worker_cfg("worker-1");
    let worker_2 = worker_cfg("worker-2");
    // The responders share one state directory: the standby takes over the frozen set.
    let resp = cfg("responder", "state-responder", &log_a);

    // The expected detections: replay of everything on one process.
    let want = {
        let (fa, fb) = (dir.join("full-a.log"), dir.join("full-b.log"));
        let (a, b) = scenario(0, 2200);
        std::fs::write(&fa, a).unwrap();
        std::fs::write(&fb, b).unwrap();
        replay(&resp, &[&fa, &fb], dir)
    };
    for (det, _) in ATTACKS {
        assert!(
            want.values().filter(|(d, _)| d == det).count() == 1,
            "replay must raise {det} once: the scenario is wrong ({want:?})"
        );
    }

    let (_ea, ea_addr) = start("edge", &edge_a, dir, "edge-a");
    let (_eb, eb_addr) = start("edge", &edge_b, dir, "edge-b");
    let (mut w1, w1_addr) = start("worker", &worker_1, dir, "worker-1");
    let (_w2, _) = start("worker", &worker_2, dir, "worker-2");
    let (r1, r1_addr) = start("responder", &resp, dir, "responder-1");
    wait_for(60, "responder 1 active", || {
        (active(&r1_addr) == Some(1.0)).then_some(())
    });
    let (r2, r2_addr) = start("responder", &resp, dir, "responder-2");
    // The group rebalances when the second responder joins: wait until it has settled
    // with exactly one of them active.
    wait_for(60, "the responder group rebalanced", || {
        log_has(dir, "responder-1", "detections partition revoked").then_some(())
    });
    wait_for(60, "exactly one responder active", || {
        let (a, b) = (active(&r1_addr)?, active(&r2_addr)?);
        (a + b == 1.0).then_some(())
    });

    // Phase 1: the fan-out, split over both gateways.
    let mut written = 0usize;
    let mut feed = |from: u32, to: u32| {
        let (a, b) = scenario(from, to);
        written += a.lines().count() + b.lines().count();
        append(&log_a, &a);
        append(&log_b, &b);
    };
    feed(0, 200);
    wait_for(90, "the fan-out freeze at the receiver", || {
        freezes(&rx).contains_key("tok_fanout").then_some(())
    });
    // The standby serves no admin API; the active one lists the frozen token.
    let (active_proc, active_addr, standby_addr) = if active(&r1_addr) == Some(1.0) {
        (r1, r1_addr, r2_addr)
    } else {
        (r2, r2_addr, r1_addr)
    };
    let get = |addr: &str| http(addr, "GET", "/api/v1/frozen", Some(ADMIN), b"");
    let (code, body) = get(&standby_addr).expect("standby answers");
    assert_eq!(code, 503, "{body}");
    let (code, body) = get(&active_addr).expect("active answers");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("tok_fanout"), "{body}");

    // Phase 2: a worker dies mid-stream and is replaced on its state directory.
    feed(200, 1000);
    let applied = r#"tokenwatch_kafka_records_total{result="applied",topic="by_ip"}"#;
    wait_for(60, "worker 1 mid-stream", || {
        metric(&w1_addr, applied).filter(|n| *n > 0.0)
    });
    w1.0.kill().unwrap();
    w1.0.wait().unwrap();
    // The supervisor's restart delay. It must outlast the session timeout here: tansu
    // expires a dead member only when another one joins, and a replacement that joins
    // before the dead member's session ran out sets tansu's group rebalancing every few
    // seconds for minutes (observed with two live workers; Apache Kafka expires members
    // on its own). A real supervisor's back-off (systemd RestartSec, Kubernetes'
    // CrashLoopBackOff) is of this order anyway.
    std::thread::sleep(SESSION_TIMEOUT + std::time::Duration::from_secs(1));
    let (_w1b, _) = start("worker", &worker_1, dir, "worker-1b");
    caught_up(&bootstrap);

    // Phase 3: the active responder dies; the travel pair completes; the standby acts.
    let mut dead = active_proc;
    dead.0.kill().unwrap();
    dead.0.wait().unwrap();
    feed(1000, 2200);
    wait_for(
        120,
        "the travel freeze at the receiver (standby took over)",
        || freezes(&rx).contains_key("tok_travel").then_some(()),
    );
    assert_eq!(active(&standby_addr), Some(1.0));
    caught_up(&bootstrap);

    // Detections: replay's ids. A worker killed within a snapshot interval after raising
    // one raises it again after the restart (same id: the events since its last snapshot
    // are applied again); the responder drops the second by its id, so the cluster's
    // decided records (and hooks) have each detection once.
    let files: Vec<PathBuf> = ["worker-1.jsonl", "worker-2.jsonl"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let got = wait_for(60, "the workers' detections", || {
        let got = attack_records(&files);
        got.keys().eq(want.keys()).then_some(got)
    });
    let decided_file = [dir.join("state-responder/detections.jsonl")];
    let decided = wait_for(30, "the responders' decided records", || {
        let d = attack_records(&decided_file);
        d.keys().eq(want.keys()).then_some(d)
    });
    for (id, (det, n)) in &decided {
        assert_eq!(*n, 1, "{det} {id} decided {n} times by the responders");
    }
    // One freeze per attacked token, each with its detection id as idempotency key;
    // nothing else frozen, nothing frozen twice.
    let f = freezes(&rx);
    let tokens: BTreeSet<&str> = f.keys().map(String::as_str).collect();
    let want_tokens: BTreeSet<&str> = ATTACKS.iter().map(|(_, t)| *t).collect();
    assert_eq!(tokens, want_tokens, "{f:?}");
    for (token, keys) in &f {
        let unique: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), 1, "{token} frozen by {keys:?}");
        assert!(
            got.contains_key(keys[0].as_str()),
            "{token}: key {} is no detection id",
            keys[0]
        );
    }
    // Counted once, at the edges: their line counters sum to the lines written.
    let parsed = |addr: &str| {
        metric(
            addr,
            r#"tokenwatch_lines_total{result="parsed",source="api"}"#,
        )
        .unwrap_or(0.0)
    };
    let total = wait_for(30, "the edges' counters", || {
        let t = parsed(&ea_addr) + parsed(&eb_addr);
        (t as usize == written).then_some(t)
    });
    assert_eq!(total as usize, written);
}

/// Seconds since the epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The global stage's detectors and what replay raises of them on the global scenario.
const GLOBAL: [&str; 2] = ["distributed_spray", "rejection_ratio"];
/// Addresses of the distributed spray.
const SPRAY_IPS: u32 = 12;
/// Where `tok_roam` is accepted, and where it is refused (other `auth.by_ip` partitions).
const ROAM_HOME: &str = "10.9.0.1";
const ROAM_AWAY: &str = "192.0.2.99";

/// One line of the global scenario, 2026-03-02T12:00:00Z plus `sec`; a 401 is an invalid
/// token.
fn global_line(sec: u32, token: &str, ip: &str, status: u16) -> String {
    let reason = if status == 401 {
        ",\"reason\":\"invalid\""
    } else {
        ""
    };
    let (h, m, s) = (12 + sec / 3600, (sec / 60) % 60, sec % 60);
    format!(
        "{{\"ts\":\"2026-03-02T{h:02}:{m:02}:{s:02}Z\",\"token_id\":\"{token}\",\"ip\":\"{ip}\",\"method\":\"GET\",\"path\":\"/v1/chat\",\"status\":{status}{reason}}}\n"
    )
}

/// Seconds `from..to` of the global scenario as (file A lines, file B lines):
/// * background: 20 known tokens, one accepted check every 2 s, alternating the files;
/// * a distributed spray: 12 addresses (`203.0.113.1-12`, spread over every `auth.by_ip`
///   partition and both gateways) each try 3 never-seen tokens, one round every 300 s
///   from second 300 (the 2nd round makes 10 addresses with 2 tokens: it fires at ~780);
/// * a valid token refused: `tok_roam` accepted from `10.9.0.1` at second 100 (gateway
///   A), then refused 40 times as forbidden from `192.0.2.99` (gateway B) from second
///   1200 — a brute force if the token were unknown, which it is not (known-tokens feed);
/// * a rejection storm over both gateways from second 1500 to 1800: one rejected check
///   a second from 8 addresses, each repeating its own wrong token (more than half of
///   the checks fail: rejection_ratio fires after its 60 s sustain).
fn global_scenario(from: u32, to: u32) -> (String, String) {
    let (mut a, mut b) = (String::new(), String::new());
    let mut put = |even: bool, line: String| {
        if even {
            a += &line;
        } else {
            b += &line;
        }
    };
    for s in from..to {
        if s % 2 == 0 {
            let n = (s / 2) % 20;
            let line = global_line(s, &format!("tok_bg_{n:02}"), &format!("10.0.{n}.1"), 200);
            put(n % 2 == 0, line);
        }
        for round in 0..3 {
            let start = 300 + round * 300;
            if s >= start && (s - start) % 20 == 0 && (s - start) / 20 < SPRAY_IPS {
                let i = (s - start) / 20;
                let tok = format!("tok_guess_{i}_{round}");
                put(
                    i % 2 == 0,
                    global_line(s, &tok, &format!("203.0.113.{}", i + 1), 401),
                );
            }
        }
        if s == 100 {
            put(true, global_line(s, "tok_roam", ROAM_HOME, 200));
        }
        if (1200..1280).contains(&s) && s % 2 == 0 {
            put(false, global_line(s, "tok_roam", ROAM_AWAY, 403));
        }
        if (1500..1800).contains(&s) {
            let i = s % 8;
            let line = global_line(
                s,
                &format!("tok_typo_{i}"),
                &format!("198.18.0.{}", i + 1),
                401,
            );
            put(s % 2 == 0, line);
        }
    }
    (a, b)
}

/// The global detectors' records in a set of JSONL files: id → (detector, times written).
fn global_records(files: &[PathBuf]) -> BTreeMap<String, (String, usize)> {
    let mut out: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for f in files {
        for (id, (det, n)) in detections(f) {
            if GLOBAL.contains(&det.as_str()) {
                out.entry(id).or_insert((det, 0)).1 += n;
            }
        }
    }
    out
}

/// `tokenwatch_partitions_owned{topic="global"}` of a worker: the partition count on the
/// global stage's leader, 0 on a standby.
fn global_owned(addr: &str) -> Option<f64> {
    metric(addr, r#"tokenwatch_partitions_owned{topic="global"}"#)
}

/// A global-stage series of a worker (0 when absent).
fn global_records_total(addr: &str, result: &str) -> f64 {
    let series = format!(r#"tokenwatch_kafka_records_total{{result="{result}",topic="global"}}"#);
    metric(addr, &series).unwrap_or(0.0)
}

#[test]
fn global_stage_fires_spray_and_rejection_storm_once_across_a_kill_9_of_its_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _dump = Dump(dir.to_path_buf());
    let port = free_port();
    let _tansu = start_tansu(port, port);
    let bootstrap = format!("127.0.0.1:{port}");
    create_topics(&bootstrap);
    create_detections_topic(&bootstrap);
    let ctx = Ctx {
        key: dir.join("fp.key"),
        admin: dir.join("admin.token"),
        mmdb: geo_fixture(dir),
        url: "http://127.0.0.1:9/unused".into(),
        bootstrap: bootstrap.clone(),
    };
    std::fs::write(&ctx.key, FP_KEY).unwrap();
    std::fs::write(&ctx.admin, ADMIN).unwrap();
    let (log_a, log_b) = (dir.join("gw-a.log"), dir.join("gw-b.log"));
    std::fs::write(&log_a, "").unwrap();
    std::fs::write(&log_b, "").unwrap();
    // One learned hour is enough for the spray's baseline in a 40-minute scenario; the
    // same settings go to replay.
    let cfg = |name: &str, state: &str, log: &Path| {
        let path = write_config(dir, name, state, log, &ctx);
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "[detectors]\n",
            &format!(
                "[detectors]\noutput = \"{}\"\n[detectors.distributed_spray]\nlearning_hours = 1\n[detectors.rejection_ratio]\n",
                dir.join(format!("{name}.jsonl")).display()
            ),
        );
        // `snapshot_interval_secs` belongs to [detectors], above the detector tables.
        let text = text
            .replace("\nsnapshot_interval_secs = 1\n", "\n")
            .replace("[detectors]\n", "[detectors]\nsnapshot_interval_secs = 1\n");
        std::fs::write(&path, text).unwrap();
        path
    };
    let edge_a = cfg("edge-a", "state-edge-a", &log_a);
    let edge_b = cfg("edge-b", "state-edge-b", &log_b);
    let workers_cfg: Vec<PathBuf> = (1..=3)
        .map(|n| cfg(&format!("worker-{n}"), "state-workers", &log_a))
        .collect();
    let files: Vec<PathBuf> = (1..=3)
        .map(|n| dir.join(format!("worker-{n}.jsonl")))
        .collect();

    let want = {
        let (fa, fb) = (dir.join("full-a.log"), dir.join("full-b.log"));
        let (a, b) = global_scenario(0, 2400);
        std::fs::write(&fa, a).unwrap();
        std::fs::write(&fb, b).unwrap();
        let out = dir.join("replay.jsonl");
        let mut lines: Vec<String> = [&fa, &fb]
            .iter()
            .flat_map(|l| {
                let text = std::fs::read_to_string(l).unwrap();
                text.lines().map(str::to_string).collect::<Vec<_>>()
            })
            .collect();
        lines.sort();
        let merged = dir.join("merged.log");
        std::fs::write(&merged, lines.join("\n") + "\n").unwrap();
        replay_into(&workers_cfg[0], &merged, &out);
        global_records(&[out])
    };
    for det in GLOBAL {
        assert!(
            want.values().filter(|(d, _)| d == det).count() == 1,
            "replay must raise {det} once: the scenario is wrong ({want:?})"
        );
    }
    assert!(
        roam_brute_force(&[dir.join("replay.jsonl")]) == 0,
        "replay must not take tok_roam's refusals for a brute force"
    );

    let (_ea, _) = start("edge", &edge_a, dir, "edge-a");
    let (_eb, _) = start("edge", &edge_b, dir, "edge-b");
    let mut workers = vec![start("worker", &workers_cfg[0], dir, "worker-1")];
    wait_for(60, "worker 1 elected for the global stage", || {
        (global_owned(&workers[0].1) == Some(3.0)).then_some(())
    });
    workers.push(start("worker", &workers_cfg[1], dir, "worker-2"));
    let leader = |ws: &[(super::kafka::Proc, String)]| {
        wait_for(90, "exactly one global stage leader", || {
            let owned: Vec<f64> = ws
                .iter()
                .map(|w| global_owned(&w.1))
                .collect::<Option<_>>()?;
            let leaders: Vec<usize> = (0..ws.len()).filter(|&i| owned[i] == 3.0).collect();
            (leaders.len() == 1 && owned.iter().sum::<f64>() == 3.0).then(|| leaders[0])
        })
    };
    let first = leader(&workers);

    // Phase 1: the first round of the spray; the leader applies it and snapshots.
    let feed = |from: u32, to: u32| {
        let (a, b) = global_scenario(from, to);
        append(&log_a, &a);
        append(&log_b, &b);
        a.lines().count() + b.lines().count()
    };
    let mut written = feed(0, 600);
    let phase1 = written as f64;
    let addr = workers[first].1.clone();
    wait_for(60, "the leader applied phase 1", || {
        (global_records_total(&addr, "applied") >= phase1).then_some(())
    });
    let applied_at = unix_now();
    wait_for(30, "a global snapshot after phase 1", || {
        let at = metric(
            &addr,
            r#"tokenwatch_kafka_snapshot_timestamp_seconds{partition="0",topic="global"}"#,
        )?;
        (at > applied_at as f64).then_some(())
    });
    // Phase 2: the leader dies mid-spray (nothing global raised yet).
    let (mut dead, _) = workers.remove(first);
    dead.0.kill().unwrap();
    dead.0.wait().unwrap();
    assert!(global_records(&files).is_empty());
    // The supervisor's restart delay (tansu expires the dead member only when another
    // joins; see the crash test above).
    std::thread::sleep(SESSION_TIMEOUT + std::time::Duration::from_secs(1));
    workers.push(start("worker", &workers_cfg[2], dir, "worker-3"));
    let next = leader(&workers);
    written += feed(600, 2400);
    let total = written as f64;
    let got = wait_for(120, "the global detections", || {
        let got = global_records(&files);
        got.keys().eq(want.keys()).then_some(got)
    });
    for (id, (det, n)) in &got {
        assert_eq!(*n, 1, "{det} {id} raised {n} times");
    }
    // The new leader resumed from the snapshot's offsets, not from the beginning. tansu
    // may rebalance again meanwhile and move the stage between the live workers (each
    // resumes from the last snapshot), so their counts are summed.
    let _ = next;
    let seen = || -> f64 {
        workers
            .iter()
            .map(|w| {
                global_records_total(&w.1, "applied") + global_records_total(&w.1, "duplicate")
            })
            .sum()
    };
    wait_for(60, "the live workers' global stage caught up", || {
        (seen() >= total - phase1).then_some(())
    });
    let seen = seen();
    assert!(
        seen < total,
        "the global stage read everything again ({seen} of {total})"
    );
    // The spray's addresses fall into every auth.by_ip partition.
    let msgs = super::kafka::consume(&bootstrap, "auth.by_ip", written);
    let spray: BTreeSet<i32> = msgs
        .iter()
        .filter(|(_, k, _)| {
            k.as_deref()
                .is_some_and(|k| String::from_utf8_lossy(k).starts_with("203.0.113."))
        })
        .map(|(p, _, _)| *p)
        .collect();
    assert_eq!(spray.len(), 3, "spray partitions {spray:?}");
    // tok_roam was accepted and refused through different partitions: only the
    // known-tokens feed tells the refusing partition that it is a valid token.
    let partition_of = |ip: &str| {
        msgs.iter()
            .find(|(_, k, _)| k.as_deref() == Some(ip.as_bytes()))
            .map(|(p, _, _)| *p)
    };
    let (home, away) = (partition_of(ROAM_HOME), partition_of(ROAM_AWAY));
    assert!(
        home.is_some() && home != away,
        "tok_roam partitions {home:?} {away:?}"
    );
    assert_eq!(
        roam_brute_force(&files),
        0,
        "the cluster took tok_roam's refusals for a brute force"
    );
}

/// brute_force records about [`ROAM_AWAY`] in a set of JSONL files.
fn roam_brute_force(files: &[PathBuf]) -> usize {
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| l.contains("\"detector\":\"brute_force\"") && l.contains(ROAM_AWAY))
        .count()
}
