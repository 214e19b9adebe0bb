//! End-to-end checks of `generate`: determinism, order, shape, labels, and that every labelled
//! attack really is in the log where its label says.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use serde_json::Value;

use super::*;

fn opts(format: GenFormat, tokens: u32) -> GenOptions {
    GenOptions {
        format,
        tokens,
        ..GenOptions::default()
    }
}

fn gen(o: &GenOptions) -> (String, Vec<Label>, GenSummary) {
    let mut log = Vec::new();
    let mut labels = Vec::new();
    let summary = generate(o, &mut log, Some(&mut labels)).expect("generate");
    let log = String::from_utf8(log).expect("utf8 log");
    let labels =
        Label::parse_all(&String::from_utf8(labels).expect("utf8 labels")).expect("labels");
    (log, labels, summary)
}

/// One parsed JSON line.
struct Line {
    t: i64,
    token: Option<String>,
    ip: IpAddr,
    status: u64,
    reason: Option<String>,
}

fn parse_json(log: &str) -> Vec<Line> {
    log.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            let ts = v["ts"].as_str().expect("ts");
            let t = jiff::Timestamp::from_str(ts)
                .expect("rfc3339")
                .as_millisecond();
            Line {
                t,
                token: v["token_id"].as_str().map(str::to_string),
                ip: v["ip"].as_str().expect("ip").parse().expect("ip parses"),
                status: v["status"].as_u64().expect("status"),
                reason: v["reason"].as_str().map(str::to_string),
            }
        })
        .collect()
}

use std::str::FromStr;

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    for format in GenFormat::ALL {
        let o = opts(format, 20);
        let (a, la, _) = gen(&o);
        let (b, lb, _) = gen(&o);
        assert!(a == b && la == lb, "{format} not deterministic");
        let (c, _, _) = gen(&GenOptions { seed: 2, ..o });
        assert_ne!(a, c, "{format}: seed ignored");
    }
}

#[test]
fn lines_are_time_ordered_and_span_the_days() {
    let o = opts(GenFormat::Json, 40);
    let (log, _, summary) = gen(&o);
    let lines = parse_json(&log);
    assert_eq!(lines.len() as u64, summary.lines);
    assert!(
        lines.windows(2).all(|w| w[0].t <= w[1].t),
        "not time-ordered"
    );
    let start = o.start.as_millis();
    assert!(lines
        .iter()
        .all(|l| (start..start + 7 * clock::DAY).contains(&l.t)));
    assert!(lines.last().map(|l| l.t).unwrap_or(0) > start + 6 * clock::DAY);
}

#[test]
fn nginx_lines_have_the_tokenwatch_shape() {
    let re = regex::Regex::new(
        r#"^(\S+) - - \[(\d{2})/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/(\d{4}):(\d{2}):(\d{2}):(\d{2}) \+0000\] "(GET|POST) (/\S*) HTTP/1\.1" (\d{3}) (\d+) "-" "([^"]+)" "(ak_[0-9a-f]{12}|-)" "(-|invalid|expired|revoked)"$"#,
    )
    .expect("regex");
    let (log, _, summary) = gen(&opts(GenFormat::Nginx, 60));
    assert!(summary.lines > 10_000, "{}", summary.lines);
    let (mut v6, mut rejected) = (0, 0);
    for line in log.lines() {
        let c = re
            .captures(line)
            .unwrap_or_else(|| panic!("bad line: {line}"));
        let ip: IpAddr = c[1].parse().expect("ip");
        v6 += usize::from(ip.is_ipv6());
        let status = &c[10];
        let reason = &c[14];
        assert_eq!(status == "401", reason != "-", "{line}");
        rejected += usize::from(status == "401");
    }
    assert!(rejected > 100);
    assert!(v6 > 0, "some users are on IPv6");
}

#[test]
fn vault_lines_are_response_entries() {
    let (log, _, _) = gen(&GenOptions {
        lines: Some(5000),
        ..opts(GenFormat::Vault, 30)
    });
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).expect("json");
        assert_eq!(v["type"], "response");
        assert!(v["request"]["remote_address"].as_str().is_some());
        if let Some(acc) = v["auth"]["accessor"].as_str() {
            assert!(acc.starts_with("ak_") && acc.len() == 15);
        }
    }
}

#[test]
fn labels_name_every_scenario_and_every_hard_case() {
    let (_, labels, summary) = gen(&opts(GenFormat::Json, 60));
    let detectors: HashSet<&str> = [
        "rejection_ratio",
        "brute_force",
        "token_spray",
        "distributed_spray",
        "rate_spike",
        "impossible_travel",
        "ip_fanout",
        "off_hours",
        "revoked_reuse",
    ]
    .into();
    let attacks: BTreeSet<&str> = labels
        .iter()
        .filter(|l| l.expect == Expect::Detect)
        .map(|l| l.scenario.as_str())
        .collect();
    let all: BTreeSet<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(attacks, all);
    assert_eq!(summary.incidents, 9);
    assert!(summary.skipped.is_empty(), "{:?}", summary.skipped);
    let hard: BTreeSet<&str> = labels
        .iter()
        .filter(|l| l.expect == Expect::None)
        .map(|l| l.scenario.as_str())
        .collect();
    for name in [
        "office_worker",
        "service",
        "daily_batch",
        "organic_growth",
        "nat_pool",
        "traveller",
        "roaming_mobile",
        "expired_refresh",
        "key_rotation",
    ] {
        assert!(hard.contains(name), "no hard case {name}");
    }
    let ids: HashSet<&str> = labels.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids.len(), labels.len(), "ids unique");
    for l in &labels {
        assert!(detectors.contains(l.detector.as_str()), "{}", l.detector);
        assert!(l.start_ms <= l.end_ms);
        assert_eq!(l.start, EventTime::from_millis(l.start_ms).to_string());
    }
}

#[test]
fn line_limit_is_exact_even_past_the_last_day() {
    let o = GenOptions {
        lines: Some(1234),
        ..opts(GenFormat::Nginx, 20)
    };
    let (log, _, s) = gen(&o);
    assert_eq!(log.lines().count(), 1234);
    assert_eq!(s.lines, 1234);
    let short = GenOptions {
        days: 1,
        lines: Some(50_000),
        scenarios: Vec::new(),
        ..opts(GenFormat::Json, 20)
    };
    let (log, labels, s) = gen(&short);
    assert_eq!(s.lines, 50_000);
    assert!(labels.iter().all(|l| l.expect == Expect::None));
    let last = parse_json(&log).last().map(|l| l.t).unwrap_or(0);
    assert!(
        last > short.start.as_millis() + clock::DAY,
        "ran past --days"
    );
}

#[test]
fn short_runs_skip_attacks_that_need_a_learning_period() {
    let o = GenOptions {
        days: 3,
        ..opts(GenFormat::Json, 20)
    };
    let (log, labels, s) = gen(&o);
    let needs: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| s.needs_baseline())
        .collect();
    assert_eq!(s.skipped, needs);
    assert_eq!(s.incidents, 6);
    let lines = parse_json(&log);
    for l in labels.iter().filter(|l| l.expect == Expect::Detect) {
        assert!(lines
            .iter()
            .any(|x| l.contains(EventTime::from_millis(x.t))));
    }
}

fn label(labels: &[Label], s: Scenario) -> &Label {
    labels
        .iter()
        .find(|l| l.scenario == s.name() && l.expect == Expect::Detect)
        .unwrap_or_else(|| panic!("no label for {s}"))
}

fn inside<'a>(lines: &'a [Line], l: &Label) -> impl Iterator<Item = &'a Line> + 'a {
    let (a, b) = (l.start_ms, l.end_ms);
    lines.iter().filter(move |x| (a..=b).contains(&x.t))
}

fn is_doc(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_documentation())
}

#[test]
fn every_attack_is_in_the_log_inside_its_window() {
    let (log, labels, _) = gen(&opts(GenFormat::Json, 60));
    let lines = parse_json(&log);
    let by_key = |l: &Label| -> Vec<&Line> {
        lines
            .iter()
            .filter(|x| x.token.as_deref() == Some(l.key.as_str()) || x.ip.to_string() == l.key)
            .collect()
    };

    let bf = label(&labels, Scenario::BruteForce);
    let from_ip = by_key(bf);
    assert!(
        from_ip.len() >= 60
            && from_ip
                .iter()
                .all(|x| bf.contains(EventTime::from_millis(x.t)))
    );
    assert!(bf.end_ms - bf.start_ms <= 5 * clock::MIN);
    assert!(from_ip.iter().all(|x| x.status == 401));

    let ts = label(&labels, Scenario::TokenSpray);
    let spray = by_key(ts);
    let distinct: HashSet<_> = spray.iter().filter_map(|x| x.token.clone()).collect();
    assert!(distinct.len() >= 20 && ts.end_ms - ts.start_ms <= 10 * clock::MIN);
    assert!(spray
        .iter()
        .all(|x| ts.contains(EventTime::from_millis(x.t))));
    let seen_before: HashSet<_> = lines
        .iter()
        .filter(|x| x.t < ts.start_ms)
        .filter_map(|x| x.token.clone())
        .collect();
    assert!(
        distinct.is_disjoint(&seen_before),
        "spray tokens must be never-seen"
    );

    let ds = label(&labels, Scenario::DistributedSpray);
    let mut per_ip: HashMap<IpAddr, HashSet<String>> = HashMap::new();
    for x in inside(&lines, ds).filter(|x| is_doc(x.ip) && x.status == 401) {
        per_ip.entry(x.ip).or_default().extend(x.token.clone());
    }
    assert!(per_ip.len() >= 15 && per_ip.values().all(|t| (2..=3).contains(&t.len())));
    assert!(ds.end_ms - ds.start_ms <= 45 * clock::MIN);

    let rs = label(&labels, Scenario::RateSpike);
    let tok = by_key(rs);
    let during = tok
        .iter()
        .filter(|x| rs.contains(EventTime::from_millis(x.t)))
        .count() as f64;
    let before = tok.iter().filter(|x| x.t < rs.start_ms).count() as f64;
    let per_15min = before / ((rs.start_ms - tok[0].t) as f64 / (15 * clock::MIN) as f64);
    assert!(
        during >= 15.0 * per_15min,
        "spike {during} vs baseline {per_15min}"
    );

    let it = label(&labels, Scenario::ImpossibleTravel);
    let cities: Vec<&str> = by_key(it)
        .iter()
        .filter(|x| it.contains(EventTime::from_millis(x.t)))
        .filter_map(|x| locate(x.ip).map(|g| g.city))
        .collect();
    assert_eq!(cities.first(), Some(&"London"));
    assert_eq!(cities.last(), Some(&"Sydney"));

    let fo = label(&labels, Scenario::IpFanout);
    let used: Vec<&Line> = by_key(fo)
        .into_iter()
        .filter(|x| fo.contains(EventTime::from_millis(x.t)))
        .collect();
    let ips: HashSet<IpAddr> = used.iter().map(|x| x.ip).collect();
    let nets: HashSet<String> = ips
        .iter()
        .map(|ip| crate::net::mask(*ip, 24).to_string())
        .collect();
    let countries: HashSet<&str> = ips
        .iter()
        .filter_map(|ip| locate(*ip).map(|g| g.country))
        .collect();
    assert!(
        ips.len() >= 30 && nets.len() >= 25 && countries.len() >= 4,
        "{} {} {}",
        ips.len(),
        nets.len(),
        countries.len()
    );
    assert!(fo.end_ms - fo.start_ms <= 10 * clock::MIN);

    let oh = label(&labels, Scenario::OffHours);
    let night: Vec<&Line> = by_key(oh)
        .into_iter()
        .filter(|x| oh.contains(EventTime::from_millis(x.t)))
        .collect();
    assert!(night.len() >= 10);
    let berlin = locate(night[0].ip).expect("located");
    let local = night[0].t + (berlin.lon / 15.0).round() as i64 * clock::HOUR;
    assert_eq!(
        (clock::weekday(local), clock::hour(local)),
        (6, 3),
        "Sunday 03:xx local"
    );
    let before: Vec<&Line> = by_key(oh)
        .into_iter()
        .filter(|x| x.t < oh.start_ms)
        .collect();
    assert!(before.iter().all(|x| {
        let l = x.t + (berlin.lon / 15.0).round() as i64 * clock::HOUR;
        clock::weekday(l) < 5 && (8..18).contains(&clock::hour(l))
    }));

    let rr = label(&labels, Scenario::RevokedReuse);
    let revoked: Vec<&Line> = by_key(rr)
        .into_iter()
        .filter(|x| x.reason.as_deref() == Some("revoked"))
        .collect();
    assert_eq!(revoked.len(), 20);
    assert!(revoked
        .iter()
        .all(|x| rr.contains(EventTime::from_millis(x.t))));
    assert!(
        by_key(rr)
            .iter()
            .any(|x| x.t < rr.start_ms && x.status == 200),
        "used before revocation"
    );

    let st = label(&labels, Scenario::RejectionStorm);
    let win: Vec<&Line> = inside(&lines, st).collect();
    let rejected = win.iter().filter(|x| x.status == 401).count() as f64;
    assert!(rejected / win.len() as f64 > 0.6 && win.len() > 100);
}

#[test]
fn hard_cases_behave_benignly() {
    let (log, labels, _) = gen(&opts(GenFormat::Json, 60));
    let lines = parse_json(&log);
    let of = |key: &str| -> Vec<&Line> {
        lines
            .iter()
            .filter(|x| x.token.as_deref() == Some(key))
            .collect()
    };
    let hard = |name: &'static str| {
        labels
            .iter()
            .filter(move |l| l.scenario == name && l.expect == Expect::None)
    };

    for l in hard("traveller") {
        let uses = of(&l.key);
        let home = uses.first().and_then(|x| locate(x.ip)).expect("home");
        let away = uses.last().and_then(|x| locate(x.ip)).expect("away");
        assert_ne!(home.city, away.city);
        let km = geo::km(home.lat, home.lon, away.lat, away.lon);
        let hours = (l.end_ms - l.start_ms) as f64 / clock::HOUR as f64;
        assert!(hours >= 7.0 && km / hours < 900.0, "{km} km in {hours} h");
    }
    for l in hard("nat_pool") {
        let ips: HashSet<IpAddr> = of(&l.key).iter().map(|x| x.ip).collect();
        let nets: HashSet<IpAddr> = ips.iter().map(|ip| crate::net::mask(*ip, 24)).collect();
        assert_eq!((ips.len(), nets.len()), (8, 1));
    }
    for l in hard("key_rotation") {
        let stale = of(&l.key)
            .iter()
            .filter(|x| x.reason.as_deref() == Some("revoked"))
            .count();
        assert!((1..=2).contains(&stale), "{stale}");
    }
    let v6: Vec<&Line> = lines.iter().filter(|x| x.ip.is_ipv6()).collect();
    let v6_tokens: HashSet<&str> = v6.iter().filter_map(|x| x.token.as_deref()).collect();
    assert!(!v6_tokens.is_empty());
    for tok in v6_tokens {
        let uses = of(tok);
        let addrs: HashSet<IpAddr> = uses.iter().map(|x| x.ip).collect();
        let nets: HashSet<IpAddr> = addrs.iter().map(|ip| crate::net::mask(*ip, 64)).collect();
        assert_eq!(nets.len(), 1, "an IPv6 user stays in one /64");
        assert!(addrs.len() > 1, "privacy addresses change daily");
    }
    for l in hard("roaming_mobile") {
        let uses = of(&l.key);
        for w in uses.windows(2) {
            let (a, b) = (locate(w[0].ip).expect("a"), locate(w[1].ip).expect("b"));
            let km = geo::km(a.lat, a.lon, b.lat, b.lon);
            assert!(km < 500.0);
            if km > 0.0 {
                let h = (w[1].t - w[0].t) as f64 / clock::HOUR as f64;
                assert!(km / h <= 250.0, "{km} km in {h} h");
            }
        }
    }
    for l in hard("expired_refresh") {
        let uses = of(&l.key);
        for w in uses
            .windows(2)
            .filter(|w| w[0].reason.as_deref() == Some("expired"))
        {
            assert_eq!(w[1].status, 200, "a refresh follows an expired 401");
        }
    }
}

/// Throughput report, not an assertion: `cargo test --lib gen::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    for format in GenFormat::ALL {
        let o = GenOptions {
            lines: Some(1_000_000),
            ..opts(format, 2000)
        };
        let began = std::time::Instant::now();
        let s = generate(&o, &mut std::io::sink(), None).expect("generate");
        let secs = began.elapsed().as_secs_f64();
        println!(
            "{format}: {} lines in {secs:.2} s = {:.0} lines/s",
            s.lines,
            s.lines as f64 / secs
        );
    }
    let began = std::time::Instant::now();
    let s = generate(&GenOptions::default(), &mut std::io::sink(), None).expect("generate");
    let secs = began.elapsed().as_secs_f64();
    println!(
        "defaults: {} lines, {} incidents, {} hard cases in {secs:.2} s",
        s.lines, s.incidents, s.hard_cases
    );
}
