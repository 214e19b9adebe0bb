use super::*;
use crate::detect::{Engine, EngineSettings, VecSink};
use crate::event::{AuthEvent, EventTime, Outcome, TokenId};
use crate::pipeline::EventSink;

const H: i64 = 3_600_000;
const D: i64 = 24 * H;
/// 2026-03-02, a Monday, 00:00 UTC.
const MON: i64 = 20_514 * D;

fn ev(ms: i64) -> AuthEvent {
    AuthEvent {
        alias: None,
        time: EventTime::from_millis(ms),
        source: 0,
        token: Some(TokenId::new("ak_night")),
        ip: Some("10.1.2.3".parse().unwrap()),
        user: Some("ann".into()),
        outcome: Outcome::Accepted,
        status: Some(200),
    }
}

struct Run {
    det: OffHours,
    st: State,
    found: Vec<Finding>,
}

impl Run {
    fn new() -> Run {
        Run {
            det: OffHours::new(&Settings::default()),
            st: State::default(),
            found: Vec::new(),
        }
    }

    fn at(&mut self, ms: i64) {
        let e = ev(ms);
        let obs = Obs {
            ev: &e,
            source: "t",
            ip_key: e.ip,
            token_known: true,
            last_accepted: None,
            location: None,
            token_hash: None,
            health: &crate::detect::detectors::health::Health::EMPTY,
        };
        let mut out = Findings::default();
        self.det.observe(&mut self.st, &obs, &mut out);
        self.found.extend(out.drain());
    }

    /// `n` requests spread over `[from, from + span)`.
    fn burst(&mut self, from: i64, span: i64, n: i64) {
        for i in 0..n {
            self.at(from + i * span / n.max(1));
        }
    }

    /// Office hours 07–17 UTC, Monday to Friday, ten requests an hour, for `weeks` weeks.
    fn office(&mut self, weeks: i64) {
        for day in 0..7 * weeks {
            if day % 7 < 5 {
                self.burst(MON + day * D + 7 * H, 10 * H, 100);
            }
        }
    }
}

#[test]
fn state_is_small() {
    assert_eq!(std::mem::size_of::<State>(), 30);
}

#[test]
fn fires_on_a_night_after_office_weeks_once() {
    let mut r = Run::new();
    r.office(1);
    assert!(r.found.is_empty());
    // Sunday 02:00 UTC, twelve uses in ten minutes.
    r.burst(MON + 6 * D + 2 * H, 10 * 60_000, 12);
    assert_eq!(r.found.len(), 1, "{:?}", r.found);
    let f = &r.found[0];
    assert_eq!(f.key, "ak_night");
    assert_eq!(f.evidence["hour_utc"], 2);
    assert_eq!(f.evidence["weekday_utc"], "sun");
    assert_eq!(f.evidence["checks"], 5);
    assert_eq!(f.evidence["usual_hours_utc"], serde_json::json!(["07-16"]));
    assert_eq!(f.cooldown_ms, 21_600_000);
    // The hour is learned: the same use next week does not fire again.
    r.burst(MON + 13 * D + 2 * H, 10 * 60_000, 12);
    assert_eq!(r.found.len(), 1);
}

#[test]
fn quiet_for_office_hours_early_starts_and_stray_requests() {
    let mut r = Run::new();
    r.office(3);
    // Starting half an hour early, working late into the neighbouring hour.
    r.burst(MON + 21 * D + 6 * H + 30 * 60_000, 30 * 60_000, 20);
    r.burst(MON + 21 * D + 17 * H, 50 * 60_000, 20);
    // Four stray requests at night.
    r.burst(MON + 22 * D + H, 5 * 60_000, 4);
    assert!(r.found.is_empty(), "{:?}", r.found);
}

#[test]
fn learning_period_never_fires() {
    let mut r = Run::new();
    for day in 0..4 {
        r.burst(MON + day * D + 9 * H, H, 10);
    }
    r.burst(MON + 4 * D + 2 * H, H, 30);
    assert!(r.found.is_empty());
    // Five days learned, the sixth day's night fires.
    r.burst(MON + 5 * D + 22 * H, H, 30);
    assert_eq!(r.found.len(), 1);
}

#[test]
fn quiet_for_a_24_7_service() {
    let mut r = Run::new();
    for i in 0..(21 * 24 * 6) {
        r.at(MON + i * 10 * 60_000 + 7_000);
    }
    assert!(r.found.is_empty());
    assert_eq!(r.st.week.count(), 168);
}

#[test]
fn weekends_judged_by_weekday_after_two_weeks() {
    // First Saturday (weekday seen 0 times): daytime hours are familiar by hour of day.
    let mut r = Run::new();
    r.office(1);
    r.burst(MON + 5 * D + 10 * H, H, 20);
    assert!(r.found.is_empty(), "{:?}", r.found);
    // Two weekday-only weeks later, Saturday daytime is new for this weekday.
    let mut r = Run::new();
    r.office(3);
    r.burst(MON + 19 * D + 10 * H, H, 20);
    assert_eq!(r.found.len(), 1);
    assert_eq!(r.found[0].evidence["view"], "hour_of_week");
}

#[test]
fn engine_applies_the_cooldown() {
    let cfg = crate::config::DetectorsConfig::default();
    let sink = VecSink::default();
    let mut eng = Engine::new(
        &cfg,
        EngineSettings::from_config(&cfg, 64),
        vec!["t".into()],
    )
    .with_sink(Box::new(sink.clone()));
    for day in 0..5 {
        for i in 0..50 {
            eng.event(ev(MON + day * D + 7 * H + i * 12 * 60_000));
        }
    }
    // Two nights' runs four hours apart: one record (6 h cooldown); the next night another.
    for at in [
        MON + 5 * D + 22 * H,
        MON + 6 * D + 2 * H,
        MON + 7 * D + 19 * H,
    ] {
        for i in 0..10 {
            eng.event(ev(at + i * 60_000));
        }
    }
    let recs: Vec<_> = sink
        .records()
        .into_iter()
        .filter(|d| d.detector == "off_hours")
        .collect();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0].token.as_deref(), Some("ak_night"));
    assert_eq!(recs[0].user.as_deref(), Some("ann"));
}

#[test]
fn rejected_revoked_checks_are_not_use() {
    let mut r = Run::new();
    r.office(1);
    for i in 0..12 {
        let mut e = ev(MON + 6 * D + 2 * H + i * 60_000);
        e.outcome = Outcome::Rejected(crate::event::Reason::Revoked);
        let obs = Obs {
            ev: &e,
            source: "t",
            ip_key: e.ip,
            token_known: true,
            last_accepted: None,
            location: None,
            token_hash: None,
            health: &crate::detect::detectors::health::Health::EMPTY,
        };
        let mut out = Findings::default();
        r.det.observe(&mut r.st, &obs, &mut out);
        assert!(out.is_empty());
    }
    // A valid token refused for lack of permission is still use.
    for i in 0..12 {
        let mut e = ev(MON + 6 * D + 4 * H + i * 60_000);
        e.outcome = Outcome::Rejected(crate::event::Reason::Forbidden);
        let obs = Obs {
            ev: &e,
            source: "t",
            ip_key: e.ip,
            token_known: true,
            last_accepted: None,
            location: None,
            token_hash: None,
            health: &crate::detect::detectors::health::Health::EMPTY,
        };
        let mut out = Findings::default();
        r.det.observe(&mut r.st, &obs, &mut out);
        r.found.extend(out.drain());
    }
    assert_eq!(r.found.len(), 1);
}
