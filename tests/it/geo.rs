//! GeoIP and `impossible_travel`: `.mmdb` fixtures of both schemas built at test time by
//! `tests/support/mmdb_fixture.py` (PyPI `mmdb-writer`), and the detector scored on a
//! labelled `tokenwatch gen` log located with the built-in table.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tokenwatch::config::{DetectorsConfig, SourceConfig};
use tokenwatch::detect::{Detection, Engine, EngineSettings, VecSink};
use tokenwatch::enrich::geo::{self, BuiltinGeo, GeoError, GeoLookup, Location, MmdbGeo, Schema};
use tokenwatch::enrich::Fingerprinter;
use tokenwatch::event::{AuthEvent, EventTime, Outcome, TokenId};
use tokenwatch::gen::{Expect, GenOptions, Label};
use tokenwatch::metrics::Metrics;
use tokenwatch::pipeline::{EventSink, Pipeline, SourceStage};

/// Builds the fixture databases into a temp dir. Without python3 or `mmdb-writer` the
/// mmdb tests skip locally and fail under CI (`CI` set), where the tooling must exist.
fn fixtures() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mmdb_fixture.py");
    let why = match Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .output()
    {
        Ok(o) if o.status.success() => return Some(dir),
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(e) => e.to_string(),
    };
    let msg = format!("cannot build GeoIP fixtures (needs: pip install mmdb-writer): {why}");
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("skipping: {msg}");
    None
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn open(dir: &Path, names: &[&str]) -> MmdbGeo {
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    MmdbGeo::open(&paths).expect("fixture opens")
}

fn city(l: &Location) -> (&str, &str) {
    (
        l.city.as_deref().unwrap_or("-"),
        l.country_str().unwrap_or("-"),
    )
}

#[test]
fn maxmind_city_schema_locates_ipv4_ipv6_and_mapped_addresses() {
    let Some(dir) = fixtures() else { return };
    let g = open(dir.path(), &["maxmind-city.mmdb"]);
    assert_eq!(
        g.files().map(|(_, s)| s).collect::<Vec<_>>(),
        [Schema::MaxMindCity]
    );
    let l = g.locate(ip("81.2.69.160")).expect("London v4");
    assert_eq!(city(&l), ("London", "GB"));
    assert_eq!(l.accuracy_km, 20);
    assert!((l.lat - 51.5074).abs() < 1e-3 && (l.lon + 0.1278).abs() < 1e-3);
    let l = g.locate(ip("2a00:23c4:1a00:5::1")).expect("London v6");
    assert_eq!((city(&l), l.accuracy_km), (("London", "GB"), 50));
    let l = g.locate(ip("::ffff:1.120.10.9")).expect("IPv4-mapped");
    assert_eq!(city(&l), ("Sydney", "AU"));
    let l = g.locate(ip("3.208.77.1")).expect("country precision");
    assert_eq!((city(&l), l.accuracy_km), (("-", "US"), 1000));
    assert!(g.locate(ip("8.8.8.8")).is_none(), "not in the database");
    assert_eq!(g.errors(), 0);
}

#[test]
fn flat_schema_in_two_files_with_f32_coordinates() {
    let Some(dir) = fixtures() else { return };
    let g = open(dir.path(), &["flat-ipv4.mmdb", "flat-ipv6.mmdb"]);
    assert_eq!(
        g.files().map(|(_, s)| s).collect::<Vec<_>>(),
        [Schema::Flat, Schema::Flat]
    );
    let l = g.locate(ip("126.10.10.1")).expect("Tokyo v4");
    assert_eq!((city(&l), l.accuracy_km), (("Tokyo", "JP"), 0));
    assert!((l.lat - 35.6762).abs() < 1e-3 && (l.lon - 139.6503).abs() < 1e-3);
    // IPv6 is only in the second file: the IPv4-only first file is skipped, not an error.
    let l = g.locate(ip("2001:8003:1a00::7")).expect("Sydney v6");
    assert_eq!(city(&l), ("Sydney", "AU"));
    assert!(g.locate(ip("2001:4860::1")).is_none());
    assert!(
        g.locate(ip("8.8.8.8")).is_none(),
        "asked of both files, in neither"
    );
    assert_eq!(g.errors(), 0);
    // Order does not matter: an IPv4 address asked of the IPv6 file first finds nothing there.
    let g = open(dir.path(), &["flat-ipv6.mmdb", "flat-ipv4.mmdb"]);
    let l = g.locate(ip("81.2.69.1")).expect("London v4");
    assert_eq!(city(&l), ("London", "GB"));
    assert_eq!(g.errors(), 0);
}

#[test]
fn special_ranges_are_never_looked_up() {
    let Some(dir) = fixtures() else { return };
    // The fixture has records for these ranges: only a skipped lookup explains `None`.
    let g = open(dir.path(), &["maxmind-city.mmdb"]);
    for a in [
        "203.0.113.9",
        "10.1.2.3",
        "fd00::1",
        "::ffff:10.0.0.1",
        "127.0.0.1",
    ] {
        assert!(g.locate(ip(a)).is_none(), "{a}");
    }
}

#[test]
fn city_names_are_shared_between_lookups() {
    let Some(dir) = fixtures() else { return };
    let g = open(dir.path(), &["maxmind-city.mmdb"]);
    let a = g
        .locate(ip("81.2.69.1"))
        .and_then(|l| l.city)
        .expect("city");
    let b = g
        .locate(ip("2a00:23c4:1a00::9"))
        .and_then(|l| l.city)
        .expect("city");
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn files_without_coordinates_are_skipped_and_alone_are_an_error() {
    let Some(dir) = fixtures() else { return };
    let g = open(dir.path(), &["asn.mmdb", "maxmind-city.mmdb"]);
    assert_eq!(g.files().count(), 1);
    assert!(g.locate(ip("81.2.69.1")).is_some());
    let asn = dir.path().join("asn.mmdb");
    let err = MmdbGeo::open(std::slice::from_ref(&asn))
        .err()
        .expect("an error");
    assert!(matches!(err, GeoError::NoLocations { .. }), "{err}");
    assert!(
        err.to_string().contains("asn.mmdb") && err.to_string().contains("GeoLite2-ASN"),
        "{err}"
    );
    let missing = dir.path().join("missing.mmdb");
    let err = geo::open(&[missing]).err().expect("an error");
    assert!(err.to_string().contains("missing.mmdb"), "{err}");
}

fn use_at(secs: i64, addr: &str) -> AuthEvent {
    AuthEvent {
        alias: None,
        time: EventTime::from_secs(1_772_409_600 + secs),
        source: 0,
        token: Some(TokenId::new("ak_stolen")),
        ip: Some(ip(addr)),
        user: Some("alice".into()),
        outcome: Outcome::Accepted,
        status: Some(200),
    }
}

#[test]
fn an_mmdb_located_jump_is_detected_with_city_evidence() {
    let Some(dir) = fixtures() else { return };
    for files in [
        &["maxmind-city.mmdb"][..],
        &["flat-ipv4.mmdb", "flat-ipv6.mmdb"][..],
    ] {
        let paths: Vec<PathBuf> = files.iter().map(|n| dir.path().join(n)).collect();
        let geo = geo::open(&paths).expect("opens");
        let recs = run_engine(geo, |feed| {
            for i in 0..24 {
                feed(use_at(i * 300, "2a00:23c4:1a00:1::5"));
            }
            feed(use_at(23 * 300 + 1200, "1.120.10.5"));
        });
        assert_eq!(recs.len(), 1, "{files:?}: {recs:?}");
        let e = &recs[0].evidence;
        assert_eq!(e["from"]["city"], "London", "{e}");
        assert_eq!(e["from"]["network"], "2a00:23c4:1a00:1::/64", "{e}");
        assert_eq!(e["to"]["city"], "Sydney", "{e}");
        assert_eq!(e["minutes"], 20.0, "{e}");
    }
}

/// Runs events through a fresh engine (default detectors) and returns its
/// `impossible_travel` records.
fn run_engine(
    geo: Arc<dyn GeoLookup>,
    f: impl FnOnce(&mut dyn FnMut(AuthEvent)),
) -> Vec<Detection> {
    let cfg = DetectorsConfig::default();
    let sink = VecSink::default();
    let mut engine = Engine::new(
        &cfg,
        EngineSettings::from_config(&cfg, 64),
        vec!["gw".into()],
    )
    .with_geo(geo)
    .with_sink(Box::new(sink.clone()));
    f(&mut |ev| engine.event(ev));
    engine.flush();
    travel_records(&sink)
}

fn travel_records(sink: &VecSink) -> Vec<Detection> {
    sink.records()
        .into_iter()
        .filter(|d| d.detector == "impossible_travel")
        .collect()
}

/// True if `d` is a detection for label `l` (its key, inside its window plus 5 minutes).
fn matches(l: &Label, d: &Detection, grace_ms: i64) -> bool {
    let t = d.ts.as_millis();
    d.token.as_deref() == Some(l.key.as_str()) && t >= l.start_ms && t <= l.end_ms + grace_ms
}

#[test]
fn generated_log_every_incident_found_no_hard_case_hit() {
    let opts = GenOptions {
        tokens: 400,
        days: 7,
        ..Default::default()
    };
    let mut log = Vec::new();
    let mut labels = Vec::new();
    tokenwatch::gen::generate(&opts, &mut log, Some(&mut labels)).expect("generates");
    let labels = Label::parse_all(&String::from_utf8_lossy(&labels)).expect("labels");
    let labels: Vec<Label> = labels
        .into_iter()
        .filter(|l| l.detector == "impossible_travel")
        .collect();

    let src = SourceConfig {
        name: "gen".into(),
        ..Default::default()
    };
    let metrics = Metrics::new();
    let stage = SourceStage {
        name: src.name.clone(),
        parser: tokenwatch::parse::build(&src.parser_spec()).expect("nginx parser"),
        token_kind: src.token_kind(),
        metrics: metrics.source(&src.name),
    };
    let cfg = DetectorsConfig::default();
    let sink = VecSink::default();
    let engine = Engine::new(
        &cfg,
        EngineSettings::from_config(&cfg, 64),
        vec!["gen".into()],
    )
    .with_geo(Arc::new(BuiltinGeo))
    .with_sink(Box::new(sink.clone()));
    let mut p = Pipeline::new(
        vec![stage],
        Fingerprinter::new(b"test key"),
        Some(Box::new(engine)),
    );
    p.process_lines(0, &log);
    drop(p);
    let recs = travel_records(&sink);

    let incidents: Vec<&Label> = labels
        .iter()
        .filter(|l| l.expect == Expect::Detect)
        .collect();
    let hard: Vec<&Label> = labels.iter().filter(|l| l.expect == Expect::None).collect();
    assert!(
        !incidents.is_empty(),
        "the generator injected no impossible_travel"
    );
    assert!(
        hard.iter().any(|l| l.scenario == "traveller")
            && hard.iter().any(|l| l.scenario == "roaming_mobile"),
        "hard cases missing: {hard:?}"
    );
    let found = incidents
        .iter()
        .filter(|l| recs.iter().any(|d| matches(l, d, 5 * 60_000)))
        .count();
    assert!(
        found * 100 >= incidents.len() * 95,
        "recall {found}/{}: {recs:?}",
        incidents.len()
    );
    eprintln!(
        "impossible_travel: {found}/{} incidents, {} hard cases, {} records",
        incidents.len(),
        hard.len(),
        recs.len()
    );
    let hits: Vec<_> = hard
        .iter()
        .filter(|l| recs.iter().any(|d| matches(l, d, 0)))
        .collect();
    assert!(
        hits.is_empty(),
        "false positives on hard cases: {hits:?}\n{recs:?}"
    );
}
