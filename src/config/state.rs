//! `[state]` and `[fingerprint]`: where durable state lives and how tokens are fingerprinted.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// `[state]` as read from the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Directory for checkpoints, snapshots, the action journal and the generated fingerprint key
    /// (default `/var/lib/tokenwatch`).
    pub dir: PathBuf,
    /// How often file checkpoints are written, in milliseconds (default 1000; at least 1).
    pub checkpoint_interval_ms: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("/var/lib/tokenwatch"),
            checkpoint_interval_ms: 1000,
        }
    }
}

impl StateConfig {
    /// The checkpoint period as a duration.
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }
}

/// `[fingerprint]` as read from the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FingerprintConfig {
    /// HMAC key for token fingerprints (`env:NAME` or `file:PATH`); when absent a random key is
    /// created once in `state.dir/fingerprint.key` (mode 0600) and reused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
}
