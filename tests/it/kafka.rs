//! The Kafka edge against a real broker: `tansu` on a loopback port, the real
//! `tokenwatch run --role edge`, and an rdkafka consumer reading both topics back.
//!
//! tansu keeps its data in memory, so restarting it would also lose its topics and producer
//! state; a broker outage as the edge sees it is a listener that refuses connections. The
//! edge therefore reaches the broker through a small TCP relay that this test cuts and
//! restores on the same port (the port tansu advertises). The same scenario also runs on
//! librdkafka's mock cluster, which needs no external binary.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokenwatch::enrich::Fingerprinter;
use tokenwatch::scale::wire;

use super::support::{http_get, sample};

const PARTITIONS: i32 = 3;
const FP_KEY: &str = "kafka-test-fingerprint-key-of-32-bytes+";
/// A secret the log carries in the token field: it must never reach the broker.
const SECRET: &str = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c";

/// A child process killed on drop, so a failing test leaks nothing.
pub(super) struct Proc(pub(super) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM, then the exit status (within 30 s).
    pub(super) fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        wait_for(30, "exit after SIGTERM", || {
            self.0.try_wait().ok().flatten()
        })
    }
}

/// Polls `f` until it returns `Some`, or panics after `secs` with `what`.
pub(super) fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tansu_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("tansu"))
            .find(|f| f.is_file())
    });
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu"));
    on_path.or(home.filter(|f| f.is_file())).expect(
        "the Kafka tests need the `tansu` broker: cargo install tansu --locked --features dynostore \
         (.ci/run installs it when missing)",
    )
}

pub(super) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts tansu listening on `port`, advertising `advertised`.
pub(super) fn start_tansu(port: u16, advertised: u16) -> Proc {
    let child = Command::new(tansu_bin())
        .arg("--listener-url")
        .arg(format!("tcp://127.0.0.1:{port}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://127.0.0.1:{advertised}"))
        .args(["--storage-engine", "memory://tansu/", "--silent"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn tansu");
    let p = Proc(child);
    wait_for(30, "tansu listening", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    p
}

/// A TCP relay from `port` to the broker that can be cut (listener closed, connections
/// shut) and restored on the same port.
struct Relay {
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(port: u16, target: u16) -> Relay {
        let listener = wait_for(10, "relay port free", || {
            TcpListener::bind(("127.0.0.1", port)).ok()
        });
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&conns));
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((client, _)) => relay_conn(client, target, &c),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Relay {
            stop,
            conns,
            accept: Some(accept),
        }
    }

    /// Closes the listener and every relayed connection.
    fn cut(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn relay_conn(client: TcpStream, target: u16, conns: &Mutex<Vec<TcpStream>>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    };
    let mut all = conns.lock().unwrap();
    all.push(client.try_clone().unwrap());
    all.push(server.try_clone().unwrap());
    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
    pipe(server, client);
}

pub(super) fn create_topics(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topics: Vec<NewTopic> = ["auth.by_token", "auth.by_ip"]
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let res = rt
        .block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .unwrap();
    for r in res {
        r.unwrap();
    }
}

/// A message as read back: partition, key, payload.
pub(super) type Msg = (i32, Option<Vec<u8>>, Vec<u8>);

/// Reads every partition of `topic` from the beginning until `want` messages arrived
/// (and a little longer, to catch extras).
pub(super) fn consume(bootstrap: &str, topic: &str, want: usize) -> Vec<Msg> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kafka-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut settle: Option<Instant> = None;
    while Instant::now() < deadline && settle.is_none_or(|s| Instant::now() < s) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push((
                m.partition(),
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
        if out.len() >= want && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_millis(1500));
        }
    }
    out
}

fn line(i: u32, token: &str, status: u16) -> String {
    let ip = if i.is_multiple_of(5) {
        format!("2001:db8:{i:x}::{i:x}")
    } else {
        format!("203.0.113.{}", i % 250)
    };
    format!(
        "{ip} - u{i} [02/Mar/2026:13:55:{:02} +0000] \"POST /v1/chat HTTP/1.1\" {status} 12 \"-\" \"curl/8\" \"{token}\" \"-\"\n",
        i % 60
    )
}

/// Lines with ids, with a secret, without a token, and rejected.
fn lines(from: u32, n: u32) -> String {
    (from..from + n)
        .map(|i| match i % 4 {
            0 => line(i, &format!("ak_{i:012x}"), 200),
            1 => line(i, SECRET, 401),
            2 => line(i, "-", 200),
            _ => line(i, &format!("ak_{:012x}", i % 3), 403),
        })
        .collect()
}

pub(super) fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn write_config(dir: &Path, log: &Path, bootstrap: &str) -> PathBuf {
    let key = dir.join("fp.key");
    std::fs::write(&key, FP_KEY).unwrap();
    let cfg = dir.join("edge.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[state]
dir = "{state}"

[fingerprint]
key = "file:{key}"

[[source]]
name = "gw"
path = "{log}"
format = "nginx"
start_at = "beginning"

[kafka]
brokers = ["{bootstrap}"]
edge_id = "edge-a"

[kafka.producer]
linger_ms = 1
# Small, so the test sees the queue fill: 20 of these lines make 35 messages.
queue_messages = 40
"#,
        state = dir.join("state").display(),
        key = key.display(),
        log = log.display(),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// `tokenwatch parse -v` for the same file and config: line number → description.
fn parse_report(cfg: &Path, log: &Path) -> BTreeMap<usize, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["parse", "-v", "-c"])
        .arg(cfg)
        .arg(log)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.trim_start().split_once("  ")?;
            Some((n.parse().ok()?, rest.to_string()))
        })
        .collect()
}

/// A decoded event described as `tokenwatch parse -v` describes a record.
fn describe(e: &wire::WireEvent) -> String {
    let ev = &e.event;
    format!(
        "time={} token={} ip={} user={} status={} outcome={:?}",
        ev.time,
        ev.token.as_ref().map_or("-".to_string(), |t| t.to_string()),
        ev.ip.map_or("-".to_string(), |i| i.to_string()),
        ev.user.as_deref().unwrap_or("-"),
        ev.status.map_or("-".to_string(), |s| s.to_string()),
        ev.outcome,
    )
}

/// Byte offset of each line's start → its 1-based line number.
fn line_numbers(log: &Path) -> BTreeMap<u64, usize> {
    let bytes = std::fs::read(log).unwrap();
    let mut out = BTreeMap::new();
    let mut at = 0u64;
    for (i, l) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        out.insert(at, i + 1);
        at += l.len() as u64;
    }
    out
}

/// Checks one topic's messages against the parse report; returns the lines it covered.
fn check_topic(
    msgs: &[Msg],
    by_token: bool,
    report: &BTreeMap<usize, String>,
    numbers: &BTreeMap<u64, usize>,
) -> HashSet<usize> {
    let fp = Fingerprinter::new(FP_KEY.as_bytes());
    let mut seen = HashSet::new();
    for (_, key, payload) in msgs {
        assert!(
            !payload
                .windows(SECRET.len())
                .any(|w| w == SECRET.as_bytes())
                && key
                    .as_deref()
                    .is_none_or(|k| !k.windows(8).any(|w| w == b"sk-live-")),
            "raw secret on the wire"
        );
        let e = wire::decode(payload).expect("decodes");
        assert_eq!(&*e.id.edge, "edge-a");
        assert_eq!(&*e.source_name, "gw");
        let n = numbers[&e.id.offset];
        assert!(seen.insert(n), "line {n} published twice");
        assert_eq!(report[&n], describe(&e), "line {n}");
        let want_key = if by_token {
            let t = e.event.token.as_ref().expect("token topic has a token");
            Some(wire::token_key(&fp, t).as_str().as_bytes().to_vec())
        } else {
            e.event.ip.map(|ip| {
                let mut k = String::new();
                wire::ip_key(ip, 64, &mut k);
                k.into_bytes()
            })
        };
        assert_eq!(key, &want_key, "key of line {n}");
    }
    seen
}

fn checkpoint_offset(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join("state/checkpoints.json")).ok()?;
    // A state file: a checksummed header line, then the JSON body.
    let body = tokenwatch::durable::unframe("checkpoints", &bytes).ok()??;
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["files"].get(0)?["offset"].as_u64()
}

fn start_edge(cfg: &Path, dir: &Path) -> (Proc, String) {
    let addr_file = dir.join("addr");
    let child = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["run", "--role", "edge", "-c"])
        .arg(cfg)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    let addr = wait_for(30, "edge listen address", || {
        std::fs::read_to_string(&addr_file)
            .ok()
            .filter(|s| !s.is_empty())
    });
    (p, addr)
}

pub(super) fn metric(addr: &str, series: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics")?;
    sample(&body, series)
}

/// A broker the scenario can take down and bring back.
trait Broker {
    /// The bootstrap list clients use.
    fn bootstrap(&self) -> String;
    /// Refuse connections and cut the open ones.
    fn down(&mut self);
    /// Accept connections again, on the same address.
    fn up(&mut self);
}

/// tansu behind the relay.
struct Tansu {
    _broker: Proc,
    relay: Option<Relay>,
    relay_port: u16,
    port: u16,
}

impl Tansu {
    fn start() -> Tansu {
        let (relay_port, port) = (free_port(), free_port());
        let broker = start_tansu(port, relay_port);
        let t = Tansu {
            _broker: broker,
            relay: Some(Relay::start(relay_port, port)),
            relay_port,
            port,
        };
        create_topics(&t.bootstrap());
        t
    }
}

impl Broker for Tansu {
    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.relay_port)
    }

    fn down(&mut self) {
        if let Some(r) = self.relay.take() {
            r.cut();
        }
    }

    fn up(&mut self) {
        self.relay = Some(Relay::start(self.relay_port, self.port));
    }
}

/// librdkafka's own mock cluster (one broker, in this process, on a real socket).
struct Mock(MockCluster<'static, DefaultProducerContext>);

impl Mock {
    fn start() -> Mock {
        let m = MockCluster::new(1).unwrap();
        for t in ["auth.by_token", "auth.by_ip"] {
            m.create_topic(t, PARTITIONS, 1).unwrap();
        }
        Mock(m)
    }
}

impl Broker for Mock {
    fn bootstrap(&self) -> String {
        self.0.bootstrap_servers()
    }

    fn down(&mut self) {
        self.0.broker_down(1).unwrap();
    }

    fn up(&mut self) {
        self.0.broker_up(1).unwrap();
    }
}

#[test]
fn edge_on_tansu_publishes_each_line_once_and_holds_the_checkpoint_while_down() {
    // Down for 30 s: longer than any producer retry backoff, so the edge must come back
    // from librdkafka's reconnect loop, not just from one retry.
    edge_scenario(&mut Tansu::start(), Duration::from_secs(30));
}

#[test]
fn edge_on_librdkafka_mock_cluster_same_scenario() {
    // Three checkpoint periods.
    edge_scenario(&mut Mock::start(), Duration::from_secs(3));
}

/// `down`: how long the broker stays down with the edge's queue full (the checkpoint must
/// not move and nothing more may be read meanwhile).
fn edge_scenario(broker: &mut dyn Broker, down: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = broker.bootstrap();

    let log = dir.path().join("access.log");
    append(&log, &lines(0, 40));
    let cfg = write_config(dir.path(), &log, &bootstrap);
    let (_edge, addr) = start_edge(&cfg, dir.path());
    append(&log, &lines(40, 40));

    // 80 lines: 60 with a token (both topics), 20 without (IP topic only).
    let len = std::fs::metadata(&log).unwrap().len();
    wait_for(60, "checkpoint at the end of the file", || {
        (checkpoint_offset(dir.path()) == Some(len)).then_some(())
    });
    let report = parse_report(&cfg, &log);
    let numbers = line_numbers(&log);
    let tok = consume(&bootstrap, "auth.by_token", 60);
    let ip = consume(&bootstrap, "auth.by_ip", 80);
    assert_eq!((tok.len(), ip.len()), (60, 80));
    let tok_lines = check_topic(&tok, true, &report, &numbers);
    let ip_lines = check_topic(&ip, false, &report, &numbers);
    assert_eq!(ip_lines.len(), 80);
    assert!(tok_lines.is_subset(&ip_lines));
    let series = r#"auth_token_check_total{source="gw"}"#;
    assert_eq!(metric(&addr, series), Some(80.0));
    let delivered = r#"tokenwatch_kafka_messages_total{result="delivered",topic="by_ip"}"#;
    assert_eq!(metric(&addr, delivered), Some(80.0));

    // Broker down: lines are read and counted, but the checkpoint stays put ...
    broker.down();
    append(&log, &lines(80, 20)); // 35 messages: they fit in the producer queue
    wait_for(30, "the new lines counted", || {
        (metric(&addr, series) == Some(100.0)).then_some(())
    });
    append(&log, &lines(100, 20)); // 5 fit, 30 wait to be sent: the edge stops reading
    wait_for(30, "the second lines counted", || {
        (metric(&addr, series) == Some(120.0)).then_some(())
    });
    append(&log, &lines(120, 20));
    let until = Instant::now() + down;
    while Instant::now() < until {
        assert_eq!(checkpoint_offset(dir.path()), Some(len), "checkpoint moved");
        assert_eq!(
            metric(&addr, series),
            Some(120.0),
            "read on while the queue is full"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Broker back on the same port: delivery resumes and the checkpoint catches up.
    broker.up();
    let len = std::fs::metadata(&log).unwrap().len();
    wait_for(90, "checkpoint catching up", || {
        (checkpoint_offset(dir.path()) == Some(len)).then_some(())
    });
    let report = parse_report(&cfg, &log);
    let numbers = line_numbers(&log);
    assert_eq!(metric(&addr, series), Some(140.0));
    let tok = consume(&bootstrap, "auth.by_token", 105);
    let ip = consume(&bootstrap, "auth.by_ip", 140);
    assert_eq!((tok.len(), ip.len()), (105, 140));
    check_topic(&tok, true, &report, &numbers);
    assert_eq!(check_topic(&ip, false, &report, &numbers).len(), 140);
}

#[test]
fn check_config_lists_every_kafka_problem_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "role = \"edge\"\n\n[kafka]\nbrokers = [\"nohost\"]\nedge_id = \"bad id\"\n\
         [kafka.topics]\nby_ip = \"auth.by_token\"\n[kafka.options]\n\
         \"sasl.password\" = \"hunter2\"\n\"enable.idempotence\" = \"false\"\n\
         \"security.protocol\" = \"sasl_ssl\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stderr).unwrap() + &String::from_utf8(out.stdout).unwrap();
    let p = cfg.display();
    for want in [
        format!("{p}:1:8: fingerprint.key: role = \"edge\" needs a key"),
        format!("{p}:4:12: kafka.brokers[0]: \"nohost\" is not host:port"),
        format!("{p}:5:11: kafka.edge_id: invalid edge id"),
        format!("{p}:7:9: kafka.topics.by_ip: same topic as topics.by_token"),
        format!("{p}:9:19: kafka.options.sasl.password: secrets must be given as env:NAME"),
        format!("{p}:10:24: kafka.options.enable.idempotence: set by tokenwatch"),
        format!(
            "{p}:11:23: kafka.options.security.protocol: TLS to the broker is not in this build"
        ),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("hunter2"));
    // --role on the command line is checked too, before anything starts.
    std::fs::write(&cfg, "[[source]]\npath = \"/nonexistent.log\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["run", "--role", "edge", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("kafka.brokers: role = \"edge\" needs brokers"),
        "{err}"
    );
}
