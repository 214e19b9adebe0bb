//! The reader thread: reconciles the include patterns with the filesystem and reads every
//! followed file, oldest first (so a rotated file is finished before its successor).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::{take_match, Entry, Registry, Resume};
use super::discover::{expand, symlink_target_dir, watch_dir};
use super::events::TailEvents;
use super::identity::{fingerprint_file, DevIno};
use super::lines::LineSplitter;
use super::sink::{Sink, Stopped};
use super::tracked::{Opened, Tracked, BATCH_BYTES};
use super::watch::DirWatcher;
use super::{StartAt, TailConfig, WatchMode};
use crate::source::wrapper::Unwrapper;

/// A file no include path leads to any more is closed once idle this long.
const ORPHAN_GRACE_MIN: Duration = Duration::from_secs(2);
/// Remembered paths per source (date-stamped file names must not grow it forever).
const MAX_SEEN_PATHS: usize = 4096;
/// How far back a start-at-end looks for the last line boundary.
const TAIL_WINDOW: u64 = 64 * 1024;

/// One source's followed files.
struct SourceState {
    cfg: TailConfig,
    name: Arc<str>,
    files: Vec<Tracked>,
    /// Paths that have held a followed file: a new file there is a rotation.
    seen_paths: HashSet<PathBuf>,
}

/// The reader thread's state.
pub struct Reader {
    sources: Vec<SourceState>,
    registry: Arc<Registry>,
    /// Checkpoint entries not yet matched; only consulted during the first scan.
    loaded: Vec<Entry>,
    first_scan_done: bool,
    scan_gen: u64,
    next_key: u64,
    sink: Sink,
    events: Arc<dyn TailEvents>,
    watcher: DirWatcher,
    scratch: Vec<u8>,
}

/// What the reader thread waits on between passes.
pub struct Signals {
    /// Wake-ups from inotify and from `stop_reading`.
    pub wake: Receiver<()>,
    /// Set when the directory structure changed (rescan the globs).
    pub need_scan: Arc<AtomicBool>,
    /// Set once the first scan is done.
    pub ready: Arc<AtomicBool>,
}

impl Reader {
    /// A reader over `configs`, resuming from `loaded` checkpoint entries.
    pub fn new(
        configs: Vec<TailConfig>,
        loaded: Vec<Entry>,
        registry: Arc<Registry>,
        sink: Sink,
        events: Arc<dyn TailEvents>,
        watcher: DirWatcher,
    ) -> Self {
        let sources = configs
            .into_iter()
            .map(|cfg| SourceState {
                name: Arc::from(cfg.name.as_str()),
                cfg,
                files: Vec::new(),
                seen_paths: HashSet::new(),
            })
            .collect();
        Reader {
            sources,
            registry,
            loaded,
            first_scan_done: false,
            scan_gen: 0,
            next_key: 0,
            sink,
            events,
            watcher,
            scratch: vec![0; BATCH_BYTES],
        }
    }

    /// Runs until stopped: scan when due or hinted, read, wait for a wake-up or the timer.
    pub fn run(mut self, sig: Signals) {
        let interval = self.interval();
        let mut next_scan = Instant::now();
        while !self.sink.stopping() {
            if Instant::now() >= next_scan || sig.need_scan.swap(false, Ordering::AcqRel) {
                self.scan();
                sig.ready.store(true, Ordering::Release);
                next_scan = Instant::now() + interval;
            }
            let more = match self.read_pass() {
                Ok(more) => more,
                Err(Stopped) => break,
            };
            if more {
                continue;
            }
            let wait = next_scan.saturating_duration_since(Instant::now());
            if let Err(RecvTimeoutError::Disconnected) = sig.wake.recv_timeout(wait) {
                std::thread::sleep(wait);
            }
        }
    }

    fn interval(&self) -> Duration {
        let min = self.sources.iter().map(|s| s.cfg.poll_interval).min();
        min.unwrap_or(Duration::from_millis(250))
            .max(Duration::from_millis(5))
    }

    /// Reconciles every source's patterns with the filesystem.
    fn scan(&mut self) {
        self.scan_gen += 1;
        for i in 0..self.sources.len() {
            self.scan_source(i);
        }
        self.first_scan_done = true;
        // Entries no file matched at start are dropped (their files are gone).
        self.loaded.clear();
    }

    fn scan_source(&mut self, i: usize) {
        let Some(src) = self.sources.get(i) else {
            return;
        };
        let (patterns, watch) = (src.cfg.include.clone(), src.cfg.watch);
        if watch == WatchMode::Notify {
            for (dir, recursive) in patterns.iter().filter_map(|p| watch_dir(p)) {
                self.watcher.ensure(&dir, recursive);
            }
        }
        for path in expand(&patterns) {
            if watch == WatchMode::Notify {
                // A symlink (Kubernetes' /var/log/containers) is written in its target's
                // directory: watch that one too.
                if let Some(dir) = symlink_target_dir(&path) {
                    self.watcher.ensure(&dir, false);
                }
            }
            self.visit(i, path);
        }
        let (gen, now) = (self.scan_gen, Instant::now());
        if let Some(src) = self.sources.get_mut(i) {
            for t in &mut src.files {
                match t.seen_gen == gen {
                    true => t.orphan_since = None,
                    false => t.orphan_since = t.orphan_since.or(Some(now)),
                }
            }
        }
    }

    /// Looks at one matched path: a known file (maybe renamed or rewritten) or a new one.
    fn visit(&mut self, i: usize, path: PathBuf) {
        let id = match fs::metadata(&path) {
            Ok(m) if m.is_file() => DevIno::of(&m),
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => return self.report(i, &path, &e),
        };
        let gen = self.scan_gen;
        let Some(src) = self.sources.get_mut(i) else {
            return;
        };
        if let Some(t) = src.files.iter_mut().find(|t| t.id == id) {
            // Same inode, held open by us: the same file, maybe renamed (truncation is
            // checked on every read).
            t.seen_gen = gen;
            t.check_head = true;
            if t.path != path {
                src.seen_paths.insert(path.clone());
                t.path = path;
                t.publish();
            }
            return;
        }
        if let Err(e) = self.add(i, path.clone()) {
            if e.kind() != io::ErrorKind::NotFound {
                self.report(i, &path, &e);
            }
        }
    }

    /// Starts following a file not followed yet.
    fn add(&mut self, i: usize, path: PathBuf) -> io::Result<()> {
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        let (id, size) = (DevIno::of(&meta), meta.len());
        let fp = fingerprint_file(&file)?;
        let first = !self.first_scan_done;
        let key = self.next_key;
        self.next_key += 1;
        let Some(src) = self.sources.get_mut(i) else {
            return Ok(());
        };
        let resume = match first {
            true => take_match(&mut self.loaded, &src.name, &path, id, fp, size),
            false => Resume::Unknown,
        };
        let (split, event) = start_position(src, &path, resume, first, &file, size)?;
        tracing::debug!(path = %path.display(), ?id, ?fp, size, start = split.line_end(), first, "following file");
        let opened = Opened {
            key,
            source: src.cfg.source,
            source_name: Arc::clone(&src.name),
            path: path.clone(),
            file,
            id,
            fp,
            unwrap: Unwrapper::new(src.cfg.wrapper, src.cfg.max_line_bytes),
        };
        let events = Arc::clone(&self.events);
        let mut t = Tracked::new(opened, split, Arc::clone(&self.registry), events);
        t.seen_gen = self.scan_gen;
        if src.seen_paths.len() >= MAX_SEEN_PATHS {
            // Only the event name (rotated vs added) depends on it: bound it crudely.
            src.seen_paths.clear();
        }
        src.seen_paths.insert(path.clone());
        src.files.push(t);
        let source = src.cfg.source;
        match event {
            Event::Added => self.events.file_added(source, &path),
            Event::Rotated => self.events.file_rotated(source, &path),
            Event::Truncated => self.events.file_truncated(source, &path),
        }
        Ok(())
    }

    /// Reads every followed file once; true when some file has more waiting.
    fn read_pass(&mut self) -> Result<bool, Stopped> {
        let mut more = false;
        for src in &mut self.sources {
            let mut lag = 0;
            let max_line = src.cfg.max_line_bytes;
            let grace = (src.cfg.poll_interval * 4).max(ORPHAN_GRACE_MIN);
            let mut retire = Vec::new();
            for (idx, t) in src.files.iter_mut().enumerate() {
                let o = match t.read(&mut self.scratch, max_line, &self.sink) {
                    Ok(r) => r?,
                    Err(e) => {
                        self.events.read_error(t.source, &t.path, &e);
                        continue;
                    }
                };
                more |= o.more;
                lag += o.lag;
                let idle_orphan = t.orphan_since.is_some_and(|s| s.elapsed() >= grace);
                if idle_orphan && !o.got_data {
                    retire.push(idx);
                }
            }
            for idx in retire.into_iter().rev() {
                let t = src.files.remove(idx);
                tracing::debug!(path = %t.path.display(), id = ?t.id, "closing rotated-away file");
                t.unregister();
            }
            self.events.lag_bytes(src.cfg.source, lag);
        }
        Ok(more)
    }

    fn report(&self, i: usize, path: &Path, e: &io::Error) {
        if let Some(src) = self.sources.get(i) {
            self.events.read_error(src.cfg.source, path, e);
        }
    }
}

/// Which event a newly followed file raises.
enum Event {
    Added,
    Rotated,
    Truncated,
}

/// Where a newly found file starts, and what it is: a checkpoint match resumes; a file
/// replaced while we were down, or one at a path that held a followed file, starts at 0;
/// a file found by the first scan with no checkpoint follows `start_at`; any other new file
/// is read from its beginning.
fn start_position(
    src: &SourceState,
    path: &Path,
    resume: Resume,
    first: bool,
    file: &File,
    size: u64,
) -> io::Result<(LineSplitter, Event)> {
    let max_line = src.cfg.max_line_bytes;
    let zero = || LineSplitter::new(0, max_line);
    Ok(match resume {
        Resume::At(off) => (LineSplitter::new(off, max_line), Event::Added),
        Resume::Replaced { truncated: true } => (zero(), Event::Truncated),
        Resume::Replaced { truncated: false } => (zero(), Event::Rotated),
        Resume::Unknown if first && src.cfg.start_at == StartAt::End => {
            (start_at_end(file, size, max_line)?, Event::Added)
        }
        Resume::Unknown if src.seen_paths.contains(path) => (zero(), Event::Rotated),
        Resume::Unknown => (zero(), Event::Added),
    })
}

/// Positions a splitter at the end of a file, on a line boundary: just after the last `\n`
/// within the tail window, else mid-line (the rest of that line is skipped).
fn start_at_end(file: &File, size: u64, max_line: usize) -> io::Result<LineSplitter> {
    let from = size.saturating_sub(TAIL_WINDOW);
    let mut tail = vec![0; (size - from) as usize];
    let mut got = 0;
    while got < tail.len() {
        let n = file.read_at(&mut tail[got..], from + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let tail = tail.get(..got).unwrap_or_default();
    Ok(match memchr::memrchr(b'\n', tail) {
        Some(i) => LineSplitter::new(from + i as u64 + 1, max_line),
        None if size == 0 => LineSplitter::new(0, max_line),
        None => LineSplitter::mid_line(size, max_line),
    })
}
