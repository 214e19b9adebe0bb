//! Secrets hygiene: raw secret tokens go into a real `tokenwatch run` (enforce mode, webhook,
//! exec and e-mail hooks, admin API, debug logging); afterwards every byte it wrote anywhere
//! (stdout/stderr, state directory, detections, journal, snapshots, checkpoints, webhook
//! requests, e-mails, exec hook input, admin responses, `/metrics`) is searched for each raw
//! value and its hex and base64 forms. Fingerprints must be there (the data flowed); raw
//! values never.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::hostile::{poll, start_daemon};
use crate::support::http_get;
use tokenwatch::config::{Config, MapSecrets};
use tokenwatch::enrich::Fingerprinter;

const FP_KEY: &str = "fp-key-for-the-secrets-test-0123456789abcdef";
const ADMIN: &str = "admin-token-for-the-secrets-test-0123456789";
/// A Bearer-style key in the nginx token field.
const S1: &str = "sk-live-9f8e7d6c5b4a39281706f5e4d3c2b1a0ZZqq";
/// A Dify-style app key logged with its `Bearer ` prefix.
const S2: &str = "app-Qw3rTy7uI9oP1aS2dF4gH6jK8lZ0xC";
/// A JSON `api_key` field.
const S3: &str = "k3y_5ecr3t_Mn8Bv6Cx4Za2Lk9Jh7Gf5Ds3";
/// A raw secret sent to the admin API's manual freeze.
const S4: &str = "sk-admin-posted-secret-0a1b2c3d4e5f6a7b8c9d";

/// Every form of a value that would count as a leak.
fn forms(raw: &str) -> Vec<String> {
    let b = raw.as_bytes();
    vec![
        raw.to_string(),
        hex::encode(b),
        hex::encode_upper(b),
        base64(
            b,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        ),
        base64(
            b,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        ),
    ]
}

/// Base64 without padding (a padded encoding contains this as a prefix).
fn base64(b: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | u32::from(c) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    // Only whole 4-char groups: a partial last group depends on what follows.
    out.truncate(out.len() / 4 * 4);
    out
}

/// Records every HTTP request (request line, headers, body) sent to it; answers 200.
fn http_sink() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || serve_http(stream, &s));
        }
    });
    (addr, seen)
}

fn serve_http(stream: TcpStream, seen: &Mutex<Vec<Vec<u8>>>) {
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut raw = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        raw.extend_from_slice(h.as_bytes());
        if h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    raw.extend_from_slice(&body);
    seen.lock().unwrap().push(raw);
    let mut s = stream;
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

/// A plain SMTP sink: keeps every byte the client sent.
fn smtp_sink() -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || serve_smtp(stream, &s));
        }
    });
    (port, seen)
}

fn serve_smtp(stream: TcpStream, seen: &Mutex<Vec<u8>>) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let _ = w.write_all(b"220 sink ESMTP\r\n");
    let mut in_data = false;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        seen.lock().unwrap().extend_from_slice(line.as_bytes());
        if in_data {
            if line == ".\r\n" {
                in_data = false;
                let _ = w.write_all(b"250 queued\r\n");
            }
            continue;
        }
        let cmd = line.to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("DATA") {
            in_data = true;
            b"354 go ahead\r\n"
        } else if cmd.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else if cmd.starts_with("EHLO") {
            b"250-sink\r\n250 8BITMIME\r\n"
        } else {
            b"250 ok\r\n"
        };
        let _ = w.write_all(reply);
    }
}

fn nginx_line(i: usize, token: &str) -> String {
    format!(
        "203.0.113.{} - - [02/Mar/2026:13:55:{:02} +0000] \"GET /v1/apps HTTP/1.1\" 401 64 \"-\" \"curl/8.5\" \"{token}\" \"token_revoked\"\n",
        i % 3 + 1,
        i % 60
    )
}

fn json_line(i: usize) -> String {
    format!(
        "{{\"ts\":\"2026-03-02T13:56:{:02}Z\",\"api_key\":\"{S3}\",\"ip\":\"198.51.100.{}\",\"status\":401,\"reason\":\"revoked\"}}\n",
        i % 60,
        i % 3 + 1
    )
}

fn config(dir: &Path, webhook: &str, smtp: u16) -> String {
    let exec_out = dir.join("exec-hook.out");
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_token = "env:TW_ADMIN"

[state]
dir = "{state}"
checkpoint_interval_ms = 100

[fingerprint]
key = "env:TW_FP"

[[source]]
name = "gw"
path = "{gw}"
format = "nginx"
token_kind = "secret"
start_at = "beginning"

[[source]]
name = "app"
path = "{app}"
format = "json"
token_kind = "secret"
start_at = "beginning"
[source.fields]
token = "api_key"

# The lines come seconds apart: a streak this short is enough here (the default wants 60 s).
[detectors.revoked_reuse]
min_streak_secs = 0

[response]
mode = "enforce"
freeze_detectors = ["revoked_reuse", "brute_force", "token_spray"]
freeze_min_severity = "low"

[[hook]]
name = "web"
type = "webhook"
url = "http://{webhook}/revoke/{{{{token}}}}"
on = ["freeze", "unfreeze", "alert"]
body = '{{"token":"{{{{token}}}}"}}'

[[hook]]
name = "run"
type = "exec"
program = "tee"
args = ["-a", "{exec_out}"]
on = ["freeze", "unfreeze", "alert"]

[[hook]]
name = "mail"
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp}
tls = "none"
from = "tokenwatch <tw@example.com>"
to = ["ops@example.com"]
digest_secs = 1
"#,
        state = dir.join("state").display(),
        gw = dir.join("gw.log").display(),
        app = dir.join("app.log").display(),
        exec_out = exec_out.display(),
    )
}

/// Every file under `dir`, with its bytes.
fn all_files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p.display().to_string(), b));
        }
    }
}

/// An authorised admin API call; returns status line and body as bytes.
fn admin(addr: &str, method: &str, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    resp
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn raw_secrets_appear_in_no_output_at_all() {
    let leaks = scenario(false);
    assert!(leaks.is_empty(), "leaks: {leaks:#?}");
}

/// A raw secret an operator pastes into the admin API's manual freeze
/// (`POST /api/v1/frozen/sk-...`) is fingerprinted at the door: it reaches neither the frozen
/// set, the journal, hook payloads, e-mails nor logs (this once leaked).
#[test]
fn a_raw_secret_posted_to_the_admin_api_appears_nowhere() {
    let leaks = scenario(true);
    assert!(leaks.is_empty(), "leaks: {leaks:#?}");
}

/// Runs the daemon over the secret-bearing logs and returns every leak found.
fn scenario(post_raw_secret: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (web, web_seen) = http_sink();
    let (smtp, smtp_seen) = smtp_sink();
    let cfg = dir.path().join("tw.toml");
    std::fs::write(&cfg, config(dir.path(), &web, smtp)).unwrap();
    let mut gw = String::new();
    for i in 0..12 {
        gw += &nginx_line(i, S1);
        gw += &nginx_line(i, &format!("Bearer {S2}"));
    }
    std::fs::write(dir.path().join("gw.log"), gw).unwrap();
    std::fs::write(
        dir.path().join("app.log"),
        (0..12).map(json_line).collect::<String>(),
    )
    .unwrap();

    let env = [
        ("TW_ADMIN", ADMIN),
        ("TW_FP", FP_KEY),
        ("TOKENWATCH_LOG", "debug"),
    ];
    let d = start_daemon(&cfg, dir.path(), &["--log", "debug"], &env);
    let fp = Fingerprinter::new(FP_KEY.as_bytes());
    let fps: Vec<String> = [S1, S2, S3]
        .iter()
        .map(|s| fp.fingerprint(s.as_bytes()).as_str().to_string())
        .collect();
    // The data flowed: revoked_reuse froze each fingerprint through every hook.
    poll(60, "webhook calls for every fingerprint", || {
        let seen = web_seen.lock().unwrap().concat();
        fps.iter().all(|f| contains(&seen, f)).then_some(())
    });
    poll(60, "an e-mail naming a fingerprint", || {
        let seen = smtp_seen.lock().unwrap().clone();
        fps.iter().any(|f| contains(&seen, f)).then_some(())
    });
    poll(60, "the exec hook's record", || {
        let b = std::fs::read(dir.path().join("exec-hook.out")).ok()?;
        fps.iter().any(|f| contains(&b, f)).then_some(())
    });
    let mut api = Vec::new();
    api.extend(admin(&d.addr, "GET", "/api/v1/frozen"));
    api.extend(admin(&d.addr, "GET", "/api/v1/detections"));
    if post_raw_secret {
        api.extend(admin(&d.addr, "POST", &format!("/api/v1/frozen/{S4}")));
        api.extend(admin(&d.addr, "GET", "/api/v1/frozen"));
        api.extend(admin(&d.addr, "DELETE", &format!("/api/v1/frozen/{S4}")));
    }
    assert!(contains(&api, &fps[0]), "{}", String::from_utf8_lossy(&api));
    let (_, metrics) = http_get(&d.addr, "/metrics").unwrap();

    // Graceful stop: snapshots and checkpoints are written at shutdown.
    let pid = d.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut d = d;
    let status = poll(30, "exit after SIGTERM", || {
        d.child.try_wait().ok().flatten()
    });
    assert!(status.success());

    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    all_files(dir.path(), &mut outputs);
    // The inputs themselves hold the secrets by construction.
    outputs.retain(|(p, _)| {
        !p.ends_with("gw.log") && !p.ends_with("app.log") && !p.ends_with("tw.toml")
    });
    outputs.push(("webhook requests".into(), web_seen.lock().unwrap().concat()));
    outputs.push(("e-mails".into(), smtp_seen.lock().unwrap().clone()));
    outputs.push(("admin API".into(), api));
    outputs.push(("/metrics".into(), metrics.into_bytes()));
    let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
    let stderr = outputs
        .iter()
        .find(|(n, _)| n.ends_with("stderr.log"))
        .map(|(_, b)| b.len())
        .unwrap_or(0);
    assert!(stderr > 0, "debug logging wrote nothing: {names:?}");
    assert!(
        names.iter().any(|n| n.contains("journal"))
            && names.iter().any(|n| n.contains("detections")),
        "expected journal and detections files among {names:?}"
    );
    let mut leaks = Vec::new();
    let mut values: Vec<(&str, &str)> = vec![("S1", S1), ("S2", S2), ("S3", S3), ("S4", S4)];
    values.extend([("fingerprint key", FP_KEY), ("admin token", ADMIN)]);
    for (name, bytes) in &outputs {
        for (what, raw) in &values {
            for f in forms(raw) {
                if contains(bytes, &f) {
                    leaks.push(format!("{what} (as {f}) in {name}"));
                }
            }
        }
    }
    eprintln!(
        "searched {} outputs, {} bytes: {names:?}",
        outputs.len(),
        outputs.iter().map(|(_, b)| b.len()).sum::<usize>()
    );
    leaks
}

#[test]
fn a_short_fingerprint_key_is_refused_at_load_with_its_place() {
    let text = "[state]\ndir = \"/tmp/x\"\n\n[fingerprint]\nkey = \"env:K\"\n";
    let short = MapSecrets::new().with_env("K", "too-short-key");
    let err = Config::from_toml(text, "tw.toml", &short)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tw.toml:5:7: fingerprint.key: secret env:K is 13 bytes; at least 32"),
        "{err}"
    );
    assert!(!err.contains("too-short-key"), "{err}");
    let ok = MapSecrets::new().with_env("K", FP_KEY);
    assert!(Config::from_toml(text, "tw.toml", &ok).is_ok());
}
