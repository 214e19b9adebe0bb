//! Configuration: TOML loading, validation (every error at once), secrets.
//!
//! The file's schema (every key optional; `default.toml` documents each one):
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:9847"                   # metrics, health, admin API
//! admin_token = "env:TOKENWATCH_ADMIN_TOKEN"  # optional; admin API disabled without it
//!
//! [state]
//! dir = "/var/lib/tokenwatch"                 # checkpoints, snapshots, journal, fingerprint key
//! checkpoint_interval_ms = 1000
//!
//! [fingerprint]
//! key = "env:TOKENWATCH_FINGERPRINT_KEY"      # optional; else a random key in state.dir/fingerprint.key
//!
//! [[source]]
//! name = "gateway"                  # default "source<N>"; unique; the `source` metric label
//! path = "/var/log/nginx/access.log" # and/or include = ["/var/log/nginx/*.log"]
//! format = "nginx"                  # nginx | json | vault | keycloak | oauth2-proxy | regex
//! log_format = "tokenwatch"         # nginx: tokenwatch | combined | main | a log_format string
//! token_field = "token_id"          # nginx
//! reason_field = "auth_reason"      # nginx
//! client_ip = "peer"                # peer | x_forwarded_for | field:<name>
//! trusted_proxies = ["10.0.0.0/8"]
//! timezone = "UTC"                  # UTC | IANA name | +HH:MM
//! token_kind = "auto"               # auto | id | secret (vault and keycloak default to id)
//! start_at = "end"                  # end | beginning
//! watch = "notify"                  # notify | poll
//! poll_interval_ms = 250
//! max_line_bytes = 102400
//! pattern = '…'                     # regex preset (required there)
//! time_format = "rfc3339"           # regex preset
//! [source.fields]                   # json preset: ts, token, user, ip, method, path, status, outcome, reason
//!
//! [geo]
//! mmdb = []                         # .mmdb paths (MaxMind City/ASN or flat ip-location-db)
//! ipv6_prefix = 64
//!
//! [detectors.rate_spike]            # one table per detector name: enabled, thresholds, cooldown
//! enabled = true
//!
//! [response]
//! mode = "dry-run"                  # off | dry-run | enforce
//! freeze_detectors = ["impossible_travel", "ip_fanout"]
//!
//! [[hook]]
//! type = "webhook"                  # webhook | exec | email
//! url = "https://idp.example.com/revoke"
//! hmac_key = "env:TOKENWATCH_HOOK_KEY"
//! ```
//!
//! The `…Config` types are what serde reads (`deny_unknown_fields`); [`SourceConfig`] builds the
//! runtime [`ParserSpec`](crate::parse::ParserSpec) and
//! [`TailConfig`](crate::source::file::TailConfig). Loading reports every problem as
//! `FILE:LINE:COL: KEY.PATH: reason`.

use std::path::Path;

use serde::{Deserialize, Serialize};

mod authz;
pub mod detectors;
mod doc;
mod error;
mod geo;
mod hooks;
mod kafka;
mod load;
mod response;
mod secret;
mod server;
mod source;
mod state;
mod suggest;
pub mod template;
mod validate;
mod values;

pub use authz::{AuthzConfig, OnMissing, TokenFrom};
pub use detectors::DetectorsConfig;
pub use error::{ConfigError, ConfigErrors};
pub use geo::GeoConfig;
pub use hooks::{HeaderValue, HookConfig, HookEvent, HookKind, SmtpTls, PLACEHOLDERS};
pub use kafka::{host_name, KafkaConfig, OptionValue, ProducerConfig, Role, TopicsConfig};
pub use response::{ResponseConfig, ResponseMode};
pub use secret::{
    MapSecrets, Secret, SecretRef, SecretSource, SystemSecrets, INLINE_SECRET,
    MIN_FINGERPRINT_KEY_BYTES,
};
pub use server::ServerConfig;
pub use source::{FieldsConfig, SourceConfig, SourceKind, TokenKind};
pub use state::{FingerprintConfig, StateConfig};
pub use values::Zone;

/// The embedded default configuration (also the documentation of every key).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Where the embedded default says it came from in messages.
const DEFAULT_ORIGIN: &str = "<embedded default>";

/// A whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `role`: which stages this process runs (default `all`); first, as TOML wants plain
    /// keys before tables.
    pub role: Role,
    /// `[server]`: listen address and admin token.
    pub server: ServerConfig,
    /// `[state]`: the state directory.
    pub state: StateConfig,
    /// `[fingerprint]`: the token fingerprint key.
    pub fingerprint: FingerprintConfig,
    /// `[[source]]` tables, in file order (their index is the `SourceIdx`).
    #[serde(rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// `[geo]`: GeoIP databases and IPv6 grouping.
    pub geo: GeoConfig,
    /// `[detectors.NAME]` tables.
    pub detectors: DetectorsConfig,
    /// `[response]`: response policy.
    pub response: ResponseConfig,
    /// `[[hook]]` tables: where response actions go, in file order.
    #[serde(rename = "hook", skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookConfig>,
    /// `[kafka]`: the broker and topics for the scale-out roles.
    pub kafka: KafkaConfig,
    /// `[authz]`: the forward-auth listener and the deny file for gateways.
    pub authz: AuthzConfig,
    /// Problems found while loading that did not stop it (not part of the config's value).
    #[serde(skip)]
    pub warnings: Vec<ConfigError>,
}

/// Equality of configuration values; load warnings are ignored.
impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.server == other.server
            && self.state == other.state
            && self.fingerprint == other.fingerprint
            && self.sources == other.sources
            && self.geo == other.geo
            && self.detectors == other.detectors
            && self.response == other.response
            && self.hooks == other.hooks
            && self.role == other.role
            && self.kafka == other.kafka
            && self.authz == other.authz
    }
}

impl Config {
    /// Reads and validates the file at `path`; on failure lists every problem.
    pub fn load(path: &Path, secrets: &dyn SecretSource) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text, &origin, secrets),
            Err(e) => Err(ConfigErrors {
                errors: vec![ConfigError {
                    origin,
                    location: None,
                    path: String::new(),
                    message: format!("cannot read config file: {e}"),
                }],
                warnings: Vec::new(),
            }),
        }
    }

    /// Parses and validates `text`; `origin` names it in messages (usually the file path).
    pub fn from_toml(
        text: &str,
        origin: &str,
        secrets: &dyn SecretSource,
    ) -> Result<Config, ConfigErrors> {
        load::from_toml(text, origin, secrets)
    }

    /// The built-in default (one nginx source `demo`, dry-run). It names no secrets and no
    /// files that must exist, so it always loads; a test guards that.
    pub fn embedded_default() -> Config {
        Config::from_toml(DEFAULT_TOML, DEFAULT_ORIGIN, &MapSecrets::new()).unwrap_or_default()
    }

    /// Every key with its value or default, secrets shown as their `env:`/`file:` reference;
    /// loading the text again gives an equal config.
    pub fn to_effective_toml(&self) -> String {
        let body = toml::to_string(self)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"));
        format!(
            "# tokenwatch effective configuration (defaults filled in; secrets shown as references)\n\n{body}"
        )
    }
}
