//! Hostile input: every preset fed lines built to break parsers (10 MB, NULs, invalid UTF-8,
//! CRLF, ANSI escapes, deep JSON, 10,000 keys, out-of-range numbers, years 9999 and 1970,
//! IPv6 zone ids, IPv4-mapped IPv6), through the library parser line by line and through a
//! real `tokenwatch replay` (and one live `tokenwatch run`) with a deadline. Every line must
//! be accounted for, the good lines around the hostile ones must still parse, nothing stalls.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tokenwatch::config::{Config, MapSecrets};
use tokenwatch::parse::{build, Parsed};

/// What a hostile line must turn into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A token check (optionally with this client address).
    Event(Option<&'static str>),
    /// Well-formed, not a token check.
    Skip,
    /// Counted as malformed with this reason label.
    Bad(&'static str),
}

/// One hostile line and its expected fate.
struct Case {
    name: &'static str,
    line: Vec<u8>,
    want: Want,
}

/// A preset's line template: `{IP}`, `{TS}`, `{TOK}` and `{X}` (free text) are replaced.
struct Preset {
    name: &'static str,
    template: &'static str,
    ts: &'static str,
    ts_9999: &'static str,
    ts_1970: &'static str,
    /// Extra `[[source]]` keys (the regex preset's pattern).
    extra: &'static str,
}

const TEN_MB: usize = 10 * 1024 * 1024;

fn fill(p: &Preset, ip: &str, ts: &str, tok: &str, x: &[u8]) -> Vec<u8> {
    let s = p
        .template
        .replace("{IP}", ip)
        .replace("{TS}", ts)
        .replace("{TOK}", tok);
    let (a, b) = s.split_once("{X}").expect("template has {X}");
    [a.as_bytes(), x, b.as_bytes()].concat()
}

fn good(p: &Preset, i: usize) -> Vec<u8> {
    fill(
        p,
        &format!("203.0.113.{}", i % 250 + 1),
        p.ts,
        &format!("ak_good{i:04}"),
        b"curl",
    )
}

/// The cases every preset shares; `json_like` presets see raw control bytes as bad JSON.
fn common_cases(p: &Preset, json_like: bool) -> Vec<Case> {
    let ev = Want::Event(None);
    // JSON forbids raw control bytes in strings; other formats carry them as text.
    let text_bad = if json_like { Want::Bad("json") } else { ev };
    // Invalid UTF-8 in a field no parser reads must not hide the event (an attacker could
    // otherwise make their own failed logins invisible); a user regex is Unicode-only.
    let utf8_want = if p.name == "regex" {
        Want::Bad("no_match")
    } else {
        ev
    };
    let tok = "ak_hostile0001";
    let ip = "198.51.100.7";
    let mut crlf = fill(p, ip, p.ts, tok, b"curl");
    crlf.push(b'\r');
    vec![
        Case {
            name: "10 MB field",
            line: fill(p, ip, p.ts, tok, &vec![b'A'; TEN_MB]),
            want: ev,
        },
        Case {
            name: "NUL bytes",
            line: fill(p, ip, p.ts, tok, b"cu\0rl\0"),
            want: text_bad,
        },
        Case {
            name: "invalid UTF-8",
            line: fill(p, ip, p.ts, tok, b"cu\xff\xferl\xc3"),
            want: utf8_want,
        },
        Case {
            name: "CRLF",
            line: crlf,
            want: ev,
        },
        Case {
            name: "ANSI escapes",
            line: fill(p, ip, p.ts, tok, b"\x1b[31mred\x1b[0m\x1b]0;title\x07"),
            want: text_bad,
        },
        Case {
            name: "year 9999",
            line: fill(p, ip, p.ts_9999, tok, b"curl"),
            want: ev,
        },
        Case {
            name: "year 1970",
            line: fill(p, ip, p.ts_1970, tok, b"curl"),
            want: ev,
        },
        Case {
            name: "IPv6 zone id",
            line: fill(p, "fe80::1%eth0", p.ts, tok, b"curl"),
            want: Want::Event(Some("fe80::1")),
        },
        Case {
            name: "IPv4-mapped IPv6",
            line: fill(p, "::ffff:1.2.3.4", p.ts, tok, b"curl"),
            want: Want::Event(Some("1.2.3.4")),
        },
        Case {
            name: "binary garbage",
            line: b"\0\xff\x1b[2J\0\x01\x02 [] {} \"\"".to_vec(),
            want: Want::Bad(match p.name {
                "json" | "vault" => "json",
                // Keycloak lines start with their timestamp.
                "keycloak" => "timestamp",
                _ => "no_match",
            }),
        },
    ]
}

/// JSON presets: deep nesting and many keys, spliced in before the closing brace.
fn json_cases(p: &Preset, top_reason: &'static str) -> Vec<Case> {
    let base = String::from_utf8(good(p, 7)).unwrap();
    let body = base.strip_suffix('}').unwrap();
    let deep_arr = format!(
        "{body},\"deep\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_obj = format!(
        "{body},\"deep\":{}1{}}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let keys: String = (0..10_000).map(|i| format!(",\"k{i}\":{i}")).collect();
    vec![
        Case {
            name: "depth 10,000 array under an unused key",
            line: deep_arr.into_bytes(),
            want: Want::Event(None),
        },
        Case {
            name: "depth 10,000 object under an unused key",
            line: deep_obj.into_bytes(),
            want: Want::Event(None),
        },
        Case {
            name: "depth 10,000 at the top",
            line: ("[".repeat(10_000) + &"]".repeat(10_000)).into_bytes(),
            want: Want::Bad(top_reason),
        },
        Case {
            name: "10,000 keys",
            line: format!("{body}{keys}}}").into_bytes(),
            want: Want::Event(None),
        },
        Case {
            name: "number 1e400 in an unused key",
            line: format!("{body},\"n\":1e400}}").into_bytes(),
            want: Want::Event(None),
        },
        Case {
            name: "number 2^70 in an unused key",
            line: format!("{body},\"n\":1180591620717411303424}}").into_bytes(),
            want: Want::Event(None),
        },
    ]
}

const NGINX: Preset = Preset {
    name: "nginx",
    template: r#"{IP} - - [{TS}] "GET /v1/apps HTTP/1.1" 401 64 "-" "{X}" "{TOK}" "-""#,
    ts: "02/Mar/2026:13:55:36 +0000",
    ts_9999: "31/Dec/9999:23:59:59 +0000",
    ts_1970: "01/Jan/1970:00:00:00 +0000",
    extra: "",
};

const JSON: Preset = Preset {
    name: "json",
    template: r#"{"ts":"{TS}","token_id":"{TOK}","ip":"{IP}","status":401,"ua":"{X}"}"#,
    ts: "2026-03-02T13:55:36Z",
    ts_9999: "9999-12-31T23:59:59.999Z",
    ts_1970: "1970-01-01T00:00:00Z",
    extra: "",
};

const VAULT: Preset = Preset {
    name: "vault",
    template: r#"{"time":"{TS}","type":"response","auth":{"client_token":"hmac-sha256:c{TOK}","accessor":"hmac-sha256:a{TOK}"},"request":{"id":"r1","operation":"read","path":"secret/{X}","remote_address":"{IP}"},"error":"1 error occurred:\n\t* permission denied\n\n"}"#,
    ts: "2026-03-02T13:55:36.120486Z",
    ts_9999: "9999-12-31T23:59:59Z",
    ts_1970: "1970-01-01T00:00:00Z",
    extra: "",
};

const KEYCLOAK: Preset = Preset {
    name: "keycloak",
    template: "{TS} WARN  [org.keycloak.events] (executor-thread-1) type=LOGIN_ERROR, realmId=master, clientId={X}, userId=null, ipAddress={IP}, error=invalid_user_credentials, username={TOK}",
    ts: "2024-01-10 21:01:45,403",
    ts_9999: "9999-12-31 23:59:59,999",
    ts_1970: "1970-01-01 00:00:00,000",
    extra: "",
};

const OAUTH2: Preset = Preset {
    name: "oauth2-proxy",
    template: "{IP} - 8b5f1cbe - {TOK} [{TS}] [AuthFailure] Invalid authentication via OAuth2: {X}",
    ts: "2026/03/02 13:55:37",
    ts_9999: "9999/12/31 23:59:59",
    ts_1970: "1970/01/01 00:00:00",
    extra: "",
};

const REGEX: Preset = Preset {
    name: "regex",
    template: "{TS} key={TOK} src={IP} result=failure ua={X}",
    ts: "2026-03-02T13:55:36Z",
    ts_9999: "9999-12-31T23:59:59Z",
    ts_1970: "1970-01-01T00:00:00Z",
    extra: "pattern = '^(?P<ts>\\S+) key=(?P<token>\\S+) src=(?P<ip>\\S+) result=(?P<outcome>\\w+) ua=\\S+$'\ntime_format = \"auto\"\n",
};

/// The config for one preset reading `log`.
fn config_text(p: &Preset, log: &Path, state: &Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[state]\ndir = \"{}\"\n\n[[source]]\nname = \"h\"\npath = \"{}\"\nformat = \"{}\"\nstart_at = \"beginning\"\n{}",
        state.display(),
        log.display(),
        p.name,
        p.extra
    )
}

/// Runs a command to completion within `secs`, killing it (and failing) on a stall.
pub(crate) fn run_with_deadline(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokenwatch");
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_child(&mut child, secs);
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

fn wait_child(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tokenwatch did not finish within {secs} s (stall)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Per-line check through the library with the same config the binary reads.
fn check_lines(cfg: &Config, cases: &[Case]) {
    let mut parser = build(&cfg.sources[0].parser_spec()).unwrap();
    for c in cases {
        let got = parser.parse(&c.line);
        match (c.want, &got) {
            (Want::Event(ip), Ok(Parsed::Event(r))) => {
                if let Some(ip) = ip {
                    assert_eq!(r.ip, Some(ip.parse::<IpAddr>().unwrap()), "{}", c.name);
                }
            }
            (Want::Skip, Ok(Parsed::Skip)) => {}
            (Want::Bad(reason), Err(e)) => assert_eq!(e.reason(), reason, "{}", c.name),
            _ => panic!("{}: wanted {:?}, got {got:?}", c.name, c.want),
        }
    }
}

/// Writes good lines interleaved with the cases (good, case, good, case, ..., good).
fn write_log(p: &Preset, cases: &[Case], path: &Path) -> usize {
    let mut f = Vec::new();
    let mut goods = 0;
    for (i, c) in cases.iter().enumerate() {
        f.extend_from_slice(&good(p, i));
        f.push(b'\n');
        goods += 1;
        f.extend_from_slice(&c.line);
        f.push(b'\n');
    }
    // Blank lines (LF and CRLF) are skipped by the pipeline before any parser.
    f.extend_from_slice(b"\n\r\n");
    f.extend_from_slice(&good(p, cases.len()));
    f.push(b'\n');
    std::fs::write(path, f).unwrap();
    goods + 1
}

/// Blank lines `write_log` adds (counted as skipped).
const BLANKS: u64 = 2;

/// Expected (events, skipped, malformed by reason) for `goods` good lines plus `cases`.
fn expected(goods: usize, cases: &[Case]) -> (u64, u64, BTreeMap<String, u64>) {
    let mut events = goods as u64;
    let mut skipped = BLANKS;
    let mut bad = BTreeMap::new();
    for c in cases {
        match c.want {
            Want::Event(_) => events += 1,
            Want::Skip => skipped += 1,
            Want::Bad(r) => *bad.entry(r.to_string()).or_insert(0) += 1,
        }
    }
    (events, skipped, bad)
}

fn replay_preset(p: &Preset, cases: Vec<Case>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hostile.log");
    let cfg_path = dir.path().join("tw.toml");
    let text = config_text(p, &log, &dir.path().join("state"));
    std::fs::write(&cfg_path, &text).unwrap();
    let cfg = Config::from_toml(&text, "tw.toml", &MapSecrets::new()).unwrap();
    check_lines(&cfg, &cases);

    let goods = write_log(p, &cases, &log);
    let started = Instant::now();
    let out = run_with_deadline(
        Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
            .args(["replay", "--json", "-c"])
            .arg(&cfg_path)
            .arg(&log),
        120,
    );
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}: replay failed: {}",
        p.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| v[k].as_u64().unwrap();
    let (events, skipped, bad) = expected(goods, &cases);
    let by_reason: BTreeMap<String, u64> = v["malformed_by_reason"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect();
    assert_eq!(
        n("lines"),
        (goods + cases.len()) as u64 + BLANKS,
        "{}: {v}",
        p.name
    );
    assert_eq!(
        n("lines"),
        n("events") + n("skipped") + n("malformed"),
        "{}: every line accounted for: {v}",
        p.name
    );
    assert_eq!(n("events"), events, "{}: {v}", p.name);
    assert_eq!(n("skipped"), skipped, "{}: {v}", p.name);
    assert_eq!(by_reason, bad, "{}: malformed by reason: {v}", p.name);
    eprintln!("{}: {} lines in {took:?}: {v}", p.name, n("lines"));
}

#[test]
fn nginx_hostile_lines_are_counted_never_fatal() {
    let mut cases = common_cases(&NGINX, false);
    cases.push(Case {
        name: "status 2^66",
        line: NGINX
            .template
            .replace(" 401 ", " 73786976294838206464 ")
            .replace("{IP}", "10.0.0.1")
            .replace("{TS}", NGINX.ts)
            .replace("{TOK}", "ak_1")
            .replace("{X}", "x")
            .into_bytes(),
        want: Want::Bad("status"),
    });
    replay_preset(&NGINX, cases);
}

#[test]
fn json_hostile_lines_are_counted_never_fatal() {
    let mut cases = common_cases(&JSON, true);
    cases.extend(json_cases(&JSON, "json"));
    let body = String::from_utf8(good(&JSON, 3)).unwrap();
    for (name, ts, want) in [
        ("epoch -1", "-1", Want::Bad("timestamp")),
        (
            "epoch 2^70",
            "1180591620717411303424",
            Want::Bad("timestamp"),
        ),
        ("epoch 1e300", "1e300", Want::Bad("timestamp")),
        ("epoch ms year 9999", "253402300799999", Want::Event(None)),
        (
            "year 10000",
            "\"10000-01-01T00:00:00Z\"",
            Want::Bad("timestamp"),
        ),
    ] {
        let line = body.replace("\"2026-03-02T13:55:36Z\"", ts);
        cases.push(Case {
            name,
            line: line.into_bytes(),
            want,
        });
    }
    for (name, st) in [
        ("status 2^70", "1180591620717411303424"),
        ("status -1", "-1"),
    ] {
        cases.push(Case {
            name,
            line: body.replace("401", st).into_bytes(),
            want: Want::Bad("status"),
        });
    }
    replay_preset(&JSON, cases);
}

#[test]
fn vault_hostile_lines_are_counted_never_fatal() {
    let mut cases = common_cases(&VAULT, true);
    cases.extend(json_cases(&VAULT, "no_match"));
    let request = String::from_utf8(good(&VAULT, 9))
        .unwrap()
        .replace("\"response\"", "\"request\"");
    cases.push(Case {
        name: "request entry with a 10 MB path",
        line: request
            .replace("secret/curl", &"A".repeat(TEN_MB))
            .into_bytes(),
        want: Want::Skip,
    });
    replay_preset(&VAULT, cases);
}

#[test]
fn keycloak_hostile_lines_are_counted_never_fatal() {
    let mut cases = common_cases(&KEYCLOAK, false);
    cases.push(Case {
        name: "month 13",
        line: fill(&KEYCLOAK, "10.0.0.1", "2024-13-10 21:01:45,403", "u", b"x"),
        want: Want::Bad("timestamp"),
    });
    replay_preset(&KEYCLOAK, cases);
}

#[test]
fn oauth2_proxy_hostile_lines_are_counted_never_fatal() {
    let mut cases = common_cases(&OAUTH2, false);
    cases.push(Case {
        name: "year 99999",
        line: fill(&OAUTH2, "10.0.0.1", "99999/12/31 23:59:59", "u", b"x"),
        want: Want::Bad("timestamp"),
    });
    replay_preset(&OAUTH2, cases);
}

#[test]
fn regex_hostile_lines_are_counted_never_fatal() {
    let mut cases = common_cases(&REGEX, false);
    cases.push(Case {
        name: "epoch -5",
        line: fill(&REGEX, "10.0.0.1", "-5", "ak_1", b"x"),
        want: Want::Bad("timestamp"),
    });
    replay_preset(&REGEX, cases);
}

/// A running `tokenwatch run`, killed on drop so a failing test never leaks a process.
pub(crate) struct Daemon {
    /// The child process.
    pub child: Child,
    /// `host:port` of its HTTP server.
    pub addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, or panics after `secs` naming `what`.
pub(crate) fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Starts `tokenwatch run -c cfg` (extra args appended), waits for its address and `/readyz`.
pub(crate) fn start_daemon(
    cfg: &Path,
    dir: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Daemon {
    let addr_file = dir.join("addr");
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["run", "-c"])
        .arg(cfg)
        .arg("--addr-file")
        .arg(&addr_file)
        .args(extra)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("spawn tokenwatch run");
    let mut d = Daemon {
        child,
        addr: String::new(),
    };
    d.addr = poll(60, "listen address", || {
        std::fs::read_to_string(&addr_file)
            .ok()
            .filter(|s| !s.is_empty())
    });
    poll(60, "/readyz 200", || {
        crate::support::http_get(&d.addr, "/readyz").filter(|(s, _)| *s == 200)
    });
    d
}

/// Sum of every sample of `name` whose labels contain `labels`.
pub(crate) fn sum_series(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn live_tailer_counts_hostile_lines_and_drops_the_oversized_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = dir.path().join("tw.toml");
    std::fs::write(&cfg, config_text(&NGINX, &log, &dir.path().join("state"))).unwrap();
    let cases = common_cases(&NGINX, false);
    let goods = write_log(&NGINX, &cases, &log) as u64;
    let total = goods + cases.len() as u64 + BLANKS;
    let d = start_daemon(&cfg, dir.path(), &[], &[]);
    // The 10 MB line is over max_line_bytes (100 KiB): the tailer drops it whole and counts
    // it; every other line goes through the parser.
    let body = poll(60, "every line counted", || {
        let (_, body) = crate::support::http_get(&d.addr, "/metrics")?;
        let seen = sum_series(&body, "tokenwatch_lines_total", "source=\"h\"")
            + sum_series(&body, "tokenwatch_lines_too_long_total", "source=\"h\"");
        (seen >= total as f64).then_some(body)
    });
    let too_long = sum_series(&body, "tokenwatch_lines_too_long_total", "source=\"h\"");
    let parsed = sum_series(&body, "tokenwatch_lines_total", "result=\"parsed\"");
    let malformed = sum_series(&body, "tokenwatch_lines_total", "result=\"malformed\"");
    let skipped = sum_series(&body, "tokenwatch_lines_total", "result=\"skipped\"");
    assert_eq!(too_long, 1.0, "{body}");
    assert_eq!(
        parsed + malformed + skipped + too_long,
        total as f64,
        "{body}"
    );
    // Every case but the garbage line and the dropped one is a token check, plus the good lines.
    assert_eq!(parsed, (goods + cases.len() as u64 - 2) as f64, "{body}");
    assert_eq!(malformed, 1.0, "{body}");
    // Still alive and serving after all of it.
    assert!(crate::support::http_get(&d.addr, "/healthz").is_some_and(|(s, _)| s == 200));
}

/// A small xorshift generator: deterministic random tokens and addresses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Writes `lines` nginx lines with random tokens from `ips` random addresses (10% 401), an
/// event-time second apart every 100 lines; a brute force from 192.0.2.66 (40 rejections in
/// 40 s) sits in the middle of the first half.
fn exhaustion_log(path: &Path, lines: usize, ips: u64, from: usize) -> usize {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ from as u64);
    let base = 1_772_400_000i64;
    let attack_at = lines / 4;
    let mut n = 0;
    for i in from..from + lines {
        let t = base + (i / 100) as i64;
        let stamp = tokenwatch::event::EventTime::from_secs(t).to_string();
        // The attacker's 40 rejections are interleaved with the flood (one every 50 lines,
        // so 40 in 20 s of event time), not a quiet block of their own.
        let k = (i - from).wrapping_sub(attack_at);
        if from == 0 && k < 40 * 50 && k.is_multiple_of(50) {
            writeln!(f, "{{\"ts\":\"{stamp}\",\"token_id\":\"ak_attack{k:05}\",\"ip\":\"192.0.2.66\",\"status\":401}}").unwrap();
            n += 1;
        }
        let ip = rng.next() % ips;
        let status = if rng.next().is_multiple_of(10) {
            401
        } else {
            200
        };
        writeln!(
            f,
            "{{\"ts\":\"{stamp}\",\"token_id\":\"ak_{:012x}\",\"ip\":\"10.{}.{}.{}\",\"status\":{status}}}",
            rng.next() & 0xffff_ffff_ffff,
            (ip >> 16) & 255,
            (ip >> 8) & 255,
            ip & 255
        )
        .unwrap();
        n += 1;
    }
    n
}

fn series(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        .collect()
}

fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap()
}

/// State exhaustion: many random tokens from many random IPs through a real `tokenwatch run`
/// with a small `max_state_bytes`. Peak RSS stays under the cap plus a fixed overhead, the
/// brute force injected in the middle is still detected, and the `/metrics` series set does
/// not grow with input. Default 200,000 lines from 20,000 IPs; the full size (10 M tokens
/// from 1 M IPs, ~1.7 GB of log in a temp dir) is `TW_EXHAUST_LINES=10000000 cargo test
/// --test it exhaustion -- --nocapture`.
#[test]
fn state_exhaustion_keeps_rss_capped_detections_firing_and_series_constant() {
    // The production default (300 s): with the default size no snapshot runs mid-flood.
    exhaustion(300);
}

/// Snapshots every 5 s during the flood: a snapshot streams the state to disk (no copy of it
/// in memory), so RSS stays under the same cap (2 M lines: 58 MiB; before streaming, 125-149
/// MiB for a 32 MiB budget).
#[test]
fn state_exhaustion_with_snapshots_during_the_flood() {
    exhaustion(5);
}

/// The exhaustion scenario with state snapshots every `snap` seconds.
fn exhaustion(snap: u64) {
    let lines: usize = std::env::var("TW_EXHAUST_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let ips = (lines as u64 / 10).max(1);
    let cap: u64 = 32 * 1024 * 1024;
    // Binary, runtime, HTTP server, metrics registry, read buffers: what the process needs
    // with no detector state at all (24 MiB measured with 1,000 lines, debug build), plus
    // 16 MiB of allocator slack.
    let overhead: u64 = 40 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let cfg = dir.path().join("tw.toml");
    let text = format!(
        "{}\n[detectors]\nmax_state_bytes = {cap}\nsnapshot_interval_secs = {snap}\n",
        config_text(&JSON, &log, &dir.path().join("state"))
    );
    std::fs::write(&cfg, text).unwrap();
    let half = lines / 2;
    let first = exhaustion_log(&log, half, ips, 0);
    let started = Instant::now();
    let d = start_daemon(&cfg, dir.path(), &[], &[]);
    let wait_lines = |n: usize| {
        poll(3600, "lines counted", || {
            let (_, body) = crate::support::http_get(&d.addr, "/metrics")?;
            (sum_series(&body, "tokenwatch_lines_total", "source=\"h\"") >= n as f64)
                .then_some(body)
        })
    };
    let mid = wait_lines(first);
    let more = dir.path().join("more.log");
    let second = exhaustion_log(&more, lines - half, ips, half);
    // Append the second half to the live file.
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&std::fs::read(&more).unwrap()).unwrap();
    }
    let end = wait_lines(first + second);
    let secs = started.elapsed().as_secs_f64();
    let rss = peak_rss_bytes(d.child.id());
    let detections = poll(30, "brute_force on the injected attacker", || {
        let text = std::fs::read_to_string(dir.path().join("state/detections.jsonl")).ok()?;
        text.lines()
            .any(|l| l.contains("\"brute_force\"") && l.contains("192.0.2.66"))
            .then_some(text)
    });
    let (s_mid, s_end) = (series(&mid), series(&end));
    eprintln!(
        "exhaustion: {} lines, {ips} IPs, {secs:.1} s, peak RSS {:.1} MiB (cap {} MiB + {} MiB overhead), \
         series {} -> {}, {} detection records",
        first + second,
        rss as f64 / 1048576.0,
        cap >> 20,
        overhead >> 20,
        s_mid.len(),
        s_end.len(),
        detections.lines().count()
    );
    assert!(
        rss < cap + overhead,
        "peak RSS {rss} over {cap} + {overhead}"
    );
    assert_eq!(s_mid, s_end, "the series set grew with input");
    // No input value is a label.
    assert!(
        !end.contains("10.0.") && !end.contains("ak_"),
        "input in labels"
    );
    let tracked = sum_series(&end, "tokenwatch_tracked_entities", "");
    assert!(tracked > 0.0, "tracked entities exported");
}
