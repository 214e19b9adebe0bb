use std::net::IpAddr;

use super::*;
use crate::detect::{Engine, EngineSettings, VecSink};
use crate::enrich::geo::Location;
use crate::event::{AuthEvent, EventTime, Outcome, Severity, TokenId};
use crate::pipeline::EventSink;

const S: i64 = 1000;
const M: i64 = 60 * S;
const T0: i64 = 20_514 * 86_400_000 + 9 * 3_600_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ev(ms: i64, addr: IpAddr) -> AuthEvent {
    AuthEvent {
        alias: None,
        time: EventTime::from_millis(ms),
        source: 0,
        token: Some(TokenId::new("ak_leak")),
        ip: Some(addr),
        user: Some("paul".into()),
        outcome: Outcome::Accepted,
        status: Some(200),
    }
}

fn loc(cc: &str) -> Location {
    let b = cc.as_bytes();
    Location {
        lat: 0.0,
        lon: 0.0,
        accuracy_km: 10,
        country: Some([b[0], b[1]]),
        city: None,
    }
}

struct Run {
    det: IpFanout,
    st: State,
    found: Vec<Finding>,
}

impl Run {
    fn new() -> Run {
        Run {
            det: IpFanout::new(&Settings::default()),
            st: State::default(),
            found: Vec::new(),
        }
    }

    fn at(&mut self, ms: i64, addr: &str, country: Option<&str>) {
        let e = ev(ms, ip(addr));
        let l = country.map(loc);
        let obs = Obs {
            ev: &e,
            source: "t",
            ip_key: e.ip,
            token_known: true,
            last_accepted: None,
            location: l.as_ref(),
            token_hash: None,
            health: &crate::detect::detectors::health::Health::EMPTY,
        };
        let mut out = Findings::default();
        self.det.observe(&mut self.st, &obs, &mut out);
        self.found.extend(out.drain());
    }
}

#[test]
fn state_is_small() {
    assert_eq!(std::mem::size_of::<State>(), 16);
}

#[test]
fn fires_on_many_networks_with_sorted_evidence() {
    let mut r = Run::new();
    r.at(T0, "192.0.2.10", None);
    for i in 0..25 {
        r.at(
            T0 + M + i * 20 * S,
            &format!("198.{}.{}.7", 18 + i % 3, i),
            None,
        );
    }
    let f = r.found.first().expect("fan-out detected");
    // The tenth network (the victim's own and nine more) fires.
    assert_eq!(f.ts.as_millis(), T0 + M + 8 * 20 * S);
    assert_eq!(f.evidence["networks"], 10);
    assert_eq!(f.evidence["window_secs"], 900);
    let ips: Vec<IpAddr> = serde_json::from_value(f.evidence["sample_ips"].clone()).unwrap();
    assert_eq!(
        ips.len(),
        9,
        "the first network's address is not kept inline"
    );
    assert!(ips.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(f.key, "ak_leak");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(r.found.len(), 1, "one finding per cooldown");
    // After the cooldown, a new wave is found again.
    for i in 0..12 {
        r.at(T0 + 70 * M + i * S, &format!("203.0.{i}.1"), None);
    }
    assert_eq!(r.found.len(), 2);
    assert_eq!(r.found[1].ts.as_millis(), T0 + 70 * M + 9 * S);
}

#[test]
fn fires_on_three_countries_only_with_geo() {
    let mut r = Run::new();
    r.at(T0, "192.0.2.10", Some("FR"));
    r.at(T0 + M, "198.51.100.7", Some("DE"));
    r.at(T0 + 2 * M, "203.0.113.9", Some("US"));
    assert!(
        r.found.is_empty(),
        "the first network's country is not kept inline"
    );
    r.at(T0 + 3 * M, "192.0.2.11", Some("FR"));
    assert_eq!(r.found.len(), 1);
    assert_eq!(
        r.found[0].evidence["countries"],
        serde_json::json!(["DE", "FR", "US"])
    );
    let mut r = Run::new();
    for (i, a) in ["192.0.2.10", "198.51.100.7", "203.0.113.9", "192.0.2.11"]
        .iter()
        .enumerate()
    {
        r.at(T0 + i as i64 * M, a, None);
    }
    assert!(r.found.is_empty());
}

#[test]
fn quiet_on_a_nat_pool_and_allocates_nothing() {
    let mut r = Run::new();
    for i in 0..5_000i64 {
        let host = 10 + (i * 7919) % 8;
        r.at(T0 + i * 3 * S, &format!("81.2.69.{host}"), Some("GB"));
    }
    assert!(r.found.is_empty());
    assert!(r.st.fan.is_none());
}

#[test]
fn quiet_on_a_roaming_phone_and_a_commuter() {
    // A phone hopping between carrier ranges every hour or two, and a worker using office,
    // home and a phone within minutes.
    let mut r = Run::new();
    let nets = ["100.64.3", "100.65.200", "100.70.1", "100.64.99"];
    for i in 0..200i64 {
        let net = nets[(i / 12) as usize % nets.len()];
        r.at(
            T0 + i * 10 * M,
            &format!("{net}.{}", 1 + i % 250),
            Some("NL"),
        );
    }
    for a in ["192.0.2.10", "198.51.100.7", "100.64.3.3", "192.0.2.10"] {
        r.at(T0 + 3000 * M, a, Some("NL"));
    }
    assert!(r.found.is_empty());
}

#[test]
fn ipv6_privacy_addresses_are_one_network() {
    let mut r = Run::new();
    for i in 0..40i64 {
        r.at(
            T0 + i * S,
            &format!("2001:db8:7:{i:x}::{:x}", i * 31 + 1),
            None,
        );
    }
    assert!(r.found.is_empty());
    assert!(r.st.fan.is_none());
}

#[test]
fn slow_spread_does_not_fire_and_the_list_is_freed() {
    let mut r = Run::new();
    for i in 0..30i64 {
        r.at(T0 + i * 16 * M, &format!("198.51.{i}.1"), None);
    }
    assert!(r.found.is_empty());
    assert!(r.st.fan.is_none());
}

#[test]
fn a_flood_of_addresses_keeps_the_list_capped() {
    let mut r = Run::new();
    let mut x = 0x1234_5678u32;
    for i in 0..200_000i64 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let a = std::net::Ipv4Addr::from(x);
        r.at(T0 + i * 4, &a.to_string(), None);
        if i % 10_000 == 0 {
            assert!(r.st.fan.as_ref().map_or(0, |f| f.nets.len()) <= 64);
        }
    }
    assert_eq!(r.st.fan.as_ref().unwrap().nets.len(), 64);
    assert_eq!(r.found.len(), 1);
}

fn engine(max_tokens: usize) -> (Engine, VecSink) {
    let cfg = crate::config::DetectorsConfig::default();
    let sink = VecSink::default();
    let settings = EngineSettings {
        max_tokens,
        ..EngineSettings::from_config(&cfg, 64)
    };
    let eng = Engine::new(&cfg, settings, vec!["t".into()]).with_sink(Box::new(sink.clone()));
    (eng, sink)
}

#[test]
fn engine_records_one_incident_per_cooldown() {
    let (mut eng, sink) = engine(1000);
    for i in 0..300i64 {
        eng.event(ev(T0 + i * 2 * S, ip(&format!("198.51.{}.9", i % 30))));
    }
    // Two hours later, a second wave is a second incident.
    for i in 0..300i64 {
        eng.event(ev(
            T0 + 2 * 3600 * S + i * 2 * S,
            ip(&format!("203.{}.0.1", i % 30)),
        ));
    }
    let recs: Vec<_> = sink
        .records()
        .into_iter()
        .filter(|d| d.detector == "ip_fanout")
        .collect();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0].user.as_deref(), Some("paul"));
}

#[test]
fn engine_token_map_is_bounded_under_a_flood_of_tokens() {
    let (mut eng, _sink) = engine(1000);
    for i in 0..200_000i64 {
        let mut e = ev(T0 + i, ip("192.0.2.1"));
        e.token = Some(TokenId::new(format!("ak_{i:012x}")));
        eng.event(e);
    }
    assert_eq!(eng.tracked_tokens(), 1000);
}

#[test]
fn token_state_survives_a_snapshot() {
    let mut r = Run::new();
    r.at(T0, "192.0.2.10", Some("FR"));
    r.at(T0 + S, "198.51.100.7", Some("DE"));
    assert!(r.st.fan.is_some());
    let ts = crate::detect::TokenState {
        fanout: r.st.clone(),
        ..Default::default()
    };
    let json = serde_json::to_string(&ts).unwrap();
    let back: crate::detect::TokenState = serde_json::from_str(&json).unwrap();
    assert_eq!(back.fanout, r.st);
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
}
