//! Parser throughput: lines/s per preset on a few thousand generated realistic lines.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenwatch::parse::{build, ParserSpec, Preset};

const LINES: usize = 4000;

/// A deterministic pseudo-random sequence (no rand dependency).
fn pick(i: usize, n: usize) -> usize {
    (i.wrapping_mul(2_654_435_761) >> 7) % n
}

fn nginx(i: usize) -> String {
    let status = [200, 200, 200, 201, 401, 403, 429, 502][pick(i, 8)];
    let reason = if status == 401 { "token_revoked" } else { "-" };
    format!(
        r#"203.0.113.{} - - [02/Mar/2026:13:{:02}:{:02} +0000] "POST /v1/chat-messages?user={} HTTP/1.1" {status} {} "-" "python-requests/2.31.0" "ak_{:012x}" "{reason}""#,
        i % 250,
        (i / 60) % 60,
        i % 60,
        i,
        1000 + i,
        pick(i, 500)
    )
}

fn json(i: usize) -> String {
    format!(
        r#"{{"ts":"2026-03-02T13:{:02}:{:02}.{:03}Z","level":"info","token_id":"ak_{:012x}","user":"user{}","ip":"198.51.100.{}","method":"POST","path":"/v1/chat","status":{},"latency_ms":{},"ua":"python-requests/2.31.0"}}"#,
        (i / 60) % 60,
        i % 60,
        i % 1000,
        pick(i, 500),
        i % 40,
        i % 250,
        [200, 200, 401, 403][pick(i, 4)],
        i % 900
    )
}

fn vault(i: usize) -> String {
    format!(
        r#"{{"time":"2026-03-02T13:55:{:02}.{:06}Z","type":"{}","auth":{{"client_token":"hmac-sha256:{:064x}","accessor":"hmac-sha256:{:064x}","display_name":"approle","policies":["default","app"],"metadata":{{"role_name":"app"}},"entity_id":"e2853091-6c3c-2200-3ff7-0b664ed70c4d","token_type":"service"}},"request":{{"id":"b2f72168-6cba-1bab-808a-{:012x}","operation":"read","mount_type":"kv","client_token_accessor":"hmac-sha256:{:064x}","namespace":{{"id":"root"}},"path":"secret/data/app","remote_address":"10.1.{}.{}","remote_port":51000}}{}}}"#,
        i % 60,
        i,
        if i.is_multiple_of(2) {
            "request"
        } else {
            "response"
        },
        i,
        pick(i, 300),
        i,
        pick(i, 300),
        i % 10,
        i % 250,
        if i.is_multiple_of(7) {
            r#","error":"1 error occurred:\n\t* permission denied\n\n""#
        } else {
            ""
        }
    )
}

fn keycloak(i: usize) -> String {
    let (kind, err) = if i.is_multiple_of(5) {
        ("LOGIN_ERROR", r#", error="invalid_user_credentials""#)
    } else {
        ("LOGIN", "")
    };
    format!(
        r#"2024-01-10 21:{:02}:{:02},{:03} WARN  [org.keycloak.events] (executor-thread-{}) type="{kind}", realmId="master", clientId="web", userId="{:08x}-aaaa-bbbb-cccc-123456789012", ipAddress="10.0.{}.{}"{err}, auth_method="openid-connect", username="user{}""#,
        (i / 60) % 60,
        i % 60,
        i % 1000,
        i % 8,
        pick(i, 400),
        i % 10,
        i % 250,
        i % 400
    )
}

fn oauth2_proxy(i: usize) -> String {
    if i.is_multiple_of(3) {
        format!(
            "203.0.113.{}:{} - {:08x}-0f2e-4a6f-9d2d-4a1b2c3d4e5f - user{}@example.com [2026/03/02 13:55:{:02}] [AuthSuccess] Authenticated via OAuth2: Session{{email:user{}@example.com}}",
            i % 250, 40000 + i % 20000, i, i % 40, i % 60, i % 40
        )
    } else {
        format!(
            r#"203.0.113.{}:{} - {:08x}-0f2e-4a6f-9d2d-4a1b2c3d4e5f - user{}@example.com [2026/03/02 13:55:{:02}] api.example.com GET upstream:8080 "/v1/data?page={}" HTTP/1.1 "Mozilla/5.0 (X11; Linux x86_64)" {} 512 0.034"#,
            i % 250,
            40000 + i % 20000,
            i,
            i % 40,
            i % 60,
            i,
            [200, 401, 403, 200][pick(i, 4)]
        )
    }
}

fn regex_line(i: usize) -> String {
    format!(
        "2026-03-02T13:55:{:02}Z key=ak_{:012x} src=198.51.100.{} result={} user=user{}",
        i % 60,
        pick(i, 500),
        i % 250,
        ["success", "failure"][pick(i, 2)],
        i % 40
    )
}

fn bench_preset(c: &mut Criterion, name: &str, spec: ParserSpec, gen: fn(usize) -> String) {
    let lines: Vec<String> = (0..LINES).map(gen).collect();
    let mut parser = match build(&spec) {
        Ok(p) => p,
        Err(e) => panic!("{name}: {e}"),
    };
    for l in &lines {
        assert!(parser.parse(l.as_bytes()).is_ok(), "{name}: {l}");
    }
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(LINES as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            for l in &lines {
                let _ = black_box(parser.parse(black_box(l.as_bytes())));
            }
        })
    });
    g.finish();
}

fn spec(preset: Preset) -> ParserSpec {
    ParserSpec {
        preset,
        ..ParserSpec::default()
    }
}

fn benches(c: &mut Criterion) {
    bench_preset(c, "nginx", spec(Preset::Nginx), nginx);
    bench_preset(c, "json", spec(Preset::Json), json);
    bench_preset(c, "vault", spec(Preset::Vault), vault);
    bench_preset(c, "keycloak", spec(Preset::Keycloak), keycloak);
    bench_preset(c, "oauth2-proxy", spec(Preset::OAuth2Proxy), oauth2_proxy);
    let mut re = spec(Preset::Regex);
    re.pattern = Some(
        r"^(?P<ts>\S+) key=(?P<token>\S+) src=(?P<ip>\S+) result=(?P<outcome>\w+) user=(?P<user>\S+)$"
            .into(),
    );
    re.time_format = Some("rfc3339".into());
    bench_preset(c, "regex", re, regex_line);
}

criterion_group! {
    name = parse;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1))
        .sample_size(10);
    targets = benches
}
criterion_main!(parse);
