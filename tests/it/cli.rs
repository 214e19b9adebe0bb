//! The verbs as a user runs them: `replay`, `parse`, `fingerprint`, exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn tokenwatch(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenwatch"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tokenwatch");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

const LINES: &str = concat!(
    "203.0.113.9 - - [02/Mar/2026:13:55:36 +0000] \"POST /v1/chat HTTP/1.1\" 200 512 \"-\" \"curl/8\" \"ak_3f9c2b11d0aa\" \"-\"\n",
    "203.0.113.9 - - [02/Mar/2026:13:55:37 +0000] \"POST /v1/chat HTTP/1.1\" 401 12 \"-\" \"curl/8\" \"ak_3f9c2b11d0aa\" \"expired\"\n",
    "2001:db8::7 - - [02/Mar/2026:13:55:38 +0000] \"GET /v1/models HTTP/1.1\" 429 0 \"-\" \"curl/8\" \"ak_000000000001\" \"-\"\n",
    "garbage that is not a log line\n",
    "203.0.113.9 - - [02/Mar/2026:13:55:39 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"curl/8\"\n",
);

/// A config whose state dir is a temp dir, so no verb touches /var/lib.
fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("tw.toml");
    std::fs::write(
        &p,
        format!(
            "[state]\ndir = \"{}\"\n{extra}\n[[source]]\nname = \"gw\"\npath = \"/var/log/nginx/access.log\"\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn replay_summarises_a_file_and_stdin_alike() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let log = dir.path().join("access.log");
    std::fs::write(&log, LINES).unwrap();
    let cfg = cfg.to_str().unwrap();
    let from_file = tokenwatch(
        &["replay", "-c", cfg, "--json", log.to_str().unwrap()],
        None,
        &[],
    );
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&from_file.stdout).unwrap();
    assert_eq!(v["lines"], 5);
    assert_eq!(
        v["events"], 4,
        "a combined-only line still parses, without token"
    );
    assert_eq!(v["rejected"], 1, "429 is not an auth rejection");
    assert_eq!(v["malformed"], 1);
    let from_stdin = tokenwatch(&["replay", "-c", cfg, "--json", "-"], Some(LINES), &[]);
    let w: serde_json::Value = serde_json::from_slice(&from_stdin.stdout).unwrap();
    assert_eq!(v["events"], w["events"]);
    assert_eq!(v["malformed_by_reason"], w["malformed_by_reason"]);
}

#[test]
fn replay_writes_metrics_without_token_labels() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let out = tokenwatch(
        &[
            "replay",
            "-c",
            cfg.to_str().unwrap(),
            "--metrics-out",
            "-",
            "-",
        ],
        Some(LINES),
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("auth_token_rejected_total{reason=\"expired\",source=\"gw\"} 1"),
        "{text}"
    );
    assert!(!text.contains("ak_3f9c2b11d0aa"));
}

#[test]
fn parse_shows_failures_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let out = tokenwatch(
        &[
            "parse",
            "-c",
            cfg.to_str().unwrap(),
            "--format",
            "nginx",
            "-v",
            "-",
        ],
        Some(LINES),
        &[],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Parsed (token checks): 4"), "{text}");
    assert!(text.contains("Malformed: 1"), "{text}");
    assert!(text.contains("line 4:"), "{text}");
    assert!(text.contains("token=ak_3f9c2b11d0aa"), "{text}");
}

#[test]
fn unknown_format_is_a_usage_error() {
    let out = tokenwatch(&["replay", "--format", "ngnix", "-"], Some(""), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown format"));
}

#[test]
fn fingerprint_is_keyed_stable_and_hides_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[fingerprint]\nkey = \"env:TW_TEST_KEY\"\n");
    let cfg = cfg.to_str().unwrap();
    let run = |key: &str| {
        let out = tokenwatch(
            &["fingerprint", "-c", cfg],
            Some("sk-live-abcdefghijklmnopqrstuvwxyz\n"),
            &[("TW_TEST_KEY", key)],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let a = run("one-0123456789abcdef0123456789abcdef");
    assert_eq!(a, run("one-0123456789abcdef0123456789abcdef"));
    assert_ne!(a, run("two-0123456789abcdef0123456789abcdef"));
    assert!(a.starts_with("fp:") && a.trim().len() == 19, "{a}");
    // A token in a replayed line gets the same fingerprint as the verb prints.
    let line = "203.0.113.9 - - [02/Mar/2026:13:55:36 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"c\" \"Bearer sk-live-abcdefghijklmnopqrstuvwxyz\" \"-\"\n";
    let out = tokenwatch(
        &["parse", "-c", cfg, "-v", "-"],
        Some(line),
        &[("TW_TEST_KEY", "one-0123456789abcdef0123456789abcdef")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(a.trim()), "{text}");
    assert!(!text.contains("sk-live"), "{text}");
}
