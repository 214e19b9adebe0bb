//! The Kafka worker against a real broker: `tansu` on loopback, a real
//! `tokenwatch run --role edge` tailing a log, and a real `tokenwatch run --role worker`
//! detecting from the topics. Its detections must be those of `tokenwatch replay` on the
//! same file and config (same ids), each exactly once, also across a `kill -9` of the
//! worker and a replacement.
//!
//! tansu does not reassign a `kill -9`ed member's partitions until another member joins
//! (DESIGN §14), so crash recovery is tested with a replacement worker, as in production
//! where the supervisor restarts it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::kafka::{append, create_topics, free_port, metric, start_tansu, wait_for, Proc};

const FP_KEY: &str = "kafka-worker-test-fingerprint-key-32+";
pub(super) const PARTITIONS: i32 = 3;
/// Detectors the worker runs that must agree with replay on this log.
const ATTACKS: [&str; 2] = ["revoked_reuse", "ip_fanout"];

fn json_line(sec: u32, token: &str, ip: &str, status: u16, reason: Option<&str>) -> String {
    let reason = reason.map_or(String::new(), |r| format!(",\"reason\":\"{r}\""));
    format!(
        "{{\"ts\":\"2026-03-02T14:{:02}:{:02}Z\",\"token_id\":\"{token}\",\"ip\":\"{ip}\",\"method\":\"GET\",\"path\":\"/v1/items\",\"status\":{status}{reason}}}\n",
        sec / 60,
        sec % 60
    )
}

/// Seconds `from..to` of the scenario: a token fanned out over 12 networks (the 10th, at
/// second 90, fires), a revoked token tried 5 times from one address from second 85 on
/// (the 5th, at 165, fires), and background traffic of 20 tokens. revoked_reuse keeps no
/// state in snapshots (neither in `role = "all"`), so its uses all come after the crash
/// of the crash test.
fn scenario(from: u32, to: u32) -> String {
    let mut out = String::new();
    for s in from..to {
        // Background: one accepted check per second, spread over 20 tokens and hosts.
        let b = s % 20;
        out += &json_line(
            s,
            &format!("tok_bg_{b:02}"),
            &format!("10.0.{b}.1"),
            200,
            None,
        );
        if s % 10 == 0 && s < 120 {
            let n = s / 10;
            out += &json_line(s, "tok_fanout", &format!("198.51.{n}.7"), 200, None);
        }
        if s % 20 == 5 && (85..185).contains(&s) {
            out += &json_line(s, "tok_revoked", "192.0.2.44", 401, Some("revoked"));
        }
    }
    out
}

/// One config for every process (its own state dir and the log); workers snapshot every
/// second and leave a dead member's session quickly.
fn write_config(dir: &Path, name: &str, log: &Path, bootstrap: &str) -> PathBuf {
    let key = dir.join("fp.key");
    std::fs::write(&key, FP_KEY).unwrap();
    let cfg = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[state]
dir = "{state}"

[fingerprint]
key = "file:{key}"

[detectors]
snapshot_interval_secs = 1

[[source]]
name = "api"
path = "{log}"
format = "json"
start_at = "beginning"

[kafka]
brokers = ["{bootstrap}"]
edge_id = "edge-a"

[kafka.producer]
linger_ms = 1

[kafka.options]
"session.timeout.ms" = "6000"
"#,
        state = dir.join(format!("state-{name}")).display(),
        key = key.display(),
        log = log.display(),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// `tokenwatch run --role <role>`, its stderr in `<dir>/<name>.err`; returns it with its
/// HTTP address.
pub(super) fn start(role: &str, cfg: &Path, dir: &Path, name: &str) -> (Proc, String) {
    let addr_file = dir.join(format!("{name}.addr"));
    let _ = std::fs::remove_file(&addr_file);
    let err = std::fs::File::create(dir.join(format!("{name}.err"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["run", "--role", role, "-c"])
        .arg(cfg)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdin(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let p = Proc(child);
    let addr = wait_for(30, "listen address", || {
        std::fs::read_to_string(&addr_file)
            .ok()
            .filter(|s| !s.is_empty())
    });
    (p, addr)
}

/// Detection records in a JSONL file: id → (detector, how many times).
pub(super) fn detections(path: &Path) -> BTreeMap<String, (String, usize)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        let det = v["detector"].as_str().unwrap().to_string();
        out.entry(id).or_insert((det, 0)).1 += 1;
    }
    out
}

/// `tokenwatch replay` on the same file and config: its detections of [`ATTACKS`].
fn replay(cfg: &Path, log: &Path, dir: &Path) -> BTreeMap<String, (String, usize)> {
    let out = dir.join("replay.jsonl");
    replay_into(cfg, log, &out);
    let mut d = detections(&out);
    d.retain(|_, (det, _)| ATTACKS.contains(&det.as_str()));
    d
}

/// `tokenwatch replay -c cfg --detections out log`, which must succeed.
pub(super) fn replay_into(cfg: &Path, log: &Path, out: &Path) {
    let st = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["replay", "-c"])
        .arg(cfg)
        .arg("--detections")
        .arg(out)
        .arg(log)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "replay failed");
}

/// True when the group has committed every message of `topic` (the worker snapshots and
/// commits every second, so this is "everything applied").
pub(super) fn group_caught_up(bootstrap: &str, group: &str, topic: &str) -> bool {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let Ok(committed) = c.committed_offsets(tpl, Duration::from_secs(5)) else {
        return false;
    };
    (0..PARTITIONS).all(|p| {
        let Ok((_, high)) = c.fetch_watermarks(topic, p, Duration::from_secs(5)) else {
            return false;
        };
        let done = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => 0,
        };
        done >= high
    })
}

fn wait_caught_up(bootstrap: &str) {
    for (group, topic) in [
        ("tokenwatch-token", "auth.by_token"),
        ("tokenwatch-ip", "auth.by_ip"),
    ] {
        wait_for(90, &format!("{group} caught up on {topic}"), || {
            group_caught_up(bootstrap, group, topic).then_some(())
        });
    }
}

/// The worker's detections of [`ATTACKS`], once they equal `want`'s ids.
fn wait_detections(
    path: &Path,
    want: &BTreeMap<String, (String, usize)>,
) -> BTreeMap<String, (String, usize)> {
    wait_for(90, "the worker's detections", || {
        let mut d = detections(path);
        d.retain(|_, (det, _)| ATTACKS.contains(&det.as_str()));
        (d.keys().eq(want.keys())).then_some(d)
    })
}

fn assert_once_and_equal(
    got: &BTreeMap<String, (String, usize)>,
    want: &BTreeMap<String, (String, usize)>,
) {
    for det in ATTACKS {
        assert!(
            want.values().any(|(d, _)| d == det),
            "replay does not raise {det}: the scenario is wrong ({want:?})"
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (id, (det, n)) in got {
        assert_eq!(*n, 1, "{det} {id} written {n} times by the worker");
    }
}

/// On a failing test, prints the processes' logs and the worker's detections.
pub(super) struct Dump(pub(super) PathBuf);

impl Drop for Dump {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("TOKENWATCH_TEST_DUMP").is_none() {
            return;
        }
        let Ok(rd) = std::fs::read_dir(&self.0) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "err") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {}:", p.display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        // Every process's detections (state-<name>/detections.jsonl, <name>.jsonl).
        for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let own = e.path().join("detections.jsonl");
            let p = if e.path().extension().is_some_and(|x| x == "jsonl") {
                e.path()
            } else {
                own
            };
            if let Ok(d) = std::fs::read_to_string(&p) {
                eprintln!("--- {}:\n{d}", p.display());
            }
        }
    }
}

/// The single-partition detections topic the workers produce to, and the compacted
/// known-tokens feed between their stages.
pub(super) fn create_detections_topic(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topic = NewTopic::new("detections", 1, TopicReplication::Fixed(1));
    let known = NewTopic::new("tokens.known", 3, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for r in rt
        .block_on(admin.create_topics([&topic, &known], &AdminOptions::new()))
        .unwrap()
    {
        r.unwrap();
    }
}

/// The detections topic from its start until `want` records of [`ATTACKS`] arrived and
/// then one quiet second (to catch extras): id → (detector, count). Each key must be the
/// record's id.
fn topic_detections(bootstrap: &str, want: usize) -> BTreeMap<String, (String, usize)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kafka-worker-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("detections", 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut quiet_since = None;
    while std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                let id = v["id"].as_str().unwrap().to_string();
                assert_eq!(m.key(), Some(id.as_bytes()), "the key is the detection id");
                let det = v["detector"].as_str().unwrap().to_string();
                if ATTACKS.contains(&det.as_str()) {
                    out.entry(id).or_insert((det, 0)).1 += 1;
                }
                quiet_since = None;
            }
            Some(Err(e)) => panic!("reading detections: {e}"),
            None if out.len() >= want => {
                let since = *quiet_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= Duration::from_secs(1) {
                    break;
                }
            }
            None => {}
        }
    }
    out
}

struct Setup {
    _dump: Dump,
    dir: tempfile::TempDir,
    _tansu: Proc,
    bootstrap: String,
    log: PathBuf,
    edge_cfg: PathBuf,
    worker_cfg: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tansu = start_tansu(port, port);
    let bootstrap = format!("127.0.0.1:{port}");
    create_topics(&bootstrap);
    create_detections_topic(&bootstrap);
    let log = dir.path().join("api.log");
    std::fs::write(&log, "").unwrap();
    let edge_cfg = write_config(dir.path(), "edge", &log, &bootstrap);
    let worker_cfg = write_config(dir.path(), "worker", &log, &bootstrap);
    Setup {
        _dump: Dump(dir.path().to_path_buf()),
        dir,
        _tansu: tansu,
        bootstrap,
        log,
        edge_cfg,
        worker_cfg,
    }
}

#[test]
fn worker_detections_equal_replay_and_fire_once_in_the_file_and_on_the_topic() {
    let s = setup();
    let dir = s.dir.path();
    append(&s.log, &scenario(0, 200));
    let want = replay(&s.edge_cfg, &s.log, dir);
    let (_edge, _) = start("edge", &s.edge_cfg, dir, "edge");
    let (worker, waddr) = start("worker", &s.worker_cfg, dir, "worker");
    let out = dir.join("state-worker/detections.jsonl");
    wait_detections(&out, &want);
    wait_caught_up(&s.bootstrap);
    let got = {
        let mut d = detections(&out);
        d.retain(|_, (det, _)| ATTACKS.contains(&det.as_str()));
        d
    };
    assert_once_and_equal(&got, &want);
    // The same records on the detections topic, keyed by their ids, once each.
    assert_once_and_equal(&topic_detections(&s.bootstrap, want.len()), &want);
    // Every partition owned by the one worker; every record decoded.
    for topic in ["by_token", "by_ip"] {
        let owned = format!("tokenwatch_partitions_owned{{topic=\"{topic}\"}}");
        assert_eq!(
            metric(&waddr, &owned),
            Some(f64::from(PARTITIONS)),
            "{owned}"
        );
        let lag = format!("tokenwatch_kafka_consumer_lag{{topic=\"{topic}\"}}");
        assert!(metric(&waddr, &lag).is_some(), "{lag}");
        let bad =
            format!("tokenwatch_kafka_records_total{{result=\"undecodable\",topic=\"{topic}\"}}");
        assert_eq!(metric(&waddr, &bad), Some(0.0), "{bad}");
    }
    let lines = std::fs::read_to_string(&s.log).unwrap().lines().count();
    let applied = r#"tokenwatch_kafka_records_total{result="applied",topic="by_ip"}"#;
    assert_eq!(metric(&waddr, applied), Some(lines as f64));
    // SIGTERM: the worker saves every partition and exits 0.
    let mut worker = worker;
    let st = worker.terminate();
    assert_eq!(st.code(), Some(0));
    for topic in ["auth.by_token", "auth.by_ip"] {
        for p in 0..PARTITIONS {
            let f = tokenwatch::scale::worker::snapshot_path(&dir.join("state-worker"), topic, p);
            assert!(f.is_file(), "{} missing", f.display());
        }
    }
}

/// A worker killed mid-stream and a replacement on the same state directory, then the
/// edge killed and restarted without its checkpoint (so it publishes every line again):
/// no event lost, none counted twice. ip_fanout crosses its threshold only after the
/// worker crash, so its id (which names the crossing event) equals replay's only if the
/// replacement resumed from exactly the state the dead worker committed; revoked_reuse
/// counts uses, three of them published twice, so it fires at replay's event only if every
/// duplicate was dropped.
#[test]
fn worker_killed_mid_stream_replacement_resumes_without_loss_or_double_count() {
    let s = setup();
    let dir = s.dir.path();
    let out = dir.join("state-worker/detections.jsonl");
    let want = {
        let full = dir.join("full.log");
        append(&full, &scenario(0, 200));
        replay(&s.edge_cfg, &full, dir)
    };
    let attacks_so_far = || {
        detections(&out)
            .values()
            .filter(|(d, _)| ATTACKS.contains(&d.as_str()))
            .count()
    };
    // Before the crash: 6 of the 10 networks; the crash comes at 7 or 8.
    append(&s.log, &scenario(0, 60));
    let (mut edge, _) = start("edge", &s.edge_cfg, dir, "edge");
    let (mut a, aaddr) = start("worker", &s.worker_cfg, dir, "worker-a");
    wait_caught_up(&s.bootstrap);
    let lines = |log: &Path| std::fs::read_to_string(log).unwrap().lines().count() as f64;
    let seg1 = lines(&s.log);
    append(&s.log, &scenario(60, 80));
    let applied = r#"tokenwatch_kafka_records_total{result="applied",topic="by_ip"}"#;
    wait_for(60, "worker A mid-stream", || {
        metric(&aaddr, applied).filter(|n| *n > seg1)
    });
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    let (_b, baddr) = start("worker", &s.worker_cfg, dir, "worker-b");
    wait_caught_up(&s.bootstrap);
    assert_eq!(attacks_so_far(), 0, "an attack fired before its threshold");
    // Three revoked uses, then the edge publishes everything again.
    append(&s.log, &scenario(80, 130));
    wait_caught_up(&s.bootstrap);
    edge.0.kill().unwrap();
    edge.0.wait().unwrap();
    std::fs::remove_file(dir.join("state-edge/checkpoints.json")).unwrap();
    let _ = std::fs::remove_file(dir.join("state-edge/checkpoints.json.tmp"));
    let (_edge, _) = start("edge", &s.edge_cfg, dir, "edge-2");
    let republished = lines(&s.log);
    let dup = r#"tokenwatch_kafka_records_total{result="duplicate",topic="by_ip"}"#;
    wait_for(60, "the republished lines dropped as duplicates", || {
        metric(&baddr, dup).filter(|n| *n >= republished)
    });
    assert_eq!(
        attacks_so_far(),
        1,
        "only ip_fanout has crossed its threshold by now"
    );
    append(&s.log, &scenario(130, 200));
    let got = wait_detections(&out, &want);
    wait_caught_up(&s.bootstrap);
    let mut got_now = detections(&out);
    got_now.retain(|_, (det, _)| ATTACKS.contains(&det.as_str()));
    assert_eq!(got, got_now);
    assert_once_and_equal(&got_now, &want);
    for topic in ["by_token", "by_ip"] {
        let owned = format!("tokenwatch_partitions_owned{{topic=\"{topic}\"}}");
        assert_eq!(
            metric(&baddr, &owned),
            Some(f64::from(PARTITIONS)),
            "{owned}"
        );
    }
}

/// An eager rebalance revokes every partition and gives most of them back: the partitions
/// that stay keep their in-memory state, including what the snapshot does not hold (the
/// brute_force windows). Twelve addresses each send half a brute force before a second
/// worker joins and half after; those whose partition stayed with the first worker must
/// fire with replay's ids.
#[test]
fn partitions_given_back_by_a_rebalance_keep_their_windows() {
    let s = setup();
    let dir = s.dir.path();
    let ips: Vec<String> = (1..=12).map(|n| format!("203.0.113.{n}")).collect();
    let attempts = |from: u32, to: u32| {
        let mut out = String::new();
        for sec in from..to {
            for ip in &ips {
                out += &json_line(sec * 5, "tok_guess", ip, 401, Some("invalid"));
            }
        }
        out
    };
    let want = {
        let full = dir.join("full.log");
        append(&full, &(attempts(0, 20) + &attempts(20, 40)));
        let out = dir.join("bf.jsonl");
        replay_into(&s.edge_cfg, &full, &out);
        brute_force_by_ip(&out).expect("replay's records")
    };
    assert_eq!(want.len(), ips.len(), "replay: one brute force per address");
    append(&s.log, &attempts(0, 20));
    let (_edge, _) = start("edge", &s.edge_cfg, dir, "edge");
    let (_a, a_addr) = start("worker", &s.worker_cfg, dir, "worker-a");
    wait_caught_up(&s.bootstrap);
    let (_b, b_addr) = start("worker", &s.worker_cfg, dir, "worker-b");
    let owned = |addr: &str| metric(addr, r#"tokenwatch_partitions_owned{topic="by_ip"}"#);
    wait_for(60, "the rebalance", || {
        (owned(&b_addr)? >= 1.0 && owned(&a_addr)? + owned(&b_addr)? == 3.0).then_some(())
    });
    let holds = |p: i32| {
        let series = format!(
            "tokenwatch_kafka_snapshot_timestamp_seconds{{partition=\"{p}\",topic=\"by_ip\"}}"
        );
        metric(&a_addr, &series).is_some()
    };
    let held_before: Vec<i32> = (0..PARTITIONS).filter(|&p| holds(p)).collect();
    append(&s.log, &attempts(20, 40));
    wait_caught_up(&s.bootstrap);
    // Which address lives on which partition, and which partitions the first worker kept.
    let lines = std::fs::read_to_string(&s.log).unwrap().lines().count();
    let part_of: BTreeMap<String, i32> = super::kafka::consume(&s.bootstrap, "auth.by_ip", lines)
        .into_iter()
        .filter_map(|(p, k, _)| Some((String::from_utf8(k?).ok()?, p)))
        .collect();
    // Kept: the first worker's before the second half and after it, and never consumed by
    // the other worker in between (a later rebalance under load can move a partition away
    // and back: then the other worker's snapshot, without the windows, is restored).
    let a_log = strip_ansi(&std::fs::read_to_string(dir.join("worker-a.err")).unwrap_or_default());
    let moved = |p: i32| {
        a_log.lines().any(|l| {
            l.contains("partition moved on while away")
                && l.contains("auth.by_ip")
                && l.contains(&format!("partition={p}"))
        })
    };
    let kept = |p: i32| held_before.contains(&p) && holds(p) && !moved(p);
    let stayed: Vec<&String> = ips.iter().filter(|ip| kept(part_of[*ip])).collect();
    assert!(
        !stayed.is_empty(),
        "no address on a partition the first worker kept"
    );
    let out = dir.join("state-worker/detections.jsonl");
    let got = wait_for(60, "brute force on the kept partitions", || {
        let by_ip = brute_force_by_ip(&out)?;
        stayed
            .iter()
            .all(|ip| by_ip.contains_key(ip.as_str()))
            .then_some(by_ip)
    });
    for ip in stayed {
        assert_eq!(
            got[ip.as_str()],
            want[ip.as_str()],
            "{ip}: not replay's detection"
        );
    }
}

/// The brute_force records of a detections file: address → record id (`None` while a
/// line is unreadable).
fn brute_force_by_ip(path: &Path) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by_ip = BTreeMap::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        if v["detector"] == "brute_force" {
            by_ip.insert(v["ip"].as_str()?.to_string(), v["id"].to_string());
        }
    }
    Some(by_ip)
}

/// `text` without terminal colour sequences (`ESC [ ... m`), as the daemon's log has them.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn strip_ansi_leaves_the_text() {
    assert_eq!(
        strip_ansi("\u{1b}[3mpartition\u{1b}[0m\u{1b}[2m=\u{1b}[0m2 done"),
        "partition=2 done"
    );
}
