//! From decisions to hook calls: the journal append, one bounded queue and one worker task
//! per hook, retries with exponential backoff and jitter; after `max_attempts` the action is
//! parked for `backoff_max` and then retried in a new round, for as long as it takes.
//!
//! The pipeline thread only appends to the journal and `try_send`s: a full queue leaves the
//! job in the journal (metric `result="queue_full"`) and the worker picks it up when idle,
//! so a slow or dead endpoint never stalls ingestion and no action is lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::config::HookEvent;
use crate::detect::Detection;
use crate::metrics::Metrics;

use super::hooks::{CallResult, HookSpec};
use super::journal::{Done, Job, Journal};

/// Jobs taken from the journal backlog at a time.
const BACKLOG_BATCH: usize = 64;
/// How often an idle worker looks at the journal backlog.
const IDLE_RESCAN: Duration = Duration::from_secs(1);

struct Route {
    name: String,
    events: Vec<HookEvent>,
    tx: mpsc::Sender<Job>,
}

/// The sending side, owned by the policy core.
pub struct Dispatch {
    routes: Vec<Route>,
    journal: Arc<Mutex<Journal>>,
    metrics: Metrics,
}

/// What a worker needs.
pub struct Worker {
    spec: HookSpec,
    rx: mpsc::Receiver<Job>,
    journal: Arc<Mutex<Journal>>,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
}

/// Builds the queues: the dispatch side and one worker per hook.
pub fn build(
    specs: Vec<HookSpec>,
    capacity: usize,
    journal: Arc<Mutex<Journal>>,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
) -> (Dispatch, Vec<Worker>) {
    let mut routes = Vec::new();
    let mut workers = Vec::new();
    for spec in specs {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        for e in &spec.events {
            for r in ["success", "failure", "retry", "parked", "queue_full"] {
                metrics
                    .actions
                    .with_label_values(&[e.as_str(), &spec.name, r]);
            }
        }
        routes.push(Route {
            name: spec.name.clone(),
            events: spec.events.clone(),
            tx,
        });
        workers.push(Worker {
            spec,
            rx,
            journal: journal.clone(),
            metrics: metrics.clone(),
            stop: stop.clone(),
        });
    }
    let d = Dispatch {
        routes,
        journal,
        metrics: metrics.clone(),
    };
    (d, workers)
}

impl Dispatch {
    /// Journals (fsync) one job per subscribed hook, then queues each without waiting.
    pub fn submit(&mut self, event: HookEvent, d: &Detection) {
        let calls: Vec<(String, HookEvent)> = self
            .routes
            .iter()
            .filter(|r| r.events.contains(&event))
            .map(|r| (r.name.clone(), event))
            .collect();
        if calls.is_empty() {
            return;
        }
        let Ok(mut journal) = self.journal.lock() else {
            return;
        };
        let jobs = match journal.append(&calls, d) {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(%e, id = %d.id, "JOURNAL APPEND FAILED: the action is queued but would be lost by a crash");
                calls
                    .into_iter()
                    .map(|(hook, event)| Job {
                        seq: 0,
                        hook,
                        event,
                        detection: d.clone(),
                    })
                    .collect()
            }
        };
        for job in jobs {
            let Some(route) = self.routes.iter().find(|r| r.name == job.hook) else {
                continue;
            };
            let seq = job.seq;
            journal.claim(seq);
            match route.tx.try_send(job) {
                Ok(()) => self.metrics.hook_queue_depth.inc(),
                Err(_) => {
                    journal.unclaim(seq);
                    self.metrics
                        .actions
                        .with_label_values(&[event.as_str(), &route.name, "queue_full"])
                        .inc();
                    tracing::warn!(hook = %route.name, "hook queue full: the action waits in the journal");
                }
            }
        }
    }
}

impl Worker {
    /// Runs until stopped (or the dispatch side is gone).
    pub async fn run(mut self) {
        loop {
            if *self.stop.borrow() {
                return;
            }
            let backlog = self.claim_backlog();
            if !backlog.is_empty() {
                self.deliver_all(backlog).await;
                continue;
            }
            let first = tokio::select! {
                j = self.rx.recv() => match j {
                    Some(j) => j,
                    None => return,
                },
                _ = tokio::time::sleep(IDLE_RESCAN) => continue,
                _ = self.stop.changed() => return,
            };
            self.metrics.hook_queue_depth.dec();
            let mut batch = vec![first];
            if let Some(window) = self.spec.batch {
                self.collect(&mut batch, window).await;
            }
            self.deliver_all(batch).await;
        }
    }

    fn claim_backlog(&self) -> Vec<Job> {
        self.journal
            .lock()
            .map(|mut j| j.claim_unclaimed(&self.spec.name, BACKLOG_BATCH))
            .unwrap_or_default()
    }

    /// Gathers more jobs for a digest until `window` after the first.
    async fn collect(&mut self, batch: &mut Vec<Job>, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            tokio::select! {
                j = self.rx.recv() => match j {
                    Some(j) => {
                        self.metrics.hook_queue_depth.dec();
                        batch.push(j);
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.stop.changed() => return,
            }
        }
    }

    async fn deliver_all(&mut self, jobs: Vec<Job>) {
        if self.spec.batch.is_some() {
            self.deliver(jobs).await;
        } else {
            for job in jobs {
                self.deliver(vec![job]).await;
            }
        }
    }

    /// Calls the hook with retries; marks the jobs done on success or permanent failure.
    async fn deliver(&mut self, jobs: Vec<Job>) {
        let name = self.spec.name.clone();
        for attempt in 1..=self.spec.max_attempts {
            let t0 = Instant::now();
            let r = self.spec.hook.call(&jobs).await;
            self.metrics
                .hook_duration
                .with_label_values(&[&name])
                .observe(t0.elapsed().as_secs_f64());
            let delay = match r {
                CallResult::Ok => return self.finish(&jobs, Done::Success, "success"),
                CallResult::Permanent(e) => {
                    tracing::error!(hook = %name, error = %e, "hook refused the action for good; not retried");
                    return self.finish(&jobs, Done::Failed, "failure");
                }
                CallResult::Retry(e, after) => {
                    self.count(&jobs, "retry");
                    tracing::warn!(hook = %name, attempt, error = %e, "hook call failed; will retry");
                    backoff(&self.spec, attempt, jobs.first().map_or(0, |j| j.seq))
                        .max(after.unwrap_or_default())
                }
            };
            if attempt == self.spec.max_attempts {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.changed() => return,
            }
        }
        tracing::error!(hook = %name, jobs = jobs.len(), "hook still failing after every attempt: the action stays in the journal; a new round starts after backoff_max");
        self.count(&jobs, "parked");
        self.park(&jobs).await;
    }

    /// After a failed round: waits one `backoff_max`, then hands the jobs back to the journal
    /// backlog, which the worker scans next. Without this, an endpoint down for longer than
    /// one round (about 2 minutes with the defaults) got its actions only at the next start.
    async fn park(&mut self, jobs: &[Job]) {
        tokio::select! {
            _ = tokio::time::sleep(self.spec.backoff_max) => {}
            // Stopping: the jobs stay pending in the journal for the next start.
            _ = self.stop.changed() => return,
        }
        if let Ok(mut j) = self.journal.lock() {
            for job in jobs {
                j.unclaim(job.seq);
            }
        }
    }

    fn finish(&self, jobs: &[Job], done: Done, result: &str) {
        self.count(jobs, result);
        if let Ok(mut j) = self.journal.lock() {
            for job in jobs {
                if let Err(e) = j.done(job.seq, done) {
                    tracing::error!(%e, "writing the journal");
                }
            }
        }
    }

    fn count(&self, jobs: &[Job], result: &str) {
        for job in jobs {
            self.metrics
                .actions
                .with_label_values(&[job.event.as_str(), &self.spec.name, result])
                .inc();
        }
    }
}

/// `backoff · 2^(attempt-1)`, capped, times a jitter factor in [0.5, 1).
pub fn backoff(spec: &HookSpec, attempt: u32, salt: u64) -> Duration {
    let exp = spec
        .backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(spec.backoff_max);
    capped.mul_f64(0.5 + 0.5 * jitter(salt, attempt))
}

/// A cheap pseudo-random number in [0, 1) (splitmix64 of the salt, attempt and clock).
fn jitter(salt: u64, attempt: u32) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let mut z = salt ^ (u64::from(attempt) << 32) ^ nanos;
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
