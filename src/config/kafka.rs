//! `role` and `[kafka]`: which part of the pipeline this process runs, and the broker it
//! talks to when it is one of several (DESIGN §14).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::doc::Seg;
use super::secret::{Secret, SecretRef, SecretSource, INLINE_SECRET};
use super::suggest::unknown_choice;

/// Which stages this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(try_from = "String", into = "String")]
pub enum Role {
    /// Everything in one process (the default; no broker).
    #[default]
    All,
    /// Tail, parse, enrich, count; publish events to Kafka.
    Edge,
    /// Consume events, detect, publish detections (phase 2).
    Worker,
    /// Consume detections; policy, journal, hooks (phase 2).
    Responder,
}

impl Role {
    /// Every role with its config name.
    pub const ALL: [(Role, &'static str); 4] = [
        (Role::All, "all"),
        (Role::Edge, "edge"),
        (Role::Worker, "worker"),
        (Role::Responder, "responder"),
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        Role::ALL
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("all", |(_, n)| n)
    }

    /// True for the roles that talk to a broker.
    pub fn needs_broker(self) -> bool {
        self != Role::All
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for Role {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Role::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(r, _)| *r)
            .ok_or_else(|| unknown_choice("role", &s, &Role::ALL.map(|(_, n)| n)))
    }
}

impl From<Role> for String {
    fn from(r: Role) -> String {
        r.name().to_string()
    }
}

/// `[kafka]` as read from the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port` each (required by every role but `all`).
    pub brokers: Vec<String>,
    /// This edge's id, part of every event id (default: the host name).
    pub edge_id: String,
    /// Consumer groups are `<group_prefix>-token`, `-ip`, `-global` and `-respond` (default
    /// `tokenwatch`).
    pub group_prefix: String,
    /// Topic names.
    pub topics: TopicsConfig,
    /// Producer limits.
    pub producer: ProducerConfig,
    /// How long a worker holds each event to put edges' interleaved events back in time
    /// order, in ms (default 1000; 0 turns the reorder buffer off).
    pub reorder_ms: u64,
    /// Whether this worker may be elected to run the global stage (distributed_spray,
    /// rejection_ratio over every `by_ip` partition; default true). At least one worker
    /// of the cluster must, or those two detectors do not run.
    pub global_stage: bool,
    /// librdkafka properties passed through as they are (`sasl.username`, ...); a value may
    /// be `env:NAME` or `file:PATH`, and keys that name a password or secret must be.
    pub options: BTreeMap<String, OptionValue>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Vec::new(),
            edge_id: String::new(),
            group_prefix: "tokenwatch".to_string(),
            topics: TopicsConfig::default(),
            producer: ProducerConfig::default(),
            reorder_ms: 1000,
            global_stage: true,
            options: BTreeMap::new(),
        }
    }
}

/// `[kafka.topics]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    /// Events keyed by the keyed hash of the token (default `auth.by_token`).
    pub by_token: String,
    /// Events keyed by client IP / network (default `auth.by_ip`).
    pub by_ip: String,
    /// Detections, one partition (default `detections`).
    pub detections: String,
    /// Freezes and unfreezes (compacted; key = token id or fingerprint, tombstone on
    /// unfreeze), published by the responder, followed by every edge (default `frozen`).
    pub frozen: String,
    /// Tokens accepted anywhere (compacted; key = token id or fingerprint, value = when
    /// first accepted), published by the token stage, followed by every IP stage (default
    /// `tokens.known`).
    pub known_tokens: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            by_token: "auth.by_token".to_string(),
            by_ip: "auth.by_ip".to_string(),
            detections: "detections".to_string(),
            frozen: "frozen".to_string(),
            known_tokens: "tokens.known".to_string(),
        }
    }
}

/// `[kafka.producer]`: how much the edge buffers before it stops reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// Messages queued in the producer at most (`queue.buffering.max.messages`, default 100000).
    pub queue_messages: u32,
    /// Bytes queued at most, in KiB (`queue.buffering.max.kbytes`, default 65536).
    pub queue_kbytes: u32,
    /// How long the producer waits to fill a batch, in ms (`linger.ms`, default 5).
    pub linger_ms: u32,
    /// At shutdown, how long to wait for outstanding deliveries, in ms (default 10000);
    /// what is not delivered by then is read again at the next start.
    pub flush_timeout_ms: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            queue_messages: 100_000,
            queue_kbytes: 65_536,
            linger_ms: 5,
            flush_timeout_ms: 10_000,
        }
    }
}

/// One `[kafka.options]` value: plain text, or a secret reference resolved at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionValue {
    /// Given inline.
    Plain(String),
    /// `env:NAME` or `file:PATH`.
    Secret(Secret),
}

impl OptionValue {
    /// The value to hand librdkafka (`None` for an unresolved secret).
    pub fn expose(&self) -> Option<&str> {
        match self {
            OptionValue::Plain(s) => Some(s),
            OptionValue::Secret(s) => s.expose(),
        }
    }
}

impl Serialize for OptionValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OptionValue::Plain(v) => s.serialize_str(v),
            OptionValue::Secret(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for OptionValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.starts_with("env:") || s.starts_with("file:") {
            return SecretRef::parse(&s)
                .map(|r| OptionValue::Secret(Secret::new(r)))
                .map_err(serde::de::Error::custom);
        }
        Ok(OptionValue::Plain(s))
    }
}

/// Properties tokenwatch sets itself: given in `options` they are refused with the reason.
const OWNED_OPTIONS: [(&str, &str); 5] = [
    ("bootstrap.servers", "set [kafka] brokers instead"),
    (
        "enable.idempotence",
        "always true: the edge never duplicates or reorders",
    ),
    (
        "queue.buffering.max.messages",
        "set [kafka.producer] queue_messages instead",
    ),
    (
        "queue.buffering.max.kbytes",
        "set [kafka.producer] queue_kbytes instead",
    ),
    ("linger.ms", "set [kafka.producer] linger_ms instead"),
];

/// Option keys whose values are credentials: inline values are refused.
fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.ends_with(".key.pem")
}

impl KafkaConfig {
    /// Problems as (key path below `kafka`, message); `role` is the effective role.
    pub(crate) fn problems(&self, role: Role) -> Vec<(Vec<Seg>, String)> {
        let mut out = Vec::new();
        if role.needs_broker() && self.brokers.is_empty() {
            out.push((
                at(&["brokers"]),
                format!("role = \"{role}\" needs brokers = [\"host:port\", ...]"),
            ));
        }
        if role.needs_broker() && !cfg!(feature = "kafka") {
            out.push((
                at(&["brokers"]),
                format!("role = \"{role}\" needs a build with the `kafka` cargo feature"),
            ));
        }
        for (i, b) in self.brokers.iter().enumerate() {
            if let Err(m) = check_broker(b) {
                out.push((vec![Seg::Key("brokers".into()), Seg::Index(i)], m));
            }
        }
        if !valid_id(&self.edge_id) {
            out.push((
                at(&["edge_id"]),
                format!(
                    "invalid edge id {:?} (1 to 64 of a-z A-Z 0-9 _ . -)",
                    self.edge_id
                ),
            ));
        }
        if !valid_id(&self.group_prefix) {
            out.push((at(&["group_prefix"]), "1 to 64 of a-z A-Z 0-9 _ . -".into()));
        }
        if self.reorder_ms > 60_000 {
            out.push((
                at(&["reorder_ms"]),
                "must be between 0 and 60000 (events wait this long before detection)".into(),
            ));
        }
        self.topic_problems(&mut out);
        self.producer_problems(&mut out);
        self.option_problems(&mut out);
        out
    }

    fn topic_problems(&self, out: &mut Vec<(Vec<Seg>, String)>) {
        let t = &self.topics;
        let all = [
            ("by_token", &t.by_token),
            ("by_ip", &t.by_ip),
            ("detections", &t.detections),
            ("frozen", &t.frozen),
            ("known_tokens", &t.known_tokens),
        ];
        for (k, name) in all {
            if !valid_topic(name) {
                out.push((
                    at(&["topics", k]),
                    format!("invalid topic name {name:?} (1 to 249 of a-z A-Z 0-9 _ . -)"),
                ));
            }
        }
        for (i, (k, name)) in all.iter().enumerate() {
            if let Some((other, _)) = all.iter().take(i).find(|(_, n)| n == name) {
                out.push((at(&["topics", k]), format!("same topic as topics.{other}")));
            }
        }
    }

    fn producer_problems(&self, out: &mut Vec<(Vec<Seg>, String)>) {
        let p = &self.producer;
        let mut range = |k: &str, v: u64, lo: u64, hi: u64| {
            if !(lo..=hi).contains(&v) {
                out.push((
                    at(&["producer", k]),
                    format!("must be between {lo} and {hi}"),
                ));
            }
        };
        range("queue_messages", p.queue_messages.into(), 1, 2_147_483_647);
        range("queue_kbytes", p.queue_kbytes.into(), 1, 2_147_483_647);
        range("linger_ms", p.linger_ms.into(), 0, 900_000);
        range("flush_timeout_ms", p.flush_timeout_ms, 1, 3_600_000);
    }

    fn option_problems(&self, out: &mut Vec<(Vec<Seg>, String)>) {
        for (k, v) in &self.options {
            let at = at(&["options", k]);
            if let Some((_, why)) = OWNED_OPTIONS.iter().find(|(o, _)| o == k) {
                out.push((at, format!("set by tokenwatch: {why}")));
                continue;
            }
            if is_secret_key(k) && matches!(v, OptionValue::Plain(_)) {
                out.push((at, INLINE_SECRET.to_string()));
                continue;
            }
            let tls = k == "security.protocol"
                && v.expose().is_some_and(|p| {
                    p.eq_ignore_ascii_case("ssl") || p.eq_ignore_ascii_case("sasl_ssl")
                });
            if tls && !broker_tls_available() {
                out.push((
                    at,
                    "TLS to the broker is not in this build (no OpenSSL): see README \
                     \"Running on several hosts\" for the options"
                        .into(),
                ));
            }
        }
    }

    /// Resolves `env:`/`file:` option values; problems as (key path, message).
    pub(crate) fn resolve_secrets(
        &mut self,
        secrets: &dyn SecretSource,
    ) -> Vec<(Vec<Seg>, String)> {
        let mut out = Vec::new();
        for (k, v) in &mut self.options {
            if let OptionValue::Secret(s) = v {
                if let Err(m) = s.resolve(secrets) {
                    out.push((at(&["options", k]), m));
                }
            }
        }
        out
    }

    /// What stops `role` from running with this config, as `key.path: reason` lines (for a
    /// role given on the command line, after the file was validated for its own role).
    pub fn role_errors(&self, role: Role, has_fingerprint_key: bool) -> Vec<String> {
        let mut out: Vec<String> = self
            .problems(role)
            .into_iter()
            .map(|(p, m)| {
                let mut full = vec![Seg::Key("kafka".into())];
                full.extend(p);
                format!("{}: {m}", super::doc::render(&full))
            })
            .collect();
        if role == Role::Edge && !has_fingerprint_key {
            out.push(
                "fingerprint.key: role = \"edge\" needs a key shared by every edge".to_string(),
            );
        }
        out
    }

    /// The consumer group for a worker or responder stage (`token`, `ip`, `respond`).
    pub fn group_id(&self, stage: &str) -> String {
        format!("{}-{stage}", self.group_prefix)
    }
}

/// `role` and `[kafka]` checks for the loader: fills the default edge id, resolves option
/// secrets, and returns problems with their full key paths.
pub(crate) fn check(
    config: &mut super::Config,
    secrets: &dyn SecretSource,
) -> Vec<(Vec<Seg>, String)> {
    if config.kafka.edge_id.is_empty() {
        config.kafka.edge_id = host_name();
    }
    let mut problems = config.kafka.problems(config.role);
    problems.extend(config.kafka.resolve_secrets(secrets));
    let mut out: Vec<(Vec<Seg>, String)> = problems
        .into_iter()
        .map(|(p, m)| {
            let mut full = vec![Seg::Key("kafka".into())];
            full.extend(p);
            (full, m)
        })
        .collect();
    if config.role == Role::Edge && config.fingerprint.key.is_none() {
        out.push((
            vec![Seg::Key("fingerprint".into()), Seg::Key("key".into())],
            "role = \"edge\" needs a key shared by every edge (env:NAME or file:PATH): a key \
             generated per host would give one token a different fingerprint on each host"
                .into(),
        ));
    }
    out
}

/// A path below `[kafka]`.
fn at(keys: &[&str]) -> Vec<Seg> {
    keys.iter().map(|k| Seg::Key((*k).to_string())).collect()
}

fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Kafka's own rule for topic names.
fn valid_topic(s: &str) -> bool {
    (1..=249).contains(&s.len())
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_broker(b: &str) -> Result<(), String> {
    let b = b.trim();
    let (host, port) = b
        .rsplit_once(':')
        .ok_or_else(|| format!("{b:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{b:?}: empty or invalid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{b:?}: invalid port {port:?}")),
    }
}

/// The host name, for the default edge id (from the kernel, else `$HOSTNAME`, else `edge`).
pub fn host_name() -> String {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let name = from_proc
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    // A host name may be longer than an id allows, or hold other characters: keep what fits.
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "edge".to_string()
    } else {
        clean
    }
}

/// True when the linked librdkafka can speak TLS (not in the default build, which has no
/// OpenSSL; a build with `--features rdkafka/ssl-vendored` can). Validation needs it to
/// refuse a TLS `security.protocol` the binary cannot speak, so it lives with the config.
fn broker_tls_available() -> bool {
    #[cfg(feature = "kafka")]
    {
        rdkafka::ClientConfig::new()
            .create_native_config()
            .and_then(|c| c.get("builtin.features"))
            .is_ok_and(|f| f.split(',').any(|x| x == "ssl"))
    }
    #[cfg(not(feature = "kafka"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_and_names() {
        assert!(check_broker("kafka-1:9092").is_ok());
        assert!(check_broker("[::1]:9092").is_ok());
        assert!(check_broker("kafka").is_err());
        assert!(check_broker("kafka:0").is_err());
        assert!(check_broker(":9092").is_err());
        assert!(valid_topic("auth.by_token"));
        assert!(!valid_topic("auth by token"));
        assert!(!valid_topic(".."));
        let h = host_name();
        assert!(valid_id(&h), "{h}");
    }

    #[test]
    fn roles_parse_and_edge_needs_brokers() {
        assert_eq!(Role::try_from("edge".to_string()), Ok(Role::Edge));
        assert!(Role::try_from("egde".to_string())
            .unwrap_err()
            .contains("edge"));
        let mut k = KafkaConfig {
            edge_id: "gw1".into(),
            ..KafkaConfig::default()
        };
        assert!(k.problems(Role::All).is_empty());
        let p = k.problems(Role::Edge);
        assert!(p.iter().any(|(k, _)| *k == at(&["brokers"])), "{p:?}");
        k.options
            .insert("sasl.password".into(), OptionValue::Plain("hunter2".into()));
        k.options.insert(
            "enable.idempotence".into(),
            OptionValue::Plain("false".into()),
        );
        let p = k.problems(Role::All);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
