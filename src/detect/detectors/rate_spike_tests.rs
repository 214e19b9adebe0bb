use super::*;
use crate::event::{AuthEvent, EventTime, Outcome, TokenId};

const M: i64 = 60_000;
const H: i64 = 60 * M;
const D: i64 = 24 * H;
/// 2026-03-02 00:00 UTC.
const T0: i64 = 20_514 * D;

/// A small deterministic PRNG (xorshift64*) for Poisson arrivals.
struct Rng(u64);

impl Rng {
    fn f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Milliseconds to the next arrival at `per_min` a minute.
    fn gap(&mut self, per_min: f64) -> i64 {
        (-(1.0 - self.f64()).ln() * M as f64 / per_min.max(1e-9)).ceil() as i64
    }
}

/// Poisson arrivals in `[from, to)` at a rate given per minute by `rate(t)`.
fn arrivals(seed: u64, from: i64, to: i64, rate: impl Fn(i64) -> f64) -> Vec<i64> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    let mut t = from;
    // Thinning against a bound well above every rate used here.
    let bound = (from..to)
        .step_by(10 * M as usize)
        .map(&rate)
        .fold(0.0, f64::max)
        * 1.5
        + 1e-6;
    loop {
        t += rng.gap(bound);
        if t >= to {
            return out;
        }
        if rng.f64() < rate(t) / bound {
            out.push(t);
        }
    }
}

/// ±30 % noise fixed per hour.
fn noise(t: i64) -> f64 {
    let h = (t / H) as u64;
    0.7 + 0.6 * ((h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 1000) as f64 / 1000.0
}

fn run(times: &[i64]) -> (State, Vec<Finding>) {
    let mut det = RateSpike::new(&Settings::default());
    let mut st = State::default();
    let mut found = Vec::new();
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    for &ms in &sorted {
        let e = AuthEvent {
            alias: None,
            time: EventTime::from_millis(ms),
            source: 0,
            token: Some(TokenId::new("ak_svc")),
            ip: Some("10.0.0.1".parse().unwrap()),
            user: None,
            outcome: Outcome::Accepted,
            status: Some(200),
        };
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
        det.observe(&mut st, &obs, &mut out);
        found.extend(out.drain());
    }
    (st, found)
}

fn steady(seed: u64, per_min: f64, days: i64) -> Vec<i64> {
    arrivals(seed, T0, T0 + days * D, |t| per_min * noise(t))
}

#[test]
fn state_is_small() {
    assert_eq!(std::mem::size_of::<State>(), 56);
}

#[test]
fn catches_x20_within_about_a_minute() {
    let mut delays = Vec::new();
    for seed in 1..=20 {
        let at = T0 + 6 * D + 12 * H;
        let mut times = steady(seed, 1.0, 7);
        times.extend(arrivals(seed + 100, at, at + 15 * M, |_| 19.0));
        let (_, found) = run(&times);
        let first = found.first().expect("spike detected");
        let delay = first.ts.as_millis() - at;
        assert!((0..=100_000).contains(&delay), "seed {seed}: {delay} ms");
        delays.push(delay / 1000);
        assert!(found.iter().all(|f| f.ts.as_millis() < at + 17 * M));
        let ev = &first.evidence;
        assert!(ev["ratio"].as_f64().unwrap() >= 5.0, "{ev}");
        assert_eq!(ev["threshold"], 20.0, "{ev}");
        assert_eq!(first.cooldown_ms, 3_600_000);
    }
    delays.sort_unstable();
    eprintln!("detection delays (s): {delays:?}");
    assert!(delays[10] <= 75, "median {} s", delays[10]);
}

#[test]
fn quiet_on_24_7_services_with_noise() {
    for (seed, rate) in [(1, 0.03), (2, 0.2), (3, 0.6), (4, 1.0), (5, 5.0), (6, 30.0)] {
        let (_, found) = run(&steady(seed, rate, 7));
        assert!(found.is_empty(), "rate {rate}: {:?}", found.first());
    }
}

#[test]
fn quiet_on_organic_growth() {
    for (seed, rate) in [(7, 0.5), (8, 5.0), (9, 20.0)] {
        let from = T0 + D + 5 * H;
        let growth = |t: i64| 1.0 + ((t - from) as f64 / D as f64).clamp(0.0, 1.0);
        let times = arrivals(seed, T0, T0 + 7 * D, |t| rate * noise(t) * growth(t));
        let (_, found) = run(&times);
        assert!(found.is_empty(), "rate {rate}: {:?}", found.first());
    }
}

/// About 500 requests at one a second from 02:00 (+0–90 s) every day.
fn batch(seed: u64, days: i64) -> Vec<i64> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for d in 0..days {
        let mut t = T0 + d * D + 2 * H + (rng.f64() * 90_000.0) as i64;
        for _ in 0..450 + (rng.f64() * 100.0) as i64 {
            t += rng.gap(60.0);
            out.push(t);
        }
    }
    out
}

#[test]
fn quiet_on_a_daily_batch_job_but_not_blind() {
    let (_, found) = run(&batch(11, 10));
    assert!(found.is_empty(), "{:?}", found.first());
    // Twenty times the batch's own burst rate still fires.
    let mut times = batch(12, 6);
    let at = T0 + 5 * D + 2 * H + 3 * M;
    times.extend(arrivals(13, at, at + 5 * M, |_| 1200.0));
    let (_, found) = run(&times);
    assert!(!found.is_empty());
}

#[test]
fn quiet_on_a_weekly_batch_job() {
    let times: Vec<i64> = batch(14, 36)
        .into_iter()
        .filter(|t| ((t - T0) / D) % 7 == 6)
        .collect();
    assert!(times.len() > 2000);
    let (_, found) = run(&times);
    assert!(found.is_empty(), "{:?}", found.first());
}

#[test]
fn a_new_batch_habit_is_learned_within_days() {
    // A steady service that starts a nightly batch after its history is learned fires on
    // the first nights at most, then the batch is baseline.
    let mut times = steady(21, 1.0, 12);
    times.extend(batch(22, 12).into_iter().filter(|&t| t >= T0 + 5 * D));
    let (_, found) = run(&times);
    let nights: std::collections::BTreeSet<i64> =
        found.iter().map(|f| f.ts.as_millis() / D).collect();
    assert!(nights.len() <= 2, "{nights:?}");
    assert!(found.iter().all(|f| f.ts.as_millis() < T0 + 8 * D));
}

#[test]
fn quiet_on_office_humans_and_their_morning_ramp() {
    // 08–18 UTC weekdays at up to 30 an hour, half rate in the first hour, plus a few
    // 15-click bursts (a page load) now and then.
    for seed in 31..34 {
        let rate = |t: i64| {
            let (day, h) = ((t - T0) / D, (t / H) % 24);
            if day % 7 >= 5 || !(8..18).contains(&h) {
                0.0
            } else if h == 8 {
                0.25
            } else {
                0.5
            }
        };
        let mut times = arrivals(seed, T0, T0 + 14 * D, rate);
        for d in [3, 8, 10] {
            let at = T0 + d * D + 10 * H;
            times.extend((0..15).map(|i| at + i * 2_000));
        }
        let (_, found) = run(&times);
        assert!(found.is_empty(), "{:?}", found.first());
    }
}

#[test]
fn no_history_or_tiny_tokens_do_not_fire() {
    // Day 2: too little history for a spike to count.
    let mut times = steady(41, 1.0, 3);
    let at = T0 + 2 * D + 12 * H;
    times.extend(arrivals(42, at, at + 15 * M, |_| 40.0));
    assert!(run(&times).1.is_empty());
    // A token that makes three requests a week, then three in a second.
    let mut times: Vec<i64> = (0..7).map(|d| T0 + d * D + 9 * H).collect();
    times.extend([T0 + 7 * D, T0 + 7 * D + 300, T0 + 7 * D + 600]);
    assert!(run(&times).1.is_empty());
}
