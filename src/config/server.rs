//! `[server]`: where metrics, health and the admin API listen, and whether over TLS.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// PEM certificate chain; with `tls_key` the server speaks HTTPS only (no plain HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert` (PKCS#8, PKCS#1 or SEC1); keep it mode 0600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9847)),
            admin_token: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}
