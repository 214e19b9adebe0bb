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

/// JSON lines appended to a file (or any writer).
pub struct JsonlSink {
    out: io::BufWriter<Box<dyn Write + Send>>,
}

impl JsonlSink {
    /// Appends to `path`, creating it (mode 0640: detections name tokens and users).
    pub fn append(path: &Path) -> io::Result<JsonlSink> {
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o640);
        Ok(JsonlSink::new(Box::new(opts.open(path)?)))
    }

    /// Writes to any writer (stdout, a test buffer).
    pub fn new(w: Box<dyn Write + Send>) -> JsonlSink {
        JsonlSink {
            out: io::BufWriter::new(w),
        }
    }
}

impl DetectionSink for JsonlSink {
    fn emit(&mut self, d: &Detection) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, d)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
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
