//! Where detection records go: a JSONL file (the SIEM hand-off), an in-memory ring (the
//! admin API), a vector (tests).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::Detection;

/// Receives every detection record in order.
pub trait DetectionSink: Send {
    /// One record.
    fn emit(&mut self, d: &Detection) -> io::Result<()>;
    /// Make emitted records durable/visible (end of a batch, shutdown).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// JSON lines appended to a file (or any writer). Safe under log rotation: appends (so a
/// copytruncate just works) and reopens the path when it was renamed or deleted away
/// (checked at most once a second, on flush).
pub struct JsonlSink {
    out: io::BufWriter<Box<dyn Write + Send>>,
    reopen: Option<Reopen>,
}

/// What is needed to notice a rename-rotation of the output file.
struct Reopen {
    path: std::path::PathBuf,
    ino: u64,
    checked: std::time::Instant,
}

fn open_append(path: &Path) -> io::Result<(std::fs::File, u64)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true).read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o640);
    let mut f = opts.open(path)?;
    end_torn_record(&mut f)?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&f.metadata()?);
    #[cfg(not(unix))]
    let ino = 0;
    Ok((f, ino))
}

/// A `kill -9` mid-write can leave a record without its newline; ending that line first keeps
/// the next record on a line of its own (the cut record is emitted again after restart: it
/// lies inside the snapshot window).
fn end_torn_record(f: &mut std::fs::File) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    if f.metadata()?.len() == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1))?;
    f.read_exact(&mut last)?;
    if last[0] != b'\n' {
        f.write_all(b"\n")?;
    }
    Ok(())
}

impl JsonlSink {
    /// Appends to `path`, creating it (mode 0640: detections name tokens and users).
    pub fn append(path: &Path) -> io::Result<JsonlSink> {
        let (f, ino) = open_append(path)?;
        let mut sink = JsonlSink::new(Box::new(f));
        sink.reopen = Some(Reopen {
            path: path.to_path_buf(),
            ino,
            checked: std::time::Instant::now(),
        });
        Ok(sink)
    }

    /// Writes to any writer (stdout, a test buffer).
    pub fn new(w: Box<dyn Write + Send>) -> JsonlSink {
        JsonlSink {
            out: io::BufWriter::new(w),
            reopen: None,
        }
    }

    /// Reopens the path if the file we hold is no longer the one at the path.
    fn follow_rotation(&mut self) -> io::Result<()> {
        let Some(r) = &mut self.reopen else {
            return Ok(());
        };
        if r.checked.elapsed() < std::time::Duration::from_secs(1) {
            return Ok(());
        }
        r.checked = std::time::Instant::now();
        #[cfg(unix)]
        let current = std::fs::metadata(&r.path)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        #[cfg(not(unix))]
        let current = Some(r.ino);
        if current != Some(r.ino) {
            let (f, ino) = open_append(&r.path)?;
            r.ino = ino;
            self.out = io::BufWriter::new(Box::new(f));
        }
        Ok(())
    }
}

impl DetectionSink for JsonlSink {
    fn emit(&mut self, d: &Detection) -> io::Result<()> {
        // One write of the whole line: the buffer then only ever flushes whole lines, so
        // processes appending to one file (workers sharing a state directory) never
        // interleave inside a record (O_APPEND writes of a line are not split).
        let mut line = serde_json::to_vec(d)?;
        line.push(b'\n');
        self.out.write_all(&line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.follow_rotation()
    }
}

/// The most recent records in memory, shared with the admin API.
#[derive(Clone)]
pub struct Ring {
    inner: Arc<Mutex<VecDeque<Detection>>>,
    cap: usize,
}

impl Ring {
    /// A ring keeping the last `cap` records.
    pub fn new(cap: usize) -> Ring {
        Ring {
            inner: Arc::new(Mutex::new(VecDeque::with_capacity(cap.min(1024)))),
            cap: cap.max(1),
        }
    }

    /// A copy of the records, oldest first.
    pub fn snapshot(&self) -> Vec<Detection> {
        self.inner
            .lock()
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl DetectionSink for Ring {
    fn emit(&mut self, d: &Detection) -> io::Result<()> {
        if let Ok(mut g) = self.inner.lock() {
            if g.len() == self.cap {
                g.pop_front();
            }
            g.push_back(d.clone());
        }
        Ok(())
    }
}

/// Collects records (tests, replay summaries).
#[derive(Clone, Default)]
pub struct VecSink(pub Arc<Mutex<Vec<Detection>>>);

impl VecSink {
    /// The records so far.
    pub fn records(&self) -> Vec<Detection> {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

impl DetectionSink for VecSink {
    fn emit(&mut self, d: &Detection) -> io::Result<()> {
        if let Ok(mut g) = self.0.lock() {
            g.push(d.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_record_is_ended_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(&p, b"{\"id\":\"a\"}\n{\"id\":\"b").unwrap();
        drop(open_append(&p).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"id\":\"a\"}\n{\"id\":\"b\n");
        // A clean file and an empty one are left alone.
        drop(open_append(&p).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"id\":\"a\"}\n{\"id\":\"b\n");
        let q = dir.path().join("e.jsonl");
        drop(open_append(&q).unwrap());
        assert!(std::fs::read(&q).unwrap().is_empty());
    }
}
