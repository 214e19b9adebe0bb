//! Checks that serde cannot make (cross-field rules, secrets, files), and the defaults that
//! depend on other keys. Runs on the deserialized config with the document at hand for places.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::DeTable;

use super::doc::{self, Seg};
use super::error::Diag;
use super::secret::{Secret, SecretSource};
use super::source::{SourceConfig, SourceKind, TokenKind};
use super::Config;
use crate::parse::{ClientIp, Preset};

/// Lines longer than this cannot be configured (each source buffers up to one line).
const MAX_LINE_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// Where findings go, with the document to place them.
struct Checker<'a, 'd, 't> {
    doc: &'a DeTable<'d>,
    /// Keys already reported and cut out by deserialization: treated as absent.
    pruned: &'a [Vec<Seg>],
    diag: &'a mut Diag<'t>,
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

fn source_key(i: usize, k: &str) -> Vec<Seg> {
    vec![key("source"), Seg::Index(i), key(k)]
}

impl Checker<'_, '_, '_> {
    /// True if the key was written and deserialized fine.
    fn has(&self, path: &[Seg]) -> bool {
        doc::get(self.doc, path).is_some() && !self.pruned.iter().any(|p| path.starts_with(p))
    }

    /// True if the key was written at all (even if it was rejected).
    fn written(&self, path: &[Seg]) -> bool {
        doc::get(self.doc, path).is_some()
    }

    /// The value's span, else the key's, else the nearest enclosing table that exists.
    fn span(&self, path: &[Seg]) -> Option<Range<usize>> {
        let mut p = path.to_vec();
        while !p.is_empty() {
            if let Some(v) = doc::get(self.doc, &p) {
                return Some(v.span());
            }
            if let Some(k) = doc::key_span(self.doc, &p) {
                return Some(k);
            }
            p.pop();
        }
        None
    }

    fn error(&mut self, path: &[Seg], message: String) {
        let span = self.span(path);
        self.diag.error(span, &doc::render(path), message);
    }

    fn warning(&mut self, path: &[Seg], message: String) {
        let span = self.span(path);
        self.diag.warning(span, &doc::render(path), message);
    }
}

/// Fills context-dependent defaults, then checks everything serde could not.
pub(crate) fn run(
    config: &mut Config,
    doc: &DeTable<'_>,
    pruned: &[Vec<Seg>],
    diag: &mut Diag<'_>,
    secrets: &dyn SecretSource,
) {
    let mut c = Checker { doc, pruned, diag };
    for (i, source) in config.sources.iter_mut().enumerate() {
        fill_source_defaults(&c, i, source);
        check_source(&mut c, i, source);
    }
    check_unique_names(&mut c, &config.sources);
    check_sections(&mut c, config);
    check_response(&mut c, config, secrets);
    check_kafka(&mut c, config, secrets);
    for (path, message) in config.authz.problems(config.server.listen) {
        c.error(&path, message);
    }
    resolve(
        &mut c,
        &[key("server"), key("admin_token")],
        config.server.admin_token.as_mut(),
        secrets,
    );
    resolve(
        &mut c,
        &[key("fingerprint"), key("key")],
        config.fingerprint.key.as_mut(),
        secrets,
    );
    if let Some(Err(reason)) = config
        .fingerprint
        .key
        .as_ref()
        .map(|k| k.check_min_len(super::secret::MIN_FINGERPRINT_KEY_BYTES))
    {
        c.error(&[key("fingerprint"), key("key")], reason);
    }
}

fn fill_source_defaults(c: &Checker<'_, '_, '_>, i: usize, s: &mut SourceConfig) {
    if !c.has(&source_key(i, "name")) {
        s.name = format!("source{i}");
    }
    if !c.has(&source_key(i, "token_kind")) {
        s.token_kind = TokenKind::default_for(s.format);
    }
    match s.format {
        Preset::Nginx => {
            s.log_format.get_or_insert_with(|| "tokenwatch".to_string());
            s.token_field.get_or_insert_with(|| "token_id".to_string());
            s.reason_field
                .get_or_insert_with(|| "auth_reason".to_string());
        }
        Preset::Regex => {
            s.time_format.get_or_insert_with(|| "rfc3339".to_string());
        }
        Preset::Json => {
            s.fields.get_or_insert_with(Default::default);
        }
        _ => {}
    }
}

fn check_source(c: &mut Checker<'_, '_, '_>, i: usize, s: &SourceConfig) {
    if c.has(&source_key(i, "name")) && !valid_name(&s.name) {
        c.error(
            &source_key(i, "name"),
            format!(
                "invalid source name {:?} (1 to 64 of a-z A-Z 0-9 _ . -)",
                s.name
            ),
        );
    }
    match s.kind {
        SourceKind::File => check_paths(c, i, s),
        SourceKind::Syslog => check_syslog(c, i, s),
        SourceKind::Journald => check_journald(c, i, s),
    }
    if s.format == Preset::Regex && s.pattern.is_none() && !c.written(&source_key(i, "pattern")) {
        c.error(
            &[key("source"), Seg::Index(i)],
            "format = \"regex\" needs a pattern (a regex with named captures such as ts, token, ip, status)".to_string(),
        );
    }
    if let Some(pattern) = s.pattern.as_deref().filter(|_| s.format == Preset::Regex) {
        check_captures(c, i, pattern);
    }
    if s.poll_interval_ms == 0 {
        c.error(
            &source_key(i, "poll_interval_ms"),
            "must be at least 1".to_string(),
        );
    }
    if s.max_line_bytes == 0 || s.max_line_bytes > MAX_LINE_BYTES_LIMIT {
        c.error(
            &source_key(i, "max_line_bytes"),
            format!("must be between 1 and {MAX_LINE_BYTES_LIMIT}"),
        );
    }
    if s.client_ip == ClientIp::ForwardedFor && s.trusted_proxies.is_empty() {
        c.warning(
            &source_key(i, "client_ip"),
            "x_forwarded_for without trusted_proxies: X-Forwarded-For is ignored unless the peer is a trusted proxy".to_string(),
        );
    }
    warn_unused_keys(c, i, s.format);
    warn_other_kinds_keys(c, i, s.kind);
}

/// Keys of another `kind` of source: ignored, likely a mistake.
fn warn_other_kinds_keys(c: &mut Checker<'_, '_, '_>, i: usize, kind: SourceKind) {
    use SourceKind::{File, Journald, Syslog};
    let used_by: [(&str, &[SourceKind]); 14] = [
        ("path", &[File]),
        ("include", &[File]),
        ("watch", &[File]),
        ("poll_interval_ms", &[File]),
        ("start_at", &[File, Journald]),
        ("listen", &[Syslog]),
        ("program", &[Syslog]),
        ("queue_messages", &[Syslog]),
        ("max_connections", &[Syslog]),
        ("recv_buffer_bytes", &[Syslog]),
        ("units", &[Journald]),
        ("identifiers", &[Journald]),
        ("journal_dir", &[Journald]),
        ("journal_file", &[Journald]),
    ];
    for (k, kinds) in used_by {
        if !kinds.contains(&kind) && c.has(&source_key(i, k)) {
            c.warning(
                &source_key(i, k),
                format!("{k} is not used by kind = \"{}\"; ignored", kind.name()),
            );
        }
    }
}

/// The named captures the regex preset reads.
const CAPTURES: [&str; 9] = [
    "ts", "token", "ip", "status", "outcome", "reason", "user", "path", "method",
];

/// A regex without any capture the preset reads yields nothing useful: say so.
fn check_captures(c: &mut Checker<'_, '_, '_>, i: usize, pattern: &str) {
    let Ok(re) = regex::Regex::new(pattern) else {
        return; // already reported while reading
    };
    let known = re.capture_names().flatten().any(|n| CAPTURES.contains(&n));
    if !known {
        c.warning(
            &source_key(i, "pattern"),
            format!(
                "pattern has none of the named captures the regex preset reads ({})",
                CAPTURES.join(", ")
            ),
        );
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
}

fn check_paths(c: &mut Checker<'_, '_, '_>, i: usize, s: &SourceConfig) {
    if s.path.is_none() && s.include.is_empty() {
        c.error(
            &[key("source"), Seg::Index(i)],
            "no file to read: set path = \"...\" or include = [\"...\"]".to_string(),
        );
    }
    let path = s.path.iter().map(|p| (source_key(i, "path"), p));
    let include = s.include.iter().enumerate().map(|(j, p)| {
        let mut at = source_key(i, "include");
        at.push(Seg::Index(j));
        (at, p)
    });
    for (at, p) in path.chain(include).collect::<Vec<_>>() {
        if p.trim().is_empty() {
            c.error(&at, "empty path".to_string());
        } else if let Err(e) = glob::Pattern::new(p) {
            c.error(&at, format!("invalid glob {p:?}: {}", e.msg));
        }
    }
}

/// `kind = "syslog"`: a parsable listen address (a non-loopback one is allowed, with a
/// warning: syslog has no authentication, so anyone who reaches the port can feed it lines).
fn check_syslog(c: &mut Checker<'_, '_, '_>, i: usize, s: &SourceConfig) {
    let Some(listen) = &s.listen else {
        c.error(
            &[key("source"), Seg::Index(i)],
            "kind = \"syslog\" needs listen = \"udp://127.0.0.1:PORT\" or \"tcp://127.0.0.1:PORT\""
                .to_string(),
        );
        return;
    };
    match crate::source::syslog::Listen::parse(listen) {
        Ok(l) if !l.addr().ip().is_loopback() => c.warning(
            &source_key(i, "listen"),
            format!("{listen} is not a loopback address: anyone who can reach it can send lines"),
        ),
        Ok(_) => {}
        Err(e) => c.error(&source_key(i, "listen"), e),
    }
    for (k, v) in [
        ("queue_messages", s.queue_messages),
        ("max_connections", s.max_connections),
    ] {
        if v == Some(0) {
            c.error(&source_key(i, k), "must be at least 1".to_string());
        }
    }
}

/// `kind = "journald"`: at most one of `journal_dir` and `journal_file`.
fn check_journald(c: &mut Checker<'_, '_, '_>, i: usize, s: &SourceConfig) {
    if s.journal_dir.is_some() && s.journal_file.is_some() {
        c.error(
            &source_key(i, "journal_file"),
            "set journal_dir or journal_file, not both".to_string(),
        );
    }
}

/// Keys that the chosen preset ignores: likely a mistake, but harmless.
fn warn_unused_keys(c: &mut Checker<'_, '_, '_>, i: usize, preset: Preset) {
    let only: [(&str, Preset); 7] = [
        ("dialect", Preset::Json),
        ("log_format", Preset::Nginx),
        ("token_field", Preset::Nginx),
        ("reason_field", Preset::Nginx),
        ("pattern", Preset::Regex),
        ("time_format", Preset::Regex),
        ("fields", Preset::Json),
    ];
    for (k, wanted) in only {
        if preset != wanted && c.has(&source_key(i, k)) {
            c.warning(
                &source_key(i, k),
                format!(
                    "{k} is only used with format = \"{}\"; ignored for \"{}\"",
                    wanted.name(),
                    preset.name()
                ),
            );
        }
    }
}

fn check_unique_names(c: &mut Checker<'_, '_, '_>, sources: &[SourceConfig]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, s) in sources.iter().enumerate() {
        match seen.get(s.name.as_str()) {
            Some(first) => c.error(
                &source_key(i, "name"),
                format!(
                    "duplicate source name {:?} (also used by source[{first}])",
                    s.name
                ),
            ),
            None => {
                seen.insert(&s.name, i);
            }
        }
    }
}

fn check_sections(c: &mut Checker<'_, '_, '_>, config: &Config) {
    if config.state.dir.as_os_str().is_empty() {
        c.error(&[key("state"), key("dir")], "empty path".to_string());
    }
    if config.state.checkpoint_interval_ms == 0 {
        c.error(
            &[key("state"), key("checkpoint_interval_ms")],
            "must be at least 1".to_string(),
        );
    }
    if config.geo.ipv6_prefix > 128 {
        c.error(
            &[key("geo"), key("ipv6_prefix")],
            "must be between 0 and 128".to_string(),
        );
    }
    for (j, path) in config.geo.mmdb.iter().enumerate() {
        if !path.is_file() {
            c.warning(
                &[key("geo"), key("mmdb"), Seg::Index(j)],
                format!(
                    "GeoIP database {} not found; location features stay off without it",
                    path.display()
                ),
            );
        }
    }
}

/// `role` and `[kafka]`: the rules live beside their types; places are found here.
fn check_kafka(c: &mut Checker<'_, '_, '_>, config: &mut Config, secrets: &dyn SecretSource) {
    for (path, message) in super::kafka::check(config, secrets) {
        if c.written(&path) && !c.has(&path) {
            continue; // already reported as unreadable
        }
        // A table that is not in the file at all: the `role` line is the place to point at.
        let bare = path
            .first()
            .is_some_and(|k| !c.written(std::slice::from_ref(k)));
        let role = [key("role")];
        let span = c.span(if bare { &role[..] } else { &path });
        c.diag.error(span, &doc::render(&path), message);
    }
}

fn resolve(
    c: &mut Checker<'_, '_, '_>,
    path: &[Seg],
    secret: Option<&mut Secret>,
    secrets: &dyn SecretSource,
) {
    if let Some(secret) = secret {
        if let Err(reason) = secret.resolve(secrets) {
            c.error(path, reason);
        }
    }
}

/// `[response]` and `[[hook]]`: the rules live beside their types; places are found here.
fn check_response(c: &mut Checker<'_, '_, '_>, config: &mut Config, secrets: &dyn SecretSource) {
    for (k, message) in config.response.problems() {
        c.error(&[key("response"), key(k)], message);
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, hook) in config.hooks.iter_mut().enumerate() {
        let at = |k: &str| vec![key("hook"), Seg::Index(i), key(k)];
        if !c.has(&at("name")) {
            hook.name = format!("hook{i}");
        }
        let mut problems = hook.resolve_secrets(secrets);
        problems.extend(hook.problems());
        for (k, message, is_error) in problems {
            if is_error {
                c.error(&at(k), message);
            } else {
                c.warning(&at(k), message);
            }
        }
        if let Some(first) = seen.insert(hook.name.clone(), i) {
            c.error(
                &at("name"),
                format!(
                    "duplicate hook name {:?} (also used by hook[{first}])",
                    hook.name
                ),
            );
        }
    }
}
