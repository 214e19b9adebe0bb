//! Helpers for `prometheus.rs`: finding the Prometheus tools, child processes killed on drop,
//! a tiny HTTP client and webhook receiver, and reading PromQL out of rules and dashboards.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The repository root (where `rules/`, `dashboards/` and the Dockerfile live).
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Reads a repository file.
pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// The first of `names` found on PATH. Missing: `None` with a message locally, a failure
/// under `CI` (`.ci/run` installs Debian's `prometheus` and `prometheus-alertmanager`).
pub fn require_tool(names: &[&str]) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have {names:?} installed (.ci/run installs them)"
        );
        eprintln!("{names:?} not installed: skipping this test");
    }
    found
}

/// Runs a tool and asserts it succeeded; returns its stdout and stderr.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Polls `f` until it returns `Some`, or panics after `secs` with `what` and `context()`.
pub fn wait_for<T>(
    secs: u64,
    what: &str,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port that was free a moment ago (the child binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A child process, killed and reaped on drop; its output goes to a log file.
pub struct Proc {
    /// What it is, for messages.
    pub name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("{name} log: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("{name} log: {e}"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            name,
            child,
            log: log.to_path_buf(),
        }
    }

    /// The last lines of its output (for failure messages).
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(15);
        format!(
            "--- {} (last lines)\n{}",
            self.name,
            lines[from..].join("\n")
        )
    }

    /// Panics with its output if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status})\n{}", self.name, self.tail());
        }
    }

    /// Kills it now and waits (the drop does the same).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub use crate::support::http_get;

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Receives webhook POSTs (Alertmanager's notifications) on 127.0.0.1 and hands each body
/// to a channel. Stopped and joined on drop.
pub struct Webhook {
    /// `127.0.0.1:port`.
    pub addr: String,
    /// One message per request body.
    pub bodies: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    /// Binds a free port and starts accepting.
    pub fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("webhook addr").to_string();
        let (tx, bodies) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(body) = serve_one(stream) {
                            let _ = tx.send(body);
                        }
                    }
                    // Nothing pending: check the stop flag again shortly.
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Webhook {
            addr,
            bodies,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (headers, then `Content-Length` bytes), answers 200, returns the body.
fn serve_one(mut s: TcpStream) -> Option<String> {
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(String::from_utf8_lossy(buf.get(head_end..)?).into_owned())
}

/// The `expr` of every rule in a rules file, in order, with the rule's name
/// (`record:`/`alert:` value). The files keep every `expr` on one line or in a `|` block.
pub fn rule_exprs(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut name = String::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start().trim_start_matches("- ");
        if let Some(n) = t
            .strip_prefix("record:")
            .or_else(|| t.strip_prefix("alert:"))
        {
            name = n.trim().to_string();
        }
        let Some(rest) = t.strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        let expr = if rest.starts_with('|') || rest.starts_with('>') {
            let indent = indent_of(line);
            lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent_of(l) > indent)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            rest.trim_matches(|c| c == '"' || c == '\'').to_string()
        };
        out.push((name.clone(), expr.trim().to_string()));
    }
    out
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Names after `record:` in a rules file.
pub fn recorded_names(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| {
            l.trim_start()
                .trim_start_matches("- ")
                .strip_prefix("record:")
        })
        .map(|n| n.trim().to_string())
        .collect()
}

/// Grafana variables and their stand-ins for checking: a rate interval and "all sources".
const GRAFANA_VARS: [(&str, &str); 5] = [
    ("$__rate_interval", "5m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("${source}", ".*"),
    ("$source", ".*"),
];

/// Every PromQL query of a dashboard, with the panel (or variable) it belongs to: targets'
/// `expr` with Grafana variables substituted, and `label_values(METRIC, label)` variables as
/// the selector `METRIC`.
pub fn dashboard_exprs(dash: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    collect_targets(dash, "", &mut out);
    let vars = dash["templating"]["list"].as_array().cloned();
    for v in vars.unwrap_or_default() {
        let def = v["definition"].as_str().unwrap_or_default();
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .and_then(|d| d.rsplit_once(','))
            .map(|(metric, _label)| metric.trim().to_string());
        let name = format!("variable {}", v["name"]);
        out.push((name, inner.unwrap_or_else(|| def.to_string())));
    }
    out
}

fn collect_targets(v: &serde_json::Value, title: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            let title = m.get("title").and_then(|t| t.as_str()).unwrap_or(title);
            if let Some(expr) = m.get("expr").and_then(|e| e.as_str()) {
                let mut e = expr.to_string();
                for (var, value) in GRAFANA_VARS {
                    e = e.replace(var, value);
                }
                out.push((title.to_string(), e));
            }
            for child in m.values() {
                collect_targets(child, title, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| collect_targets(c, title, out)),
        _ => {}
    }
}

/// Words that are PromQL syntax, never metric names: aggregations, operators, modifiers.
const KEYWORDS: [&str; 26] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Keywords followed by a parenthesised label list, not an expression.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects: identifiers outside strings, `{…}` label
/// matchers and `[…]` ranges that are neither keywords, function calls, nor label lists.
pub fn metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        i = match c {
            b'"' | b'\'' | b'`' => skip_string(b, i),
            b'{' => skip_to(b, i, b'}'),
            b'[' => skip_to(b, i, b']'),
            b'#' => b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |n| i + n),
            c if c.is_ascii_digit() || c == b'.' => {
                skip_while(b, i, |c| c.is_ascii_alphanumeric() || c == b'.')
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let end = skip_while(b, i, |c| {
                    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
                });
                let word = &expr[i..end];
                let lower = word.to_ascii_lowercase();
                let next = skip_while(b, end, |c| c.is_ascii_whitespace());
                let call = b.get(next) == Some(&b'(');
                if LABEL_LISTS.contains(&lower.as_str()) && call {
                    skip_to(b, next, b')')
                } else {
                    if !call && !KEYWORDS.contains(&lower.as_str()) {
                        out.push(word.to_string());
                    }
                    end
                }
            }
            _ => i + 1,
        };
    }
    out
}

fn skip_while(b: &[u8], mut i: usize, f: impl Fn(u8) -> bool) -> usize {
    while b.get(i).is_some_and(|&c| f(c)) {
        i += 1;
    }
    i
}

/// Index after the closing quote of the string starting at `i` (backslash escapes honoured).
fn skip_string(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while let Some(&c) = b.get(j) {
        if c == b'\\' && quote != b'`' {
            j += 2;
            continue;
        }
        if c == quote {
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

/// Index after the `close` that ends the bracket opened at `i`, skipping strings.
fn skip_to(b: &[u8], i: usize, close: u8) -> usize {
    let mut j = i + 1;
    while let Some(&c) = b.get(j) {
        if matches!(c, b'"' | b'\'' | b'`') {
            j = skip_string(b, j);
            continue;
        }
        if c == close {
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

/// Sample names in a text exposition (`name{…} value` and `name value` lines).
pub fn exposed_names(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// A minimal HTTP/1.0 request with an optional bearer token and JSON body; (status, body).
pub fn http_send(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.get(9..12)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}
