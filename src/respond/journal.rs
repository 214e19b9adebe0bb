//! The action journal: no action is lost between a decision and a hook's success.
//!
//! `response-journal.jsonl` in the state directory, one JSON object a line:
//!
//! ```text
//! 3f0c9a1be2d47a60 {"v":1,"op":"add","seq":7,"hook":"revoke","event":"freeze","detection":{...}}
//! 91d2e0c4b7a85f13 {"v":1,"op":"done","seq":7,"result":"success"}
//! ```
//!
//! The first word is the first 8 bytes of the SHA-256 of the JSON, in hex: a line whose
//! bytes changed after it was written (a flipped bit that still parses would otherwise
//! send a hook another token) is skipped and counted, never acted on. Lines without the
//! prefix (written by earlier versions) are read as plain JSON.
//!
//! `add` lines are fsynced before any hook is called; `done` lines are written after the
//! hook succeeded (or failed permanently) without fsync: losing one only repeats a call,
//! which the receiver ignores by its idempotency key. At start every `add` without a `done`
//! is pending again. Once `compact_after` entries finished, the file is rewritten with only
//! the pending ones (atomically, through [`crate::durable::write_atomic`]). A torn last line
//! (a power cut mid-append) or a damaged line anywhere is skipped; the good lines are all
//! kept. When any line was skipped, the original file is kept aside as
//! `response-journal.jsonl.corrupt-<unix-secs>` for a human, and [`Journal::bad_lines`]
//! says how many were skipped.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::HookEvent;
use crate::detect::Detection;

/// Format tag of each line.
const VERSION: u32 = 1;

/// One hook call to make: an action for one hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Journal sequence number.
    pub seq: u64,
    /// The hook's name.
    pub hook: String,
    /// What happened.
    pub event: HookEvent,
    /// The record (with its action).
    pub detection: Detection,
}

impl Job {
    /// The key a receiver deduplicates on: the record id for a freeze, `id:event` otherwise,
    /// stable across retries and restarts.
    pub fn idempotency_key(&self) -> String {
        match self.event {
            HookEvent::Freeze => self.detection.id.clone(),
            e => format!("{}:{e}", self.detection.id),
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
    /// The hook succeeded.
    Success,
    /// The hook refused it for good (e.g. HTTP 400); not retried.
    Failed,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Add {
        v: u32,
        #[serde(flatten)]
        job: Box<Job>,
    },
    Done {
        v: u32,
        seq: u64,
        result: Done,
    },
}

/// The journal file and its pending jobs.
pub struct Journal {
    path: PathBuf,
    file: File,
    pending: BTreeMap<u64, Job>,
    claimed: HashSet<u64>,
    next_seq: u64,
    finished: usize,
    compact_after: usize,
    bad_lines: usize,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, recovering pending jobs and compacting.
    pub fn open(path: &Path, compact_after: usize) -> io::Result<Journal> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (pending, max_seq, bad_lines) = replay(&bytes, path);
        if bad_lines > 0 {
            // Compaction below rewrites the file from the good lines; keep the original.
            crate::durable::move_aside(path);
        }
        let mut j = Journal {
            path: path.to_path_buf(),
            file: open_append(path)?,
            pending,
            claimed: HashSet::new(),
            next_seq: max_seq + 1,
            finished: 0,
            compact_after: compact_after.max(1),
            bad_lines,
        };
        j.compact()?;
        Ok(j)
    }

    /// Appends one job per `(hook, event)` for `d` and fsyncs; returns them.
    pub fn append(&mut self, calls: &[(String, HookEvent)], d: &Detection) -> io::Result<Vec<Job>> {
        let mut buf = Vec::new();
        let mut jobs = Vec::with_capacity(calls.len());
        for (hook, event) in calls {
            let job = Job {
                seq: self.next_seq,
                hook: hook.clone(),
                event: *event,
                detection: d.clone(),
            };
            self.next_seq += 1;
            push_line(
                &mut buf,
                &Line::Add {
                    v: VERSION,
                    job: Box::new(job.clone()),
                },
            )?;
            jobs.push(job);
        }
        self.write_whole(&buf, true)?;
        for j in &jobs {
            self.pending.insert(j.seq, j.clone());
        }
        Ok(jobs)
    }

    /// Records that job `seq` finished; compacts when enough have.
    pub fn done(&mut self, seq: u64, result: Done) -> io::Result<()> {
        if self.pending.remove(&seq).is_none() {
            return Ok(());
        }
        self.claimed.remove(&seq);
        let mut line = Vec::new();
        push_line(
            &mut line,
            &Line::Done {
                v: VERSION,
                seq,
                result,
            },
        )?;
        self.write_whole(&line, false)?;
        self.finished += 1;
        if self.finished >= self.compact_after {
            self.compact()?;
        }
        Ok(())
    }

    /// Appends whole lines or nothing: a failed write (a full disk) is cut back to where it
    /// started, so the next append does not glue a good line onto a partial one.
    fn write_whole(&mut self, bytes: &[u8], sync: bool) -> io::Result<()> {
        let before = self.file.metadata()?.len();
        let written =
            self.file
                .write_all(bytes)
                .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        if written.is_err() {
            let _ = self.file.set_len(before);
        }
        written
    }

    /// Marks `seq` as handed to a worker (so a rescan does not hand it out twice).
    pub fn claim(&mut self, seq: u64) {
        self.claimed.insert(seq);
    }

    /// Undoes [`Journal::claim`] (the queue was full: a rescan hands the job out later).
    pub fn unclaim(&mut self, seq: u64) {
        self.claimed.remove(&seq);
    }

    /// Pending jobs for `hook` not yet handed to a worker (recovered at start, or left
    /// behind when the queue was full), at most `limit`, oldest first; they become claimed.
    pub fn claim_unclaimed(&mut self, hook: &str, limit: usize) -> Vec<Job> {
        let jobs: Vec<Job> = self
            .pending
            .values()
            .filter(|j| j.hook == hook && !self.claimed.contains(&j.seq))
            .take(limit)
            .cloned()
            .collect();
        self.claimed.extend(jobs.iter().map(|j| j.seq));
        jobs
    }

    /// Jobs still pending (any hook).
    pub fn pending(&self) -> Vec<Job> {
        self.pending.values().cloned().collect()
    }

    /// Lines skipped as damaged when the journal was opened (for the caller's metrics).
    pub fn bad_lines(&self) -> usize {
        self.bad_lines
    }

    /// Fsyncs everything written so far.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Rewrites the file with only the pending jobs.
    pub fn compact(&mut self) -> io::Result<()> {
        let mut buf = Vec::new();
        for job in self.pending.values() {
            push_line(
                &mut buf,
                &Line::Add {
                    v: VERSION,
                    job: Box::new(job.clone()),
                },
            )?;
        }
        crate::durable::write_atomic(&self.path, &buf)?;
        self.file = open_append(&self.path)?;
        self.finished = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Hex digits of a line's checksum prefix.
const SUM_HEX: usize = 16;

/// Appends `line` as `<sum> <json>\n`.
fn push_line(buf: &mut Vec<u8>, line: &Line) -> io::Result<()> {
    let json = serde_json::to_vec(line)?;
    buf.extend_from_slice(line_sum(&json).as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(&json);
    buf.push(b'\n');
    Ok(())
}

fn line_sum(json: &[u8]) -> String {
    let digest = Sha256::digest(json);
    hex::encode(digest.get(..SUM_HEX / 2).unwrap_or_default())
}

/// One line back, `None` when damaged (bad checksum, bad JSON).
fn decode(raw: &[u8]) -> Option<Line> {
    if raw.first() == Some(&b'{') {
        // Written before lines carried a checksum.
        return serde_json::from_slice(raw).ok();
    }
    let sum = raw.get(..SUM_HEX)?;
    let json = raw.get(SUM_HEX..)?.strip_prefix(b" ")?;
    if line_sum(json).as_bytes() != sum {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Pending jobs, the highest sequence number and the number of damaged lines in `bytes`.
fn replay(bytes: &[u8], path: &Path) -> (BTreeMap<u64, Job>, u64, usize) {
    let mut pending = BTreeMap::new();
    let mut max_seq = 0;
    let mut bad = 0usize;
    let mut torn = false;
    let complete = bytes.last().is_none_or(|b| *b == b'\n');
    let mut lines = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .peekable();
    while let Some(raw) = lines.next() {
        match decode(raw) {
            Some(Line::Add { job, .. }) => {
                max_seq = max_seq.max(job.seq);
                pending.insert(job.seq, *job);
            }
            Some(Line::Done { seq, .. }) => {
                max_seq = max_seq.max(seq);
                pending.remove(&seq);
            }
            None if lines.peek().is_none() && !complete => torn = true,
            None => bad += 1,
        }
    }
    if torn {
        tracing::warn!(path = %path.display(), "skipped a torn last journal line (a write cut short by a crash)");
    }
    if bad > 0 {
        tracing::error!(lines = bad, path = %path.display(), "skipped damaged journal lines (checksum or JSON); the good lines are kept and the original file is kept aside");
    }
    (pending, max_seq, bad + usize::from(torn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Action;
    use crate::event::EventTime;
    use crate::event::Severity;

    fn det(id: &str) -> Detection {
        Detection {
            ts: EventTime::from_millis(0),
            detector: "ip_fanout".into(),
            severity: Severity::High,
            token: Some("ak_1".into()),
            ip: None,
            user: None,
            source: None,
            action: Action::Freeze,
            reason: None,
            evidence: serde_json::json!({}),
            id: id.into(),
        }
    }

    #[test]
    fn pending_survives_reopen_torn_tail_and_compaction() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("j.jsonl");
        let mut j = Journal::open(&p, 2)?;
        let calls = [
            ("a".to_string(), HookEvent::Freeze),
            ("b".to_string(), HookEvent::Freeze),
        ];
        let jobs = j.append(&calls, &det("x1"))?;
        j.done(jobs[0].seq, Done::Success)?;
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&p)?;
        f.write_all(b"{\"v\":1,\"op\":\"add\",\"se")?; // torn
        drop(f);
        let mut j = Journal::open(&p, 3)?;
        assert_eq!(j.pending().len(), 1);
        assert_eq!(j.pending()[0].hook, "b");
        assert_eq!(j.claim_unclaimed("b", 10).len(), 1);
        assert!(j.claim_unclaimed("b", 10).is_empty());
        let more = j.append(&calls, &det("x2"))?;
        assert!(more[0].seq > jobs[1].seq, "sequence numbers keep growing");
        for s in [jobs[1].seq, more[0].seq, more[1].seq] {
            j.done(s, Done::Success)?;
        }
        assert!(
            std::fs::read(&p)?.is_empty(),
            "compacted to nothing pending"
        );
        Ok(())
    }

    #[test]
    fn damaged_line_is_skipped_and_the_rest_kept() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("j.jsonl");
        let mut j = Journal::open(&p, 100)?;
        let calls = [("a".to_string(), HookEvent::Freeze)];
        for id in ["x1", "x2", "x3"] {
            j.append(&calls, &det(id))?;
        }
        drop(j);
        // Flip one byte in the middle line's JSON: it may still parse, the sum catches it.
        let mut bytes = std::fs::read(&p)?;
        let second = bytes.iter().position(|b| *b == b'\n').unwrap_or(0) + 40;
        if let Some(b) = bytes.get_mut(second) {
            *b ^= 0x01;
        }
        // And an old-format line (no checksum) still counts.
        let mut old = serde_json::to_vec(&Line::Add {
            v: VERSION,
            job: Box::new(Job {
                seq: 9,
                hook: "a".into(),
                event: HookEvent::Freeze,
                detection: det("x9"),
            }),
        })?;
        old.push(b'\n');
        bytes.extend_from_slice(&old);
        std::fs::write(&p, &bytes)?;
        let j = Journal::open(&p, 100)?;
        let ids: Vec<String> = j.pending().into_iter().map(|j| j.detection.id).collect();
        assert_eq!(ids, ["x1", "x3", "x9"]);
        assert_eq!(j.bad_lines(), 1);
        let aside = std::fs::read_dir(dir.path())?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .count();
        assert_eq!(aside, 1, "the original is kept for a human");
        drop(j);
        assert_eq!(Journal::open(&p, 100)?.bad_lines(), 0, "rewritten clean");
        Ok(())
    }
}
