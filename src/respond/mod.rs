//! Response (issue 4): policy, journal and revoke hooks.
//!
//! ```text
//! Detection ──▶ Decide (rules ▶ allowlists ▶ dedupe ▶ breaker) ──▶ action + reason on the record
//!                  │ freeze / unfreeze / notices
//!                  ▼
//!            journal append (fsync) ──▶ per-hook bounded queue ──▶ worker: call, retry, backoff
//!                                                                   └▶ journal "done"
//! ```
//!
//! [`Responder::start`] builds everything for `run`; [`Responder::policy`] is the
//! [`Decide`] for [`Engine::with_policy`](crate::detect::Engine::with_policy);
//! [`replay_policy`] decides without hooks on event time (deterministic replays);
//! [`ResponderHandle::control`] is the admin API's way in (`server::admin` depends on this
//! module, never the reverse); [`ResponderHandle::frozen_view`] is what gateways enforce.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ResponseMode};
use crate::detect::record::stable_id;
use crate::detect::{Decide, Detection};
use crate::event::EventTime;
use crate::event::Severity;
use crate::metrics::Metrics;

pub mod breaker;
pub mod clock;
pub mod deny_file;
pub mod dispatch;
pub mod frozen;
pub mod hooks;
pub mod journal;
pub mod rules;
pub mod state;
pub mod view;

pub use clock::{Clock, ManualClock, SystemClock};
pub use frozen::FrozenEntry;
pub use hooks::{install_crypto_provider, HookSpec};
pub use journal::Job;
pub use rules::origin;
pub use view::{Deny, Enforcement, FrozenView};

use self::state::{Core, Shared};
use frozen::FrozenSet;
use journal::Journal;

/// The journal file in the state directory.
pub const JOURNAL_FILE: &str = "response-journal.jsonl";
/// The frozen set in the state directory.
pub const FROZEN_FILE: &str = "frozen.json";

/// Why the responder could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RespondError {
    /// The journal or frozen set could not be opened.
    #[error("response state {path}: {source}")]
    State {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A hook could not be built.
    #[error("hook {hook}: {reason}")]
    Hook {
        /// The hook's name.
        hook: String,
        /// What is wrong.
        reason: String,
    },
}

/// Knobs for tests and embedding; [`Responder::start`] uses the defaults.
#[derive(Clone)]
pub struct Options {
    /// Wall clock for TTLs and the breaker window.
    pub clock: Arc<dyn Clock>,
    /// How often TTLs are checked.
    pub tick: Duration,
    /// Hooks added to the configured ones.
    pub extra_hooks: Vec<HookSpec>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(SystemClock),
            tick: Duration::from_secs(1),
            extra_hooks: Vec::new(),
        }
    }
}

/// The response policy with its journal, hooks and frozen set.
pub struct Responder {
    core: Shared,
}

/// Owns the background tasks; also the admin API's way in.
pub struct ResponderHandle {
    core: Shared,
    view: FrozenView,
    journal: Arc<Mutex<Journal>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Responder {
    /// Opens the journal and frozen set in `state_dir`, builds the hooks from `cfg`, spawns
    /// the hook workers and the TTL ticker on `rt`, and retries unfinished actions.
    pub fn start(
        cfg: &Config,
        state_dir: &Path,
        metrics: &Metrics,
        rt: tokio::runtime::Handle,
    ) -> Result<(Responder, ResponderHandle), RespondError> {
        Responder::start_with(cfg, state_dir, metrics, rt, Options::default())
    }

    /// [`Responder::start`] with explicit [`Options`].
    pub fn start_with(
        cfg: &Config,
        state_dir: &Path,
        metrics: &Metrics,
        rt: tokio::runtime::Handle,
        opts: Options,
    ) -> Result<(Responder, ResponderHandle), RespondError> {
        install_crypto_provider();
        let admin_url = format!("http://{}", cfg.server.listen);
        let mut specs = cfg
            .hooks
            .iter()
            .map(|h| HookSpec::build(h, &admin_url))
            .collect::<Result<Vec<_>, _>>()?;
        specs.extend(opts.extra_hooks);
        let state = |name: &str| {
            let path = state_dir.join(name);
            move |source| RespondError::State {
                path: path.display().to_string(),
                source,
            }
        };
        let journal_path = state_dir.join(JOURNAL_FILE);
        let journal = Journal::open(&journal_path, cfg.response.journal_compact_after)
            .map_err(state(JOURNAL_FILE))?;
        if journal.bad_lines() > 0 {
            // Damaged lines were skipped (the good ones kept; see `journal`): count them.
            metrics.state_corrupt(
                crate::metrics::StateFile::Journal,
                journal.bad_lines() as u64,
            );
        }
        let pending = journal.pending();
        let journal = Arc::new(Mutex::new(journal));
        let mut frozen =
            FrozenSet::open(&state_dir.join(FROZEN_FILE)).map_err(state(FROZEN_FILE))?;
        let view = FrozenView::new();
        frozen.attach(view.clone());
        let (stop, stop_rx) = watch::channel(false);
        let (dispatch, workers) = dispatch::build(
            specs,
            cfg.response.queue_capacity,
            journal.clone(),
            metrics,
            &stop_rx,
        );
        let mut core = Core::new(
            &cfg.response,
            frozen,
            Some(opts.clock),
            Some(dispatch),
            Some(metrics.clone()),
        );
        core.recover(&pending);
        // Recovered freezes are in: `/authz` may answer now.
        view.mark_authoritative();
        if !pending.is_empty() {
            tracing::info!(
                pending = pending.len(),
                "retrying unfinished response actions from the journal"
            );
        }
        let core = Arc::new(Mutex::new(core));
        let mut tasks: Vec<JoinHandle<()>> =
            workers.into_iter().map(|w| rt.spawn(w.run())).collect();
        tasks.push(rt.spawn(ticker(core.clone(), opts.tick, stop_rx)));
        let handle = ResponderHandle {
            core: core.clone(),
            view,
            journal,
            stop,
            tasks,
        };
        Ok((Responder { core }, handle))
    }

    /// The [`Decide`] for `Engine::with_policy` (may be called again after a reload: all
    /// policies share the same state).
    pub fn policy(&self) -> Box<dyn Decide> {
        Box::new(Policy(self.core.clone()))
    }
}

/// A policy for `replay` without `--with-hooks`: the same rules on event time, `enforce`
/// downgraded to `dry-run`, no journal, no hooks, nothing persisted.
pub fn replay_policy(cfg: &Config, metrics: Option<&Metrics>) -> Box<dyn Decide> {
    let mut rc = cfg.response.clone();
    if rc.mode == ResponseMode::Enforce {
        rc.mode = ResponseMode::DryRun;
    }
    let core = Core::new(&rc, FrozenSet::in_memory(), None, None, metrics.cloned());
    Box::new(Policy(Arc::new(Mutex::new(core))))
}

/// The pipeline's view of the core.
struct Policy(Shared);

impl Decide for Policy {
    fn decide(&mut self, d: &mut Detection) {
        if let Ok(mut core) = self.0.lock() {
            core.decide(d);
        }
    }
}

async fn ticker(core: Shared, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if let Ok(mut c) = core.lock() {
            c.expire();
        }
    }
}

/// The admin API's handle on the policy (cheap to clone).
#[derive(Clone)]
pub struct Control {
    core: Shared,
    view: Option<FrozenView>,
}

impl Control {
    /// Freezes `token` on request, through the same policy and hooks. `detector` is
    /// [`origin::MANUAL`] or [`origin::ALERTMANAGER`]; `key` makes the record id unique
    /// per request (the Alertmanager fingerprint, or the time).
    pub fn freeze(
        &self,
        token: &str,
        detector: &str,
        key: &str,
        evidence: serde_json::Value,
    ) -> Detection {
        let ts = EventTime::now();
        let mut d = Detection {
            ts,
            detector: detector.to_string(),
            severity: Severity::High,
            token: Some(token.to_string()),
            ip: None,
            user: None,
            source: None,
            action: crate::detect::Action::Alert,
            reason: None,
            evidence,
            id: stable_id(detector, &format!("{token}\0{key}"), ts),
        };
        self.decide(&mut d);
        d
    }

    /// Runs the policy on a prepared record (e.g. with user or IP from an alert's labels).
    pub fn decide(&self, d: &mut Detection) {
        if let Ok(mut c) = self.core.lock() {
            c.decide(d);
        }
    }

    /// Unfreezes `token`; `None` if it was not frozen.
    pub fn unfreeze(&self, token: &str) -> Option<FrozenEntry> {
        self.core
            .lock()
            .ok()
            .and_then(|mut c| c.unfreeze(token, "admin"))
    }

    /// Every frozen token.
    pub fn frozen(&self) -> Vec<FrozenEntry> {
        self.core.lock().map(|c| c.frozen()).unwrap_or_default()
    }

    /// Where enforcement at the gateways stands (`None` without a view: replay, tests).
    pub fn enforcement(&self) -> Option<Enforcement> {
        let now = EventTime::now().as_millis();
        self.view.as_ref().map(|v| v.enforcement(now))
    }

    /// Runs TTL expiry now (the ticker does it every second).
    pub fn expire(&self) {
        if let Ok(mut c) = self.core.lock() {
            c.expire();
        }
    }
}

impl ResponderHandle {
    /// The admin API's handle on the policy.
    pub fn control(&self) -> Control {
        Control {
            core: self.core.clone(),
            view: Some(self.view.clone()),
        }
    }

    /// The frozen set as the gateways see it (`/authz`, deny file, `frozen` topic).
    pub fn frozen_view(&self) -> FrozenView {
        self.view.clone()
    }

    /// Stops the workers (in-flight calls get a short grace; unfinished actions stay in the
    /// journal for the next start) and syncs the journal.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Ok(mut j) = self.journal.lock() {
            if let Err(e) = j.sync() {
                tracing::error!(%e, "syncing the response journal");
            }
        }
    }
}
