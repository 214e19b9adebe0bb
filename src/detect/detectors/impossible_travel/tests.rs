use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::config::DetectorsConfig;
use crate::detect::{Engine, EngineSettings, VecSink};
use crate::enrich::geo::GeoLookup;
use crate::event::{AuthEvent, EventTime, TokenId};

const MIN: i64 = 60;
const HOUR: i64 = 3600;
const T0: i64 = 1_772_409_600; // 2026-03-02T00:00:00Z

fn place(city: Option<&str>, cc: &str, lat: f32, lon: f32, acc: u16) -> Location {
    let c = cc.as_bytes();
    Location {
        lat,
        lon,
        accuracy_km: acc,
        country: Some([c[0], c[1]]),
        city: city.map(Arc::from),
    }
}

fn london() -> Location {
    place(Some("London"), "GB", 51.5074, -0.1278, 20)
}
fn sydney() -> Location {
    place(Some("Sydney"), "AU", -33.8688, 151.2093, 20)
}
fn new_york() -> Location {
    place(Some("New York"), "US", 40.7128, -74.0060, 20)
}
fn frankfurt() -> Location {
    place(Some("Frankfurt"), "DE", 50.1109, 8.6821, 100)
}
fn ashburn() -> Location {
    place(Some("Ashburn"), "US", 39.0438, -77.4874, 100)
}
fn amsterdam() -> Location {
    place(Some("Amsterdam"), "NL", 52.3676, 4.9041, 100)
}
fn brussels() -> Location {
    place(Some("Brussels"), "BE", 50.8503, 4.3517, 100)
}
fn us_country_only() -> Location {
    place(None, "US", 37.751, -97.822, 1000)
}

fn event(secs: i64, ip: &str, outcome: Outcome) -> AuthEvent {
    AuthEvent {
        alias: None,
        time: EventTime::from_secs(T0 + secs),
        source: 0,
        token: Some(TokenId::new("ak_travel")),
        ip: Some(ip.parse().unwrap()),
        user: Some("alice".into()),
        outcome,
        status: Some(200),
    }
}

/// Feeds `(seconds, ip, place)` uses of one token; returns the findings.
fn run(d: &mut ImpossibleTravel, uses: &[(i64, &str, Location)]) -> Vec<Finding> {
    let mut st = State::default();
    let mut out = Findings::default();
    for (t, ip, loc) in uses {
        let ev = event(*t, ip, Outcome::Accepted);
        let obs = Obs {
            ev: &ev,
            source: "gw",
            ip_key: ev.ip,
            token_known: true,
            last_accepted: None,
            location: Some(loc),
            token_hash: None,
            health: &crate::detect::detectors::health::Health::EMPTY,
        };
        d.observe(&mut st, &obs, &mut out);
    }
    out.drain().collect()
}

fn detector() -> ImpossibleTravel {
    ImpossibleTravel::new(&Settings::default())
}

/// A settled London user: every 5 minutes for two hours.
fn settled_in_london(uses: &mut Vec<(i64, &'static str, Location)>) {
    for i in 0..24 {
        uses.push((i * 5 * MIN, "81.2.69.7", london()));
    }
}

#[test]
fn london_then_sydney_twenty_minutes_later_fires() {
    let mut uses = Vec::new();
    settled_in_london(&mut uses);
    let last = uses.last().map_or(0, |u| u.0);
    uses.push((last + 20 * MIN, "1.120.10.5", sydney()));
    let f = run(&mut detector(), &uses);
    assert_eq!(f.len(), 1, "{f:?}");
    let f = &f[0];
    assert_eq!((f.severity, f.key.as_str()), (Severity::High, "ak_travel"));
    assert_eq!(f.ip, Some("1.120.10.5".parse::<IpAddr>().unwrap()));
    assert_eq!(f.user.as_deref(), Some("alice"));
    assert_eq!(f.cooldown_ms, 3_600_000);
    let e = &f.evidence;
    assert_eq!(e["from"]["city"], "London");
    assert_eq!(e["from"]["country"], "GB");
    assert_eq!(e["from"]["ip"], "81.2.69.7");
    assert_eq!(e["to"]["city"], "Sydney");
    assert_eq!(e["to"]["ip"], "1.120.10.5");
    let km = e["km"].as_f64().unwrap();
    assert!((km - 16_990.0).abs() < 50.0, "{km}");
    assert_eq!(e["accuracy_subtracted_km"], 40.0);
    assert_eq!(e["minutes"], 20.0);
    assert!(e["kmh"].as_f64().unwrap() > 50_000.0);
}

#[test]
fn a_london_new_york_flight_does_not_fire_but_a_fast_one_does() {
    for (hours, fires) in [(7, false), (8, false), (5, true)] {
        let mut uses = Vec::new();
        settled_in_london(&mut uses);
        let last = uses.last().map_or(0, |u| u.0);
        uses.push((last + hours * HOUR, "72.229.10.9", new_york()));
        uses.push((last + hours * HOUR + MIN, "72.229.10.9", new_york()));
        let f = run(&mut detector(), &uses);
        assert_eq!(f.len(), usize::from(fires), "{hours} h: {f:?}");
    }
}

#[test]
fn roaming_between_nearby_cities_never_fires() {
    let mut uses = Vec::new();
    for i in 0..200 {
        let (ip, loc) = if i % 3 == 0 {
            ("84.241.192.9", amsterdam())
        } else {
            ("94.110.10.4", brussels())
        };
        uses.push((i * 2 * MIN, ip, loc));
    }
    assert!(run(&mut detector(), &uses).is_empty());
}

#[test]
fn the_same_network_never_fires() {
    // A database that places one /24 in two cities (an update mid-run, anycast) is not travel.
    let mut uses = Vec::new();
    settled_in_london(&mut uses);
    uses.push((3 * HOUR, "81.2.69.99", sydney()));
    assert!(run(&mut detector(), &uses).is_empty());
}

#[test]
fn country_precision_inside_the_country_is_not_a_move() {
    let mut uses = Vec::new();
    for i in 0..24 {
        uses.push((i * 5 * MIN, "72.229.10.9", new_york()));
    }
    uses.push((2 * HOUR + 5 * MIN, "3.208.10.9", us_country_only()));
    uses.push((2 * HOUR + 10 * MIN, "72.229.10.9", new_york()));
    assert!(run(&mut detector(), &uses).is_empty());
    // ...but a country-precision place abroad still counts.
    let mut uses = Vec::new();
    settled_in_london(&mut uses);
    uses.push((2 * HOUR + 5 * MIN, "3.208.10.9", us_country_only()));
    assert_eq!(run(&mut detector(), &uses).len(), 1);
}

#[test]
fn a_multi_region_service_flapping_between_two_places_never_fires() {
    // Frankfurt and Ashburn serve the same token, interleaved from the first request on.
    let mut uses = Vec::new();
    for i in 0..2000 {
        let (ip, loc) = if (i / 3) % 2 == 0 {
            ("18.184.10.7", frankfurt())
        } else {
            ("3.208.10.7", ashburn())
        };
        uses.push((i * 7, ip, loc));
    }
    assert!(run(&mut detector(), &uses).is_empty());
}

#[test]
fn a_service_alternating_in_long_bursts_fires_once_at_most() {
    // Each region holds the token for 20 minutes (long enough to dwell): the first switch
    // looks like theft and fires; every switch after it is a return to the other place.
    let mut uses = Vec::new();
    for i in 0..300 {
        let (ip, loc) = if (i / 20) % 2 == 0 {
            ("18.184.10.7", frankfurt())
        } else {
            ("3.208.10.7", ashburn())
        };
        uses.push((i * MIN, ip, loc));
    }
    assert_eq!(run(&mut detector(), &uses).len(), 1);
}

#[test]
fn after_the_first_jump_alternation_is_one_incident_but_a_third_place_fires() {
    let mut uses = Vec::new();
    settled_in_london(&mut uses);
    let mut t = 2 * HOUR;
    for _ in 0..50 {
        uses.push((t, "1.120.10.5", sydney()));
        uses.push((t + MIN, "81.2.69.7", london()));
        t += 15 * MIN;
    }
    let f = run(&mut detector(), &uses);
    assert_eq!(f.len(), 1, "the first jump only: {f:?}");
    // London again for 15 minutes (a return starts a new dwell), then Tokyo: a new place,
    // fires again (the engine's cooldown decides whether it is recorded).
    let mut more = uses.clone();
    for i in 0..4 {
        more.push((t + i * 5 * MIN, "81.2.69.7", london()));
    }
    more.push((
        t + 35 * MIN,
        "126.10.10.5",
        place(Some("Tokyo"), "JP", 35.68, 139.65, 20),
    ));
    assert_eq!(run(&mut detector(), &more).len(), 2);
}

#[test]
fn no_jump_counts_before_the_token_dwelt_somewhere() {
    // Warm-up: a token used once in London and two minutes later in Sydney.
    let uses = [
        (0, "81.2.69.7", london()),
        (2 * MIN, "1.120.10.5", sydney()),
    ];
    assert!(run(&mut detector(), &uses).is_empty());
}

#[test]
fn unlocated_rejected_and_out_of_order_uses_are_ignored() {
    let mut d = detector();
    let mut st = State::default();
    let mut out = Findings::default();
    let mut feed = |secs: i64, ip: &str, outcome: Outcome, loc: Option<&Location>| {
        let ev = event(secs, ip, outcome);
        let obs = Obs {
            ev: &ev,
            source: "gw",
            ip_key: ev.ip,
            token_known: true,
            last_accepted: None,
            location: loc,
            token_hash: None,
            health: &crate::detect::detectors::health::Health::EMPTY,
        };
        d.observe(&mut st, &obs, &mut out);
        out.drain().count()
    };
    let (l, s) = (london(), sydney());
    let mut n = 0;
    for i in 0..24 {
        n += feed(i * 5 * MIN, "81.2.69.7", Outcome::Accepted, Some(&l));
    }
    n += feed(2 * HOUR, "203.0.113.9", Outcome::Accepted, None);
    n += feed(
        2 * HOUR,
        "1.120.10.5",
        Outcome::Rejected(Reason::Expired),
        Some(&s),
    );
    n += feed(MIN, "1.120.10.5", Outcome::Accepted, Some(&s));
    assert_eq!(n, 0);
    let forbidden = Outcome::Rejected(Reason::Forbidden);
    let n = feed(2 * HOUR + MIN, "1.120.10.5", forbidden, Some(&s));
    assert_eq!(n, 1, "a forbidden check is a use of a valid token");
}

#[test]
fn unknown_accuracy_uses_the_default_radius() {
    let mut a = london();
    let mut b = place(Some("Madrid"), "ES", 40.4168, -3.7038, 0);
    a.accuracy_km = 0;
    b.accuracy_km = 0;
    let mut uses: Vec<(i64, &str, Location)> = (0..24)
        .map(|i| (i * 5 * MIN, "81.2.69.7", a.clone()))
        .collect();
    uses.push((2 * HOUR, "83.44.10.3", b));
    let f = run(&mut detector(), &uses);
    assert_eq!(f[0].evidence["accuracy_subtracted_km"], 200.0);
}

#[test]
fn the_place_table_is_bounded_under_a_flood() {
    let mut d = ImpossibleTravel::new(&Settings {
        max_places: 1000,
        ..Settings::default()
    });
    let mut st = State::default();
    let mut out = Findings::default();
    let mut x: u64 = 0x1234_5678;
    for i in 0..200_000i64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let lat = (x % 18_000) as f32 / 100.0 - 90.0;
        let lon = ((x >> 20) % 36_000) as f32 / 100.0 - 180.0;
        let loc = place(Some("Somewhere"), "ZZ", lat, lon, 10);
        let ip = IpAddr::from(((x >> 32) as u32).to_be_bytes());
        let mut ev = event(i, "1.1.1.1", Outcome::Accepted);
        ev.ip = Some(ip);
        let obs = Obs {
            ev: &ev,
            source: "gw",
            ip_key: ev.ip,
            token_known: true,
            last_accepted: None,
            location: Some(&loc),
            token_hash: None,
            health: &crate::detect::detectors::health::Health::EMPTY,
        };
        d.observe(&mut st, &obs, &mut out);
        out.drain().for_each(drop);
    }
    assert!(d.places() <= 1000, "{}", d.places());
}

/// A tiny GeoIP table for the engine tests.
struct Table(Vec<(&'static str, Location)>);

impl GeoLookup for Table {
    fn locate(&self, ip: IpAddr) -> Option<Location> {
        let s = ip.to_string();
        self.0
            .iter()
            .find(|(p, _)| s.starts_with(p))
            .map(|(_, l)| l.clone())
    }
}

#[test]
fn the_engine_applies_the_cooldown_per_token() {
    let geo = Table(vec![
        ("81.2.69.", london()),
        ("1.120.10.", sydney()),
        ("126.10.10.", place(Some("Tokyo"), "JP", 35.68, 139.65, 20)),
        ("72.229.10.", new_york()),
    ]);
    let cfg = DetectorsConfig::default();
    let settings = EngineSettings::from_config(&cfg, 64);
    let sink = VecSink::default();
    let mut engine = Engine::new(&cfg, settings, vec!["gw".into()])
        .with_geo(Arc::new(geo))
        .with_sink(Box::new(sink.clone()));
    let mut feed = |secs: i64, ip: &str| {
        crate::pipeline::EventSink::event(&mut engine, event(secs, ip, Outcome::Accepted));
    };
    for i in 0..24 {
        feed(i * 5 * MIN, "81.2.69.7");
    }
    feed(2 * HOUR, "1.120.10.5"); // fires
    for i in 1..12 {
        feed(2 * HOUR + i * MIN, "1.120.10.5"); // Sydney dwells 11 minutes
    }
    feed(2 * HOUR + 30 * MIN, "126.10.10.5"); // fires, suppressed by the cooldown
    for i in 1..40 {
        feed(2 * HOUR + 30 * MIN + i * MIN, "126.10.10.5");
    }
    feed(4 * HOUR, "72.229.10.9"); // an hour and a half later: a new record
    engine.flush();
    let recs: Vec<_> = sink
        .records()
        .into_iter()
        .filter(|d| d.detector == "impossible_travel")
        .collect();
    let cities: Vec<_> = recs
        .iter()
        .map(|d| d.evidence["to"]["city"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(cities, ["Sydney", "New York"], "{recs:?}");
}
