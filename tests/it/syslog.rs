//! `kind = "syslog"` (issue 15 item 2): a real nginx sending its access log over syslog to
//! a running `tokenwatch run`, TCP framings and the program filter, and hostile input (the
//! largest datagram, a 10 MB TCP frame, a flood beyond the queue).

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{http_get, sample, wait_for, Daemon};

/// A free loopback UDP port (bound and released; tokenwatch binds it next).
fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A config with one syslog source named `name` and `extra` keys in its table.
fn write_config(dir: &Path, listen: &str, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("tokenwatch.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[state]
dir = "{state}"

[[source]]
name = "nginx"
kind = "syslog"
listen = "{listen}"
format = "nginx"
token_kind = "id"
{extra}
"#,
        state = dir.join("state").display(),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn metric(d: &Daemon, series: &str) -> f64 {
    let (_, body) = http_get(&d.addr, "/metrics").unwrap_or_default();
    sample(&body, series).unwrap_or(0.0)
}

/// Polls until `series` is exactly `want`.
fn wait_metric(d: &mut Daemon, series: &str, want: f64) {
    let addr = d.addr.clone();
    let mut last = 0.0;
    wait_for(60, &format!("{series} == {want}"), || {
        d.assert_running();
        let (_, body) = http_get(&addr, "/metrics")?;
        last = sample(&body, series).unwrap_or(0.0);
        (last == want).then_some(())
    });
}

const CHECKS: &str = "auth_token_check_total{source=\"nginx\"}";
const INVALID: &str = "auth_token_rejected_total{reason=\"invalid\",source=\"nginx\"}";

/// nginx as the test's child, killed on drop.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Debian's nginx on `port` with its access log going to syslog on `syslog_port`:
/// `/ok` answers 200, `/deny` 401 with `$auth_reason` = `invalid`; the token id comes from
/// the `X-Key-Id` header.
fn start_nginx(dir: &Path, port: u16, syslog_port: u16) -> Nginx {
    let d = dir.display();
    let conf = format!(
        r#"
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format tokenwatch '$remote_addr - $remote_user [$time_local] "$request" '
                          '$status $body_bytes_sent "$http_referer" "$http_user_agent" '
                          '"$http_x_key_id" "$auth_reason"';
    access_log syslog:server=127.0.0.1:{syslog_port},tag=nginx tokenwatch;
    server {{
        listen 127.0.0.1:{port};
        set $auth_reason "-";
        location /ok {{ return 200 "ok\n"; }}
        location /deny {{ set $auth_reason "invalid"; return 401; }}
    }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("/usr/sbin/nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("/usr/sbin/nginx (Debian package nginx)");
    let mut n = Nginx(child);
    let addr = format!("127.0.0.1:{port}");
    wait_for(30, "nginx answering", || {
        if let Ok(Some(s)) = n.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("nginx exited ({s}):\n{log}");
        }
        get(&addr, "/ok", "ak_probe").filter(|s| *s == 200)
    });
    n
}

/// GET `path` with `X-Key-Id: key`: the status.
fn get(addr: &str, path: &str, key: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: x\r\nX-Key-Id: {key}\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.get(9..12)?.parse().ok()
}

#[test]
fn nginx_access_log_over_syslog_counts_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let syslog_port = free_udp_port();
    let cfg = write_config(
        dir.path(),
        &format!("udp://127.0.0.1:{syslog_port}"),
        "program = \"nginx\"",
    );
    let mut d = Daemon::start(&cfg, dir.path(), &[]);
    d.wait_ready();
    let ngx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&ngx_dir).unwrap();
    let port = free_tcp_port();
    let _nginx = start_nginx(&ngx_dir, port, syslog_port);
    // The readiness probe's requests were logged too; count from here.
    let addr = format!("127.0.0.1:{port}");
    wait_for(30, "probe lines counted", || {
        let c = metric(&d, CHECKS);
        (c >= 1.0).then_some(())
    });
    let before = metric(&d, CHECKS);
    let (ok, denied) = (23u32, 17u32);
    for i in 0..ok {
        assert_eq!(get(&addr, "/ok", &format!("ak_ok{i}")), Some(200));
    }
    for i in 0..denied {
        assert_eq!(get(&addr, "/deny", &format!("ak_bad{i}")), Some(401));
    }
    wait_metric(&mut d, CHECKS, before + f64::from(ok + denied));
    wait_metric(&mut d, INVALID, f64::from(denied));
    // Nothing was dropped on the way.
    for reason in ["queue_full", "too_long", "malformed"] {
        let s = format!("tokenwatch_source_dropped_total{{reason=\"{reason}\",source=\"nginx\"}}");
        assert_eq!(metric(&d, &s), 0.0, "{s}");
    }
    assert!(d.terminate().success());
}

/// An nginx line in the `tokenwatch` format.
fn line(status: u16, key: &str) -> String {
    let reason = if status == 401 { "invalid" } else { "-" };
    format!(
        "10.1.2.3 - - [07/Dec/2026:10:00:00 +0000] \"GET /v1/chat HTTP/1.1\" {status} 12 \"-\" \"curl/8\" \"{key}\" \"{reason}\""
    )
}

#[test]
fn tcp_octet_counted_and_newline_frames_with_program_filter() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let cfg = write_config(
        dir.path(),
        &format!("tcp://127.0.0.1:{port}"),
        "program = \"nginx\"",
    );
    let mut d = Daemon::start(&cfg, dir.path(), &[]);
    d.wait_ready();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut out = Vec::new();
    for i in 0..10 {
        // RFC 5424, octet-counted (rsyslog's and syslog-ng's TCP output).
        let m = format!(
            "<190>1 2026-12-07T10:00:00Z gw nginx - - - {}",
            line(401, &format!("ak_{i}"))
        );
        out.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
        // RFC 3164, newline-framed (nginx-style).
        let m = format!(
            "<190>Dec  7 10:00:00 gw nginx: {}\n",
            line(200, &format!("ak_{i}"))
        );
        out.extend_from_slice(m.as_bytes());
        // Another program: filtered out, counted as skipped.
        out.extend_from_slice(
            format!("<13>Dec  7 10:00:00 gw sshd[7]: {}\n", line(401, "x")).as_bytes(),
        );
    }
    s.write_all(&out).unwrap();
    wait_metric(&mut d, CHECKS, 20.0);
    wait_metric(&mut d, INVALID, 10.0);
    wait_metric(
        &mut d,
        "tokenwatch_lines_total{result=\"skipped\",source=\"nginx\"}",
        10.0,
    );
    // tokenwatch_source_dropped_total passes the exposition-format lint.
    let (_, body) = http_get(&d.addr, "/metrics").unwrap();
    let zero = "tokenwatch_source_dropped_total{reason=\"queue_full\",source=\"nginx\"} 0";
    assert!(body.contains(zero), "{body}");
    crate::e2e::promtool_check(&body);
    assert!(d.terminate().success());
}

fn dropped(d: &Daemon, reason: &str) -> f64 {
    metric(
        d,
        &format!("tokenwatch_source_dropped_total{{reason=\"{reason}\",source=\"nginx\"}}"),
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let l = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn hostile_udp_largest_datagram_counted_and_source_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let cfg = write_config(
        dir.path(),
        &format!("udp://127.0.0.1:{port}"),
        "max_line_bytes = 8192",
    );
    let mut d = Daemon::start(&cfg, dir.path(), &[]);
    d.wait_ready();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(("127.0.0.1", port)).unwrap();
    // The largest UDP payload over IPv4: 65,507 bytes.
    let mut big = b"<190>Dec  7 10:00:00 gw nginx: ".to_vec();
    big.resize(65_507, b'A');
    s.send(&big).unwrap();
    s.send(b"not syslog at all").unwrap();
    wait_for(30, "too_long and malformed counted", || {
        (dropped(&d, "too_long") == 1.0 && dropped(&d, "malformed") == 1.0).then_some(())
    });
    let m = format!("<190>Dec  7 10:00:00 gw nginx: {}", line(401, "ak_after"));
    s.send(m.as_bytes()).unwrap();
    wait_metric(&mut d, INVALID, 1.0);
    assert!(d.terminate().success());
}

#[test]
fn hostile_tcp_10mb_frame_closes_and_a_flood_beyond_the_queue_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let cfg = write_config(
        dir.path(),
        &format!("tcp://127.0.0.1:{port}"),
        "max_line_bytes = 8192\nqueue_messages = 64\nmax_connections = 4",
    );
    let mut d = Daemon::start(&cfg, dir.path(), &[]);
    d.wait_ready();
    let rss_before = rss_kib(d.pid());

    // A 10 MB octet-counted frame: refused from its length, the connection closed.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"10485760 <190>1 - - nginx - - - ");
    let _ = s.write_all(&vec![b'A'; 10 << 20]);
    let mut buf = [0u8; 1];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "connection left open"
    );
    // 10 MB without a newline: refused once past the cap, the connection closed.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"<190>Dec  7 10:00:00 gw nginx: ");
    let _ = s.write_all(&vec![b'A'; 10 << 20]);
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "connection left open"
    );
    wait_for(30, "two too_long frames", || {
        (dropped(&d, "too_long") == 2.0).then_some(())
    });

    // A flood over TCP (no kernel loss): every message is either counted as a check or
    // as dropped because the 64-message queue was full.
    let sent = 200_000u64;
    let mut flood = Vec::new();
    for i in 0..sent {
        let m = format!(
            "<190>Dec  7 10:00:00 gw nginx: {}\n",
            line(200, &format!("ak_{}", i % 1000))
        );
        flood.extend_from_slice(m.as_bytes());
    }
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&flood).unwrap();
    drop(s);
    let addr = d.addr.clone();
    wait_for(120, "every flooded message counted or dropped", || {
        d.assert_running();
        let (_, body) = http_get(&addr, "/metrics")?;
        let checks = sample(&body, CHECKS).unwrap_or(0.0) as u64;
        let full = sample(
            &body,
            "tokenwatch_source_dropped_total{reason=\"queue_full\",source=\"nginx\"}",
        )
        .unwrap_or(0.0) as u64;
        (checks + full == sent).then_some((checks, full))
    });
    assert!(
        dropped(&d, "queue_full") > 0.0,
        "the flood never filled the queue"
    );
    let rss_after = rss_kib(d.pid());
    assert!(
        rss_after < rss_before + 100 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );

    // More connections than max_connections: the extra ones are closed and counted.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    wait_for(30, "a connection over the limit refused", || {
        let mut extra = TcpStream::connect(("127.0.0.1", port)).ok()?;
        extra.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let _ = extra.read(&mut buf);
        (dropped(&d, "connection_limit") >= 1.0).then_some(())
    });
    drop(held);

    // Still working afterwards.
    let before = metric(&d, INVALID);
    let mut s = wait_for(30, "a connection slot", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    s.write_all(format!("<190>Dec  7 10:00:00 gw nginx: {}\n", line(401, "ak_after")).as_bytes())
        .unwrap();
    wait_metric(&mut d, INVALID, before + 1.0);
    assert!(d.terminate().success());
}
