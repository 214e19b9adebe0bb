//! `kind = "journald"` (issue 15 item 3): a real journal file written by Debian's
//! `systemd-journal-remote` from the journal export format, read through journalctl with
//! the identifier filter, followed while it grows, and resumed from the saved cursor after
//! a restart without losing or repeating an entry.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{http_get, sample, wait_for, Daemon};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";
const CHECKS: &str = "auth_token_check_total{source=\"journal\"}";
const INVALID: &str = "auth_token_rejected_total{reason=\"invalid\",source=\"journal\"}";

/// One export-format entry: `fields` as text, `binary` as a length-prefixed MESSAGE.
struct Entry {
    usec: u64,
    identifier: &'static str,
    message: Option<Vec<u8>>,
}

/// Appends `entries` to the journal file `out` (journal-remote appends to an existing one).
fn append(out: &Path, entries: &[Entry]) {
    let mut export = Vec::new();
    for e in entries {
        writeln!(export, "__REALTIME_TIMESTAMP={}", e.usec).unwrap();
        writeln!(export, "__MONOTONIC_TIMESTAMP={}", e.usec / 1000).unwrap();
        writeln!(export, "_BOOT_ID=0123456789abcdef0123456789abcdef").unwrap();
        writeln!(export, "SYSLOG_IDENTIFIER={}", e.identifier).unwrap();
        match &e.message {
            // Text with a byte that is not UTF-8: stored and printed as binary.
            Some(m) if std::str::from_utf8(m).is_err() => {
                export.extend_from_slice(b"MESSAGE\n");
                export.extend_from_slice(&(m.len() as u64).to_le_bytes());
                export.extend_from_slice(m);
                export.push(b'\n');
            }
            Some(m) => {
                export.extend_from_slice(b"MESSAGE=");
                export.extend_from_slice(m);
                export.push(b'\n');
            }
            None => {}
        }
        export.push(b'\n');
    }
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg("-o")
        .arg(out)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-journal-remote (Debian package systemd-journal-remote)");
    child.stdin.take().unwrap().write_all(&export).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// nginx lines in the `tokenwatch` format, numbered from `from`, every third one a 401.
fn nginx_entries(from: u64, n: u64) -> Vec<Entry> {
    (from..from + n)
        .map(|i| match i % 3 {
            0 => nginx_entry(i, 401, "invalid"),
            _ => nginx_entry(i, 200, "-"),
        })
        .collect()
}

/// Entry number `i`: an nginx line with `status` and `reason`.
fn nginx_entry(i: u64, status: u16, reason: &str) -> Entry {
    let msg = format!(
        "10.1.2.3 - - [07/Dec/2026:10:{:02}:{:02} +0000] \"GET /v1/x HTTP/1.1\" {status} 5 \"-\" \"curl\" \"ak_{i}\" \"{reason}\"",
        (i / 60) % 60,
        i % 60
    );
    Entry {
        usec: 1_796_637_600_000_000 + i * 1_000_000,
        identifier: "nginx",
        message: Some(msg.into_bytes()),
    }
}

fn rejected_in(from: u64, n: u64) -> u64 {
    (from..from + n).filter(|i| i % 3 == 0).count() as u64
}

fn wait_metric(d: &mut Daemon, series: &str, want: u64) {
    let addr = d.addr.clone();
    wait_for(60, &format!("{series} == {want}"), || {
        d.assert_running();
        let (_, body) = http_get(&addr, "/metrics")?;
        (sample(&body, series).unwrap_or(0.0) == want as f64).then_some(())
    });
}

#[test]
fn journal_file_read_followed_and_resumed_from_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("copy.journal");
    let mut first = nginx_entries(0, 30);
    // Another program's entry (filtered by journalctl), an entry without MESSAGE, and a
    // binary MESSAGE (a byte that is not UTF-8 in the user agent) that still parses.
    first.push(Entry {
        usec: 1_796_637_700_000_000,
        identifier: "sshd",
        message: Some(nginx_entries(0, 1).remove(0).message.unwrap()),
    });
    first.push(Entry {
        usec: 1_796_637_700_000_001,
        identifier: "nginx",
        message: None,
    });
    first.push(Entry {
        usec: 1_796_637_700_000_002,
        identifier: "nginx",
        message: Some(
            b"10.1.2.3 - - [07/Dec/2026:11:00:00 +0000] \"GET / HTTP/1.1\" 401 5 \"-\" \"c\xffurl\" \"ak_bin\" \"invalid\""
                .to_vec(),
        ),
    });
    append(&journal, &first);
    let cfg = dir.path().join("tokenwatch.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[state]
dir = "{state}"

[[source]]
name = "journal"
kind = "journald"
journal_file = "{journal}"
identifiers = ["nginx"]
start_at = "beginning"
token_kind = "id"
"#,
            state = dir.path().join("state").display(),
            journal = journal.display(),
        ),
    )
    .unwrap();

    let mut d = Daemon::start(&cfg, dir.path(), &[]);
    d.wait_ready();
    wait_metric(&mut d, CHECKS, 31);
    wait_metric(&mut d, INVALID, rejected_in(0, 30) + 1);
    // Followed while it grows.
    append(&journal, &nginx_entries(30, 12));
    wait_metric(&mut d, CHECKS, 43);
    assert!(d.terminate().success());
    let cursor = dir.path().join("state/journald-journal.cursor");
    assert!(cursor.exists(), "no cursor file");

    // Written while tokenwatch was down, then a marker once it runs again: the marker is
    // the last entry, so when it is counted everything before it was read, and the exact
    // totals show nothing was read twice and nothing lost.
    append(&journal, &nginx_entries(42, 9));
    let mut d = Daemon::start(&cfg, dir.path(), &[]);
    d.wait_ready();
    append(&journal, &[nginx_entry(51, 401, "revoked")]);
    wait_metric(
        &mut d,
        "auth_token_rejected_total{reason=\"revoked\",source=\"journal\"}",
        1,
    );
    let (_, body) = http_get(&d.addr, "/metrics").unwrap();
    assert_eq!(sample(&body, CHECKS), Some(10.0));
    assert_eq!(sample(&body, INVALID), Some(rejected_in(42, 9) as f64));
    assert_eq!(
        sample(
            &body,
            "tokenwatch_lines_total{result=\"malformed\",source=\"journal\"}"
        ),
        Some(0.0)
    );
    assert!(d.terminate().success());
}

#[test]
fn journalctl_failing_is_logged_and_restarted_until_the_journal_appears() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("later.journal");
    let cfg = dir.path().join("tokenwatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"{}\"\n[[source]]\nname = \"journal\"\n\
             kind = \"journald\"\njournal_file = \"{}\"\nstart_at = \"beginning\"\ntoken_kind = \"id\"\n",
            dir.path().join("state").display(),
            journal.display()
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&cfg, dir.path(), &[]);
    // journalctl exits at once (no such file): its stderr is logged and it is restarted.
    wait_for(30, "journalctl's error logged twice", || {
        d.assert_running();
        let log = d.log();
        (log.matches("journalctl exited; restarting").count() >= 2
            && log.contains("journalctl: Failed to open files"))
        .then_some(())
    });
    append(&journal, &nginx_entries(0, 6));
    wait_metric(&mut d, CHECKS, 6);
    assert!(d.terminate().success());
}
