//! Helpers shared by integration modules: a scripted HTTP receiver and an SMTP sink (both
//! real servers on 127.0.0.1), the `tokenwatch run` binary as a child process, and raw HTTP.

#![allow(dead_code)] // each test module uses a different subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- receivers

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Req {
    /// The request target.
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Req {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// A tiny HTTP/1.1 server: records each request, then answers `script(n, req)` =
/// (status, delay before answering), one thread per connection.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    reqs: Arc<Mutex<Vec<Req>>>,
}

/// What a receiver answers to the n-th request: (status, delay before answering).
pub type Script = dyn Fn(usize, &Req) -> (u16, Duration) + Send + Sync;

impl Receiver {
    /// Starts on a free port.
    pub fn start(
        script: impl Fn(usize, &Req) -> (u16, Duration) + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    /// Starts on `listener` (e.g. a port that was down a moment ago).
    pub fn start_on(
        listener: TcpListener,
        script: impl Fn(usize, &Req) -> (u16, Duration) + Send + Sync + 'static,
    ) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let r = reqs.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (reqs, script) = (r.clone(), script.clone());
                std::thread::spawn(move || serve_http(stream, &reqs, &*script));
            }
        });
        Receiver { addr, reqs }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }
}

fn serve_http(stream: TcpStream, reqs: &Mutex<Vec<Req>>, script: &Script) {
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    let req = Req {
        path,
        headers,
        body,
    };
    let n = {
        let mut g = reqs.lock().unwrap();
        g.push(req.clone());
        g.len() - 1
    };
    let (status, delay) = script(n, &req);
    std::thread::sleep(delay);
    let mut s = stream;
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// A tiny SMTP server (no TLS): collects each message's DATA.
pub fn smtp_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    smtp_server_on(TcpListener::bind("127.0.0.1:0").unwrap())
}

/// Like [`smtp_server`], on `listener`.
pub fn smtp_server_on(listener: TcpListener) -> (u16, Arc<Mutex<Vec<String>>>) {
    let port = listener.local_addr().unwrap().port();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let m = mails.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let m = m.clone();
            std::thread::spawn(move || serve_smtp(stream, &m));
        }
    });
    (port, mails)
}

fn serve_smtp(stream: TcpStream, mails: &Mutex<Vec<String>>) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let _ = w.write_all(b"220 test ESMTP\r\n");
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("DATA") {
            let _ = w.write_all(b"354 go ahead\r\n");
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap_or(0) == 0 || l == ".\r\n" {
                    break;
                }
                data.push_str(&l);
            }
            mails.lock().unwrap().push(data);
            b"250 queued\r\n"
        } else if cmd.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else if cmd.starts_with("EHLO") {
            b"250-test\r\n250 8BITMIME\r\n"
        } else {
            b"250 ok\r\n"
        };
        let _ = w.write_all(reply);
    }
}

/// A port that is free now and refuses connections until someone binds it again.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Binds `port` again, retrying briefly (the kernel may hold it for a moment).
pub fn rebind(port: u16) -> TcpListener {
    wait_for(10, &format!("rebinding port {port}"), || {
        TcpListener::bind(("127.0.0.1", port)).ok()
    })
}

// ---------------------------------------------------------------- scraping

/// A minimal HTTP/1.0 GET returning (status, body). HTTP/1.0 keeps servers from chunking.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.get(9..12)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The value of one sample line, e.g. `auth_token_check_total{source="gw"}`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

// ---------------------------------------------------------------- polling

/// Polls `f` every 20 ms until it returns `Some`; panics with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- the daemon

/// `tokenwatch run` as a child process with its output in a file; killed on drop.
pub struct Daemon {
    child: Child,
    log: PathBuf,
    /// The bound address (`IP:PORT`).
    pub addr: String,
}

impl Daemon {
    /// Spawns `tokenwatch run -c cfg` with `env` and waits until it has bound its port.
    pub fn start(cfg: &Path, dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let addr_file = dir.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = dir.join("daemon.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
            .args(["run", "-c"])
            .arg(cfg)
            .arg("--addr-file")
            .arg(&addr_file)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn tokenwatch run");
        let mut d = Daemon {
            child,
            log,
            addr: String::new(),
        };
        d.addr = wait_for(30, "the listen address", || {
            d.assert_running();
            std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|s| !s.is_empty())
        });
        d
    }

    /// Waits until plain-HTTP `/readyz` answers 200.
    pub fn wait_ready(&mut self) {
        let addr = self.addr.clone();
        wait_for(30, "/readyz 200", || {
            self.assert_running();
            http(&addr, "GET", "/readyz", None, b"").filter(|(s, _)| *s == 200)
        });
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with its log if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("tokenwatch exited early ({status}):\n{}", self.log());
        }
    }

    /// Sends `signal` (e.g. "HUP") to it.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{signal} {pid}");
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal("TERM");
        wait_for(30, "exit after SIGTERM", || {
            self.child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tokenwatch run -c cfg` expecting it to exit by itself: (exit code, output).
pub fn run_to_exit(cfg: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["run", "-c"])
        .arg(cfg)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("spawn tokenwatch run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

// ---------------------------------------------------------------- raw HTTP

/// One HTTP/1.0 request with an optional bearer token: (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Option<(u16, String)> {
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    http_raw(addr, method, path, &auth, body)
}

/// One HTTP/1.0 request with `headers` (each ending in CRLF) written as given.
pub fn http_raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    read_response(s)
}

fn read_response(mut s: TcpStream) -> Option<(u16, String)> {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let resp = String::from_utf8_lossy(&raw);
    let status = resp.get(9..12)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Announces a `len`-byte body and streams it from another thread while this one reads the
/// answer, so a server that answers early (413) is seen even if it stops reading.
pub fn http_huge(
    addr: &str,
    path: &str,
    bearer: Option<&str>,
    len: usize,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n"
    )
    .ok()?;
    let mut w = s.try_clone().ok()?;
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < len {
            let n = chunk.len().min(len - sent);
            if w.write_all(&chunk[..n]).is_err() {
                break; // the server answered and closed: expected
            }
            sent += n;
        }
        sent
    });
    let answer = read_response(s);
    let _ = writer.join();
    answer
}

/// The pipeline stage that reads `src` (its parser and token kind), reporting into `metrics`.
pub fn source_stage(
    src: &tokenwatch::config::SourceConfig,
    metrics: &tokenwatch::metrics::Metrics,
) -> tokenwatch::pipeline::SourceStage {
    tokenwatch::pipeline::SourceStage {
        name: src.name.clone(),
        parser: tokenwatch::parse::build(&src.parser_spec()).expect("parser"),
        token_kind: src.token_kind(),
        metrics: metrics.source(&src.name),
    }
}
