//! Enforcement across gateways (issue 16, item 4) on a real broker (`tansu`): the active
//! responder publishes its freezes and unfreezes to the compacted `frozen` topic, two edges
//! follow it and refuse the token at `/authz`; an edge that starts rebuilds the set from
//! the topic before it is ready.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use super::kafka::{create_topics, free_port, metric, start_tansu, wait_for};
use super::kafka_worker::{create_detections_topic, start, Dump};
use super::support::{closed_port, http, http_raw};

const ADMIN: &str = "kafka-authz-admin-token";
const FP_KEY: &str = "kafka-authz-test-fingerprint-key-32+";

fn create_frozen_topic(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topic =
        NewTopic::new("frozen", 3, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for r in rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .unwrap()
    {
        r.unwrap();
    }
}

fn config(dir: &Path, name: &str, bootstrap: &str, authz: Option<u16>) -> PathBuf {
    std::fs::write(dir.join("admin.token"), ADMIN).unwrap();
    std::fs::write(dir.join("fp.key"), FP_KEY).unwrap();
    let log = dir.join(format!("{name}.log"));
    std::fs::write(&log, "").unwrap();
    let authz = authz.map_or(String::new(), |p| {
        format!("[authz]\nlisten = \"127.0.0.1:{p}\"\nheader = \"X-Token-Id\"\n")
    });
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

[response]
mode = "enforce"

[[source]]
name = "api"
path = "{log}"
format = "json"
start_at = "beginning"

[kafka]
brokers = ["{bootstrap}"]
edge_id = "{name}"

[kafka.options]
"session.timeout.ms" = "6000"

{authz}"#,
        admin = dir.join("admin.token").display(),
        key = dir.join("fp.key").display(),
        state = dir.join(format!("state-{name}")).display(),
        log = log.display(),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn detection(id: &str, token: &str) -> String {
    serde_json::json!({
        "ts": "2026-03-02T12:00:00.000Z",
        "detector": "ip_fanout",
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

fn produce(bootstrap: &str, id: &str, token: &str) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let body = detection(id, token);
    p.send(BaseRecord::to("detections").key(id).payload(&body))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
}

fn authz(port: u16, token: &str) -> Option<u16> {
    let h = format!("X-Token-Id: {token}\r\n");
    http_raw(&format!("127.0.0.1:{port}"), "GET", "/authz", &h, b"").map(|r| r.0)
}

/// Polls both edges until each answers `want` for `token`; how long that took.
fn until_both(ports: [u16; 2], token: &str, want: u16, secs: u64) -> Duration {
    let t0 = Instant::now();
    wait_for(secs, &format!("{token} -> {want} on both edges"), || {
        ports
            .iter()
            .all(|&p| authz(p, token) == Some(want))
            .then_some(())
    });
    t0.elapsed()
}

fn ready(addr: &str) -> bool {
    http(addr, "GET", "/readyz", None, b"").is_some_and(|r| r.0 == 200)
}

#[test]
fn a_freeze_by_the_responder_is_refused_on_every_edge() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _dump = Dump(dir.to_path_buf());
    let port = free_port();
    let _tansu = start_tansu(port, port);
    let bootstrap = format!("127.0.0.1:{port}");
    create_topics(&bootstrap);
    create_detections_topic(&bootstrap);
    create_frozen_topic(&bootstrap);

    let rcfg = config(dir, "responder", &bootstrap, None);
    let (_r, r_addr) = start("responder", &rcfg, dir, "responder");
    wait_for(60, "responder active", || {
        (metric(&r_addr, "tokenwatch_responder_active") == Some(1.0)).then_some(())
    });
    let ports = [closed_port(), closed_port()];
    let a_cfg = config(dir, "edge-a", &bootstrap, Some(ports[0]));
    let b_cfg = config(dir, "edge-b", &bootstrap, Some(ports[1]));
    let (_a, a_addr) = start("edge", &a_cfg, dir, "edge-a");
    let (b, b_addr) = start("edge", &b_cfg, dir, "edge-b");
    wait_for(60, "both edges ready", || {
        (ready(&a_addr) && ready(&b_addr)).then_some(())
    });
    until_both(ports, "tok_k1", 200, 10);

    // A detection the responder turns into a freeze: refused on both gateways.
    let t0 = Instant::now();
    produce(&bootstrap, "d1", "tok_k1");
    until_both(ports, "tok_k1", 403, 30);
    let decided = t0.elapsed();
    for addr in [&a_addr, &b_addr] {
        wait_for(10, "the entries gauge", || {
            (metric(addr, "tokenwatch_authz_frozen_entries") == Some(1.0)).then_some(())
        });
        let age = metric(addr, "tokenwatch_authz_snapshot_age_seconds").unwrap();
        assert!((0.0..5.0).contains(&age), "age {age}");
    }
    assert_eq!(authz(ports[0], "tok_other"), Some(200));

    // Unfreeze at the responder: lifted on both.
    let t0 = Instant::now();
    let r = http(&r_addr, "DELETE", "/api/v1/frozen/tok_k1", Some(ADMIN), b"").unwrap();
    assert_eq!(r.0, 200, "{}", r.1);
    let lifted = until_both(ports, "tok_k1", 200, 10);
    let unfreeze_total = t0.elapsed();
    // And a manual freeze: the admin API answers once decided; the edges follow.
    let r = http(&r_addr, "POST", "/api/v1/frozen/tok_k2", Some(ADMIN), b"").unwrap();
    assert_eq!(r.0, 200, "{}", r.1);
    let frozen = until_both(ports, "tok_k2", 403, 10);
    eprintln!(
        "frozen topic: detection produced -> 403 on both edges in {decided:?}; \
         unfreeze -> 200 in {lifted:?} ({unfreeze_total:?} with the API call); \
         manual freeze -> 403 in {frozen:?}"
    );
    assert!(lifted < Duration::from_secs(1), "{lifted:?}");
    assert!(frozen < Duration::from_secs(1), "{frozen:?}");

    // Edge B stops; a freeze and an unfreeze happen meanwhile; B restarts and rebuilds
    // the set from the topic before it is ready: its first answers are already right.
    drop(b);
    produce(&bootstrap, "d3", "tok_k3");
    let r = http(&r_addr, "DELETE", "/api/v1/frozen/tok_k2", Some(ADMIN), b"").unwrap();
    assert_eq!(r.0, 200);
    wait_for(30, "edge A sees both changes", || {
        (authz(ports[0], "tok_k3") == Some(403) && authz(ports[0], "tok_k2") == Some(200))
            .then_some(())
    });
    let (_b, b_addr) = start("edge", &b_cfg, dir, "edge-b");
    wait_for(60, "edge B ready again", || ready(&b_addr).then_some(()));
    assert_eq!(authz(ports[1], "tok_k3"), Some(403));
    assert_eq!(authz(ports[1], "tok_k2"), Some(200));
    assert_eq!(authz(ports[1], "tok_k1"), Some(200));
}
