//! End to end: the real `tokenwatch run` binary tails a real file; we scrape `/metrics` over
//! HTTP, check it with `promtool check metrics`, stop with SIGTERM and restart from the
//! checkpoint.

use super::support::{http_get, sample, wait_for, Daemon};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn write_config(dir: &Path, log: &Path) -> PathBuf {
    let cfg = dir.join("tokenwatch.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[state]
dir = "{state}"

[[source]]
name = "gw"
path = "{log}"
format = "nginx"
start_at = "beginning"
"#,
        state = dir.join("state").display(),
        log = log.display()
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn start(cfg: &Path, dir: &Path) -> Daemon {
    let mut d = Daemon::start(cfg, dir, &[]);
    d.wait_ready();
    d
}

fn line(i: u32, status: u16, reason: &str) -> String {
    format!(
        "203.0.113.{} - - [02/Mar/2026:13:55:{:02} +0000] \"POST /v1/chat/completions HTTP/1.1\" {status} 512 \"-\" \"curl/8.5\" \"ak_3f9c2b11d0a{}\" \"{reason}\"\n",
        i % 250,
        i % 60,
        i % 10
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

fn terminate(d: Daemon) {
    assert_eq!(d.terminate().code(), Some(0), "SIGTERM must exit 0");
}

fn scrape_until(d: &Daemon, series: &str, want: f64) -> String {
    wait_for(20, &format!("{series} == {want}"), || {
        let (_, body) = http_get(&d.addr, "/metrics")?;
        (sample(&body, series) == Some(want)).then_some(body)
    })
}

#[test]
fn run_counts_scrapes_and_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut text = String::new();
    for i in 0..30 {
        text += &line(
            i,
            if i % 3 == 0 { 401 } else { 200 },
            if i % 3 == 0 { "revoked" } else { "-" },
        );
    }
    text += "this is not an access log line\n";
    append(&log, &text);
    let cfg = write_config(dir.path(), &log);

    let d = start(&cfg, dir.path());
    let body = scrape_until(&d, "auth_token_check_total{source=\"gw\"}", 30.0);
    assert_eq!(
        sample(
            &body,
            "auth_token_rejected_total{reason=\"revoked\",source=\"gw\"}"
        ),
        Some(10.0)
    );
    assert_eq!(
        sample(
            &body,
            "tokenwatch_lines_total{result=\"malformed\",source=\"gw\"}"
        ),
        Some(1.0)
    );
    assert!(
        !body.contains("ak_3f9c2b11d0a"),
        "token ids must never be labels"
    );
    promtool_check(&body);

    // Lines appended while running arrive live.
    append(&log, &line(99, 200, "-"));
    scrape_until(&d, "auth_token_check_total{source=\"gw\"}", 31.0);
    terminate(d);

    // Restart: the checkpoint means old lines are not counted again; new ones are.
    append(&log, &line(100, 403, "-"));
    let d = start(&cfg, dir.path());
    let body = scrape_until(&d, "auth_token_check_total{source=\"gw\"}", 1.0);
    assert_eq!(
        sample(
            &body,
            "auth_token_rejected_total{reason=\"forbidden\",source=\"gw\"}"
        ),
        Some(1.0)
    );
    terminate(d);
}

/// `promtool check metrics` on the scrape; required in CI, skipped locally without promtool.
pub(crate) fn promtool_check(body: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(std::env::var_os("CI").is_none(), "CI must have promtool");
        eprintln!("promtool not installed: skipping the metrics lint");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_config_exits_2_listing_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = \"nope\"\n\n[[source]]\nname = \"a\"\nformat = \"ngnix\"\nbogus = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["check-config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "bad.toml:2",
        "server.listen",
        "bad.toml:6",
        "ngnix",
        "bad.toml:7",
        "bogus",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

/// `tokenwatch freeze | frozen | unfreeze` against a running daemon's admin API.
#[test]
fn admin_cli_freezes_lists_and_unfreezes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, &line(1, 200, "-"));
    let cfg = dir.path().join("tokenwatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"env:TW_E2E_ADMIN\"\n\n\
             [state]\ndir = \"{}\"\n\n[response]\nmode = \"enforce\"\n\n\
             [[source]]\nname = \"gw\"\npath = \"{}\"\n",
            dir.path().join("state").display(),
            log.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(&cfg, dir.path(), &[("TW_E2E_ADMIN", "s3cret-admin")]);
    let url = format!("http://{}", d.addr);
    let cli = |args: &[&str], key: &str| {
        Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
            .args(args)
            .args(["-c", cfg.to_str().unwrap(), "--url", &url])
            .env("TW_E2E_ADMIN", key)
            .output()
            .unwrap()
    };
    // A wrong key is refused by the daemon.
    let denied = cli(&["frozen"], "wrong");
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));

    let key = "s3cret-admin";
    let out = cli(
        &[
            "freeze",
            "ak_3f9c2b11d0aa",
            "--reason",
            "leaked in a ticket",
        ],
        key,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("freeze"));
    let list = cli(&["frozen"], key);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("ak_3f9c2b11d0aa") && text.contains("1 frozen"),
        "{text}"
    );
    assert!(cli(&["unfreeze", "ak_3f9c2b11d0aa"], key).status.success());
    let again = cli(&["unfreeze", "ak_3f9c2b11d0aa"], key);
    assert_eq!(again.status.code(), Some(1), "unfreezing twice is an error");
    assert!(String::from_utf8_lossy(&cli(&["frozen"], key).stdout).contains("0 frozen"));
    terminate(d);
}
