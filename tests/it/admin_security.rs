//! Admin API hardening against the real `tokenwatch run` binary: every admin route needs the
//! bearer token, routes are absent without one, bodies are capped (413, the daemon stays up),
//! no debug endpoints, loopback by default, and optional HTTPS with rustls (self-signed
//! certificate made here with rcgen) with bad TLS files a config error at start.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenwatch::config::{Config, ServerConfig};

use crate::support::{http, http_huge, http_raw, run_to_exit, Daemon};

const ADMIN: &str = "s3cret-admin-0123456789abcdef";
const ENV: [(&str, &str); 1] = [("TW_TEST_ADMIN", ADMIN)];

/// Every admin route and method (src/server/admin.rs); `body` is a valid request body.
const ROUTES: [(&str, &str, &str); 5] = [
    ("GET", "/api/v1/detections", ""),
    ("GET", "/api/v1/frozen", ""),
    ("POST", "/api/v1/frozen/ak_table1", "{\"reason\":\"test\"}"),
    ("DELETE", "/api/v1/frozen/ak_table1", ""),
    (
        "POST",
        "/api/v1/alertmanager",
        "{\"version\":\"4\",\"alerts\":[]}",
    ),
];

/// A config with one empty nginx source; `server` is the `[server]` table's body.
fn write_config(dir: &Path, server: &str) -> PathBuf {
    let log = dir.join("access.log");
    std::fs::write(&log, "").unwrap();
    let cfg = dir.join("tokenwatch.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[state]\ndir = \"{}\"\n\n\
         [[source]]\nname = \"gw\"\npath = \"{}\"\nformat = \"nginx\"\n",
        dir.join("state").display(),
        log.display()
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn admin_daemon(dir: &Path) -> Daemon {
    let cfg = write_config(dir, "admin_token = \"env:TW_TEST_ADMIN\"");
    let mut d = Daemon::start(&cfg, dir, &ENV);
    d.wait_ready();
    d
}

#[test]
fn every_admin_route_refuses_missing_or_wrong_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = admin_daemon(dir.path());
    let wrong = [
        String::new(),
        "Authorization: Bearer \r\n".to_string(),
        "Authorization: Bearer nope\r\n".to_string(),
        format!("Authorization: Bearer {}\r\n", &ADMIN[..ADMIN.len() - 1]),
        format!("Authorization: Bearer {ADMIN}x\r\n"),
        format!("Authorization: Bearer  {ADMIN}\r\n"),
        format!("Authorization: Basic {ADMIN}\r\n"),
        format!("Authorization: {ADMIN}\r\n"),
        format!("X-Authorization: Bearer {ADMIN}\r\n"),
    ];
    let mut checked = 0;
    for (method, path, body) in ROUTES {
        for h in &wrong {
            let (status, text) = http_raw(&d.addr, method, path, h, body.as_bytes())
                .unwrap_or_else(|| panic!("no answer to {method} {path}"));
            assert_eq!(status, 401, "{method} {path} with {h:?}: {text}");
            assert!(!text.contains(ADMIN), "the token is never echoed");
            checked += 1;
        }
        let (status, text) = http(&d.addr, method, path, Some(ADMIN), body.as_bytes()).unwrap();
        assert!(
            matches!(status, 200 | 404),
            "{method} {path} with the right token: {status} {text}"
        );
    }
    assert_eq!(checked, ROUTES.len() * wrong.len());
    // The unauthorized freeze above did nothing: the authorized one froze, then unfroze.
    let (_, frozen) = http(&d.addr, "GET", "/api/v1/frozen", Some(ADMIN), b"").unwrap();
    let frozen: serde_json::Value = serde_json::from_str(&frozen).unwrap();
    assert_eq!(frozen["frozen"], serde_json::json!([]), "{frozen}");
    d.assert_running();
    assert!(!d.log().contains(ADMIN), "the token never reaches the log");
}

#[test]
fn without_an_admin_token_the_admin_routes_do_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let mut d = Daemon::start(&cfg, dir.path(), &ENV);
    d.wait_ready();
    for (method, path, body) in ROUTES {
        for bearer in [None, Some(ADMIN), Some("")] {
            let (status, _) = http(&d.addr, method, path, bearer, body.as_bytes()).unwrap();
            assert_eq!(status, 404, "{method} {path} with {bearer:?}");
        }
    }
    assert!(d.log().contains("admin API off"), "{}", d.log());
}

#[test]
fn bodies_over_the_limit_get_413_and_the_daemon_stays_up() {
    const TEN_MB: usize = 10 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let mut d = admin_daemon(dir.path());
    for path in ["/api/v1/frozen/ak_big", "/api/v1/alertmanager"] {
        let (status, _) = http_huge(&d.addr, path, Some(ADMIN), TEN_MB).expect("an answer");
        assert_eq!(status, 413, "10 MB to {path}");
        // Authentication comes first: an anonymous 10 MB body is refused unread.
        let (status, _) = http_huge(&d.addr, path, None, TEN_MB).expect("an answer");
        assert_eq!(status, 401, "anonymous 10 MB to {path}");
    }
    // The limits: 64 KiB for admin bodies, 1 MiB for Alertmanager (its groups can be large).
    let (status, _) = http_huge(&d.addr, "/api/v1/frozen/ak_big", Some(ADMIN), 65 * 1024).unwrap();
    assert_eq!(status, 413, "65 KiB freeze reason");
    let mut alerts = String::from("{\"version\":\"4\",\"alerts\":[");
    while alerts.len() < 200 * 1024 {
        alerts.push_str("{\"status\":\"resolved\",\"labels\":{\"alertname\":\"X\"}},");
    }
    alerts.push_str("{\"status\":\"resolved\"}]}");
    let (status, text) = http(
        &d.addr,
        "POST",
        "/api/v1/alertmanager",
        Some(ADMIN),
        alerts.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "a 200 KiB alert group is accepted: {text}");
    let (status, _) = http_huge(
        &d.addr,
        "/api/v1/alertmanager",
        Some(ADMIN),
        1024 * 1024 + 1,
    )
    .expect("an answer");
    assert_eq!(status, 413, "1 MiB + 1 byte");
    d.assert_running();
    assert_eq!(
        http(&d.addr, "GET", "/healthz", None, b"").map(|r| r.0),
        Some(200)
    );
    let (status, _) = http(
        &d.addr,
        "POST",
        "/api/v1/frozen/ak_after",
        Some(ADMIN),
        b"{}",
    )
    .unwrap();
    assert_eq!(status, 200, "still serving admin requests");
}

#[test]
fn there_are_no_debug_or_unknown_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let d = admin_daemon(dir.path());
    let paths = [
        "/",
        "/debug",
        "/debug/pprof/",
        "/debug/pprof/heap",
        "/debug/vars",
        "/admin",
        "/api",
        "/api/v1",
        "/api/v1/config",
        "/api/v1/debug",
        "/api/v1/state",
        "/actuator",
        "/actuator/env",
        "/server-status",
        "/.env",
        "/config",
        "/metrics/../api/v1/frozen",
        "/metrics/",
    ];
    for path in paths {
        for bearer in [None, Some(ADMIN)] {
            let (status, _) = http(&d.addr, "GET", path, bearer, b"").unwrap();
            assert_eq!(status, 404, "GET {path} with {bearer:?}");
        }
    }
}

#[test]
fn the_server_listens_on_loopback_by_default() {
    let want = "127.0.0.1:9847".parse().unwrap();
    assert_eq!(ServerConfig::default().listen, want);
    assert_eq!(Config::embedded_default().server.listen, want);
    assert_eq!(ServerConfig::default().tls_cert, None, "TLS is opt-in");
}

// ---------------------------------------------------------------- TLS

/// A self-signed certificate for localhost and 127.0.0.1: (cert PEM, key PEM).
fn self_signed() -> (String, String) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

fn tls_config(dir: &Path, cert: &str, key: &str, admin: bool) -> PathBuf {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    let admin = if admin {
        "admin_token = \"env:TW_TEST_ADMIN\"\n"
    } else {
        ""
    };
    let server = format!(
        "{admin}tls_cert = \"{}\"\ntls_key = \"{}\"",
        c.display(),
        k.display()
    );
    write_config(dir, &server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_metrics_and_admin_and_refuses_plain_http() {
    tokenwatch::respond::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed();
    let cfg = tls_config(dir.path(), &cert, &key, true);
    let d = Daemon::start(&cfg, dir.path(), &ENV);
    let port = d.addr.rsplit(':').next().unwrap().to_string();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // A client that connects and never says a word must not hold up the others.
    let _silent = TcpStream::connect(&d.addr).unwrap();

    let base = format!("https://localhost:{port}");
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "no https /readyz 200:\n{}", d.log());
    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let body = r.text().await.unwrap();
    assert!(body.contains("# TYPE"), "{body}");
    let r = client
        .get(format!("https://127.0.0.1:{port}/api/v1/frozen"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "IP SAN and admin API over TLS");
    let r = client
        .get(format!("{base}/api/v1/frozen"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Plain HTTP to the TLS port gets no HTTP answer at all.
    let addr = d.addr.clone();
    let plain = tokio::task::spawn_blocking(move || http(&addr, "GET", "/metrics", None, b""))
        .await
        .unwrap();
    assert_eq!(plain, None, "plain http must not be served");
    // A client that does not trust the certificate is refused by its own verification.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap();
    assert!(untrusting
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err());
    // Still serving after the bad clients.
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let status = tokio::task::spawn_blocking(move || d.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0 with TLS on");
}

#[test]
fn bad_tls_files_are_a_config_error_naming_key_file_and_reason() {
    let (cert, key) = self_signed();
    let (_, other_key) = self_signed();
    let key_body = key.lines().nth(1).unwrap().to_string();
    let cases: [(&str, &str, &str, &[&str]); 6] = [
        (
            "garbage",
            "not a pem",
            &key,
            &["server.tls_cert", "cert.pem", "no \"BEGIN CERTIFICATE\""],
        ),
        (
            "cert-is-key",
            &key,
            &key,
            &["server.tls_cert", "cert.pem", "no \"BEGIN CERTIFICATE\""],
        ),
        (
            "no-key",
            &cert,
            &cert,
            &["server.tls_key", "key.pem", "no \"BEGIN PRIVATE KEY\""],
        ),
        (
            "truncated",
            &cert[..cert.len() / 2],
            &key,
            &["server.tls_cert", "cert.pem", "bad PEM"],
        ),
        (
            "mismatch",
            &cert,
            &other_key,
            &["server.tls_cert", "server.tls_key", "key.pem"],
        ),
        (
            "missing",
            "",
            "",
            &["server.tls_cert", "cert.pem", "No such file"],
        ),
    ];
    for (name, c, k, wants) in cases {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tls_config(dir.path(), c, k, false);
        if name == "missing" {
            std::fs::remove_file(dir.path().join("cert.pem")).unwrap();
        }
        let (code, out) = run_to_exit(&cfg, &[]);
        assert_eq!(code, Some(2), "{name}: {out}");
        for w in wants {
            assert!(out.contains(w), "{name}: wanted {w:?} in:\n{out}");
        }
        assert!(!out.contains(&key_body), "{name}: key material printed");
        // check-config refuses the same files, with the same words.
        let checked = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
            .args(["check-config", "-q"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&checked.stderr);
        assert_eq!(
            checked.status.code(),
            Some(2),
            "{name}: check-config: {err}"
        );
        for w in wants {
            assert!(
                err.contains(w),
                "{name}: check-config: wanted {w:?} in:\n{err}"
            );
        }
        assert!(!err.contains(&key_body), "{name}: key material printed");
    }
    // Half a pair.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "tls_cert = \"/etc/x.pem\"");
    let (code, out) = run_to_exit(&cfg, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("server.tls_key is required when server.tls_cert is set"),
        "{out}"
    );
}
