//! Integration tests: config.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokenwatch::config::{
    Config, ConfigErrors, MapSecrets, ResponseMode, SecretSource, SystemSecrets, TokenKind,
    INLINE_SECRET,
};
use tokenwatch::parse::{ClientIp, Preset};
use tokenwatch::source::file::{StartAt, WatchMode};

fn load(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml(text, "tw.toml", &MapSecrets::new())
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn embedded_default_loads_and_is_the_documented_demo() {
    let text = tokenwatch::config::DEFAULT_TOML;
    let c = Config::from_toml(text, "default", &MapSecrets::new()).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c, Config::embedded_default());
    assert_eq!(
        c.server.listen,
        "127.0.0.1:9847".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.state.dir, Path::new("/var/lib/tokenwatch"));
    assert_eq!(c.response.mode, ResponseMode::DryRun);
    assert_eq!(c.sources.len(), 1);
    let s = &c.sources[0];
    assert_eq!(s.name, "demo");
    assert_eq!(s.format, Preset::Nginx);
    assert_eq!(s.log_format.as_deref(), Some("tokenwatch"));
    assert_eq!(s.start_at, StartAt::End);
    let tail = s.tail_config(0);
    assert_eq!(tail.include, vec!["/var/log/nginx/access.log".to_string()]);
    assert_eq!(tail.poll_interval, Duration::from_millis(250));
    assert_eq!(tail.max_line_bytes, 102_400);
    assert_eq!(tail.watch, WatchMode::Notify);
    assert!(c.detectors.enabled("impossible_travel"));
}

#[test]
fn embedded_default_documents_every_key_it_knows() {
    // Each key the effective config prints appears in the commented default.
    let eff = Config::embedded_default().to_effective_toml();
    for line in eff.lines().filter(|l| l.contains(" = ")) {
        let key = line.split(" = ").next().unwrap().trim();
        assert!(
            tokenwatch::config::DEFAULT_TOML.contains(&format!("{key} =")),
            "{key} undocumented"
        );
    }
}

#[test]
fn empty_file_is_all_defaults() {
    let c = load("").unwrap();
    assert!(c.sources.is_empty());
    assert_eq!(c.response.mode, ResponseMode::DryRun);
    assert_eq!(c.geo.ipv6_prefix, 64);
    assert_eq!(c.state.checkpoint_interval_ms, 1000);
    assert!(c.server.admin_token.is_none());
}

const FULL: &str = r#"
[server]
listen = "[::1]:9000"
admin_token = "env:TW_ADMIN"

[state]
dir = "/tmp/tw-state"
checkpoint_interval_ms = 5000

[fingerprint]
key = "file:/run/secrets/fp"

[[source]]
name = "gateway"
path = "/var/log/nginx/access.log"
include = ["/var/log/nginx/*.log"]
client_ip = "x_forwarded_for"
trusted_proxies = ["10.0.0.0/8", "2001:db8::/32"]
timezone = "Europe/Berlin"
start_at = "beginning"
watch = "poll"
poll_interval_ms = 1000
max_line_bytes = 4096

[[source]]
include = ["/var/log/vault/audit.log"]
format = "vault"

[[source]]
name = "api"
path = "/var/log/api.jsonl"
format = "json"
token_kind = "secret"
client_ip = "field:client.addr"
timezone = "+02:00"
[source.fields]
ts = "time"
token = "auth.key"

[[source]]
name = "custom"
path = "/var/log/custom.log"
format = "regex"
pattern = '^(?P<ip>\S+) (?P<ts>\S+) (?P<status>\d{3}) (?P<token>\S+)$'

[geo]
ipv6_prefix = 48

[detectors.off_hours]
enabled = false

[response]
mode = "enforce"
"#;

fn full_secrets() -> MapSecrets {
    MapSecrets::new()
        .with_env("TW_ADMIN", "admin-secret-value")
        .with_file(
            "/run/secrets/fp",
            "fingerprint-key-material-0123456789abcdef\n",
        )
}

#[test]
fn full_config_builds_runtime_types() {
    let c = Config::from_toml(FULL, "full.toml", &full_secrets()).unwrap();
    assert_eq!(
        c.server.admin_token.as_ref().unwrap().expose(),
        Some("admin-secret-value")
    );
    assert_eq!(
        c.fingerprint.key.as_ref().unwrap().expose(),
        Some("fingerprint-key-material-0123456789abcdef")
    );
    assert_eq!(c.response.mode, ResponseMode::Enforce);
    assert!(!c.detectors.enabled("off_hours"));
    assert!(c.detectors.enabled("brute_force"));

    let gw = c.sources[0].parser_spec();
    assert_eq!(gw.client_ip, ClientIp::ForwardedFor);
    assert_eq!(gw.trusted_proxies.len(), 2);
    assert!(gw.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
    assert_eq!(
        gw.timezone.as_ref().and_then(|t| t.iana_name()),
        Some("Europe/Berlin")
    );
    assert_eq!(gw.token_field.as_deref(), Some("token_id"));
    assert_eq!(gw.reason_field.as_deref(), Some("auth_reason"));
    let tail = c.sources[0].tail_config(3);
    assert_eq!(tail.source, 3);
    assert_eq!(tail.name, "gateway");
    assert_eq!(
        tail.include,
        vec!["/var/log/nginx/access.log", "/var/log/nginx/*.log"]
    );
    assert_eq!(tail.start_at, StartAt::Beginning);
    assert_eq!(tail.watch, WatchMode::Poll);
    assert_eq!(tail.poll_interval, Duration::from_secs(1));
    assert_eq!(tail.max_line_bytes, 4096);

    let vault = &c.sources[1];
    assert_eq!(vault.name, "source1");
    assert_eq!(vault.token_kind(), TokenKind::Id);
    assert_eq!(vault.parser_spec().preset, Preset::Vault);

    let api = &c.sources[2];
    assert_eq!(api.token_kind(), TokenKind::Secret);
    let spec = api.parser_spec();
    assert_eq!(spec.client_ip, ClientIp::Field("client.addr".into()));
    assert_eq!(spec.fields.ts, "time");
    assert_eq!(spec.fields.token, "auth.key");
    assert_eq!(spec.fields.user, "user");
    assert_eq!(c.sources[0].fields, None, "fields only for json");
    assert_eq!(spec.log_format, None);

    let custom = c.sources[3].parser_spec();
    assert_eq!(custom.preset, Preset::Regex);
    assert!(custom.pattern.unwrap().contains("(?P<token>"));
    assert_eq!(custom.time_format.as_deref(), Some("rfc3339"));
}

#[test]
fn effective_toml_round_trips() {
    for (text, secrets) in [
        (FULL, full_secrets()),
        (tokenwatch::config::DEFAULT_TOML, MapSecrets::new()),
    ] {
        let c = Config::from_toml(text, "a.toml", &secrets).unwrap();
        let eff = c.to_effective_toml();
        let again = Config::from_toml(&eff, "effective.toml", &secrets)
            .unwrap_or_else(|e| panic!("{e}\n---\n{eff}"));
        assert_eq!(again, c, "{eff}");
        assert_eq!(
            again.warnings.len(),
            c.warnings.len(),
            "{:?}",
            again.warnings
        );
        assert_eq!(again.to_effective_toml(), eff);
    }
}

#[test]
fn effective_toml_shows_secret_references_not_values() {
    let c = Config::from_toml(FULL, "full.toml", &full_secrets()).unwrap();
    let eff = c.to_effective_toml();
    assert!(eff.contains("admin_token = \"env:TW_ADMIN\""), "{eff}");
    assert!(eff.contains("key = \"file:/run/secrets/fp\""), "{eff}");
    assert!(!eff.contains("admin-secret-value"));
    assert!(!eff.contains("fingerprint-key-material-0123456789abcdef"));
    assert!(!format!("{c:?}").contains("admin-secret-value"));
    assert!(
        eff.contains("name = \"source1\""),
        "defaults are filled in: {eff}"
    );
    assert!(eff.contains("token_kind = \"id\""), "{eff}");
}

#[test]
fn six_mistakes_are_all_reported_with_their_lines() {
    let text = r#"[server]
listen = "localhost"

[state]
dri = "/var/lib/tw"

[[source]]
name = "gw"
path = "/var/log/a.log"
trusted_proxies = ["10.0.0.0/8", "10.0.0.300/8"]

[[source]]
format = "ngnix"
path = "/var/log/b.log"
poll_interval_ms = "fast"

[response]
mode = "enforcing"
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 6, "{errs:#?}");
    let expect = [
        "tw.toml:2:10: server.listen: not a socket address",
        "tw.toml:5:1: state.dri: unknown key \"dri\" (did you mean \"dir\"?)",
        "tw.toml:10:34: source[0].trusted_proxies[1]: invalid CIDR \"10.0.0.300/8\"",
        "tw.toml:13:10: source[1].format: unknown format \"ngnix\" (expected one of nginx, json, vault, keycloak, oauth2-proxy, regex); did you mean \"nginx\"?",
        "tw.toml:15:20: source[1].poll_interval_ms: invalid type: string \"fast\", expected u64",
        "tw.toml:18:8: response.mode: unknown response mode \"enforcing\"",
    ];
    for (got, want) in errs.iter().zip(expect.iter()) {
        assert!(got.starts_with(want), "got  {got}\nwant {want}");
    }
}

#[test]
fn unknown_keys_get_a_suggestion_when_close() {
    let errs = errors(
        "[server]\nlisten_addr = \"127.0.0.1:1\"\n\n[[source]]\npath = \"/a\"\nformta = \"json\"\n\
         zzzzzz = 1\n\n[detectors.rate_spik]\nenabled = false\n\n[detectors.brute_force]\nenable = true\n",
    );
    assert_eq!(
        errs,
        [
            "tw.toml:2:1: server.listen_addr: unknown key \"listen_addr\" (did you mean \"listen\"?)",
            "tw.toml:6:1: source[0].formta: unknown key \"formta\" (did you mean \"format\"?)",
            "tw.toml:7:1: source[0].zzzzzz: unknown key \"zzzzzz\" (expected one of name, kind, path, \
             include, format, log_format, token_field, reason_field, client_ip, trusted_proxies, \
             timezone, token_kind, start_at, watch, poll_interval_ms, max_line_bytes, pattern, \
             time_format, fields, dialect, wrapper, listen, program, queue_messages, \
             max_connections, recv_buffer_bytes, units, identifiers, journal_dir, journal_file)",
            "tw.toml:9:12: detectors.rate_spik: unknown detector \"rate_spik\" (did you mean \"rate_spike\"?)",
            "tw.toml:13:1: detectors.brute_force.enable: unknown key \"enable\" (did you mean \"enabled\"?)",
        ]
    );
}

#[test]
fn role_and_kafka_are_checked_with_places() {
    let errs = errors("role = \"edge\"\n\n[kafka]\nbrokers = \"x\"\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("tw.toml:1:8: fingerprint.key: role = \"edge\" needs a key shared"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("tw.toml:4:11: kafka.brokers: invalid type"),
        "{}",
        errs[1]
    );
}

#[test]
fn secrets_resolve_through_the_secret_source() {
    let text =
        "[server]\nadmin_token = \"env:ADMIN\"\n[fingerprint]\nkey = \"file:/etc/tw/fp.key\"\n";
    let secrets = MapSecrets::new()
        .with_env("ADMIN", "s3cr3t-admin")
        .with_file("/etc/tw/fp.key", "k3y-0123456789abcdef0123456789abcdef\n");
    let c = Config::from_toml(text, "tw.toml", &secrets).unwrap();
    assert_eq!(c.server.admin_token.unwrap().expose(), Some("s3cr3t-admin"));
    assert_eq!(
        c.fingerprint.key.unwrap().expose(),
        Some("k3y-0123456789abcdef0123456789abcdef")
    );

    let errs = errors(text);
    assert_eq!(
        errs,
        [
            "tw.toml:2:15: server.admin_token: environment variable ADMIN is not set",
            "tw.toml:4:7: fingerprint.key: cannot read secret file /etc/tw/fp.key: no such file",
        ]
    );
}

#[test]
fn secrets_from_real_files_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("fp.key");
    std::fs::write(&key, "from-a-real-file-0123456789abcdef\n").unwrap();
    let cfg = dir.path().join("tw.toml");
    let text = format!("[fingerprint]\nkey = \"file:{}\"\n", key.display());
    std::fs::write(&cfg, &text).unwrap();
    let c = Config::load(&cfg, &SystemSecrets).unwrap();
    assert_eq!(
        c.fingerprint.key.unwrap().expose(),
        Some("from-a-real-file-0123456789abcdef")
    );
    // PATH is set in any test environment; the real source reads it.
    assert!(SystemSecrets.env("PATH").is_some());
}

#[test]
fn inline_secrets_are_rejected_without_echoing_them() {
    let errs = errors("[server]\nadmin_token = \"hunter2-inline\"\n[fingerprint]\nkey = 12345\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(
        errs[0],
        format!("tw.toml:2:15: server.admin_token: {INLINE_SECRET}")
    );
    assert!(errs[1].starts_with("tw.toml:4:7: fingerprint.key: expected a string"));
    assert!(!errs.concat().contains("hunter2") && !errs.concat().contains("12345"));
}

#[test]
fn bad_cidrs_timezones_and_regexes() {
    let text = r#"[[source]]
path = "/a"
trusted_proxies = ["10.0.0.0/33", "10.0.0.0/8", "proxy.local"]
timezone = "Mars/Olympus"

[[source]]
path = "/b"
format = "regex"
pattern = '(?P<ts>\d+'
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0]
        .starts_with("tw.toml:3:20: source[0].trusted_proxies[0]: invalid CIDR \"10.0.0.0/33\""));
    assert!(errs[1]
        .starts_with("tw.toml:3:49: source[0].trusted_proxies[2]: invalid CIDR \"proxy.local\""));
    assert!(
        errs[2].starts_with("tw.toml:4:12: source[0].timezone: unknown timezone \"Mars/Olympus\"")
    );
    assert!(
        errs[3].starts_with("tw.toml:9:11: source[1].pattern: invalid regex: unclosed group"),
        "{}",
        errs[3]
    );
}

#[test]
fn regex_preset_needs_a_pattern_and_sources_need_files() {
    let errs =
        errors("[[source]]\nformat = \"regex\"\npath = \"/a\"\n\n[[source]]\nname = \"x\"\n");
    assert_eq!(
        errs,
        [
            "tw.toml:1:1: source[0]: format = \"regex\" needs a pattern (a regex with named captures such as ts, token, ip, status)",
            "tw.toml:5:1: source[1]: no file to read: set path = \"...\" or include = [\"...\"]",
        ]
    );
}

#[test]
fn duplicate_and_invalid_source_names() {
    let text =
        "[[source]]\nname = \"gw\"\npath = \"/a\"\n\n[[source]]\nname = \"gw\"\npath = \"/b\"\n\n\
                [[source]]\nname = \"source3\"\npath = \"/c\"\n\n[[source]]\npath = \"/d\"\n\n\
                [[source]]\nname = \"bad name!\"\npath = \"/e\"\n";
    let errs = errors(text);
    assert_eq!(
        errs,
        [
            "tw.toml:6:8: source[1].name: duplicate source name \"gw\" (also used by source[0])",
            "tw.toml:13:1: source[3].name: duplicate source name \"source3\" (also used by source[2])",
            "tw.toml:17:8: source[4].name: invalid source name \"bad name!\" (1 to 64 of a-z A-Z 0-9 _ . -)",
        ]
    );
}

#[test]
fn syntax_errors_are_located() {
    let errs = errors("[server]\nlisten = \"127.0.0.1:1\nfoo = = 3\n");
    assert!(!errs.is_empty());
    for e in &errs {
        assert!(e.starts_with("tw.toml:"), "{e}");
        assert!(e.contains("TOML syntax error"), "{e}");
    }
    assert!(
        errs.iter().any(|e| e.starts_with("tw.toml:3:")),
        "{errs:#?}"
    );
    let dup = errors("[server]\nlisten = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n");
    assert!(
        dup[0].starts_with("tw.toml:3:1: TOML syntax error: duplicate key"),
        "{dup:#?}"
    );
}

#[test]
fn wrong_types_and_ranges() {
    let text = "source = \"x\"\n[state]\ncheckpoint_interval_ms = 0\n[geo]\nipv6_prefix = 129\nmmdb = \"/x.mmdb\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0]
        .starts_with("tw.toml:1:10: source: invalid type: string \"x\", expected a sequence"));
    assert_eq!(
        errs[1],
        "tw.toml:3:26: state.checkpoint_interval_ms: must be at least 1"
    );
    assert_eq!(
        errs[2],
        "tw.toml:5:15: geo.ipv6_prefix: must be between 0 and 128"
    );
    assert!(errs[3].starts_with("tw.toml:6:8: geo.mmdb: invalid type: string"));
    let single = errors("[source]\npath = \"/a\"\n");
    assert!(
        single[0].contains("write [[source]] instead of [source]"),
        "{single:#?}"
    );
}

#[test]
fn missing_mmdb_is_a_warning_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let present = dir.path().join("City.mmdb");
    std::fs::write(&present, b"not really a database").unwrap();
    let text = format!(
        "[geo]\nmmdb = [\"{}\", \"{}/missing.mmdb\"]\n",
        present.display(),
        dir.path().display()
    );
    let c = load(&text).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = c.warnings[0].to_string();
    assert!(
        w.starts_with("tw.toml:2:") && w.contains("geo.mmdb[1]") && w.contains("not found"),
        "{w}"
    );
}

#[test]
fn preset_specific_keys_elsewhere_warn() {
    let c = load("[[source]]\npath = \"/a\"\nformat = \"vault\"\npattern = 'x'\nclient_ip = \"x_forwarded_for\"\n").unwrap();
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(w[0].starts_with(
        "tw.toml:4:11: source[0].pattern: pattern is only used with format = \"regex\""
    ));
    assert!(w[1].contains("x_forwarded_for without trusted_proxies"));
}

#[test]
fn load_reports_unreadable_files() {
    let e = Config::load(Path::new("/nonexistent/tw.toml"), &MapSecrets::new()).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert!(e
        .to_string()
        .starts_with("/nonexistent/tw.toml: cannot read config file"));
}

#[test]
fn errors_in_a_real_file_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tokenwatch.toml");
    std::fs::write(&cfg, "\n\n[response]\nmode = \"yes\"\n").unwrap();
    let e = Config::load(&cfg, &MapSecrets::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:4:8: response.mode: unknown response mode \"yes\" (expected one of off, dry-run, enforce)",
            cfg.display()
        )
    );
}

#[test]
fn shipped_examples_load_and_round_trip() {
    let secrets = MapSecrets::new().with_env("TOKENWATCH_ADMIN_TOKEN", "example-admin-token");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let c = Config::load(&path, &secrets).unwrap_or_else(|e| panic!("{e}"));
            assert!(c.warnings.is_empty(), "{:?}", c.warnings);
            assert!(!c.sources.is_empty(), "{}", path.display());
            let again = Config::from_toml(&c.to_effective_toml(), "eff", &secrets).unwrap();
            assert_eq!(again, c);
            seen += 1;
        }
    }
    assert!(seen >= 3, "examples/*.toml missing");
}

/// The worked scale-out example (README "Running on several hosts"): 3 edges, 2 workers
/// and the responders share `examples/kafka/`; each file loads clean for its role, and the
/// role refuses nothing at start.
#[test]
fn kafka_topology_examples_load_for_their_roles() {
    use tokenwatch::config::Role;
    let secrets = MapSecrets::new()
        .with_env(
            "TOKENWATCH_FP_KEY",
            "an-example-fingerprint-key-of-32-bytes+",
        )
        .with_env("TOKENWATCH_ADMIN_TOKEN", "example-admin-token")
        .with_env("TOKENWATCH_HOOK_KEY", "example-hook-key")
        .with_env("KAFKA_PASSWORD", "example-password");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kafka");
    for (file, role) in [
        ("edge.toml", Role::Edge),
        ("worker.toml", Role::Worker),
        ("responder.toml", Role::Responder),
    ] {
        let path = dir.join(file);
        let c = Config::load(&path, &secrets).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.role, role, "{file}");
        // The City database is the user's own (never shipped): its absence is a warning.
        let other: Vec<_> = c
            .warnings
            .iter()
            .filter(|w| w.path != "geo.mmdb[0]")
            .collect();
        assert!(other.is_empty(), "{file}: {other:?}");
        let has_key = c.fingerprint.key.is_some();
        assert_eq!(
            c.kafka.role_errors(role, has_key),
            Vec::<String>::new(),
            "{file}"
        );
        assert_eq!(c.kafka.brokers.len(), 3, "{file}");
    }
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// Lines that are valid, wrong or broken in various ways, mixed at random.
    const LINES: &[&str] = &[
        "[server]",
        "listen = \"127.0.0.1:1\"",
        "listen = 5",
        "admin_token = \"inline\"",
        "admin_token = \"env:X\"",
        "[[source]]",
        "[source]",
        "path = \"/a\"",
        "include = [\"/a\", 3]",
        "format = \"regex\"",
        "format = \"ngnix\"",
        "pattern = '(x'",
        "pattern = '(?P<ts>\\S+)'",
        "name = \"a\"",
        "name = \"\"",
        "trusted_proxies = [\"1.2.3.4/40\", \"::1\", {a = 1}]",
        "timezone = \"Nowhere/Else\"",
        "[source.fields]",
        "ts = \"t\"",
        "bogus = true",
        "[detectors.brute_force]",
        "enabled = \"yes\"",
        "[detectors.nope]",
        "[geo]",
        "ipv6_prefix = 300",
        "mmdb = [\"/missing.mmdb\"]",
        "[response]",
        "mode = \"enforce\"",
        "x = = 1",
        "\"unterminated",
        "a.b.c = 1",
        "source = []",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn any_mix_of_lines_loads_or_reports_placed_errors(
            picks in proptest::collection::vec(0..LINES.len(), 0..24)
        ) {
            let text: String = picks.iter().map(|&i| format!("{}\n", LINES[i])).collect();
            match Config::from_toml(&text, "p.toml", &MapSecrets::new()) {
                Ok(c) => {
                    let again = Config::from_toml(&c.to_effective_toml(), "eff", &MapSecrets::new());
                    prop_assert_eq!(again.ok(), Some(c));
                }
                Err(e) => {
                    prop_assert!(!e.errors.is_empty());
                    for err in &e.errors {
                        prop_assert!(err.location.is_some(), "unplaced: {}\n{}", err, text);
                        prop_assert!(!err.message.contains('\n'), "multi-line: {}", err);
                    }
                }
            }
        }
    }
}

#[test]
fn nested_and_inline_tables_are_located_too() {
    let errs = errors(
        "[[source]]\npath = \"/a\"\nformat = \"json\"\n[source.fields]\ntss = \"t\"\n\n\
         [[source]]\npath = \"/b\"\n[source.fields]\nip = 7\n",
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "tw.toml:5:1: source[0].fields.tss: unknown key \"tss\" (did you mean \"ts\"?)"
        ),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("tw.toml:10:6: source[1].fields.ip: invalid type: integer"),
        "{}",
        errs[1]
    );

    let errs =
        errors("source = [{ path = \"/a\", bogus = 1 }, { path = \"/b\", watch = \"inotify\" }]\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("tw.toml:1:26: source[0].bogus: unknown key"),
        "{}",
        errs[0]
    );
    assert!(errs[1].starts_with("tw.toml:1:62: source[1].watch: unknown watch mode \"inotify\" (expected one of notify, poll); did you mean \"notify\"?"), "{}", errs[1]);
}

#[test]
fn regex_without_known_captures_warns() {
    let c = load(
        "[[source]]\npath = \"/a\"\nformat = \"regex\"\npattern = '^(?P<when>\\S+) (\\d+)$'\n",
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0]
        .to_string()
        .starts_with("tw.toml:4:11: source[0].pattern: pattern has none of the named captures"));
    let ok = load("[[source]]\npath = \"/a\"\nformat = \"regex\"\npattern = '^(?P<ip>\\S+) (?P<status>\\d+)$'\n").unwrap();
    assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
}

#[test]
fn syslog_and_journald_sources_need_no_path_and_are_checked() {
    let c = load(
        r#"
[[source]]
name = "sys"
kind = "syslog"
listen = "tcp://127.0.0.1:5514"
program = "nginx"
[[source]]
name = "jd"
kind = "journald"
units = ["nginx.service"]
"#,
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.sources[1].units, vec!["nginx.service".to_string()]);
    // A public listen address works, with a warning.
    let c = load("[[source]]\nkind = \"syslog\"\nlisten = \"udp://0.0.0.0:514\"\n").unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let errs = errors(
        r#"
[[source]]
kind = "syslog"
[[source]]
kind = "syslog"
listen = "127.0.0.1:514"
queue_messages = 0
[[source]]
kind = "journald"
journal_dir = "/a"
journal_file = "/b"
[[source]]
kind = "sockets"
"#,
    );
    let all = errs.join("\n");
    for want in [
        "needs listen",
        "no udp:// or tcp://",
        "queue_messages",
        "not both",
        "kind",
    ] {
        assert!(all.contains(want), "{want:?} missing in:\n{all}");
    }
}

#[test]
fn keys_of_another_source_kind_warn() {
    let c = load(
        "[[source]]\nkind = \"syslog\"\nlisten = \"udp://127.0.0.1:5514\"\npath = \"/x\"\nunits = [\"a\"]\nstart_at = \"beginning\"\n",
    )
    .unwrap();
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    let w = w.join("\n");
    for k in ["path", "units", "start_at"] {
        assert!(
            w.contains(&format!("{k} is not used by kind = \"syslog\"")),
            "{w}"
        );
    }
    let c = load("[[source]]\npath = \"/x\"\nlisten = \"udp://127.0.0.1:1\"\n").unwrap();
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert!(w
        .join("\n")
        .contains("listen is not used by kind = \"file\""));
}
