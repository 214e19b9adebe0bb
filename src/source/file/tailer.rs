//! Starting and stopping the tailer: a reader thread and a checkpoint thread.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::checkpoint::{self, Checkpointer, Registry};
use super::events::TailEvents;
use super::reader::{Reader, Signals};
use super::sink::Sink;
use super::watch::{DirWatcher, Waker};
use super::{TailConfig, WatchMode};
use crate::source::LineBatch;

/// How often the checkpoint thread writes (when something changed).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Follows files and sends their lines to the pipeline.
#[derive(Debug)]
pub struct Tailer;

/// A running tailer.
pub struct TailerHandle {
    stop: Arc<AtomicBool>,
    waker: Waker,
    ready: Arc<AtomicBool>,
    checkpointer: Option<Arc<Checkpointer>>,
    reader: JoinHandle<()>,
    ck_thread: Option<(JoinHandle<()>, Sender<()>)>,
}

impl Tailer {
    /// Loads checkpoints from `checkpoint_dir` (created if missing), then starts the
    /// reader thread (and a checkpoint thread when there is a directory).
    pub fn start(
        configs: Vec<TailConfig>,
        checkpoint_dir: Option<PathBuf>,
        out: SyncSender<LineBatch>,
        events: Arc<dyn TailEvents>,
    ) -> io::Result<TailerHandle> {
        let registry = Arc::new(Registry::default());
        let (loaded, checkpointer) = match &checkpoint_dir {
            Some(dir) => {
                fs::create_dir_all(dir)?;
                let ck = Checkpointer::new(dir, Arc::clone(&registry), Arc::clone(&events));
                (checkpoint::load(dir, &*events), Some(Arc::new(ck)))
            }
            None => (Vec::new(), None),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let need_scan = Arc::new(AtomicBool::new(false));
        let (wake_tx, wake_rx) = mpsc::sync_channel(1);
        let waker = Waker::new(wake_tx, Arc::clone(&need_scan));
        let notify = configs.iter().any(|c| c.watch == WatchMode::Notify);
        let watcher = DirWatcher::new(notify, waker.clone());
        let sink = Sink::new(out, Arc::clone(&stop));
        let reader = Reader::new(configs, loaded, registry, sink, events, watcher);
        let signals = Signals {
            wake: wake_rx,
            need_scan,
            ready: Arc::clone(&ready),
        };
        let reader = thread::Builder::new()
            .name("tail-reader".into())
            .spawn(move || reader.run(signals))?;
        let ck_thread = checkpointer.as_ref().map(spawn_checkpointer).transpose()?;
        Ok(TailerHandle {
            stop,
            waker,
            ready,
            checkpointer,
            reader,
            ck_thread,
        })
    }
}

/// Writes checkpoints every [`CHECKPOINT_EVERY`] until its channel is dropped.
fn spawn_checkpointer(ck: &Arc<Checkpointer>) -> io::Result<(JoinHandle<()>, Sender<()>)> {
    let ck = Arc::clone(ck);
    let (tx, rx) = mpsc::channel::<()>();
    let handle = thread::Builder::new()
        .name("tail-checkpoint".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(CHECKPOINT_EVERY) {
                if let Err(e) = ck.write(false) {
                    tracing::warn!(error = %e, "checkpoint write failed");
                }
            }
        })?;
    Ok((handle, tx))
}

impl TailerHandle {
    /// True once checkpoints are loaded and the first scan is done (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Stops reading promptly, even while blocked on a full channel; the reader thread
    /// then exits and drops its sender.
    pub fn stop_reading(&self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake(false);
    }

    /// The checkpointer (`None` without a checkpoint directory): its
    /// [`entries`](Checkpointer::entries) are the acked offsets, for a snapshot that must
    /// match them.
    pub fn checkpointer(&self) -> Option<Arc<Checkpointer>> {
        self.checkpointer.clone()
    }

    /// Persists the committed offsets now (no-op without a checkpoint directory).
    pub fn write_checkpoints(&self) -> io::Result<()> {
        match &self.checkpointer {
            Some(ck) => ck.write(true),
            None => Ok(()),
        }
    }

    /// Stops reading if not stopped yet, waits for both threads and writes a final
    /// checkpoint.
    pub fn join(self) -> io::Result<()> {
        self.stop_reading();
        let panicked = || io::Error::other("tailer thread panicked");
        self.reader.join().map_err(|_| panicked())?;
        if let Some((handle, tx)) = self.ck_thread {
            drop(tx);
            handle.join().map_err(|_| panicked())?;
        }
        match &self.checkpointer {
            Some(ck) => ck.write(true),
            None => Ok(()),
        }
    }
}
