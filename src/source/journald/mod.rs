//! The journald source: follows the systemd journal through `journalctl`.
//!
//! `journalctl --follow --output=json --after-cursor=C [--unit U]… [--identifier I]…` is
//! spawned without a shell (the way CrowdSec's journalctl datasource does it), killed on
//! drop, restarted with backoff when it exits; its stderr is logged. Each entry's `MESSAGE`
//! (a string, or bytes for binary messages) is one line for the preset, with
//! `__REALTIME_TIMESTAMP` as the event time when the line has none.
//!
//! Why journalctl and not a crate: the journal file format is read by libsystemd only
//! (the `systemd` crate binds it through FFI and needs libsystemd-dev at build time, which
//! the static-binary promise rules out); journalctl ships on every host that has a
//! journal, always matches its format version, and reads `--directory`/`--file` copies.
//!
//! Resume: the cursor of the last entry *acked by the pipeline* (through the same
//! [`Ack`] as file offsets) is written atomically with [`crate::durable`] to
//! `journald-<source>.cursor` in the state directory every second and at stop; a restart
//! passes it to `--after-cursor`, so nothing acked is read twice and nothing unacked lost.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::durable::{read_state, write_state, Loaded};
use crate::event::{EventTime, SourceIdx};
use crate::source::file::StartAt;
use crate::source::syslog::queue::{Stream, BATCH_BYTES, BATCH_MESSAGES};
use crate::source::{Ack, LineBatch};

pub mod entry;

/// The state-file kind of a cursor file.
const CURSOR_KIND: &str = "journald-cursor";
/// How often the acked cursor is written (when it moved).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Backoff between journalctl restarts: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// How often blocked waits look at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// One journald source's runtime settings.
#[derive(Debug, Clone)]
pub struct JournaldConfig {
    /// The source index batches are tagged with.
    pub source: SourceIdx,
    /// The source name (cursor file, logs).
    pub name: String,
    /// `--unit` filters (any of them).
    pub units: Vec<String>,
    /// `--identifier` filters (any of them).
    pub identifiers: Vec<String>,
    /// `--directory`.
    pub directory: Option<PathBuf>,
    /// `--file`.
    pub file: Option<PathBuf>,
    /// Without a saved cursor: only new entries (`End`) or the whole journal.
    pub start_at: StartAt,
    /// Longer messages are dropped and counted.
    pub max_message_bytes: usize,
    /// Where the cursor is kept.
    pub state_dir: PathBuf,
    /// The program to run (default `journalctl`, found in `PATH`).
    pub journalctl: PathBuf,
}

impl JournaldConfig {
    /// The cursor file of this source.
    pub fn cursor_path(&self) -> PathBuf {
        self.state_dir
            .join(format!("journald-{}.cursor", self.name))
    }

    /// journalctl's arguments, resuming after `cursor` when there is one.
    pub fn args(&self, cursor: Option<&str>) -> Vec<String> {
        let mut a = vec![
            "--follow".to_string(),
            "--output=json".into(),
            "--output-fields=MESSAGE".into(),
            "--all".into(),
            "--no-pager".into(),
            "--quiet".into(),
        ];
        match (cursor, self.start_at) {
            (Some(c), _) => a.push(format!("--after-cursor={c}")),
            (None, StartAt::End) => a.push("--lines=0".into()),
            (None, StartAt::Beginning) => a.push("--no-tail".into()),
        }
        if let Some(d) = &self.directory {
            a.push(format!("--directory={}", d.display()));
        }
        if let Some(f) = &self.file {
            a.push(format!("--file={}", f.display()));
        }
        a.extend(self.units.iter().map(|u| format!("--unit={u}")));
        a.extend(self.identifiers.iter().map(|i| format!("--identifier={i}")));
        a
    }
}

/// The counters a journald source bumps.
#[derive(Clone)]
pub struct Counters {
    /// Lines that are not journal entries, or messages of a strange shape.
    pub malformed: IntCounter,
    /// Messages over the size cap.
    pub too_long: IntCounter,
    /// Entries without a `MESSAGE` (`tokenwatch_lines_total{result="skipped"}`).
    pub skipped: IntCounter,
}

/// Acked progress: batch end positions and the cursor each batch ends at.
#[derive(Default)]
struct Progress {
    /// The highest acked batch end (published by [`Ack`]).
    committed: Arc<AtomicU64>,
    /// Cursors of sent, not yet checkpointed batches, by batch end (bounded by the
    /// pipeline's channel: only sent batches are here).
    pending: Mutex<VecDeque<(u64, String)>>,
    /// The cursor in the file.
    written: Mutex<Option<String>>,
}

impl Progress {
    /// The cursor of the last acked batch, dropping older entries.
    fn acked_cursor(&self) -> Option<String> {
        let upto = self.committed.load(Ordering::Acquire);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        while pending.front().is_some_and(|(seq, _)| *seq <= upto) {
            last = pending.pop_front().map(|(_, c)| c);
        }
        last
    }
}

/// Starts journald sources.
#[derive(Debug)]
pub struct Journald;

/// A running journald source.
pub struct JournaldHandle {
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    progress: Arc<Progress>,
    path: PathBuf,
    follow: tokio::task::JoinHandle<()>,
    checkpoint: tokio::task::JoinHandle<()>,
}

/// Reads the saved cursor (`None`: none yet, or a damaged file, which is set aside).
pub fn load_cursor(path: &Path) -> Option<String> {
    match read_state(path, CURSOR_KIND, |_| false) {
        Loaded::Found(b) => String::from_utf8(b).ok().filter(|c| !c.is_empty()),
        Loaded::Missing | Loaded::Rejected(_) => None,
    }
}

impl Journald {
    /// Loads the cursor and starts following on the current tokio runtime.
    pub fn start(
        cfg: JournaldConfig,
        out: SyncSender<LineBatch>,
        counters: Counters,
    ) -> std::io::Result<JournaldHandle> {
        let rt = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        std::fs::create_dir_all(&cfg.state_dir)?;
        let path = cfg.cursor_path();
        let cursor = load_cursor(&path);
        let progress = Arc::new(Progress {
            written: Mutex::new(cursor.clone()),
            ..Progress::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let follower = Follower {
            cfg,
            out,
            counters,
            progress: Arc::clone(&progress),
            stop: Arc::clone(&stop),
            ready: Arc::clone(&ready),
            cursor,
            stream: Stream::new(),
        };
        let follow = rt.spawn(follower.run());
        let (p, file) = (Arc::clone(&progress), path.clone());
        let checkpoint = rt.spawn(async move {
            loop {
                tokio::time::sleep(CHECKPOINT_EVERY).await;
                let (p, file) = (Arc::clone(&p), file.clone());
                let _ = tokio::task::spawn_blocking(move || write_cursor(&p, &file)).await;
            }
        });
        Ok(JournaldHandle {
            stop,
            ready,
            progress,
            path,
            follow,
            checkpoint,
        })
    }
}

/// Writes the acked cursor if it moved; errors are logged (the next write retries).
fn write_cursor(p: &Progress, path: &Path) -> std::io::Result<()> {
    let mut written = p.written.lock().unwrap_or_else(|e| e.into_inner());
    let Some(c) = p.acked_cursor() else {
        return Ok(());
    };
    if written.as_deref() == Some(c.as_str()) {
        return Ok(());
    }
    let r = write_state(path, CURSOR_KIND, c.as_bytes());
    match &r {
        Ok(()) => *written = Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "writing the journald cursor");
            // Keep it for the next attempt.
            let mut pending = p.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push_front((0, c));
        }
    }
    r
}

impl JournaldHandle {
    /// True once journalctl was started (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Stops reading (kills journalctl) and waits until the sender into the pipeline is
    /// dropped.
    pub async fn stop_reading(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = (&mut self.follow).await;
    }

    /// Writes the cursor of everything acked (call after the pipeline drained).
    pub fn finish(self) -> std::io::Result<()> {
        self.checkpoint.abort();
        self.follow.abort();
        write_cursor(&self.progress, &self.path)
    }
}

/// The reading side: one journalctl at a time.
struct Follower {
    cfg: JournaldConfig,
    out: SyncSender<LineBatch>,
    counters: Counters,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    /// The cursor of the last entry read (sent or not): where a restart resumes.
    cursor: Option<String>,
    /// Bytes sent: the position acks publish (and the Kafka edge's event offsets).
    stream: Stream,
}

/// Why reading stopped.
enum End {
    Stop,
    Exited,
}

impl Follower {
    async fn run(mut self) {
        let mut backoff = BACKOFF.0;
        while !self.stopping() {
            let args = self.cfg.args(self.cursor.as_deref());
            let spawned = Command::new(&self.cfg.journalctl)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            let mut child = match spawned {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(source = %self.cfg.name, program = %self.cfg.journalctl.display(), error = %e, "cannot start journalctl");
                    self.pause(&mut backoff).await;
                    continue;
                }
            };
            self.ready.store(true, Ordering::Release);
            tracing::info!(source = %self.cfg.name, resume = self.cursor.is_some(), "following the journal");
            let started = std::time::Instant::now();
            if let End::Stop = self.follow(&mut child).await {
                break;
            }
            let status = child.wait().await;
            tracing::warn!(source = %self.cfg.name, ?status, "journalctl exited; restarting");
            if started.elapsed() > BACKOFF.1 {
                backoff = BACKOFF.0;
            }
            self.pause(&mut backoff).await;
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sleeps `backoff` (unless stopping) and doubles it.
    async fn pause(&self, backoff: &mut Duration) {
        let until = tokio::time::Instant::now() + *backoff;
        while !self.stopping() && tokio::time::Instant::now() < until {
            tokio::time::sleep(STOP_CHECK).await;
        }
        *backoff = (*backoff * 2).min(BACKOFF.1);
    }

    /// Reads the child's output until it ends or we stop.
    async fn follow(&mut self, child: &mut Child) -> End {
        if let Some(err) = child.stderr.take() {
            let name = self.cfg.name.clone();
            tokio::spawn(log_stderr(name, err));
        }
        let Some(stdout) = child.stdout.take() else {
            return End::Exited;
        };
        let mut r = BufReader::with_capacity(256 * 1024, stdout);
        // A JSON line is longer than its message (escapes, other fields): room for both.
        let cap = self
            .cfg
            .max_message_bytes
            .saturating_mul(6)
            .saturating_add(64 * 1024);
        let mut line = Vec::new();
        let mut batch = Pending::default();
        loop {
            if r.buffer().is_empty() && !batch.is_empty() && self.send(&mut batch).await.is_err() {
                return End::Stop;
            }
            let got = tokio::select! {
                got = read_line(&mut r, cap, &mut line) => got,
                () = stopped(&self.stop) => return End::Stop,
            };
            match got {
                Ok(Line::Eof) | Err(_) => {
                    let _ = self.send(&mut batch).await;
                    return End::Exited;
                }
                Ok(Line::TooLong) => self.counters.too_long.inc(),
                Ok(Line::Full) => self.entry(&line, &mut batch),
            }
            if batch.full() && self.send(&mut batch).await.is_err() {
                return End::Stop;
            }
        }
    }

    /// Adds one output line's message to the batch (or counts why not).
    fn entry(&mut self, line: &[u8], batch: &mut Pending) {
        let e = match entry::parse(line) {
            Ok(e) => e,
            Err(_) => {
                self.counters.malformed.inc();
                return;
            }
        };
        self.cursor = Some(e.cursor.clone());
        batch.cursor = Some(e.cursor);
        match e.message {
            None => self.counters.skipped.inc(),
            Some(m) if m.len() > self.cfg.max_message_bytes => self.counters.too_long.inc(),
            Some(m) => batch.push(&m, e.time.unwrap_or_else(EventTime::now)),
        }
        batch.entries += 1;
    }

    /// Hands the batch to the pipeline, waiting while its channel is full (the journal is
    /// the buffer: nothing is dropped). `Err` when stopping or the pipeline is gone.
    async fn send(&mut self, batch: &mut Pending) -> Result<(), ()> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some(cursor) = batch.cursor.take() else {
            return Ok(());
        };
        // A batch of entries without messages has no bytes: its end equals the previous
        // one, which acks in order just the same.
        let end = self.stream.advance(batch.buf.len());
        let ack = Ack::new(Arc::clone(&self.progress.committed), end).with_file(self.stream.id());
        let mut lb = LineBatch {
            source: self.cfg.source,
            buf: std::mem::take(&mut batch.buf),
            ack: Some(ack),
            times: std::mem::take(&mut batch.times),
        };
        batch.entries = 0;
        self.progress
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((end, cursor));
        loop {
            match self.out.try_send(lb) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(b)) => lb = b,
                Err(TrySendError::Disconnected(_)) => return Err(()),
            }
            if self.stopping() {
                return Err(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Entries read but not yet sent.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    times: Vec<EventTime>,
    /// Entries read (with or without a message) since the last send.
    entries: u64,
    /// The cursor of the last of them.
    cursor: Option<String>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.entries == 0
    }

    fn full(&self) -> bool {
        self.times.len() >= BATCH_MESSAGES || self.buf.len() >= BATCH_BYTES
    }

    /// One message as one line (newlines inside it become spaces).
    fn push(&mut self, msg: &[u8], time: EventTime) {
        let msg = msg.strip_suffix(b"\n").unwrap_or(msg);
        self.buf
            .extend(msg.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        self.buf.push(b'\n');
        self.times.push(time);
    }
}

enum Line {
    Full,
    TooLong,
    Eof,
}

/// One `\n`-ended line into `out` (without it); a longer one than `cap` is skipped whole.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    cap: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<Line> {
    out.clear();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long && out.len() + take <= cap + 1 {
            out.extend_from_slice(&buf[..take]);
        } else {
            too_long = true;
            out.clear();
        }
        r.consume(take);
        if done {
            out.pop();
            return Ok(if too_long { Line::TooLong } else { Line::Full });
        }
    }
}

async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(STOP_CHECK).await;
    }
}

/// Logs journalctl's stderr, one line at a time (bounded).
async fn log_stderr(source: String, err: tokio::process::ChildStderr) {
    let mut r = BufReader::new(err);
    let mut line = Vec::new();
    while let Ok(Line::Full | Line::TooLong) = read_line(&mut r, 4096, &mut line).await {
        let text = String::from_utf8_lossy(&line);
        if !text.trim().is_empty() {
            tracing::warn!(%source, "journalctl: {}", text.trim());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> JournaldConfig {
        JournaldConfig {
            source: 0,
            name: "j".into(),
            units: vec!["nginx.service".into()],
            identifiers: vec!["nginx".into()],
            directory: None,
            file: Some("/tmp/x.journal".into()),
            start_at: StartAt::End,
            max_message_bytes: 1000,
            state_dir: "/tmp".into(),
            journalctl: "journalctl".into(),
        }
    }

    #[test]
    fn args_resume_from_the_cursor_else_start_at() {
        let c = cfg();
        let a = c.args(None);
        assert!(a.contains(&"--lines=0".to_string()));
        assert!(a.contains(&"--unit=nginx.service".to_string()));
        assert!(a.contains(&"--identifier=nginx".to_string()));
        assert!(a.contains(&"--file=/tmp/x.journal".to_string()));
        let a = c.args(Some("s=1;i=2"));
        assert!(a.contains(&"--after-cursor=s=1;i=2".to_string()));
        assert!(!a.iter().any(|x| x.starts_with("--lines")));
    }

    #[test]
    fn only_acked_cursors_are_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let p = Progress::default();
        p.pending.lock().unwrap().push_back((3, "c3".into()));
        p.pending.lock().unwrap().push_back((7, "c7".into()));
        write_cursor(&p, &path).unwrap();
        assert_eq!(load_cursor(&path), None);
        p.committed.store(3, Ordering::Release);
        write_cursor(&p, &path).unwrap();
        assert_eq!(load_cursor(&path).as_deref(), Some("c3"));
        p.committed.store(7, Ordering::Release);
        write_cursor(&p, &path).unwrap();
        assert_eq!(load_cursor(&path).as_deref(), Some("c7"));
    }
}
