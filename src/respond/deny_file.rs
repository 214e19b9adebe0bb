//! `[authz] deny_file`: the frozen set as an nginx `map` include, for gateways that cannot
//! make a subrequest per request.
//!
//! ```nginx
//! map $http_x_key_id $tokenwatch_frozen {
//!     default 0;
//!     include /etc/nginx/tokenwatch-frozen.map;   # "ak_3f9c2b11" 1;  "fp:9f2c4e1a0b3d5c7e" 1;
//! }
//! ```
//!
//! Rewritten whole and atomically ([`crate::durable::write_atomic`]: temp file, fsync,
//! rename) after every change of the view, never before the set is loaded (an empty file
//! at start would lift every freeze until the load). Only ids and fingerprints are ever
//! written, as the frozen set holds nothing else; a key with a character nginx would read
//! differently is left out and logged (a safe id never has one). Then the optional reload
//! command runs, without a shell, killed after its timeout; its failures are logged and
//! counted and the next change tries again.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use prometheus::IntCounterVec;

use super::view::FrozenView;
use crate::event::EventTime;

/// What the writer needs.
pub struct DenyFile {
    /// The include file.
    pub path: PathBuf,
    /// Program and arguments run after each write (empty: none).
    pub reload: Vec<String>,
    /// How long the reload may take.
    pub reload_timeout: Duration,
    /// `tokenwatch_authz_deny_file_writes_total{result}`.
    pub writes: IntCounterVec,
    /// `tokenwatch_authz_reload_total{result}`.
    pub reloads: IntCounterVec,
}

impl DenyFile {
    /// Writes the file after every change of `view` until the task is dropped.
    pub async fn run(self, view: FrozenView) {
        let mut changes = view.subscribe();
        while changes.changed().await.is_ok() {
            if !view.is_loaded() {
                continue;
            }
            let body = render(&view);
            let path = self.path.clone();
            let r = tokio::task::spawn_blocking(move || crate::durable::write_atomic(&path, &body))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match r {
                Ok(()) => self.writes.with_label_values(&["ok"]).inc(),
                Err(e) => {
                    self.writes.with_label_values(&["error"]).inc();
                    tracing::error!(%e, path = %self.path.display(), "writing the deny file");
                    continue;
                }
            }
            if !self.reload.is_empty() {
                self.run_reload().await;
            }
        }
    }

    async fn run_reload(&self) {
        let Some((prog, args)) = self.reload.split_first() else {
            return;
        };
        let child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let result = match child {
            Err(e) => {
                tracing::error!(%e, program = %prog, "starting the deny-file reload command");
                "error"
            }
            Ok(mut c) => match tokio::time::timeout(self.reload_timeout, c.wait()).await {
                Ok(Ok(s)) if s.success() => "ok",
                Ok(Ok(s)) => {
                    tracing::error!(status = %s, program = %prog, "the deny-file reload command failed");
                    "error"
                }
                Ok(Err(e)) => {
                    tracing::error!(%e, program = %prog, "waiting for the deny-file reload command");
                    "error"
                }
                Err(_) => {
                    let _ = c.kill().await;
                    tracing::error!(program = %prog, timeout = ?self.reload_timeout, "the deny-file reload command timed out (killed)");
                    "timeout"
                }
            },
        };
        self.reloads.with_label_values(&[result]).inc();
    }
}

/// The include's text: one `"key" 1;` line per frozen token in force, sorted.
pub fn render(view: &FrozenView) -> Vec<u8> {
    let now = EventTime::now().as_millis();
    let entries = view.entries();
    let mut out = String::with_capacity(64 + entries.len() * 28);
    out.push_str(
        "# tokenwatch frozen tokens (ids and fp: fingerprints); rewritten on every change\n",
    );
    for (k, d) in &entries {
        if !d.active(now) {
            continue;
        }
        if !k.bytes().all(safe) || k.is_empty() {
            tracing::warn!(
                len = k.len(),
                "a frozen id with characters unsafe in an nginx map is left out of the deny file"
            );
            continue;
        }
        // A leading `~` would make the key a regex, and these names are map keywords.
        let esc = k.starts_with('~')
            || matches!(k.as_str(), "default" | "hostnames" | "include" | "volatile");
        let _ = writeln!(out, "\"{}{k}\" 1;", if esc { "\\" } else { "" });
    }
    out.into_bytes()
}

fn safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._:~@+/=-".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::Deny;

    #[test]
    fn renders_safe_keys_only_and_skips_expired() {
        let v = FrozenView::new();
        let d = |until| Deny {
            detector: "d".into(),
            id: "i".into(),
            since_ms: 0,
            until_ms: until,
        };
        v.upsert("fp:0011", d(None));
        v.upsert("ak_1", d(None));
        v.upsert("default", d(None));
        v.upsert("bad\"; x", d(None));
        v.upsert("gone", d(Some(1)));
        let text = String::from_utf8(render(&v)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(lines, ["\"ak_1\" 1;", "\"\\default\" 1;", "\"fp:0011\" 1;"]);
    }
}
