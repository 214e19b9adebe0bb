//! `[detectors]`: engine limits, and one `[detectors.NAME]` table per detector.
//!
//! This file is the detector registry: the `registry!` list below names every detector once,
//! with the stage it runs in when the pipeline is split (`role = "worker"`) and where its
//! learned state lives. Everything else derives from that line: the `[detectors.NAME]` table
//! (its `Settings`, one file per detector beside this one), the name used as the `detector`
//! label of records and metrics, the engine snapshot's part, and each worker stage's
//! detectors. Adding a detector is its file in `detect/detectors/` (with its settings file
//! here) and one line in the list; `detect`'s tests fail until the engine builds it.

use serde::{Deserialize, Serialize};

/// Which traffic a detector must see, so which stage runs it when the pipeline is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Every event of one token (the `auth.by_token` stage).
    Token,
    /// Every event of one client address (the `auth.by_ip` stage).
    Ip,
    /// All traffic (one active owner over every partition).
    Global,
}

/// Where a detector keeps what it learned, hence its part of the engine snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// A part of the engine's one entry per token (`TokenState`), snapshotted with it.
    PerToken,
    /// Its own bounded maps: the snapshot's `detectors.NAME` part, and the
    /// `tokenwatch_tracked_entities{kind="NAME"}` / `tokenwatch_evictions_total` series.
    Own,
}

/// One detector as the registry declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The stable name (DESIGN §6): the config table, the `detector` label, the snapshot part.
    pub name: &'static str,
    /// The stage that runs it.
    pub stage: Stage,
    /// Where its state lives.
    pub state: StateKind,
}

/// Declares the detectors: `doc  name: Stage, StateKind;` each (see the module docs).
macro_rules! registry {
    ($($(#[$doc:meta])* $name:ident: $stage:ident, $state:ident;)*) => {
        $(pub mod $name;)*

        /// Every detector, in DESIGN order.
        pub const REGISTRY: &[Entry] = &[
            $(Entry { name: stringify!($name), stage: Stage::$stage, state: StateKind::$state },)*
        ];

        /// `[detectors]`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct DetectorsConfig {
            /// Budget for all detector state, in bytes (default 1 GiB); per-key maps are
            /// capped from it and evict the least recently seen keys beyond it.
            pub max_state_bytes: u64,
            /// Events older than the newest seen minus this are counted late and not used
            /// for windows (default 300 s: multi-source and multi-host clock skew).
            pub reorder_tolerance_secs: u64,
            /// Detection records (JSON lines) for `run` (default `detections.jsonl` in the
            /// state directory); safe to rotate by rename or copytruncate.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub output: Option<std::path::PathBuf>,
            /// How often `run` snapshots learned state to the state directory, in seconds
            /// (default 300; also at shutdown and reload).
            pub snapshot_interval_secs: u64,
            $($(#[$doc])* pub $name: $name::Settings,)*
        }

        impl Default for DetectorsConfig {
            fn default() -> Self {
                DetectorsConfig {
                    max_state_bytes: 1 << 30,
                    reorder_tolerance_secs: 300,
                    output: None,
                    snapshot_interval_secs: 300,
                    $($name: Default::default(),)*
                }
            }
        }

        impl DetectorsConfig {
            /// The `enabled` switch of the detector called `name`, if that is a detector.
            fn switch(&self, name: &str) -> Option<bool> {
                match name {
                    $(stringify!($name) => Some(self.$name.enabled),)*
                    _ => None,
                }
            }

            /// The `enabled` switch of the detector called `name`, to change it.
            fn switch_mut(&mut self, name: &str) -> Option<&mut bool> {
                match name {
                    $(stringify!($name) => Some(&mut self.$name.enabled),)*
                    _ => None,
                }
            }
        }
    };
}

registry! {
    /// Rejected/checked ratio over a sliding window, global and per source.
    rejection_ratio: Global, Own;
    /// Many rejected checks from one IP.
    brute_force: Ip, Own;
    /// Many distinct unknown tokens from one IP.
    token_spray: Ip, Own;
    /// Many IPs each trying a few never-seen tokens.
    distributed_spray: Global, Own;
    /// A token's rate far above its own baseline.
    rate_spike: Token, PerToken;
    /// Two uses of a token too far apart for the time between them.
    impossible_travel: Token, PerToken;
    /// A token used from many IPs, networks or countries.
    ip_fanout: Token, PerToken;
    /// Use at hours a token has never been active in.
    off_hours: Token, PerToken;
    /// Repeated use of a revoked or expired token.
    revoked_reuse: Token, Own;
}

/// The registry entry of the detector called `name`.
pub fn entry(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// The detector names, in DESIGN order.
pub fn names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|e| e.name)
}

impl DetectorsConfig {
    /// True if the detector called `name` exists and is enabled.
    pub fn enabled(&self, name: &str) -> bool {
        self.switch(name).unwrap_or(false)
    }

    /// Turns off every detector whose stage `keep` refuses (a worker stage runs only its
    /// own; a detector the config turned off stays off).
    pub fn keep_stages(&mut self, keep: impl Fn(&Entry) -> bool) {
        for e in REGISTRY {
            if !keep(e) {
                if let Some(on) = self.switch_mut(e.name) {
                    *on = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_has_a_table_and_names_are_distinct() {
        let mut cfg = DetectorsConfig::default();
        let mut seen = std::collections::BTreeSet::new();
        for e in REGISTRY {
            assert!(seen.insert(e.name), "{} listed twice", e.name);
            assert!(cfg.enabled(e.name), "{} off by default", e.name);
            assert!(cfg.switch_mut(e.name).is_some());
        }
        // The config's tables are exactly the registry's names (plus the engine limits).
        let toml = toml::to_string(&cfg).unwrap_or_default();
        let table: toml::Table = toml::from_str(&toml).unwrap_or_default();
        let tables: std::collections::BTreeSet<&str> = table
            .iter()
            .filter(|(_, v)| v.is_table())
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(tables, seen);
        cfg.keep_stages(|e| e.stage == Stage::Token);
        assert!(cfg.enabled("rate_spike") && !cfg.enabled("brute_force"));
        assert!(!cfg.enabled("no_such_detector"));
    }
}
