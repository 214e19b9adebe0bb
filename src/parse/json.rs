//! The `json` preset: one JSON object a line, fields found by a (dotted) mapping.
//!
//! A custom serde visitor walks the object once and keeps only the mapped keys, borrowing
//! strings from the line (a copy only when a string has escapes); everything else is skipped
//! with `IgnoredAny`, so nothing is allocated for unmapped data.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::client::{parse_addr, Resolver};
use super::time::{self, Zone};
use super::{
    decide, outcome_word, present, ClientIp, Dialect, ParseError, Parsed, Parser, ParserSpec,
    Record, SpecError,
};
use crate::event::EventTime;

/// Slots of the values the preset reads.
const TS: usize = 0;
const TOKEN: usize = 1;
const USER: usize = 2;
const IP: usize = 3;
const STATUS: usize = 4;
const OUTCOME: usize = 5;
const REASON: usize = 6;
const XFF: usize = 7;
/// Second choices of a dialect, used when the first is absent.
const TOKEN2: usize = 8;
const USER2: usize = 9;
const IP2: usize = 10;
const SLOTS: usize = 11;
/// Lines looked at for a dialect before settling on the `fields` mapping (a server's
/// start-up lines may come first).
const DETECT_LINES: u32 = 1000;
/// Where `client_ip = x_forwarded_for` finds the header in a JSON line.
const XFF_PATH: &str = "x_forwarded_for";

/// A scalar found at a mapped path.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) enum Val<'a> {
    /// Absent or `null`.
    #[default]
    Null,
    /// A string (borrowed unless it had escapes).
    Str(Cow<'a, str>),
    /// A number (integers kept exact).
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Val<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A trie of wanted paths: each node may fill a slot and/or have children.
#[derive(Debug, Clone, Default)]
pub(super) struct Node {
    slot: Option<usize>,
    kids: Vec<(Box<str>, Node)>,
}

impl Node {
    /// Adds a dotted path that fills `slot`.
    pub(super) fn add(&mut self, path: &str, slot: usize) {
        let mut n = self;
        for part in path.split('.') {
            let i = match n.kids.iter().position(|(k, _)| &**k == part) {
                Some(i) => i,
                None => {
                    n.kids.push((part.into(), Node::default()));
                    n.kids.len() - 1
                }
            };
            n = &mut n.kids[i].1;
        }
        n.slot = Some(slot);
    }

    fn child(&self, key: &str) -> Option<&Node> {
        self.child_bytes(key.as_bytes())
    }

    /// The child for a key given as bytes.
    pub(super) fn child_bytes(&self, key: &[u8]) -> Option<&Node> {
        // Keys are a few bytes: a loop beats a call to memcmp.
        self.kids
            .iter()
            .find(|(k, _)| k.len() == key.len() && k.bytes().zip(key).all(|(a, b)| a == *b))
            .map(|(_, n)| n)
    }

    /// The slot this path fills, if it is mapped.
    pub(super) fn slot(&self) -> Option<usize> {
        self.slot
    }
}

/// Decodes `line` (a JSON object) into the slots named by `root`: the hand scanner when it
/// can answer, else serde_json.
/// The slots are filled in place (`out` starts all `Null`): the array is a few hundred
/// bytes, and moving it out of each call cost more than some of the fields.
pub(super) fn extract<'l, const N: usize>(
    root: &Node,
    line: &'l [u8],
    out: &mut [Val<'l>; N],
) -> Result<(), ParseError> {
    if super::json_scan::extract(root, line, out).is_some() {
        return Ok(());
    }
    // The scanner may have filled some slots before it gave up.
    out.iter_mut().for_each(|v| *v = Val::Null);
    extract_serde(root, line, out)
}

/// [`extract`] through serde_json alone (the reference the scanner must agree with).
pub(super) fn extract_serde<'l, const N: usize>(
    root: &Node,
    line: &'l [u8],
    out: &mut [Val<'l>; N],
) -> Result<(), ParseError> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let seed = Walk {
        node: root,
        out,
        top: true,
    };
    seed.deserialize(&mut de).map_err(json_err)?;
    de.end().map_err(json_err)
}

/// A JSON error without any of the input in it (values may be secrets).
fn json_err(e: serde_json::Error) -> ParseError {
    ParseError::Json(format!("{:?} error at column {}", e.classify(), e.column()))
}

struct Walk<'n, 'o, 'l, const N: usize> {
    node: &'n Node,
    out: &'o mut [Val<'l>; N],
    top: bool,
}

impl<'n, 'o, 'l, const N: usize> Walk<'n, 'o, 'l, N> {
    fn put(self, v: Val<'l>) -> Result<(), String> {
        if self.top {
            return Err("not a JSON object".into());
        }
        if let Some(slot) = self.node.slot.and_then(|s| self.out.get_mut(s)) {
            *slot = v;
        }
        Ok(())
    }
}

impl<'de, const N: usize> DeserializeSeed<'de> for Walk<'_, '_, 'de, N> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Walk<'_, '_, 'de, N> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<(), E> {
        self.put(Val::Str(Cow::Borrowed(v))).map_err(E::custom)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.put(Val::Str(Cow::Owned(v.to_owned())))
            .map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.put(Val::Int(v)).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        let v = i64::try_from(v).map_or(Val::Float(v as f64), Val::Int);
        self.put(v).map_err(E::custom)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.put(Val::Float(v)).map_err(E::custom)
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.put(Val::Bool(v)).map_err(E::custom)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.put(Val::Null).map_err(E::custom)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.top {
            return Err(serde::de::Error::custom("not a JSON object"));
        }
        if self.node.slot.is_some() {
            // A mapped array (Caddy logs each header as a list of values): its first
            // element is the value.
            let first = Walk {
                node: self.node,
                out: &mut *self.out,
                top: false,
            };
            if seq.next_element_seed(first)?.is_none() {
                return Ok(());
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed(self.node))? {
            match key {
                Some(node) => map.next_value_seed(Walk {
                    node,
                    out: &mut *self.out,
                    top: false,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Reads a key and finds its child node without allocating (unless the key has escapes).
struct KeySeed<'n>(&'n Node);

impl<'de, 'n> DeserializeSeed<'de> for KeySeed<'n> {
    type Value = Option<&'n Node>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'n> Visitor<'de> for KeySeed<'n> {
    type Value = Option<&'n Node>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.child(v))
    }
}

/// A shipped mapping: (path, slot) pairs. Verified against each product's documentation:
/// - Caddy `http.log.access`: <https://caddyserver.com/docs/caddyfile/directives/log>
///   (`ts` float seconds, `request.client_ip` (the client behind trusted proxies, v2.7+) else
///   `request.remote_ip`, `status`, `request.headers.Authorization` a list, `user_id`).
/// - Traefik JSON access log: <https://doc.traefik.io/traefik/observability/access-logs/>
///   (`StartUTC`, `ClientHost`, `DownstreamStatus`, `ClientUsername`; request headers appear
///   as `request_<Name>` only when kept).
/// - Envoy: the keys of its default format as Istio and Envoy Gateway write them in JSON,
///   <https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage>
///   (`start_time`, `response_code`, `downstream_remote_address`, `x_forwarded_for`).
/// - Kong file-log: <https://developer.konghq.com/plugins/file-log/> (`started_at` epoch ms,
///   `client_ip`, `response.status`, `request.headers.authorization`/`apikey`,
///   `consumer.username`, `authenticated_entity.id`).
fn dialect_paths(d: Dialect) -> &'static [(&'static str, usize)] {
    match d {
        Dialect::Generic => &[],
        Dialect::Caddy => &[
            ("ts", TS),
            ("request.headers.Authorization", TOKEN),
            ("user_id", USER),
            ("request.client_ip", IP),
            ("request.remote_ip", IP2),
            ("status", STATUS),
        ],
        Dialect::Traefik => &[
            ("StartUTC", TS),
            ("request_Authorization", TOKEN),
            ("ClientUsername", USER),
            ("ClientHost", IP),
            ("DownstreamStatus", STATUS),
        ],
        Dialect::Envoy => &[
            ("start_time", TS),
            ("authorization", TOKEN),
            ("downstream_remote_address", IP),
            ("x_forwarded_for", XFF),
            ("response_code", STATUS),
        ],
        Dialect::Kong => &[
            ("started_at", TS),
            ("request.headers.authorization", TOKEN),
            ("request.headers.apikey", TOKEN2),
            ("consumer.username", USER),
            ("authenticated_entity.id", USER2),
            ("client_ip", IP),
            ("response.status", STATUS),
        ],
    }
}

/// The dialect whose distinctive keys a line has (a cheap byte search, done only until one
/// is found).
fn detect(line: &[u8]) -> Option<Dialect> {
    let has = |k: &str| memchr::memmem::find(line, k.as_bytes()).is_some();
    if has("\"DownstreamStatus\"") && has("\"StartUTC\"") {
        Some(Dialect::Traefik)
    } else if has("\"started_at\"") && has("\"client_ip\"") && has("\"response\"") {
        Some(Dialect::Kong)
    } else if has("\"response_code\"") && has("\"start_time\"") {
        Some(Dialect::Envoy)
    } else if has("\"request\":{") && has("\"remote_ip\"") && has("\"status\"") {
        Some(Dialect::Caddy)
    } else {
        None
    }
}

/// The JSON-lines parser: the `fields` mapping, or a shipped dialect.
pub struct JsonParser {
    root: Node,
    resolver: Resolver,
    zone: Zone,
    /// The dialect in use (`Generic` is the `fields` mapping).
    dialect: Dialect,
    /// Lines left to look at for a dialect (0: settled).
    detect_left: u32,
    /// The spec's settings, to rebuild the mapping once a dialect is detected.
    spec: ParserSpec,
    /// The last RFC 3339 timestamp's second.
    seconds: time::SecondCache,
}

impl JsonParser {
    /// Builds the path trie from the spec's field mapping or dialect.
    pub fn new(spec: &ParserSpec) -> Result<JsonParser, SpecError> {
        let dialect = spec.dialect.unwrap_or(Dialect::Generic);
        Ok(JsonParser {
            root: mapping(spec, dialect)?,
            resolver: Resolver::new(
                spec.client_ip == ClientIp::ForwardedFor,
                &spec.trusted_proxies,
            ),
            zone: Zone::new(spec.timezone.as_ref()),
            dialect,
            detect_left: if spec.dialect.is_none() {
                DETECT_LINES
            } else {
                0
            },
            spec: spec.clone(),
            seconds: time::SecondCache::default(),
        })
    }

    /// Looks for a dialect in `line` while still undecided.
    fn maybe_detect(&mut self, line: &[u8]) {
        self.detect_left -= 1;
        if let Some(d) = detect(line) {
            if let Ok(root) = mapping(&self.spec, d) {
                self.root = root;
                self.dialect = d;
                self.detect_left = 0;
            }
        }
    }
}

/// The path trie for a dialect (`Generic`: the spec's `fields`).
fn mapping(spec: &ParserSpec, dialect: Dialect) -> Result<Node, SpecError> {
    let f = &spec.fields;
    let mut root = Node::default();
    if dialect != Dialect::Generic {
        for &(path, slot) in dialect_paths(dialect) {
            root.add(path, slot);
        }
        if let ClientIp::Field(name) = &spec.client_ip {
            root.add(name, IP);
        }
        return Ok(root);
    }
    // `token_field`/`reason_field` are nginx keys (config warns when they are set for
    // json): the mapping in `fields` alone names JSON keys.
    let ip = match &spec.client_ip {
        ClientIp::Field(name) => name.as_str(),
        _ => &f.ip,
    };
    for (path, slot) in [
        (f.ts.as_str(), TS),
        (&f.token, TOKEN),
        (&f.user, USER),
        (ip, IP),
        (&f.status, STATUS),
        (&f.outcome, OUTCOME),
        (&f.reason, REASON),
        (XFF_PATH, XFF),
    ] {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(SpecError::Field(format!(
                "json field path {path:?} is empty or has an empty part"
            )));
        }
        root.add(path, slot);
    }
    Ok(root)
}

impl Parser for JsonParser {
    fn detected(&self) -> Option<String> {
        let how = if self.spec.dialect.is_some() {
            "configured"
        } else {
            "detected"
        };
        Some(match self.dialect {
            Dialect::Generic if self.spec.dialect.is_none() => {
                "generic (the fields mapping; no dialect detected)".to_string()
            }
            d => format!("{} ({how})", d.name()),
        })
    }

    fn parse<'l>(&mut self, line: &'l [u8]) -> Result<Parsed<'l>, ParseError> {
        if self.detect_left > 0 {
            self.maybe_detect(line);
        }
        let mut v: [Val<'l>; SLOTS] = std::array::from_fn(|_| Val::Null);
        extract(&self.root, line, &mut v)?;
        for (first, second) in [(TOKEN, TOKEN2), (USER, USER2), (IP, IP2)] {
            if take_str_ref(&v[first]).is_none() {
                v[first] = std::mem::take(&mut v[second]);
            }
        }
        let status = status(&v[STATUS])?;
        let rejected = match &v[OUTCOME] {
            Val::Bool(ok) => Some(!ok),
            Val::Str(s) => outcome_word(s),
            _ => None,
        };
        let Some(outcome) = decide(rejected, status, v[REASON].as_str()) else {
            return Ok(Parsed::Skip);
        };
        let time = ts(&v[TS], &self.zone, &mut self.seconds)?;
        // Traefik's `ClientHost` may hold a list (`client, proxy`): the first is the client
        // as the gateway saw it.
        let peer = v[IP].as_str().and_then(|s| {
            let b = s.as_bytes();
            let first = b.iter().position(|&c| c == b',').and_then(|p| b.get(..p));
            parse_addr(first.unwrap_or(b))
        });
        let ip = self
            .resolver
            .resolve(peer, v[XFF].as_str().map(str::as_bytes));
        Ok(Parsed::Event(Record {
            alias: None,
            time: Some(time),
            token: take_str(&mut v[TOKEN]),
            ip,
            user: take_str(&mut v[USER]),
            status,
            outcome,
        }))
    }
}

/// A present string value, without moving it.
fn take_str_ref<'a>(v: &'a Val<'_>) -> Option<&'a str> {
    match v {
        Val::Str(s) => present(s).filter(|s| *s != REDACTED),
        Val::Int(_) => Some(""),
        _ => None,
    }
}

/// What Caddy writes for a credential header unless `log_credentials` is on.
const REDACTED: &str = "REDACTED";

/// A present string value, moved out of its slot.
fn take_str<'l>(v: &mut Val<'l>) -> Option<Cow<'l, str>> {
    match std::mem::take(v) {
        Val::Str(s) if present(&s).is_some() && s != REDACTED => Some(s),
        Val::Int(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// A status number or numeric string; absent is `None`, anything else is an error.
fn status(v: &Val<'_>) -> Result<Option<u16>, ParseError> {
    match v {
        Val::Null => Ok(None),
        Val::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|s| (100..600).contains(s))
            .map(Some)
            .ok_or(ParseError::Status),
        Val::Str(s) if present(s).is_none() => Ok(None),
        Val::Str(s) => super::parse_status(s.as_bytes()).map(Some),
        _ => Err(ParseError::Status),
    }
}

/// RFC 3339 or epoch (seconds or millis, number or numeric string).
fn ts(v: &Val<'_>, zone: &Zone, seconds: &mut time::SecondCache) -> Result<EventTime, ParseError> {
    let t = match v {
        Val::Str(s) => seconds
            .rfc3339(s.as_bytes(), zone)
            .or_else(|| time::epoch_auto(s.as_bytes())),
        Val::Int(n) if n.unsigned_abs() >= 100_000_000_000 => time::epoch_in_range(*n),
        Val::Int(n) => time::epoch_in_range(n.saturating_mul(1000)),
        Val::Float(f) if f.is_finite() && f.abs() < 1e15 => {
            let ms = if f.abs() >= 1e11 { *f } else { f * 1000.0 };
            time::epoch_in_range(ms.round() as i64)
        }
        Val::Null => return Err(ParseError::MissingField("ts")),
        _ => None,
    };
    t.ok_or(ParseError::Timestamp)
}

#[cfg(test)]
mod hostile_tests {
    use super::*;
    use crate::parse::{build, Preset};

    fn parser() -> Box<dyn Parser> {
        build(&ParserSpec {
            preset: Preset::Json,
            ..ParserSpec::default()
        })
        .unwrap()
    }

    const GOOD: &str =
        r#""ts":"2026-03-02T13:55:36Z","token_id":"ak_1","ip":"203.0.113.9","status":401"#;

    #[test]
    fn deep_nesting_is_an_error_or_ignored_never_a_stack_overflow() {
        let mut p = parser();
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(matches!(p.parse(deep.as_bytes()), Err(ParseError::Json(_))));
        // The walker only descends along mapped paths (depth bounded by the mapping); deep
        // data under a mapped leaf is skipped, and the missing value is reported.
        let mapped = format!(
            "{{\"token_id\":\"ak_1\",\"status\":401,\"ts\":{}1{}}}",
            "{\"a\":".repeat(10_000),
            "}".repeat(10_000)
        );
        assert_eq!(
            p.parse(mapped.as_bytes()),
            Err(ParseError::MissingField("ts"))
        );
        // Under an unmapped key it is skipped (serde_json skips without recursion).
        let unmapped = format!(
            "{{{GOOD},\"x\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(matches!(p.parse(unmapped.as_bytes()), Ok(Parsed::Event(_))));
        let objs = format!(
            "{{{GOOD},\"x\":{}1{}}}",
            "{\"a\":".repeat(10_000),
            "}".repeat(10_000)
        );
        assert!(matches!(p.parse(objs.as_bytes()), Ok(Parsed::Event(_))));
    }

    #[test]
    fn many_keys_and_out_of_range_numbers() {
        let mut p = parser();
        let keys: String = (0..10_000).map(|i| format!("\"k{i}\":{i},")).collect();
        let line = format!("{{{keys}{GOOD}}}");
        assert!(matches!(p.parse(line.as_bytes()), Ok(Parsed::Event(_))));
        for (ts, ok) in [
            ("0", true),
            ("253402300799999", true),
            ("-1", false),
            ("-99999999999", false),
            ("99999999999999999999999", false),
            ("1e300", false),
            ("\"10000-01-01T00:00:00Z\"", false),
        ] {
            let line = format!("{{{GOOD},\"ts\":{ts}}}");
            assert_eq!(p.parse(line.as_bytes()).is_ok(), ok, "{ts}");
        }
        for st in ["1e400", "-1", "99999999999999999999999", "4.2", "\"abc\""] {
            let line = format!("{{{GOOD},\"status\":{st}}}");
            assert!(p.parse(line.as_bytes()).is_err(), "{st}");
        }
    }
}
