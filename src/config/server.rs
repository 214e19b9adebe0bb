//! `[server]`: where metrics, health and the admin API listen.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::secret::Secret;
use super::values;

/// `[server]` as read from the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for `/metrics`, `/healthz`, `/readyz` and the admin API (default `127.0.0.1:9847`).
    #[serde(deserialize_with = "values::socket_addr")]
    pub listen: SocketAddr,
    /// Bearer token for the admin API (`env:NAME` or `file:PATH`); the admin API is off without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9847)),
            admin_token: None,
        }
    }
}
