//! Integration tests: parse. Fixture lines per preset under `tests/fixtures/<preset>/`.

use std::net::IpAddr;

use proptest::prelude::*;
use tokenwatch::event::{Outcome, Reason};
use tokenwatch::parse::{
    build, ClientIp, ParseError, Parsed, Parser, ParserSpec, Preset, Record, SpecError,
};

fn spec(preset: Preset) -> ParserSpec {
    ParserSpec {
        preset,
        ..ParserSpec::default()
    }
}

fn parser(s: &ParserSpec) -> Box<dyn Parser> {
    build(s).unwrap_or_else(|e| panic!("build {:?}: {e}", s.preset))
}

fn fixture(path: &str) -> Vec<Vec<u8>> {
    let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// A parsed record's fields, owned, for compact assertions.
#[derive(Debug, PartialEq)]
struct R {
    ms: Option<i64>,
    token: Option<String>,
    ip: Option<IpAddr>,
    user: Option<String>,
    status: Option<u16>,
    outcome: Outcome,
}

fn own(r: &Record<'_>) -> R {
    R {
        ms: r.time.map(|t| t.as_millis()),
        token: r.token.as_ref().map(|t| t.to_string()),
        ip: r.ip,
        user: r.user.as_ref().map(|u| u.to_string()),
        status: r.status,
        outcome: r.outcome,
    }
}

fn event(p: &mut dyn Parser, line: &[u8]) -> R {
    match p.parse(line) {
        Ok(Parsed::Event(r)) => own(&r),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
    }
}

fn events(p: &mut dyn Parser, path: &str) -> Vec<Result<Option<R>, ParseError>> {
    fixture(path)
        .iter()
        .map(|l| match p.parse(l) {
            Ok(Parsed::Event(r)) => Ok(Some(own(&r))),
            Ok(Parsed::Skip | Parsed::NotAccess(_)) => Ok(None),
            Err(e) => Err(e),
        })
        .collect()
}

const T0: i64 = 1_772_459_736_000; // 2026-03-02T13:55:36Z
const REJ_INVALID: Outcome = Outcome::Rejected(Reason::Invalid);
const REJ_FORBIDDEN: Outcome = Outcome::Rejected(Reason::Forbidden);

fn r(
    ms: i64,
    token: Option<&str>,
    ip: Option<IpAddr>,
    user: Option<&str>,
    status: Option<u16>,
    outcome: Outcome,
) -> R {
    R {
        ms: Some(ms),
        token: token.map(str::to_string),
        ip,
        user: user.map(str::to_string),
        status,
        outcome,
    }
}

#[test]
fn nginx_default_format_fixture() {
    let mut p = parser(&spec(Preset::Nginx));
    let got = events(p.as_mut(), "nginx/tokenwatch.log");
    let want = [
        r(
            T0,
            Some("ak_3f9c2b11d0aa"),
            ip("203.0.113.9"),
            None,
            Some(200),
            Outcome::Accepted,
        ),
        r(
            T0 + 1000,
            Some("ak_deadbeef0001"),
            ip("198.51.100.7"),
            None,
            Some(401),
            Outcome::Rejected(Reason::Revoked),
        ),
        r(
            T0 + 2000,
            Some("ak_3f9c2b11d0aa"),
            ip("2001:db8::5"),
            None,
            Some(403),
            REJ_FORBIDDEN,
        ),
        r(
            T0 + 3000,
            Some("ak_3f9c2b11d0aa"),
            ip("203.0.113.9"),
            None,
            Some(429),
            Outcome::Accepted,
        ),
        r(
            T0 + 4000,
            Some("ak_3f9c2b11d0aa"),
            ip("203.0.113.9"),
            None,
            Some(502),
            Outcome::Accepted,
        ),
        r(
            T0 + 5000,
            None,
            ip("192.0.2.1"),
            None,
            Some(400),
            Outcome::Accepted,
        ),
        r(
            T0 + 6000,
            None,
            ip("192.0.2.1"),
            None,
            Some(400),
            Outcome::Accepted,
        ),
        r(
            T0 + 7000,
            Some("ak_1"),
            ip("192.0.2.1"),
            Some("alice"),
            Some(200),
            Outcome::Accepted,
        ),
        r(
            T0 + 8000,
            Some("ak_x"),
            ip("203.0.113.9"),
            None,
            Some(401),
            Outcome::Rejected(Reason::Expired),
        ),
        r(
            T0 + 9000,
            Some("ak_y"),
            ip("203.0.113.10"),
            None,
            Some(200),
            Outcome::Accepted,
        ),
        r(
            T0 + 10_000,
            Some("ak_crlf"),
            ip("192.0.2.1"),
            None,
            Some(200),
            Outcome::Accepted,
        ),
    ];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.into_iter().zip(want) {
        assert_eq!(g, Ok(Some(w)));
    }
}

#[test]
fn nginx_default_format_never_takes_forwarded_for_as_token() {
    let mut p = parser(&spec(Preset::Nginx));
    for line in fixture("nginx/main.log") {
        let rec = event(p.as_mut(), &line);
        assert_eq!(rec.token, None, "{}", String::from_utf8_lossy(&line));
    }
}

#[test]
fn nginx_main_format_with_trusted_proxies() {
    let mut s = spec(Preset::Nginx);
    s.log_format = Some("main".into());
    s.client_ip = ClientIp::ForwardedFor;
    s.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    let mut p = parser(&s);
    let got: Vec<R> = fixture("nginx/main.log")
        .iter()
        .map(|l| event(p.as_mut(), l))
        .collect();
    // Spoofed leftmost entry ignored: the first untrusted hop from the right is the client.
    assert_eq!(got[0].ip, ip("203.0.113.9"));
    assert_eq!(got[0].token, None);
    // `-` header behind a trusted proxy: the proxy itself.
    assert_eq!(got[1].ip, ip("10.0.0.2"));
    assert_eq!(got[1].outcome, REJ_INVALID);
    // Untrusted peer: the header is ignored.
    assert_eq!(got[2].ip, ip("198.51.100.1"));
}

#[test]
fn nginx_own_log_format() {
    let mut s = spec(Preset::Nginx);
    s.log_format = Some(
        "'$remote_addr [$time_iso8601] $status \"$http_authorization\" rt=$request_time why=$err'"
            .into(),
    );
    s.token_field = Some("http_authorization".into());
    s.reason_field = Some("err".into());
    let mut p = parser(&s);
    let rec = event(
        p.as_mut(),
        b"203.0.113.9 [2026-03-02T13:55:36+00:00] 401 \"Bearer app-abc\" rt=0.001 why=expired_key",
    );
    assert_eq!(
        rec,
        r(
            T0,
            Some("Bearer app-abc"),
            ip("203.0.113.9"),
            None,
            Some(401),
            Outcome::Rejected(Reason::Expired)
        )
    );
    assert!(p
        .parse(b"203.0.113.9 [2026-03-02T13:55:36+00:00] 401 \"Bearer app-abc\" rt=0.001 who=x")
        .is_err());
}

#[test]
fn nginx_spec_errors_name_the_problem() {
    let mut s = spec(Preset::Nginx);
    s.log_format = Some("$remote_addr [$time_local]".into());
    assert!(matches!(build(&s).err(), Some(SpecError::LogFormat(m)) if m.contains("$status")));
    s.log_format = Some("$remote_addr $status".into());
    s.token_field = Some("http_x_api_key".into());
    assert!(
        matches!(build(&s).err(), Some(SpecError::LogFormat(m)) if m.contains("http_x_api_key"))
    );
    let mut s = spec(Preset::Nginx);
    s.client_ip = ClientIp::ForwardedFor;
    assert!(
        build(&s).is_err(),
        "tokenwatch format has no $http_x_forwarded_for"
    );
    s.log_format = Some("$remote_addr$status".into());
    assert!(build(&s).is_err());
}

#[test]
fn json_fixture() {
    let mut p = parser(&spec(Preset::Json));
    let got = events(p.as_mut(), "json/app.log");
    let want = [
        Ok(Some(r(
            T0 + 120,
            Some("ak_3f9c2b11d0aa"),
            ip("203.0.113.9"),
            Some("alice"),
            Some(200),
            Outcome::Accepted,
        ))),
        Ok(Some(r(
            T0 + 1000,
            Some("ak_3f9c2b11d0aa"),
            ip("2001:db8::1"),
            None,
            Some(401),
            Outcome::Rejected(Reason::Expired),
        ))),
        Ok(Some(r(
            T0 + 2500,
            Some("ak_x"),
            ip("203.0.113.9"),
            None,
            None,
            Outcome::Rejected(Reason::Other),
        ))),
        Ok(Some(r(
            T0 + 3000,
            Some("ak_x"),
            ip("203.0.113.9"),
            None,
            None,
            Outcome::Accepted,
        ))),
        Ok(Some(r(
            T0 + 4000,
            Some("ak_A"),
            ip("203.0.113.9"),
            None,
            Some(503),
            Outcome::Accepted,
        ))),
        Ok(None),
    ];
    assert_eq!(got, want);
}

#[test]
fn json_dotted_paths() {
    let mut s = spec(Preset::Json);
    s.fields.ip = "request.ip".into();
    s.fields.token = "auth.key.id".into();
    s.fields.ts = "@timestamp".into();
    let mut p = parser(&s);
    let rec = event(
        p.as_mut(),
        br#"{"@timestamp":"2026-03-02T13:55:36Z","auth":{"key":{"id":"ak_9"},"other":[{"id":"no"}]},"request":{"ip":"::ffff:192.0.2.9"},"status":403}"#,
    );
    assert_eq!(
        rec,
        r(
            T0,
            Some("ak_9"),
            ip("192.0.2.9"),
            None,
            Some(403),
            REJ_FORBIDDEN
        )
    );
}

#[test]
fn vault_fixture() {
    let mut p = parser(&spec(Preset::Vault));
    let got = events(p.as_mut(), "vault/audit.log");
    // The id is the HMAC'd client token (on every request, failed or not); the accessor is
    // only linked (and is the id of a line that has nothing else).
    let tok = "hmac-sha256:eb3da855a3fb8b1c3574064f7edd080a97c4ebcf4a8e6674126710915fe464ae";
    let bad = "hmac-sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let want = [
        Ok(None),
        Ok(Some(r(
            T0 + 121,
            Some(tok),
            ip("172.17.0.1"),
            Some("token"),
            None,
            Outcome::Accepted,
        ))),
        Ok(Some(r(
            T0 + 1000,
            Some(bad),
            ip("203.0.113.9"),
            None,
            None,
            REJ_INVALID,
        ))),
        Ok(Some(r(
            T0 + 2000,
            Some("hmac-sha256:bbbb"),
            ip("2001:db8::9"),
            Some("userpass-r1"),
            None,
            REJ_FORBIDDEN,
        ))),
        Ok(Some(r(
            T0 + 3000,
            Some("hmac-sha256:aaaa"),
            ip("203.0.113.9"),
            Some("r1"),
            None,
            Outcome::Accepted,
        ))),
        Ok(None),
    ];
    assert_eq!(got, want);
}

#[test]
fn keycloak_fixture() {
    let mut p = parser(&spec(Preset::Keycloak));
    let got = events(p.as_mut(), "keycloak/events.log");
    let t = 1_704_920_505_403; // 2024-01-10T21:01:45.403Z
    let want = [
        Ok(Some(r(
            t,
            Some("account:alice"),
            ip("10.0.0.1"),
            Some("alice"),
            None,
            REJ_INVALID,
        ))),
        Ok(Some(r(
            t + 597,
            Some("web:1b2c3d4e-aaaa-bbbb-cccc-123456789012"),
            ip("2001:db8::7"),
            Some("bob"),
            None,
            Outcome::Accepted,
        ))),
        Ok(Some(r(
            t + 1597,
            Some("svc"),
            ip("192.0.2.4"),
            None,
            None,
            REJ_INVALID,
        ))),
        Ok(None),
        Ok(None),
        // WildFly time-only: the date comes from the last full-dated line.
        Ok(Some(r(
            t + 4697,
            Some("web:u1"),
            ip("10.0.0.2"),
            Some("u1"),
            None,
            Outcome::Rejected(Reason::Expired),
        ))),
        Ok(Some(r(
            t + 6097 - 3_600_000,
            Some("web:u9"),
            ip("10.0.0.3"),
            Some("carol"),
            None,
            Outcome::Rejected(Reason::Revoked),
        ))),
        Ok(None),
    ];
    assert_eq!(got, want);
}

#[test]
fn keycloak_time_only_before_any_date_is_1970() {
    let mut p = parser(&spec(Preset::Keycloak));
    let rec = event(p.as_mut(), b"00:00:01,000 WARN  [org.keycloak.events] (default task-1) type=LOGIN_ERROR, clientId=web, ipAddress=10.0.0.2, error=user_not_found, username=x");
    assert_eq!(rec.ms, Some(1000));
    assert_eq!(rec.outcome, REJ_INVALID);
}

#[test]
fn oauth2_proxy_fixture() {
    let mut p = parser(&spec(Preset::OAuth2Proxy));
    let got = events(p.as_mut(), "oauth2-proxy/auth.log");
    let want = [
        Ok(Some(r(
            T0,
            None,
            ip("203.0.113.9"),
            Some("alice@example.com"),
            None,
            Outcome::Accepted,
        ))),
        Ok(Some(r(
            T0 + 1000,
            None,
            ip("203.0.113.9"),
            None,
            None,
            REJ_INVALID,
        ))),
        Ok(Some(r(
            T0 + 2000,
            None,
            ip("203.0.113.9"),
            Some("bob@example.com"),
            None,
            Outcome::Accepted,
        ))),
        Ok(Some(r(
            T0 + 3000,
            None,
            ip("2001:db8::3"),
            None,
            Some(401),
            REJ_INVALID,
        ))),
        Ok(Some(r(
            T0 + 4000,
            None,
            ip("203.0.113.9"),
            Some("alice@example.com"),
            Some(200),
            Outcome::Accepted,
        ))),
        Ok(None),
        Ok(None),
        Ok(Some(r(
            1_549_497_690_000,
            None,
            ip("127.0.0.1"),
            None,
            Some(202),
            Outcome::Accepted,
        ))),
    ];
    assert_eq!(got, want);
}

#[test]
fn oauth2_proxy_local_time_uses_the_source_zone() {
    let mut s = spec(Preset::OAuth2Proxy);
    s.timezone = Some(jiff::tz::TimeZone::fixed(jiff::tz::offset(-5)));
    let mut p = parser(&s);
    let rec = event(
        p.as_mut(),
        b"203.0.113.9 - - [2026/03/02 08:55:36] [AuthSuccess] Authenticated via OAuth2",
    );
    assert_eq!(rec.ms, Some(T0));
}

#[test]
fn regex_fixture_and_spec_errors() {
    let mut s = spec(Preset::Regex);
    s.pattern = Some(r"^(?P<ts>\S+) key=(?P<token>\S+) src=(?P<ip>\S+) result=(?P<outcome>\w+) user=(?P<user>(?-u:\S)+)(?: why=(?P<reason>\S+))?$".into());
    s.time_format = Some("rfc3339".into());
    let mut p = parser(&s);
    let got = events(p.as_mut(), "regex/app.log");
    assert_eq!(
        got,
        [
            Ok(Some(r(
                T0,
                Some("ak_1"),
                ip("203.0.113.9"),
                Some("alice"),
                None,
                Outcome::Accepted
            ))),
            Ok(Some(r(
                T0 + 1000,
                Some("ak_2"),
                ip("2001:db8::1"),
                None,
                None,
                Outcome::Rejected(Reason::Revoked)
            ))),
        ]
    );
    // A needed capture that is not UTF-8 makes the line malformed.
    assert_eq!(
        p.parse(b"2026-03-02T13:55:36Z key=ak_1 src=203.0.113.9 result=ok user=\xff\xfe")
            .map(|_| ()),
        Err(ParseError::Utf8)
    );
    let mut s2 = s.clone();
    s2.pattern = Some(r"^(?P<ts>\S+) (?P<foo>\S+)$".into());
    assert!(matches!(build(&s2).err(), Some(SpecError::Pattern(m)) if m.contains("usable")));
    s2.pattern = Some(r"(?P<token>[".into());
    assert!(matches!(build(&s2).err(), Some(SpecError::Pattern(_))));
    s2.pattern = s.pattern.clone();
    s2.time_format = Some("yyyy-mm-dd".into());
    assert!(matches!(build(&s2).err(), Some(SpecError::TimeFormat(_))));
    s2.time_format = Some("%Y/%m/%d %H:%M:%S".into());
    let mut p2 = parser(&s2);
    assert_eq!(
        p2.parse(b"2026/03/02 13:55:36 key=ak_1 src=203.0.113.9 result=ok user=a")
            .map(|_| ()),
        Err(ParseError::NoMatch("regex")),
        "\\S+ cannot match the space inside the timestamp"
    );
}

#[test]
fn regex_strftime_and_invalid_utf8_capture() {
    let mut s = spec(Preset::Regex);
    s.pattern = Some(r"^\[(?P<ts>[^\]]+)\] (?P<status>\d{3}) (?P<token>(?-u:\S)+)".into());
    s.time_format = Some("%d/%m/%Y %H:%M:%S".into());
    let mut p = parser(&s);
    let rec = event(
        p.as_mut(),
        b"[02/03/2026 13:55:36] 403 ak_1 \xff trailing junk",
    );
    assert_eq!(
        rec,
        r(T0, Some("ak_1"), None, None, Some(403), REJ_FORBIDDEN)
    );
    assert_eq!(
        p.parse(b"[02/03/2026 13:55:36] 401 ak_\xff").map(|_| ()),
        Err(ParseError::Utf8)
    );
}

/// Every preset's parser, with the settings the garbage tests need.
fn all_parsers() -> Vec<(&'static str, Box<dyn Parser>)> {
    let mut regex = spec(Preset::Regex);
    regex.pattern = Some(r"^(?P<ts>\S+) (?P<status>\d+) (?P<token>\S+)$".into());
    Preset::ALL
        .iter()
        .map(|(p, name)| {
            let s = if *p == Preset::Regex {
                regex.clone()
            } else {
                spec(*p)
            };
            (*name, parser(&s))
        })
        .collect()
}

#[test]
fn garbage_is_malformed_for_every_preset() {
    let long = vec![b'a'; 100 * 1024];
    let garbage: [(&str, &[u8]); 6] = [
        ("binary", b"\x00\x01\x02\x03\xff\xfe\x7f\x80"),
        ("invalid utf-8", b"\xc3\x28 \xa0\xa1 - - [x]"),
        (
            "truncated json",
            br#"{"ts":"2026-03-02T13:55:36Z","type":"response","token_id":"ak_1","status":40"#,
        ),
        ("100 KB line", &long),
        ("json array", b"[1,2,3]"),
        ("json string", br#""secret-value""#),
    ];
    for (name, mut p) in all_parsers() {
        for (what, line) in garbage {
            let res = p.parse(line);
            assert!(res.is_err(), "{name}: {what} gave {res:?}");
        }
        // Blank lines are skipped silently, never malformed.
        for blank in [&b""[..], b"\r", b"  \t"] {
            assert_eq!(p.parse(blank), Ok(Parsed::Skip), "{name}: blank line");
        }
    }
}

#[test]
fn wrong_timestamps_are_malformed() {
    let cases: [(Preset, &[u8]); 5] = [
        (Preset::Nginx, br#"203.0.113.9 - - [32/Mar/2026:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "-" "ak" "-""#),
        (Preset::Json, br#"{"ts":"yesterday","token_id":"ak","status":200}"#),
        (Preset::Vault, br#"{"time":"2026-13-02T13:55:36Z","type":"response"}"#),
        (Preset::Keycloak, b"2024-01-10 25:01:45,403 WARN  [org.keycloak.events] (t) type=LOGIN"),
        (Preset::OAuth2Proxy, b"203.0.113.9 - - [2026/03/02 13:61:36] [AuthSuccess] ok"),
    ];
    for (preset, line) in cases {
        let res = parser(&spec(preset)).parse(line);
        assert!(res.is_err(), "{preset:?}: {res:?}");
    }
}

#[test]
fn json_error_messages_never_echo_the_line() {
    let mut p = parser(&spec(Preset::Json));
    let secret = "sk-live-THIS-IS-SECRET";
    for line in [
        format!(r#""{secret}""#),
        format!(r#"{{"token_id":"{secret}","status":"#),
        format!(r#"{{"token_id":"{secret}"}}x"#),
    ] {
        let err = p.parse(line.as_bytes()).expect_err("malformed");
        assert!(!err.to_string().contains(secret), "{err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn arbitrary_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..400)) {
        for (_, mut p) in all_parsers() {
            let _ = p.parse(&line);
        }
    }

    #[test]
    fn mutated_real_lines_never_panic(idx in 0usize..40, pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut lines: Vec<Vec<u8>> = ["nginx/tokenwatch.log", "json/app.log", "vault/audit.log", "keycloak/events.log", "oauth2-proxy/auth.log", "regex/app.log"]
            .iter()
            .flat_map(|f| fixture(f))
            .collect();
        let n = lines.len();
        let line = &mut lines[idx % n];
        let i = pos.index(line.len());
        line[i] = byte;
        let short = &line[..cut.index(line.len() + 1)];
        for (_, mut p) in all_parsers() {
            let _ = p.parse(line);
            let _ = p.parse(short);
        }
    }
}

/// What the counters take from a parse (metrics-only mode): the classification, the error,
/// the outcome, status and time.
fn counted(r: Result<Parsed<'_>, ParseError>) -> String {
    match r {
        Ok(Parsed::Event(r)) => format!("event {:?} {:?} {:?}", r.outcome, r.status, r.time),
        other => format!("{other:?}"),
    }
}

/// Lines the nginx scanner's fast paths must get right: escapes, IPv6 forms, fields that
/// end at or across its 8- and 16-byte steps, odd spacing, missing and extra fields,
/// invalid UTF-8 in each text field, bad times and statuses, prefixes.
fn tricky_nginx_lines() -> Vec<Vec<u8>> {
    let ok = r#"203.0.113.9 - alice [02/Mar/2026:13:55:36 +0000] "GET /v1/chat?q=a HTTP/1.1" 401 12 "https://ref.example/x?y=z" "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0" "ak_3f9c2b11d0aa" "token revoked""#;
    let mut lines: Vec<Vec<u8>> = vec![ok.into()];
    for (from, to) in [
        ("203.0.113.9", "2001:db8::1"),
        ("203.0.113.9", "2001:db8:0:0:0:0:0:1"),
        ("203.0.113.9", "[2001:db8::1]:443"),
        ("203.0.113.9", "::ffff:192.0.2.1"),
        ("203.0.113.9", "203.0.113.9:5678"),
        ("203.0.113.9", "fe80::1%eth0"),
        ("203.0.113.9", "not-an-ip"),
        ("203.0.113.9", "-"),
        ("203.0.113.9", "203.0.113.256"),
        (
            "203.0.113.9 -",
            "<190>Mar  2 13:55:36 host nginx: 203.0.113.9 -",
        ),
        ("203.0.113.9 -", "vhost.example:443 203.0.113.9 -"),
        ("Firefox/133.0", r#"Firefox/133.0 \"quoted\" x"#),
        ("Firefox/133.0", r#"ends with a backslash\\"#),
        (
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0",
            r#"0123456\"89abcdef"#,
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0",
            r#"0123456789abcde\"f"#,
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0",
            "0123456789abcdef",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0",
            "01234567",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0",
            "",
        ),
        ("/v1/chat?q=a", r#"/v1/chat?q=caf\xC3\xA9"#),
        (r#""GET /v1/chat?q=a HTTP/1.1""#, r#""""#),
        (" 401 ", "  401 "),
        (" 401 ", " 4O1 "),
        (" 401 ", " 403 "),
        (" 401 ", " 200 "),
        ("02/Mar/2026:13:55:36", "31/Feb/2026:13:55:36"),
        ("[02/Mar/2026:13:55:36 +0000]", "[02/Mar/2026:13:55:36]"),
        (r#" "token revoked""#, ""),
        (r#" "token revoked""#, r#" "token revoked" "extra" 0.001"#),
        (r#" "token revoked""#, r#" "token revoked"x"#),
        (
            r#""ak_3f9c2b11d0aa" "token revoked""#,
            r#""Bearer sk-proj-0123456789abcdef0123456789abcdef" "-""#,
        ),
        (r#"" "ak_3f9c2b11d0aa" "token revoked""#, "\""),
        (r#" "ak_3f9c2b11d0aa" "token revoked""#, r#" "ak_1""#),
    ] {
        assert!(ok.contains(from), "{from}");
        lines.push(ok.replacen(from, to, 1).into_bytes());
    }
    for field in ["alice", "ak_3f9c2b11d0aa", "token revoked", "Firefox"] {
        let at = ok.find(field).unwrap();
        let mut bad = ok.as_bytes().to_vec();
        bad.insert(at + 1, 0xff);
        lines.push(bad);
    }
    lines.push(format!("{ok}\r").into_bytes());
    lines
}

#[test]
fn counting_agrees_with_parse_on_fixtures_and_tricky_lines() {
    let mut files: Vec<(Preset, Vec<Vec<u8>>)> = vec![
        (Preset::Nginx, fixture("nginx/tokenwatch.log")),
        (Preset::Nginx, fixture("nginx/main.log")),
        (Preset::Nginx, tricky_nginx_lines()),
        (Preset::Json, fixture("json/app.log")),
        (Preset::Vault, fixture("vault/audit.log")),
    ];
    files.push((Preset::Keycloak, fixture("keycloak/events.log")));
    for (preset, lines) in files {
        let (mut full, mut count) = (parser(&spec(preset)), parser(&spec(preset)));
        for line in &lines {
            let want = counted(full.parse(line));
            assert_eq!(
                counted(count.parse_counts(line)),
                want,
                "{preset:?} {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
    // The tricky lines do exercise both answers.
    let mut p = parser(&spec(Preset::Nginx));
    let got: Vec<bool> = tricky_nginx_lines()
        .iter()
        .map(|l| matches!(p.parse(l), Ok(Parsed::Event(_))))
        .collect();
    assert!(got.iter().filter(|ok| **ok).count() > 10, "{got:?}");
    assert!(got.iter().filter(|ok| !**ok).count() > 5, "{got:?}");
}

#[test]
fn nginx_escapes_and_long_fields_keep_their_values() {
    let mut p = parser(&spec(Preset::Nginx));
    let ua = "x".repeat(300) + r#"\"y\" "# + &"z".repeat(40);
    let line = format!(
        r#"2a01:4f8:d46a:c322::b2cc - - [02/Mar/2026:13:55:36 +0000] "GET /v1?{q} HTTP/1.1" 401 1 "-" "{ua}" "ak_1" "-""#,
        q = "a=b&".repeat(50)
    );
    let r = event(p.as_mut(), line.as_bytes());
    assert_eq!(r.ip, ip("2a01:4f8:d46a:c322::b2cc"));
    assert_eq!(r.token.as_deref(), Some("ak_1"));
    assert_eq!(r.outcome, Outcome::Rejected(Reason::Invalid));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn counting_agrees_with_parse_on_mutated_lines(idx in 0usize..100, pos in any::<prop::sample::Index>(), byte in prop::sample::select(b"\"\\ -[]:.x\xff\t0".to_vec()), delete in any::<bool>()) {
        let mut lines = tricky_nginx_lines();
        lines.extend(fixture("nginx/tokenwatch.log"));
        let n = lines.len();
        let line = &mut lines[idx % n];
        let i = pos.index(line.len());
        if delete {
            line.remove(i);
        } else {
            line.insert(i, byte);
        }
        let (mut full, mut count) = (parser(&spec(Preset::Nginx)), parser(&spec(Preset::Nginx)));
        prop_assert_eq!(counted(count.parse_counts(line)), counted(full.parse(line)));
    }
}
