//! inotify wake-ups (via `notify`) on the parent directories: only a hint that something
//! changed; the periodic reconcile stays the ground truth.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// Wakes the reader thread: a coalescing channel plus a "rescan the globs" flag.
#[derive(Clone)]
pub struct Waker {
    tx: SyncSender<()>,
    need_scan: Arc<AtomicBool>,
}

impl Waker {
    /// A waker over a capacity-1 channel (extra wake-ups coalesce).
    pub fn new(tx: SyncSender<()>, need_scan: Arc<AtomicBool>) -> Self {
        Waker { tx, need_scan }
    }

    /// Wakes the reader; with `scan`, it also re-expands globs and restats paths.
    pub fn wake(&self, scan: bool) {
        if scan {
            self.need_scan.store(true, Ordering::Release);
        }
        // Full means a wake-up is already pending; disconnected means the reader is gone.
        let _ = self.tx.try_send(());
    }
}

/// Decides what an inotify event asks for: `None` to ignore, `Some(true)` for a rescan.
fn classify(kind: &EventKind) -> Option<bool> {
    match kind {
        // Opens (including our own) and closes carry no new data.
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => None,
        EventKind::Modify(ModifyKind::Data(_)) => Some(false),
        _ => Some(true),
    }
}

/// The directories being watched (none in poll mode or when inotify is unavailable).
pub struct DirWatcher {
    watcher: Option<RecommendedWatcher>,
    watched: HashSet<PathBuf>,
}

impl DirWatcher {
    /// A watcher that wakes `waker`; `None` inside means poll only.
    pub fn new(enabled: bool, waker: Waker) -> Self {
        let watcher = enabled.then(|| Self::build(waker)).flatten();
        DirWatcher {
            watcher,
            watched: HashSet::new(),
        }
    }

    fn build(waker: Waker) -> Option<RecommendedWatcher> {
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                if let Some(scan) = classify(&ev.kind) {
                    waker.wake(scan);
                }
            }
            // Overflowed queue or similar: the reconcile finds what was missed.
            Err(_) => waker.wake(true),
        };
        match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable, falling back to polling");
                None
            }
        }
    }

    /// Watches `dir` unless it already is (a missing dir is retried at the next scan).
    pub fn ensure(&mut self, dir: &Path, recursive: bool) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        if self.watched.contains(dir) {
            return;
        }
        let mode = match recursive {
            true => RecursiveMode::Recursive,
            false => RecursiveMode::NonRecursive,
        };
        if w.watch(dir, mode).is_ok() {
            self.watched.insert(dir.to_path_buf());
        }
    }
}
