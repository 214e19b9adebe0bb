//! Hooks: where actions go. Each hook is called with jobs from its own queue; the
//! dispatcher handles retries, backoff and the journal.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{HookConfig, HookEvent, HookKind};

use super::journal::Job;
use super::RespondError;

pub mod email;
pub mod exec;
pub mod payload;
pub mod webhook;

/// What one call attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// Done.
    Ok,
    /// Try again later (after at least the given delay, if the receiver asked for one).
    Retry(String, Option<Duration>),
    /// Refused for good; not retried.
    Permanent(String),
}

/// A boxed future, so hooks can be trait objects.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = CallResult> + Send + 'a>>;

/// One hook implementation.
pub trait Hook: Send + Sync {
    /// Delivers `jobs` (one, or an e-mail digest's batch) in one attempt.
    fn call<'a>(&'a self, jobs: &'a [Job]) -> CallFuture<'a>;
}

/// A hook with its dispatch settings.
#[derive(Clone)]
pub struct HookSpec {
    /// The configured name (metric label).
    pub name: String,
    /// The events it receives.
    pub events: Vec<HookEvent>,
    /// Attempts per round; a failed round parks the job for `backoff_max`, then retries it.
    pub max_attempts: u32,
    /// First retry delay.
    pub backoff: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Collect jobs for this long and deliver them together (e-mail digests).
    pub batch: Option<Duration>,
    /// The implementation.
    pub hook: Arc<dyn Hook>,
}

impl HookSpec {
    /// Builds a hook from its config; `admin_url` is shown in e-mails as the unfreeze place.
    pub fn build(cfg: &HookConfig, admin_url: &str) -> Result<HookSpec, RespondError> {
        let hook: Arc<dyn Hook> = match cfg.kind {
            Some(HookKind::Webhook) => Arc::new(webhook::Webhook::new(cfg)?),
            Some(HookKind::Exec) => Arc::new(exec::Exec::new(cfg)?),
            Some(HookKind::Email) => Arc::new(email::Email::new(cfg, admin_url)?),
            None => {
                return Err(RespondError::Hook {
                    hook: cfg.name.clone(),
                    reason: "no type".into(),
                })
            }
        };
        Ok(HookSpec {
            name: cfg.name.clone(),
            events: cfg.events(),
            max_attempts: cfg.max_attempts.max(1),
            backoff: Duration::from_millis(cfg.backoff_ms),
            backoff_max: Duration::from_millis(cfg.backoff_max_ms.max(cfg.backoff_ms)),
            batch: (cfg.kind == Some(HookKind::Email))
                .then(|| Duration::from_secs(cfg.digest_secs.max(1))),
            hook,
        })
    }

    /// Wraps a custom implementation (tests, embedding).
    pub fn custom(name: &str, events: Vec<HookEvent>, hook: Arc<dyn Hook>) -> HookSpec {
        HookSpec {
            name: name.to_string(),
            events,
            max_attempts: 8,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            batch: None,
            hook,
        }
    }
}

/// Installs rustls's `ring` provider as the process default, once (reqwest and lettre use it).
pub fn install_crypto_provider() {
    // Err means a provider is already installed: exactly what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
