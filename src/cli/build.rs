//! Shared construction for the verbs: config loading with exit-code mapping, parsers per
//! source, the fingerprint key.

use std::path::Path;

use anyhow::Context;

use super::CliError;
use crate::config::{Config, SystemSecrets};
use crate::enrich::{fingerprint, Fingerprinter};
use crate::metrics::Metrics;
use crate::pipeline::SourceStage;

/// Loads `path` (or the embedded default when `None`); every error at once, exit code 2.
pub fn load_config(path: Option<&Path>) -> Result<Config, CliError> {
    let Some(path) = path else {
        return Ok(Config::embedded_default());
    };
    let cfg = Config::load(path, &SystemSecrets).map_err(|e| CliError::Config(e.to_string()))?;
    Ok(cfg)
}

/// What the verbs build from a config.
pub struct Built {
    /// One parse stage per `[[source]]`, indexed like the config's list.
    pub stages: Vec<SourceStage>,
}

/// Builds one parse stage per source, reporting every invalid source at once.
pub fn build_stages(cfg: &Config, metrics: &Metrics) -> Result<Vec<SourceStage>, CliError> {
    let mut stages = Vec::with_capacity(cfg.sources.len());
    let mut errors = Vec::new();
    for src in &cfg.sources {
        match crate::parse::build(&src.parser_spec()) {
            Ok(parser) => stages.push(SourceStage {
                name: src.name.clone(),
                parser,
                token_kind: src.token_kind(),
                metrics: metrics.source(&src.name),
            }),
            Err(e) => errors.push(format!("source {:?}: {e}", src.name)),
        }
    }
    if errors.is_empty() {
        Ok(stages)
    } else {
        Err(CliError::Config(errors.join("\n")))
    }
}

/// The fingerprint key: the configured secret, else `state.dir/fingerprint.key` (created
/// when `create` is set and missing). `None` when neither exists and creation is off.
pub fn fingerprint_key(cfg: &Config, create: bool) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(k) = cfg.fingerprint.key.as_ref().and_then(|s| s.expose()) {
        return Ok(Some(k.as_bytes().to_vec()));
    }
    let dir = &cfg.state.dir;
    if create {
        let key = fingerprint::load_or_create_key(dir)
            .with_context(|| format!("fingerprint key in {}", dir.display()))?;
        return Ok(Some(key));
    }
    fingerprint::read_key(&dir.join(fingerprint::KEY_FILE))
        .with_context(|| format!("reading fingerprint key in {}", dir.display()))
}

/// A fingerprinter for offline verbs (replay, parse, fingerprint): the configured or stored
/// key, else a key created in the state directory if it is writable, else a random key for
/// this run only, with a warning (fingerprints then differ between runs).
pub fn offline_fingerprinter(cfg: &Config) -> anyhow::Result<Fingerprinter> {
    if let Some(k) = fingerprint_key(cfg, false)? {
        return Ok(Fingerprinter::new(&k));
    }
    match fingerprint_key(cfg, true) {
        Ok(Some(k)) => Ok(Fingerprinter::new(&k)),
        _ => {
            tracing::warn!(
                "no fingerprint key configured and state dir {} not writable: using a one-off key; \
                 fingerprints will differ between runs (set [fingerprint] key)",
                cfg.state.dir.display()
            );
            let tmp = std::env::temp_dir().join(format!("tokenwatch-key-{}", std::process::id()));
            let k = fingerprint::load_or_create_key(&tmp)?;
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(Fingerprinter::new(&k))
        }
    }
}

/// The GeoIP databases for `cfg` plus `--geoip` paths (else the standard GeoLite2 places).
/// Without a usable database (none, missing or corrupt), travel and country features are
/// off with one clear warning naming the files, and everything else runs.
pub fn open_geo(
    cfg: &Config,
    extra: &[std::path::PathBuf],
) -> anyhow::Result<Option<std::sync::Arc<dyn crate::enrich::geo::GeoLookup>>> {
    use crate::enrich::geo;
    let mut paths = cfg.geo.mmdb.clone();
    paths.extend(extra.iter().cloned());
    if paths.is_empty() {
        paths = geo::default_paths();
    }
    let (found, missing): (Vec<_>, Vec<_>) = paths.into_iter().partition(|p| p.is_file());
    let missing: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
    match geo::open(&found) {
        Ok(g) => {
            if !missing.is_empty() {
                tracing::warn!(?missing, "GeoIP database missing; using the others");
            }
            Ok(Some(g))
        }
        Err(geo::GeoError::NoDatabase) if missing.is_empty() => {
            tracing::warn!(
                "no GeoIP database (--geoip or [geo] mmdb): impossible_travel and country \
                 features are off"
            );
            Ok(None)
        }
        Err(geo::GeoError::NoDatabase) => {
            tracing::warn!(
                ?missing,
                "GeoIP database missing: impossible_travel and country features are off"
            );
            Ok(None)
        }
        Err(e) => {
            // A corrupt or foreign file must not keep the daemon from running: everything
            // but location works without it.
            tracing::warn!(error = %e, "GeoIP database unusable: impossible_travel and country features are off");
            Ok(None)
        }
    }
}
