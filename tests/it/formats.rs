//! Gateway formats and container wrappers: lines from each product's documentation, the
//! JSON reason regression, `parse --pattern`, and hostile wrapped input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use tokenwatch::event::{Outcome, Reason};
use tokenwatch::parse::{build, Dialect, Parsed, Parser, ParserSpec, Preset};

fn parser(preset: Preset, f: impl FnOnce(&mut ParserSpec)) -> Box<dyn Parser> {
    let mut s = ParserSpec {
        preset,
        ..ParserSpec::default()
    };
    f(&mut s);
    build(&s).unwrap()
}

/// (rfc3339 time, ip, status, outcome, token) of a line that must parse as a check.
fn check(p: &mut dyn Parser, line: &str) -> (String, String, u16, Outcome, Option<String>) {
    match p.parse(line.as_bytes()) {
        Ok(Parsed::Event(r)) => (
            r.time.map(|t| t.to_string()).unwrap_or_default(),
            r.ip.map(|i| i.to_string()).unwrap_or_default(),
            r.status.unwrap_or(0),
            r.outcome,
            r.token.map(|t| t.into_owned()),
        ),
        other => panic!("{line}: {other:?}"),
    }
}

// https://doc.traefik.io/traefik/observability/access-logs/#clf-common-log-format
// (combined + `<requests> "<router>" "<server URL>" <duration>ms`)
const TRAEFIK_CLF: &str = r#"192.168.2.20 - - [20/Apr/2024:10:00:00 +0000] "GET /api HTTP/1.1" 401 17 "-" "curl/8.5.0" 42 "api@docker" "http://172.18.0.3:8080" 3ms"#;

#[test]
fn traefik_clf_and_common_read_with_every_nginx_built_in() {
    for lf in ["tokenwatch", "combined", "main", "common", "traefik"] {
        let mut p = parser(Preset::Nginx, |s| s.log_format = Some(lf.into()));
        let (t, ip, st, out, token) = check(p.as_mut(), TRAEFIK_CLF);
        assert_eq!(
            (t.as_str(), ip.as_str(), st, out, token),
            (
                "2024-04-20T10:00:00.000Z",
                "192.168.2.20",
                401,
                Outcome::Rejected(Reason::Invalid),
                None
            ),
            "{lf}"
        );
    }
    // https://httpd.apache.org/docs/2.4/logs.html#common
    let mut p = parser(Preset::Nginx, |s| s.log_format = Some("common".into()));
    let (_, ip, st, ..) = check(
        p.as_mut(),
        r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#,
    );
    assert_eq!((ip.as_str(), st), ("127.0.0.1", 200));
    // Extra fields must follow a space: text glued to a quoted field does not match.
    let mut p = parser(Preset::Nginx, |s| s.log_format = Some("combined".into()));
    assert!(p
        .parse(br#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2326 "-" "ua"x"#)
        .is_err());
}

#[test]
fn error_and_server_lines_are_skipped_with_a_reason_not_malformed() {
    let mut p = parser(Preset::Nginx, |_| {});
    for (line, why) in [
        // https://nginx.org/en/docs/ngx_core_module.html#error_log (format of its lines)
        ("2026/03/02 13:55:36 [error] 1234#0: *5 open() \"/usr/share/nginx/html/favicon.ico\" failed (2: No such file or directory), client: 203.0.113.9, server: localhost", "error_log"),
        // https://httpd.apache.org/docs/2.4/logs.html#errorlog
        ("[Fri Sep 09 10:42:29.902022 2011] [core:error] [pid 35708:tid 4328636416] [client 72.15.99.187] File does not exist: /usr/local/apache2/htdocs/favicon.ico", "error_log"),
        ("/docker-entrypoint.sh: Configuration complete; ready for start up", "server_log"),
    ] {
        assert_eq!(p.parse(line.as_bytes()), Ok(Parsed::NotAccess(why)), "{line}");
    }
    assert_eq!(p.parse(b""), Ok(Parsed::Skip));
}

#[test]
fn oauth2_proxy_refuses_plain_access_lines() {
    let mut p = parser(Preset::OAuth2Proxy, |_| {});
    for line in [
        TRAEFIK_CLF,
        r#"203.0.113.9 - - [02/Mar/2026:13:55:36 +0000] "GET /v1/models HTTP/1.1" 401 12 "-" "curl/8" 0.003"#,
        r#"203.0.113.9 - alice [02/Mar/2026:13:55:36 +0000] "GET / HTTP/1.1" 200 5 1 0.1"#,
    ] {
        assert!(
            !matches!(p.parse(line.as_bytes()), Ok(Parsed::Event(_))),
            "{line}"
        );
    }
    // Its own request log (https://oauth2-proxy.github.io/oauth2-proxy/configuration/overview#request-log-format)
    let own = r#"127.0.0.1 - 8a7c4f1e-0c3d-4d3b-9d6a-5f3e1c2b7a90 - bob@example.com [2026/03/02 13:55:36] api.example.com GET upstream:8080 "/v1/models" HTTP/1.1 "curl/8" 401 21 0.001"#;
    assert!(matches!(p.parse(own.as_bytes()), Ok(Parsed::Event(_))));
}

// https://caddyserver.com/docs/caddyfile/directives/log (the example access log entry),
// with an Authorization header as Caddy logs it with `log_credentials`.
const CADDY: &str = r#"{"level":"info","ts":1646861401.5241024,"logger":"http.log.access","msg":"handled request","request":{"remote_ip":"127.0.0.1","remote_port":"41342","client_ip":"203.0.113.9","proto":"HTTP/2.0","method":"GET","host":"localhost","uri":"/","headers":{"User-Agent":["curl/7.82.0"],"Accept":["*/*"],"Authorization":["Bearer app-0123456789abcdefghijklmn"]},"tls":{"resumed":false,"version":771,"cipher_suite":4865,"proto":"h2","server_name":"example.com"}},"bytes_read":0,"user_id":"","duration":0.000929675,"size":10900,"status":401,"resp_headers":{"Server":["Caddy"]}}"#;
// https://doc.traefik.io/traefik/observability/access-logs/#json-format (its field names),
// with the Authorization header kept (`fields.headers.names.Authorization=keep`).
const TRAEFIK_JSON: &str = r#"{"ClientAddr":"10.0.0.5:51000","ClientHost":"198.51.100.7, 10.0.0.5","ClientPort":"51000","ClientUsername":"-","DownstreamContentSize":17,"DownstreamStatus":403,"Duration":1234567,"RequestCount":42,"RequestHost":"api.example.com","RequestMethod":"POST","RequestPath":"/v1/chat","RequestProtocol":"HTTP/1.1","RouterName":"api@docker","StartLocal":"2024-04-20T12:00:00.123456789+02:00","StartUTC":"2024-04-20T10:00:00.123456789Z","entryPointName":"websecure","level":"info","msg":"","request_Authorization":"Bearer sk-abcdefghijklmnopqrstuvwx","time":"2024-04-20T12:00:00+02:00"}"#;
// https://istio.io/latest/docs/tasks/observability/logs/access-log/ (Envoy's default
// format fields, JSON encoding).
const ENVOY: &str = r#"{"authority":"productpage:9080","bytes_received":0,"bytes_sent":4294,"downstream_local_address":"10.244.0.9:9080","downstream_remote_address":"10.244.0.8:53392","duration":12,"method":"GET","path":"/productpage","protocol":"HTTP/1.1","request_id":"b3b6c4a5-2c5e-9b0a-8f0b-3e7d6c5b4a39","response_code":200,"response_flags":"-","route_name":"default","start_time":"2023-05-11T10:06:38.392Z","upstream_cluster":"inbound|9080||","upstream_host":"10.244.0.9:9080","user_agent":"curl/7.88.1","x_forwarded_for":null}"#;
// https://developer.konghq.com/plugins/file-log/ (the sample log object, shortened).
const KONG: &str = r#"{"response":{"size":9982,"headers":{"content-length":"9593","via":"1.1 kong/3.8.0.0-enterprise-edition"},"status":401},"upstream_uri":"/anything","request":{"id":"e8f2b3c4d5e6f7a8b9c0d1e2f3a4b5c6","headers":{"accept":"*/*","host":"localhost:8000","user-agent":"curl/8.7.1","apikey":"my-key-0123456789abcdefghij"},"uri":"/log","size":110,"method":"GET","querystring":{},"url":"http://localhost:8000/log"},"client_ip":"192.168.65.1","upstream_status":"401","started_at":1726783838853,"consumer":{"username":"alice","id":"0c8c6d8e-4b0a-4cfb-9a0b-6e2b7a1f3c5d"},"latencies":{"request":22,"kong":3,"proxy":19}}"#;

#[test]
fn json_dialects_from_the_docs_configured_and_detected() {
    let cases = [
        (
            Dialect::Caddy,
            CADDY,
            (
                "2022-03-09T21:30:01.524Z",
                "203.0.113.9",
                401,
                Some("Bearer app-0123456789abcdefghijklmn"),
            ),
        ),
        (
            Dialect::Traefik,
            TRAEFIK_JSON,
            (
                "2024-04-20T10:00:00.123Z",
                "198.51.100.7",
                403,
                Some("Bearer sk-abcdefghijklmnopqrstuvwx"),
            ),
        ),
        (
            Dialect::Envoy,
            ENVOY,
            ("2023-05-11T10:06:38.392Z", "10.244.0.8", 200, None),
        ),
        (
            Dialect::Kong,
            KONG,
            (
                "2024-09-19T22:10:38.853Z",
                "192.168.65.1",
                401,
                Some("my-key-0123456789abcdefghij"),
            ),
        ),
    ];
    for (d, line, (t, ip, st, token)) in cases {
        for configured in [Some(d), None] {
            let mut p = parser(Preset::Json, |s| s.dialect = configured);
            let got = check(p.as_mut(), line);
            assert_eq!(
                (got.0.as_str(), got.1.as_str(), got.2, got.4.as_deref()),
                (t, ip, st, token),
                "{d:?} configured={configured:?}"
            );
            assert!(p.detected().is_some_and(|s| s.starts_with(d.name())));
        }
    }
    // Caddy redacts credentials by default: no token, still a check.
    let redacted = CADDY.replace("Bearer app-0123456789abcdefghijklmn", "REDACTED");
    let mut p = parser(Preset::Json, |_| {});
    assert_eq!(check(p.as_mut(), &redacted).4, None);
    // Caddy's own start-up line before the access lines: skipped, detection continues.
    let mut p = parser(Preset::Json, |_| {});
    let start = r#"{"level":"info","ts":1646861400.1,"msg":"serving initial configuration"}"#;
    assert!(matches!(
        p.parse(start.as_bytes()),
        Ok(Parsed::Skip) | Err(_)
    ));
    assert_eq!(check(p.as_mut(), CADDY).2, 401);
}

fn tokenwatch(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokenwatch");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn regression_json_reason_is_not_overridden_by_the_nginx_reason_field() {
    let line = br#"{"ts":"2026-03-02T13:55:36Z","token_id":"ak_1","ip":"203.0.113.9","status":401,"reason":"revoked"}
"#;
    let out = stdout(&tokenwatch(
        &["parse", "-v", "--format", "json", "-"],
        Some(line),
    ));
    assert!(out.contains("outcome=Rejected(Revoked)"), "{out}");
    assert!(out.contains("token=ak_1"), "{out}");
}

#[test]
fn parse_takes_a_regex_pattern_on_the_command_line() {
    let log =
        b"2026-03-02T13:55:36Z 203.0.113.9 401 ak_1\n2026-03-02T13:55:37Z 203.0.113.9 200 ak_1\n";
    let out = stdout(&tokenwatch(
        &[
            "parse",
            "-v",
            "--pattern",
            r"^(?P<ts>\S+) (?P<ip>\S+) (?P<status>\d{3}) (?P<token>\S+)$",
            "-",
        ],
        Some(log),
    ));
    assert!(out.contains("Parsed (token checks): 2"), "{out}");
    assert!(
        out.contains("status=401 outcome=Rejected(Invalid)"),
        "{out}"
    );
    let bad = tokenwatch(&["parse", "--pattern", "(?P<ts>[", "-"], Some(log));
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn parse_names_the_wrapper_and_survives_hostile_wrapped_input() {
    let inner = r#"203.0.113.9 - - [02/Mar/2026:13:55:36 +0000] "GET / HTTP/1.1" 401 0 "-" "curl/8" "ak_1" "revoked""#;
    let log = serde_json::to_string(&format!("{inner}\n")).unwrap();
    let mut input = format!(
        "{{\"log\":{log},\"stream\":\"stdout\",\"time\":\"2026-03-02T13:55:36.5Z\"}}\n{{\"log\":\"broken\\q\"}}\n"
    )
    .into_bytes();
    // A 10 MB single line inside a Docker entry: dropped and counted, memory bounded.
    input.extend_from_slice(b"{\"log\":\"");
    input.extend(std::iter::repeat_n(b'z', 10 << 20));
    input.extend_from_slice(b"\\n\",\"stream\":\"stdout\",\"time\":\"2026-03-02T13:55:36Z\"}\n");
    let out = stdout(&tokenwatch(&["parse", "-v", "-"], Some(&input)));
    assert!(out.contains("Wrapper: docker"), "{out}");
    assert!(out.contains("outcome=Rejected(Revoked)"), "{out}");
    assert!(out.contains("Malformed: 1"), "{out}");
    assert!(out.contains("Too long (dropped): 1"), "{out}");
    let cri = b"2026-03-02T13:55:36.1Z stdout P 203.0.113.9 - - [02/Mar/2026:13:55:36 +0000] \"GET / HTTP/1.1\" 401 0\n2026-03-02T13:55:36.2Z stdout F  \"-\" \"curl/8\"\n";
    let out = stdout(&tokenwatch(
        &["parse", "-v", "--log-format", "combined", "-"],
        Some(cri),
    ));
    assert!(out.contains("Wrapper: cri"), "{out}");
    assert!(out.contains("Parsed (token checks): 1"), "{out}");
}

#[test]
fn run_tails_a_docker_json_log_with_error_lines_mixed_in() {
    use super::support::{http_get, sample, wait_for, Daemon};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0123abcd-json.log");
    let entry = |text: &str, stream: &str| {
        format!(
            "{{\"log\":{},\"stream\":\"{stream}\",\"time\":\"2026-03-02T13:55:36.000000001Z\"}}\n",
            serde_json::to_string(&format!("{text}\n")).unwrap()
        )
    };
    let mut text = String::new();
    for i in 0..12 {
        let (status, why) = if i % 3 == 0 {
            (401, "revoked")
        } else {
            (200, "-")
        };
        text += &entry(
            &format!("203.0.113.{i} - - [02/Mar/2026:13:55:{i:02} +0000] \"POST /v1/chat HTTP/1.1\" {status} 5 \"-\" \"curl/8\" \"ak_{i}\" \"{why}\""),
            "stdout",
        );
        text += &entry(
            &format!("2026/03/02 13:55:{i:02} [error] 29#29: *{i} open() \"/x\" failed (2: No such file or directory)"),
            "stderr",
        );
    }
    std::fs::write(&log, text).unwrap();
    let cfg = dir.path().join("tw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"{}\"\n[[source]]\nname = \"dify\"\npath = \"{}\"\nstart_at = \"beginning\"\n",
            dir.path().join("state").display(),
            dir.path().join("*-json.log").display()
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&cfg, dir.path(), &[]);
    d.wait_ready();
    let body = wait_for(20, "12 checks", || {
        let (_, body) = http_get(&d.addr, "/metrics")?;
        (sample(&body, "auth_token_check_total{source=\"dify\"}") == Some(12.0)).then_some(body)
    });
    let get = |s: &str| sample(&body, s);
    assert_eq!(
        get("auth_token_rejected_total{reason=\"revoked\",source=\"dify\"}"),
        Some(4.0)
    );
    assert_eq!(
        get("tokenwatch_skipped_lines_total{reason=\"error_log\",source=\"dify\"}"),
        Some(12.0)
    );
    assert_eq!(
        get("tokenwatch_lines_total{result=\"malformed\",source=\"dify\"}"),
        Some(0.0)
    );
    assert_eq!(d.terminate().code(), Some(0));
}
