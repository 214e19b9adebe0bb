//! `/authz` (issue 16) with real parts: the `tokenwatch run` binary tailing a real log, the
//! shipped nginx recipe (`examples/authz/nginx-auth-request.conf`) in Debian's nginx in
//! front of a tiny upstream, the `tokenwatch` admin verbs, the deny file.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{closed_port, sample, wait_for, Daemon};

const NGINX: &str = "/usr/sbin/nginx";
/// A Dify app key: a secret by shape, so tokenwatch only ever sees its fingerprint.
const KEY: &str = "app-Zk3xq9Lm2Vt8Rw4Yp6NbQ1";
const OTHER: &str = "app-Other7Hs2Kd9Lq4Wx8Pm3";
const MANUAL: &str = "app-Manual5Tg8Yh2Uj6Ik0Ol";
const ADMIN: &str = "authz-admin-token";

/// One HTTP/1.0 request: (status, head, body).
fn get(addr: &str, path: &str, headers: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n").ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((status, head.to_ascii_lowercase(), body.to_string()))
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}\r\n")
}

/// Polls until `addr` answers `want` for `path`; returns how long it took.
fn until_status(addr: &str, path: &str, headers: &str, want: u16, secs: u64) -> Duration {
    let t0 = Instant::now();
    wait_for(secs, &format!("{path} -> {want}"), || {
        get(addr, path, headers).filter(|(s, _, _)| *s == want)
    });
    t0.elapsed()
}

/// nginx with the shipped recipe, stopped (SIGTERM) on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// The auth_request recipe with its addresses replaced, and the cache turned on if `cache`.
    fn start(dir: &Path, port: u16, authz: u16, upstream: u16, cache: bool) -> Nginx {
        let sub = dir.join(if cache { "nginx-cache" } else { "nginx" });
        let cache_dir = sub.join("cache").display().to_string();
        let swaps = [
            ("127.0.0.1:9848", format!("127.0.0.1:{authz}")),
            ("/run/nginx-tokenwatch", cache_dir),
        ];
        let uncomment = if cache { "# cache: " } else { "" };
        let conf = Nginx::conf(
            &sub,
            "nginx-auth-request.conf",
            port,
            upstream,
            &swaps,
            uncomment,
        );
        Nginx::run(&conf, sub, upstream)
    }

    /// `examples/authz/<recipe>` in a main config of its own at `sub/nginx.conf`.
    fn conf(
        sub: &Path,
        recipe: &str,
        port: u16,
        upstream: u16,
        swaps: &[(&str, String)],
        uncomment: &str,
    ) -> PathBuf {
        std::fs::create_dir_all(sub).unwrap();
        let recipe_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/authz")
            .join(recipe);
        let mut recipe = std::fs::read_to_string(recipe_path).unwrap();
        let common = [
            ("127.0.0.1:8080", format!("127.0.0.1:{upstream}")),
            ("listen 80;", format!("listen 127.0.0.1:{port};")),
        ];
        for (from, to) in common.iter().chain(swaps) {
            assert!(recipe.contains(from), "the recipe lost {from}");
            recipe = recipe.replace(from, to);
        }
        if !uncomment.is_empty() {
            recipe = recipe.replace(uncomment, "");
        }
        let d = sub.display();
        let conf = format!(
            "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{upstream}; location / {{ return 200 \"upstream ok\\n\"; }} }}\n\
             {recipe}\n}}\n"
        );
        let path = sub.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        path
    }

    /// Checks `conf` (`nginx -t`) and runs it in the foreground.
    fn run(conf: &Path, dir: PathBuf, upstream: u16) -> Nginx {
        let test = Command::new(NGINX)
            .args(["-e", "stderr", "-t", "-c"])
            .arg(conf)
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let child = Command::new(NGINX)
            .args(["-e", "stderr", "-c"])
            .arg(conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let n = Nginx { child, dir };
        let addr = format!("127.0.0.1:{upstream}");
        wait_for(10, "nginx up", || {
            get(&addr, "/", "").filter(|r| r.0 == 200)
        });
        n
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

fn log_line(ip: &str, token: &str) -> String {
    format!(
        "{ip} - - [02/Mar/2026:13:55:01 +0000] \"POST /v1/chat-messages HTTP/1.1\" 200 512 \"-\" \"curl/8.5\" \"Bearer {token}\" \"-\"\n"
    )
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn config(dir: &Path, log: &Path, authz: u16, extra: &str) -> PathBuf {
    let listen = format!("listen = \"127.0.0.1:{authz}\"");
    config_with(dir, log, &listen, extra)
}

fn config_with(dir: &Path, log: &Path, listen: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("tokenwatch.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_token = "env:TW_AUTHZ_ADMIN"

[state]
dir = "{state}"

[[source]]
name = "gw"
path = "{log}"
format = "nginx"
start_at = "beginning"

[detectors.ip_fanout]
min_networks = 3

[response]
mode = "enforce"

[authz]
{listen}
deny_file = "{deny}"
{extra}
"#,
        state = dir.join("state").display(),
        log = log.display(),
        deny = dir.join("frozen.map").display(),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn cli(cfg: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(args)
        .args(["-c", cfg.to_str().unwrap(), "--url", url])
        .env("TW_AUTHZ_ADMIN", ADMIN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir`, read as bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

#[test]
fn nginx_refuses_a_frozen_token_and_unfreeze_lifts_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, "");
    let (authz, port, upstream) = (closed_port(), closed_port(), closed_port());
    let cfg = config(dir.path(), &log, authz, "");
    let mut d = Daemon::start(&cfg, dir.path(), &[("TW_AUTHZ_ADMIN", ADMIN)]);
    d.wait_ready();
    let url = format!("http://{}", d.addr);
    let tw = format!("127.0.0.1:{authz}");
    until_status(&tw, "/authz", &bearer(KEY), 200, 10);
    let nginx = Nginx::start(dir.path(), port, authz, upstream, false);
    let gw = format!("127.0.0.1:{port}");
    let (s, _, body) = get(&gw, "/v1/chat-messages", &bearer(KEY)).unwrap();
    assert_eq!((s, body.as_str()), (200, "upstream ok\n"));

    // The attack: one key from three networks; ip_fanout freezes it (enforce mode).
    for ip in ["198.51.100.7", "203.0.113.9", "192.0.2.33"] {
        append(&log, &log_line(ip, KEY));
    }
    until_status(&gw, "/v1/chat-messages", &bearer(KEY), 403, 20);
    let (_, head, _) = get(&gw, "/v1/chat-messages", &bearer(KEY)).unwrap();
    assert!(head.contains("x-tokenwatch-record: "), "{head}");
    let (s, head, _) = get(&tw, "/authz/any/path?x=1", &bearer(KEY)).unwrap();
    assert_eq!(s, 403);
    assert!(head.contains("x-tokenwatch-detector: ip_fanout"), "{head}");
    let (s, _, body) = get(&gw, "/v1/chat-messages", &bearer(OTHER)).unwrap();
    assert_eq!((s, body.as_str()), (200, "upstream ok\n"));
    // No token: allowed by default.
    assert_eq!(get(&gw, "/", "").map(|r| r.0), Some(200));

    // `tokenwatch frozen` lists the fingerprint and where enforcement stands.
    let table = cli(&cfg, &url, &["frozen"]);
    assert!(
        table.contains(&format!("enforcement: /authz on {tw}, serving 1 entries")),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli(&cfg, &url, &["frozen", "--json"])).unwrap();
    let fp = json["frozen"][0]["token"].as_str().unwrap().to_string();
    assert!(fp.starts_with("fp:"), "{fp}");
    assert_eq!(json["enforcement"]["entries"], 1);
    let map = wait_for(5, "the deny file", || {
        std::fs::read_to_string(dir.path().join("frozen.map"))
            .ok()
            .filter(|m| m.contains(&fp))
    });
    assert!(map.contains(&format!("\"{fp}\" 1;")), "{map}");

    // Unfreeze lifts it at the next request.
    let t0 = Instant::now();
    cli(&cfg, &url, &["unfreeze", &fp]);
    until_status(&gw, "/v1/chat-messages", &bearer(KEY), 200, 5);
    let lifted = t0.elapsed();
    // A manual freeze bites at the next request too (the CLI's own start included).
    let t0 = Instant::now();
    cli(&cfg, &url, &["freeze", MANUAL]);
    until_status(&gw, "/v1/chat-messages", &bearer(MANUAL), 403, 5);
    let frozen = t0.elapsed();
    eprintln!("nginx without cache: unfreeze -> 200 in {lifted:?}, freeze -> 403 in {frozen:?}");
    assert!(lifted < Duration::from_secs(1), "{lifted:?}");
    assert!(frozen < Duration::from_secs(1), "{frozen:?}");

    // With the recipe's cache on, a cached allow holds a freeze back by at most 2 s.
    let cport = closed_port();
    let cached = Nginx::start(dir.path(), cport, authz, closed_port(), true);
    let cgw = format!("127.0.0.1:{cport}");
    assert_eq!(get(&cgw, "/", &bearer(OTHER)).map(|r| r.0), Some(200));
    let t0 = Instant::now();
    cli(&cfg, &url, &["freeze", OTHER]);
    until_status(&cgw, "/", &bearer(OTHER), 403, 5);
    let bite = t0.elapsed();
    eprintln!("nginx with the 1 s allow cache: freeze -> 403 in {bite:?}");
    // nginx's whole-second validity: at most 2 s, plus the CLI's start on a busy machine.
    assert!(bite < Duration::from_secs(3), "{bite:?}");
    drop(cached);

    // The raw keys appear in no log, state file, deny file or answer of tokenwatch.
    let mut seen = vec![(PathBuf::from("daemon.log"), d.log().into_bytes())];
    seen.extend(files_under(&dir.path().join("state")));
    seen.push((dir.path().join("frozen.map"), map.into_bytes()));
    for (path, bytes) in &seen {
        let text = String::from_utf8_lossy(bytes);
        for k in [KEY, OTHER, MANUAL] {
            assert!(!text.contains(k), "{} holds a raw key", path.display());
        }
    }

    // Tokenwatch down: the recipe fails closed (auth_request error -> 500).
    assert_eq!(d.terminate().code(), Some(0));
    let (s, _, _) = get(&gw, "/v1/chat-messages", &bearer(KEY)).unwrap();
    assert_eq!(s, 500, "fail-closed");
    // Back up: the persisted set is loaded before /authz answers, so the first answers
    // through nginx are already right.
    let d = Daemon::start(&cfg, dir.path(), &[("TW_AUTHZ_ADMIN", ADMIN)]);
    let first = wait_for(10, "nginx through the restarted daemon", || {
        get(&gw, "/v1/chat-messages", &bearer(MANUAL)).filter(|r| r.0 != 500)
    });
    assert_eq!(first.0, 403);
    assert_eq!(
        get(&gw, "/v1/chat-messages", &bearer(KEY)).map(|r| r.0),
        Some(200)
    );
    drop(d);
    drop(nginx);
}

#[test]
fn token_from_header_query_cookie_and_hostile_requests() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, "");
    let cases = [
        ("header = \"X-Api-Key\"", "X-Api-Key: {t}\r\n", "/authz"),
        ("query = \"key\"", "", "/authz?a=1&key={t}"),
        (
            "query = \"key\"",
            "X-Forwarded-Uri: /v1/x?key={t}\r\n",
            "/authz",
        ),
        ("cookie = \"tw\"", "Cookie: a=b; tw={t}\r\n", "/authz"),
    ];
    for (i, (line, header, path)) in cases.iter().enumerate() {
        let sub = dir.path().join(format!("c{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let authz = closed_port();
        let cfg = config(&sub, &log, authz, &format!("{line}\non_missing = \"deny\""));
        let mut d = Daemon::start(&cfg, &sub, &[("TW_AUTHZ_ADMIN", ADMIN)]);
        d.wait_ready();
        let url = format!("http://{}", d.addr);
        cli(&cfg, &url, &["freeze", KEY]);
        let tw = format!("127.0.0.1:{authz}");
        let req = |t: &str| get(&tw, &path.replace("{t}", t), &header.replace("{t}", t));
        assert_eq!(req(KEY).map(|r| r.0), Some(403), "{line}");
        assert_eq!(req(OTHER).map(|r| r.0), Some(200), "{line}");
        assert_eq!(get(&tw, "/authz", "").map(|r| r.0), Some(401), "{line}");
        if i == 0 {
            hostile(&tw, &d.addr);
        }
        d.assert_running();
    }
}

/// A 1 MiB header, a malformed bearer, many distinct tokens: answers, never a crash.
fn hostile(tw: &str, admin: &str) {
    let huge = format!("X-Api-Key: {}\r\n", "a".repeat(1 << 20));
    let r = get(tw, "/authz", &huge).map(|r| r.0);
    assert!(matches!(r, None | Some(431) | Some(400)), "{r:?}");
    for bad in ["Bearer", "Bearer \u{1}\u{2}", "\u{ff}\u{fe}", "Basic !!!"] {
        let r = get(tw, "/authz", &format!("X-Api-Key: {bad}\r\n")).map(|r| r.0);
        assert!(
            matches!(r, Some(200) | Some(400) | Some(401)),
            "{bad:?}: {r:?}"
        );
    }
    for i in 0..2_000 {
        let t = format!("app-random{i:08}xyzxyz");
        assert_eq!(
            get(tw, "/authz", &format!("X-Api-Key: {t}\r\n")).map(|r| r.0),
            Some(200)
        );
    }
    wait_for(5, "authz metrics", || {
        let (_, _, m) = get(admin, "/metrics", "")?;
        let allowed = sample(&m, "tokenwatch_authz_requests_total{result=\"allow\"}")?;
        (allowed >= 2_000.0 && sample(&m, "tokenwatch_authz_frozen_entries") == Some(1.0))
            .then_some(())
    });
}

#[test]
fn deny_file_map_recipe_with_nginx_reload() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, "");
    let (port, upstream) = (closed_port(), closed_port());
    let sub = dir.path().join("nginx-map");
    let deny = dir.path().join("frozen.map");
    let conf = Nginx::conf(
        &sub,
        "nginx-deny-map.conf",
        port,
        upstream,
        &[(
            "/etc/nginx/tokenwatch-frozen.map",
            deny.display().to_string(),
        )],
        "",
    );
    // Deny file only, no /authz listener; nginx reloaded without a shell after each write.
    let reload = format!(
        "reload = [\"{NGINX}\", \"-e\", \"stderr\", \"-c\", \"{}\", \"-s\", \"reload\"]",
        conf.display()
    );
    let cfg = config_with(dir.path(), &log, "", &reload);
    let mut d = Daemon::start(&cfg, dir.path(), &[("TW_AUTHZ_ADMIN", ADMIN)]);
    d.wait_ready();
    let url = format!("http://{}", d.addr);
    // Written at start (the empty set), so nginx can include it.
    wait_for(5, "the deny file", || deny.exists().then_some(()));
    let _nginx = Nginx::run(&conf, sub, upstream);
    let gw = format!("127.0.0.1:{port}");
    let id = "X-Key-Id: ak_map_1\r\n";
    assert_eq!(get(&gw, "/", id).map(|r| r.0), Some(200));
    let t0 = Instant::now();
    cli(&cfg, &url, &["freeze", "ak_map_1"]);
    until_status(&gw, "/", id, 403, 5);
    let frozen = t0.elapsed();
    assert_eq!(
        get(&gw, "/", "X-Key-Id: ak_map_2\r\n").map(|r| r.0),
        Some(200)
    );
    let t0 = Instant::now();
    cli(&cfg, &url, &["unfreeze", "ak_map_1"]);
    until_status(&gw, "/", id, 200, 5);
    let lifted = t0.elapsed();
    eprintln!(
        "deny file + nginx reload: freeze -> 403 in {frozen:?}, unfreeze -> 200 in {lifted:?}"
    );
    assert!(frozen < Duration::from_secs(1) && lifted < Duration::from_secs(1));
    // The reload is counted once `nginx -s reload` has returned, which can be after the
    // new workers already answer: wait for the count rather than race it.
    let m = wait_for(5, "two counted reloads", || {
        let (_, _, m) = get(&d.addr, "/metrics", "")?;
        (sample(&m, "tokenwatch_authz_reload_total{result=\"ok\"}") >= Some(2.0)).then_some(m)
    });
    // The write at start, before nginx ran, could not reload it: counted, not fatal.
    assert_eq!(
        sample(&m, "tokenwatch_authz_reload_total{result=\"error\"}"),
        Some(1.0)
    );
}

#[test]
fn dify_example_config_loads() {
    use tokenwatch::config::{Config, MapSecrets};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/authz/dify/tokenwatch.toml");
    let secrets = MapSecrets::new().with_env("TOKENWATCH_ADMIN_TOKEN", "example-admin-token");
    let c = Config::load(&path, &secrets).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.authz.listen.map(|a| a.port()), Some(9848));
    // `check-config --effective` prints [authz] so that it loads back the same.
    let again = Config::from_toml(&c.to_effective_toml(), "effective", &secrets)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, c);
    // Problems serde cannot see are reported with their keys.
    let bad = "[server]\nlisten = \"127.0.0.1:9900\"\n[authz]\nlisten = \"127.0.0.1:9900\"\n\
               query = \"k\"\ncookie = \"c\"\nreload = [\"nginx\"]\non_missing = \"maybe\"\n";
    let errs = Config::from_toml(bad, "bad", &secrets)
        .err()
        .map(|e| e.to_string());
    let errs = errs.unwrap_or_default();
    for key in ["authz.listen", "authz.cookie", "authz.on_missing"] {
        assert!(errs.contains(key), "{key} not reported:\n{errs}");
    }
}
