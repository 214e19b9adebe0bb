//! The responder role against a real broker (`tansu` on loopback) and a real webhook
//! receiver, fed detection records produced straight to the `detections` topic (as the
//! workers produce them): duplicates and undecodable records, the global freeze cap held
//! by the one active responder, and a clean hand-over to the standby on SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use super::kafka::{create_topics, free_port, metric, start_tansu, wait_for};
use super::kafka_worker::{create_detections_topic, detections, start, Dump};
use super::support::Receiver;

fn config(dir: &Path, url: &str, bootstrap: &str) -> PathBuf {
    let key = dir.join("hook.key");
    std::fs::write(&key, "responder-test-hook-key").unwrap();
    let cfg = dir.join("responder.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[state]
dir = "{state}"

[response]
mode = "enforce"
max_freezes = 3
window_secs = 600

[[hook]]
name = "revoke"
type = "webhook"
url = "{url}"
hmac_key = "file:{key}"
on = ["freeze"]
backoff_ms = 20
backoff_max_ms = 200

[kafka]
brokers = ["{bootstrap}"]

[kafka.options]
"session.timeout.ms" = "6000"
"#,
        state = dir.join("state-responder").display(),
        key = key.display(),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// A detection record as a worker produces it (action `alert`: the responder decides).
fn record(id: &str, detector: &str, token: &str) -> String {
    serde_json::json!({
        "ts": "2026-03-02T12:00:00.000Z",
        "detector": detector,
        "severity": "high",
        "token": token,
        "ip": "198.51.100.7",
        "source": "api",
        "action": "alert",
        "evidence": {},
        "id": id,
    })
    .to_string()
}

fn produce(bootstrap: &str, records: &[(String, String)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for (key, payload) in records {
        p.send(BaseRecord::to("detections").key(key).payload(payload))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

fn freezes(rx: &Receiver) -> Vec<String> {
    rx.requests()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["token"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

fn series(result: &str) -> String {
    format!("tokenwatch_kafka_records_total{{result=\"{result}\",topic=\"detections\"}}")
}

#[test]
fn one_active_responder_dedupes_holds_the_global_cap_and_hands_over_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _dump = Dump(dir.to_path_buf());
    let rx = Receiver::start(|_, _| (204, Duration::ZERO));
    let port = free_port();
    let _tansu = start_tansu(port, port);
    let bootstrap = format!("127.0.0.1:{port}");
    create_topics(&bootstrap);
    create_detections_topic(&bootstrap);
    let cfg = config(dir, &rx.url("/revoke"), &bootstrap);
    let (mut a, a_addr) = start("responder", &cfg, dir, "responder-a");
    wait_for(60, "responder A active", || {
        (metric(&a_addr, "tokenwatch_responder_active") == Some(1.0)).then_some(())
    });

    // Two tokens to freeze, one of them raised twice (a worker re-raising after its
    // crash), a record that is not a detection, and an alert-only detector.
    let mut batch = vec![
        ("d1".to_string(), record("d1", "ip_fanout", "tok_1")),
        ("d1".to_string(), record("d1", "ip_fanout", "tok_1")),
        ("junk".to_string(), "not a detection".to_string()),
        ("d2".to_string(), record("d2", "rate_spike", "tok_2")),
        ("d3".to_string(), record("d3", "impossible_travel", "tok_3")),
    ];
    produce(&bootstrap, &batch);
    wait_for(60, "the two freezes", || {
        (freezes(&rx).len() >= 2).then_some(())
    });
    assert_eq!(metric(&a_addr, &series("applied")), Some(3.0));
    assert_eq!(metric(&a_addr, &series("duplicate")), Some(1.0));
    assert_eq!(metric(&a_addr, &series("undecodable")), Some(1.0));
    // The active responder reports the detections partition's lag (statistics every 5 s).
    let lag = r#"tokenwatch_kafka_partition_lag{partition="0",topic="detections"}"#;
    wait_for(30, "the responder's lag series", || metric(&a_addr, lag));

    // A standby joins, then A stops cleanly: B takes over with A's frozen set (shared
    // state directory), and the cap (3 per window) is the cluster's, not the process's.
    let (_b, b_addr) = start("responder", &cfg, dir, "responder-b");
    wait_for(60, "one active responder after B joined", || {
        let (x, y) = (
            metric(&a_addr, "tokenwatch_responder_active")?,
            metric(&b_addr, "tokenwatch_responder_active")?,
        );
        (x + y == 1.0).then_some(())
    });
    let st = a.terminate();
    assert_eq!(st.code(), Some(0));
    wait_for(60, "B active", || {
        (metric(&b_addr, "tokenwatch_responder_active") == Some(1.0)).then_some(())
    });
    batch = (4..=7)
        .map(|n| {
            let id = format!("d{n}");
            (id.clone(), record(&id, "ip_fanout", &format!("tok_{n}")))
        })
        .collect();
    // d1 again (already decided by A) and tok_3 again under a new id (already frozen).
    batch.push(("d1".to_string(), record("d1", "ip_fanout", "tok_1")));
    batch.push(("d8".to_string(), record("d8", "ip_fanout", "tok_3")));
    produce(&bootstrap, &batch);
    wait_for(60, "B decided every new record", || {
        (metric(&b_addr, &series("applied")) == Some(5.0)).then_some(())
    });
    assert_eq!(metric(&b_addr, &series("duplicate")), Some(1.0));
    wait_for(30, "the new active responder's lag series", || {
        metric(&b_addr, lag)
    });
    // Cap 3 per window: tok_1 and tok_3 by A, tok_4 by B; tok_5..7 over the cap.
    let frozen = wait_for(30, "the third freeze", || {
        let f = freezes(&rx);
        (f.len() >= 3).then_some(f)
    });
    let mut sorted = frozen.clone();
    sorted.sort();
    assert_eq!(sorted, ["tok_1", "tok_3", "tok_4"], "{frozen:?}");
    // Decided records are flushed every second.
    let decided = wait_for(30, "every decided record in the file", || {
        let d = detections(&dir.join("state-responder/detections.jsonl"));
        (d.len() >= 8).then_some(d)
    });
    assert_eq!(decided.len(), 8, "{decided:?}");
    assert!(decided.values().all(|(_, n)| *n == 1), "{decided:?}");
    let text = std::fs::read_to_string(dir.join("state-responder/detections.jsonl")).unwrap();
    assert_eq!(text.matches("\"rate_cap\"").count(), 3, "{text}");
    assert_eq!(text.matches("\"already_frozen\"").count(), 1, "{text}");
}
