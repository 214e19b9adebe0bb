//! The policy state shared by the pipeline's [`Decide`](crate::detect::Decide), the admin
//! API and the TTL ticker: rules, breaker, frozen set, and the way to the hooks.

use std::sync::{Arc, Mutex};

use crate::config::{HookEvent, ResponseConfig, ResponseMode};
use crate::detect::record::stable_id;
use crate::detect::{Action, Detection};
use crate::event::EventTime;
use crate::event::Severity;
use crate::metrics::{Metrics, StateFile};

use super::breaker::{Admit, Breaker};
use super::clock::Clock;
use super::dispatch::Dispatch;
use super::frozen::{FrozenEntry, FrozenSet};
use super::rules::{origin, Rules, Verdict};

/// See the module docs.
pub struct Core {
    rules: Rules,
    breaker: Breaker,
    /// Enforced freezes (persisted).
    frozen: FrozenSet,
    /// Dry-run "would freeze" tokens, for the same dedupe (memory only).
    would: FrozenSet,
    ttl_ms: Option<i64>,
    max_freezes: u32,
    window_secs: u64,
    /// The last frozen-set write failed: memory is ahead of the disk until a retry works.
    frozen_dirty: bool,
    /// `None`: use each record's event time (replay: deterministic).
    clock: Option<Arc<dyn Clock>>,
    dispatch: Option<Dispatch>,
    metrics: Option<Metrics>,
}

/// The core behind a lock, as every user holds it.
pub type Shared = Arc<Mutex<Core>>;

impl Core {
    /// Builds the policy state; `frozen` is the (possibly persisted) set.
    pub fn new(
        cfg: &ResponseConfig,
        frozen: FrozenSet,
        clock: Option<Arc<dyn Clock>>,
        dispatch: Option<Dispatch>,
        metrics: Option<Metrics>,
    ) -> Core {
        let window_ms = i64::try_from(cfg.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let ttl = i64::try_from(cfg.freeze_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut core = Core {
            rules: Rules::new(cfg),
            breaker: Breaker::new(cfg.max_freezes, window_ms),
            frozen,
            would: FrozenSet::in_memory(),
            ttl_ms: (ttl > 0).then_some(ttl),
            max_freezes: cfg.max_freezes,
            window_secs: cfg.window_secs,
            frozen_dirty: false,
            clock,
            dispatch,
            metrics,
        };
        if let (Some(m), Some(_)) = (&core.metrics, core.frozen.rejected()) {
            m.state_corrupt(StateFile::Frozen, 1);
        }
        core.seed_breaker(window_ms);
        core.publish(core.now(None));
        core
    }

    /// Counts the freezes of the persisted set made within the window against the cap, so
    /// a restart (or a standby responder taking over the same state) does not hand out a
    /// fresh allowance of freezes.
    fn seed_breaker(&mut self, window_ms: i64) {
        if self.clock.is_none() {
            return;
        }
        let now = self.now(None);
        let mut recent: Vec<i64> = self
            .frozen
            .list()
            .iter()
            .map(|e| e.since_ms)
            .filter(|&t| t <= now && now.saturating_sub(t) < window_ms)
            .collect();
        recent.sort_unstable();
        for t in recent {
            let _ = self.breaker.admit(t);
        }
    }

    /// Tells the metrics (and so `/readyz`) how a write of the frozen set went (only call it
    /// when a write happened). A failed write keeps the change in memory (it is in force);
    /// the ticker retries it, and any later write carries it too.
    fn persisted(&mut self, r: std::io::Result<()>, doing: &str) {
        self.frozen_dirty = r.is_err();
        if let Some(m) = &self.metrics {
            m.state_write(StateFile::Frozen, r.as_ref().map(|_| ()));
        }
        if let Err(e) = r {
            tracing::error!(%e, "writing the frozen set {doing}");
        }
    }

    /// The configured mode.
    pub fn mode(&self) -> ResponseMode {
        self.rules.mode
    }

    fn now(&self, d: Option<&Detection>) -> i64 {
        match (&self.clock, d) {
            (Some(c), _) => c.now_ms(),
            (None, Some(d)) => d.ts.as_millis(),
            (None, None) => EventTime::now().as_millis(),
        }
    }

    /// Sets `d.action` and `d.reason`, records a freeze, queues hook work. Never waits on a
    /// hook; the only I/O is the journal append and the frozen-set write of a freeze,
    /// which the breaker bounds.
    pub fn decide(&mut self, d: &mut Detection) {
        let now = self.now(Some(d));
        self.expire_at(now);
        let (action, reason) = match self.rules.verdict(d) {
            Verdict::Alert(r) => (Action::Alert, Some(r.to_string())),
            Verdict::Allowed(r) => (Action::Suppressed, Some(r)),
            Verdict::Freeze => self.freeze_candidate(d, now),
        };
        d.action = action;
        d.reason = reason;
        self.count_decision(action);
        match action {
            Action::Alert => self.submit(HookEvent::Alert, d),
            Action::WouldFreeze => self.record_freeze(d, now, HookEvent::WouldFreeze),
            Action::Freeze => self.record_freeze(d, now, HookEvent::Freeze),
            Action::Suppressed => {}
        }
        self.publish(now);
    }

    fn freeze_candidate(&mut self, d: &Detection, now: i64) -> (Action, Option<String>) {
        let token = d.token.as_deref().unwrap_or_default();
        let set = if self.rules.mode == ResponseMode::Enforce {
            &self.frozen
        } else {
            &self.would
        };
        if set.get(token).is_some() {
            return (Action::Suppressed, Some("already_frozen".into()));
        }
        match self.breaker.admit(now) {
            Admit::Yes if self.rules.mode == ResponseMode::Enforce => (Action::Freeze, None),
            Admit::Yes => (Action::WouldFreeze, Some("dry_run".into())),
            Admit::No { opened } => {
                tracing::warn!(id = %d.id, detector = %d.detector, "freeze suppressed by the circuit breaker (rate_cap)");
                if opened {
                    self.breaker_opened(d, now);
                }
                (Action::Suppressed, Some("rate_cap".into()))
            }
        }
    }

    fn breaker_opened(&mut self, first: &Detection, now: i64) {
        tracing::error!(
            max_freezes = self.max_freezes,
            window_secs = self.window_secs,
            "FREEZE CIRCUIT BREAKER OPEN: more freezes than the cap were asked for; further freezes are suppressed (rate_cap) until the window has room. Check for a mass false positive."
        );
        let notice = Detection {
            ts: EventTime::from_millis(now),
            detector: origin::BREAKER.into(),
            severity: Severity::High,
            token: None,
            ip: None,
            user: None,
            source: None,
            action: Action::Suppressed,
            reason: Some("rate_cap".into()),
            evidence: serde_json::json!({
                "mode": self.rules.mode.name(),
                "max_freezes": self.max_freezes,
                "window_secs": self.window_secs,
                "first_suppressed": {"id": first.id, "detector": first.detector, "token": first.token},
            }),
            id: stable_id(origin::BREAKER, "global", EventTime::from_millis(now)),
        };
        self.submit(HookEvent::Breaker, &notice);
    }

    /// Journal first (inside `submit`), then the frozen set: a crash in between leaves a
    /// pending journal entry that re-freezes at start.
    fn record_freeze(&mut self, d: &Detection, now: i64, event: HookEvent) {
        self.submit(event, d);
        let entry = FrozenEntry {
            token: d.token.clone().unwrap_or_default(),
            since_ms: now,
            until_ms: self.ttl_ms.map(|t| now.saturating_add(t)),
            detection: d.clone(),
        };
        if event == HookEvent::Freeze {
            let r = self.frozen.insert(entry);
            self.persisted(r, "(the freeze stands; it is in the journal)");
        } else {
            let _ = self.would.insert(entry);
        }
    }

    /// Unfreezes `token` (admin API or TTL) and tells the unfreeze hooks; `None` if it was
    /// not frozen.
    pub fn unfreeze(&mut self, token: &str, why: &str) -> Option<FrozenEntry> {
        let (removed, saved) = self.frozen.remove(token);
        if removed.is_some() {
            self.persisted(saved, "after an unfreeze");
        }
        let _ = self.would.remove(token);
        if let Some(e) = &removed {
            self.announce_unfreeze(e, why);
        }
        self.publish(self.now(None));
        removed
    }

    fn announce_unfreeze(&mut self, e: &FrozenEntry, why: &str) {
        tracing::info!(token = %e.token, why, "token unfrozen");
        let mut d = e.detection.clone();
        d.reason = Some(format!("unfreeze:{why}"));
        self.count(HookEvent::Unfreeze.as_str(), "none", "decided");
        self.submit(HookEvent::Unfreeze, &d);
    }

    /// Unfreezes every token whose TTL ran out, and retries a failed frozen-set write (the
    /// ticker calls this every second).
    pub fn expire(&mut self) {
        let now = self.now(None);
        // Retries quietly; only success is news (the failure was logged and counted once).
        if self.frozen_dirty && self.frozen.persist().is_ok() {
            tracing::info!("the frozen set is written again");
            self.persisted(Ok(()), "");
        }
        self.expire_at(now);
        self.publish(now);
    }

    fn expire_at(&mut self, now: i64) {
        let _ = self.would.take_expired(now);
        let (expired, saved) = self.frozen.take_expired(now);
        if !expired.is_empty() {
            self.persisted(saved, "after TTL expiry");
        }
        for e in expired {
            self.announce_unfreeze(&e, "ttl");
        }
    }

    /// Re-freezes tokens named by pending freeze jobs that the frozen set lacks (a crash
    /// between journal append and frozen-set write).
    pub fn recover(&mut self, pending: &[super::journal::Job]) {
        for j in pending.iter().filter(|j| j.event == HookEvent::Freeze) {
            let Some(token) = j.detection.token.clone() else {
                continue;
            };
            if self.frozen.get(&token).is_none() {
                let now = self.now(None);
                let entry = FrozenEntry {
                    token,
                    since_ms: now,
                    until_ms: self.ttl_ms.map(|t| now.saturating_add(t)),
                    detection: j.detection.clone(),
                };
                let r = self.frozen.insert(entry);
                self.persisted(r, "during recovery");
            }
        }
        self.publish(self.now(None));
    }

    /// Frozen tokens (enforce mode).
    pub fn frozen(&self) -> Vec<FrozenEntry> {
        self.frozen.list()
    }

    fn submit(&mut self, event: HookEvent, d: &Detection) {
        if let Some(dispatch) = &mut self.dispatch {
            dispatch.submit(event, d);
        }
    }

    fn count_decision(&self, a: Action) {
        let name = match a {
            Action::Alert => "alert",
            Action::Freeze => "freeze",
            Action::WouldFreeze => "would_freeze",
            Action::Suppressed => "suppressed",
        };
        self.count(name, "none", "decided");
    }

    fn count(&self, action: &str, hook: &str, result: &str) {
        if let Some(m) = &self.metrics {
            m.actions.with_label_values(&[action, hook, result]).inc();
        }
    }

    fn publish(&mut self, now: i64) {
        let open = self.breaker.is_open(now);
        if let Some(m) = &self.metrics {
            m.frozen_tokens
                .set(i64::try_from(self.frozen.len()).unwrap_or(i64::MAX));
            m.breaker_open.set(i64::from(open));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::clock::ManualClock;

    fn freeze_record(token: &str) -> Detection {
        Detection {
            ts: EventTime::from_millis(0),
            detector: "ip_fanout".into(),
            severity: Severity::High,
            token: Some(token.into()),
            ip: None,
            user: None,
            source: None,
            action: Action::Alert,
            reason: None,
            evidence: serde_json::json!({}),
            id: format!("id-{token}"),
        }
    }

    #[test]
    fn failed_frozen_write_is_reported_until_a_retry_succeeds() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        // The directory does not exist yet: every write fails, as on a read-only disk.
        let sub = dir.path().join("later");
        let path = sub.join("frozen.json");
        let cfg = ResponseConfig {
            mode: ResponseMode::Enforce,
            ..ResponseConfig::default()
        };
        let m = Metrics::new();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_000));
        let frozen = FrozenSet::open(&path)?;
        let mut core = Core::new(&cfg, frozen, Some(clock), None, Some(m.clone()));
        let mut d = freeze_record("tok_a");
        core.decide(&mut d);
        assert_eq!(d.action, Action::Freeze, "the freeze stands");
        assert!(m
            .state_unwritable()
            .is_some_and(|w| w.starts_with("frozen")));
        // Ticks while still failing, and an unfreeze of an unknown token, change nothing.
        core.expire();
        assert!(core.unfreeze("tok_unknown", "admin").is_none());
        assert!(m.state_unwritable().is_some());
        std::fs::create_dir(&sub)?;
        core.expire();
        assert_eq!(m.state_unwritable(), None);
        assert!(FrozenSet::open(&path)?.get("tok_a").is_some());
        Ok(())
    }
}
