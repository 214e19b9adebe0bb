//! `exec`: runs a program without a shell, the hook's JSON body on stdin.
//!
//! Exit code 0 is success; any other exit, a timeout (the child is killed) or a failure to
//! start is retried. The environment also carries `TOKENWATCH_EVENT`, `TOKENWATCH_TOKEN`,
//! `TOKENWATCH_USER`, `TOKENWATCH_ID` and `TOKENWATCH_IDEMPOTENCY_KEY`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{payload, CallFuture, CallResult, Hook};
use crate::config::template::Escape;
use crate::config::HookConfig;
use crate::respond::journal::Job;
use crate::respond::RespondError;

/// A configured program.
pub struct Exec {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
}

impl Exec {
    /// From the hook's config.
    pub fn new(cfg: &HookConfig) -> Result<Exec, RespondError> {
        let program = cfg.program.clone().ok_or_else(|| RespondError::Hook {
            hook: cfg.name.clone(),
            reason: "no program".into(),
        })?;
        Ok(Exec {
            program,
            args: cfg.args.clone(),
            timeout: cfg.timeout(),
        })
    }

    async fn run(&self, job: &Job) -> CallResult {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| payload::render(a, Escape::Raw, job))
            .collect();
        let mut cmd = Command::new(&self.program);
        cmd.args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("TOKENWATCH_EVENT", job.event.as_str())
            .env("TOKENWATCH_TOKEN", payload::value(job, "token"))
            .env("TOKENWATCH_USER", payload::value(job, "user"))
            .env("TOKENWATCH_ID", &job.detection.id)
            .env("TOKENWATCH_IDEMPOTENCY_KEY", job.idempotency_key());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return CallResult::Retry(
                    format!("cannot start {}: {e}", self.program.display()),
                    None,
                )
            }
        };
        let body = payload::json(job);
        if let Some(mut stdin) = child.stdin.take() {
            // A program that does not read stdin is fine: ignore a broken pipe.
            let _ = stdin.write_all(&body).await;
        }
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => {
                CallResult::Retry(format!("timed out after {:?} (killed)", self.timeout), None)
            }
            Ok(Err(e)) => CallResult::Retry(format!("waiting for the program: {e}"), None),
            Ok(Ok(out)) if out.status.success() => CallResult::Ok,
            Ok(Ok(out)) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let last = err
                    .lines()
                    .last()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect::<String>();
                CallResult::Retry(format!("{}: {last}", out.status), None)
            }
        }
    }
}

impl Hook for Exec {
    fn call<'a>(&'a self, jobs: &'a [Job]) -> CallFuture<'a> {
        Box::pin(async move {
            for job in jobs {
                let r = self.run(job).await;
                if r != CallResult::Ok {
                    return r;
                }
            }
            CallResult::Ok
        })
    }
}
