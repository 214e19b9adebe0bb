//! `tokenwatch frozen | freeze | unfreeze`: a small client for the running daemon's admin
//! API, so an operator can see and undo decisions without hand-writing HTTP.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::build::load_config;
use super::CliError;

/// Where the daemon is and how to authenticate.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Config file of the daemon (its `[server] listen` and `admin_token` are used).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Base URL of the daemon (default: from the config's `[server] listen`).
    #[arg(long)]
    pub url: Option<String>,
}

/// Arguments of `frozen`.
#[derive(Debug, clap::Args)]
pub struct FrozenArgs {
    /// The daemon.
    #[command(flatten)]
    pub target: Target,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `freeze` and `unfreeze`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The daemon.
    #[command(flatten)]
    pub target: Target,
    /// The token as tokenwatch shows it: its id, or `fp:…` (see `tokenwatch fingerprint`).
    pub token: String,
    /// Why (freeze only; recorded in the detection's evidence).
    #[arg(long)]
    pub reason: Option<String>,
}

/// A resolved endpoint.
struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    fn new(t: &Target) -> Result<Client, CliError> {
        let cfg = load_config(t.config.as_deref())?;
        let token = cfg
            .server
            .admin_token
            .as_ref()
            .and_then(|s| s.expose().map(str::to_string))
            .or_else(|| std::env::var("TOKENWATCH_ADMIN_TOKEN").ok())
            .ok_or_else(|| {
                CliError::Config(
                    "no admin token: set [server] admin_token in the config (-c) or \
                     TOKENWATCH_ADMIN_TOKEN"
                        .into(),
                )
            })?;
        let base = t
            .url
            .clone()
            .unwrap_or_else(|| format!("http://{}", cfg.server.listen));
        crate::respond::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// Sends one request; returns (status, JSON body).
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let url = format!("{}{path}", self.base);
        rt.block_on(async {
            let mut req = self.http.request(method, &url).bearer_auth(&self.token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.with_context(|| format!("calling {url}"))?;
            let status = resp.status().as_u16();
            let json = resp.json().await.unwrap_or(serde_json::Value::Null);
            Ok((status, json))
        })
    }
}

/// Percent-encodes a token for a path segment (ids are usually plain, fingerprints have `:`).
fn segment(token: &str) -> String {
    token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn fail(status: u16, body: &serde_json::Value) -> CliError {
    let msg = body["error"].as_str().unwrap_or("request failed");
    CliError::Runtime(anyhow::anyhow!("HTTP {status}: {msg}"))
}

/// `tokenwatch frozen`: the frozen tokens.
pub fn frozen(args: FrozenArgs) -> Result<(), CliError> {
    let c = Client::new(&args.target)?;
    let (status, body) = c.call(reqwest::Method::GET, "/api/v1/frozen", None)?;
    if status != 200 {
        return Err(fail(status, &body));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{body}").context("writing")?;
        return Ok(());
    }
    let list = body["frozen"].as_array().cloned().unwrap_or_default();
    writeln!(
        out,
        "{:<24} {:<25} {:<18} {:<25} id",
        "token", "since", "detector", "until"
    )
    .context("writing")?;
    for e in &list {
        let s = |k: &str| e[k].as_str().unwrap_or("-").to_string();
        writeln!(
            out,
            "{:<24} {:<25} {:<18} {:<25} {}",
            s("token"),
            s("since"),
            s("detector"),
            s("until"),
            s("id")
        )
        .context("writing")?;
    }
    writeln!(out, "{} frozen", list.len()).context("writing")?;
    writeln!(out, "{}", enforcement_line(&body["enforcement"])).context("writing")?;
    Ok(())
}

/// One line on enforcement at the gateways, from the API's `enforcement` field.
fn enforcement_line(e: &serde_json::Value) -> String {
    let entries = e["entries"].as_u64().unwrap_or(0);
    match (e["authz_listen"].as_str(), e["loaded"].as_bool()) {
        (Some(addr), Some(true)) => {
            format!("enforcement: /authz on {addr}, serving {entries} entries")
        }
        (Some(addr), _) => {
            format!("enforcement: /authz on {addr}, NOT READY (set not loaded; answers 503)")
        }
        (None, _) if e.is_null() => "enforcement: unknown (daemon without /authz support)".into(),
        (None, _) => format!(
            "enforcement: /authz off ([authz] listen not set); {entries} entries in the frozen set"
        ),
    }
}

/// `tokenwatch freeze TOKEN`: a manual freeze, through the same policy and hooks.
pub fn freeze(args: TokenArgs) -> Result<(), CliError> {
    let c = Client::new(&args.target)?;
    let body = serde_json::json!({ "reason": args.reason });
    let path = format!("/api/v1/frozen/{}", segment(&args.token));
    let (status, body) = c.call(reqwest::Method::POST, &path, Some(body))?;
    if status != 200 {
        return Err(fail(status, &body));
    }
    let action = body["action"].as_str().unwrap_or("?");
    let reason = body["reason"].as_str().unwrap_or("");
    println!("{}: {action} {reason}", args.token);
    Ok(())
}

/// `tokenwatch unfreeze TOKEN`: lifts a freeze (the unfreeze hooks are called).
pub fn unfreeze(args: TokenArgs) -> Result<(), CliError> {
    let c = Client::new(&args.target)?;
    let path = format!("/api/v1/frozen/{}", segment(&args.token));
    let (status, body) = c.call(reqwest::Method::DELETE, &path, None)?;
    if status != 200 {
        return Err(fail(status, &body));
    }
    println!("{}: unfrozen", args.token);
    Ok(())
}
