//! The bounded hand-off to the pipeline: a full channel blocks the reader (back-pressure),
//! but a stop request still ends the wait promptly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::source::LineBatch;

/// The reader should stop: asked to, or the pipeline hung up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Sends batches, waiting while the channel is full.
pub struct Sink {
    tx: SyncSender<LineBatch>,
    stop: Arc<AtomicBool>,
}

const MAX_BACKOFF: Duration = Duration::from_millis(5);

impl Sink {
    /// A sink over the pipeline's channel that gives up once `stop` is set.
    pub fn new(tx: SyncSender<LineBatch>, stop: Arc<AtomicBool>) -> Self {
        Sink { tx, stop }
    }

    /// True once a stop was requested.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sends one batch, blocking while the channel is full.
    pub fn send(&self, mut batch: LineBatch) -> Result<(), Stopped> {
        // std's SyncSender has no send_timeout: poll with a short backoff instead, so a
        // stop request is seen within MAX_BACKOFF even under full back-pressure.
        let mut backoff = Duration::from_micros(20);
        loop {
            if self.stopping() {
                return Err(Stopped);
            }
            match self.tx.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(b)) => batch = b,
                Err(TrySendError::Disconnected(_)) => return Err(Stopped),
            }
            thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
