//! Injected attacks, one builder per scenario: each returns its requests and its label.

use std::net::{IpAddr, Ipv4Addr};

use super::actor::Ident;
use super::clock::{day_start, weekday, DAY, HOUR, MIN};
use super::ev::{Ev, ATTACK_UAS, HUMAN_REQS, PROBE_REQS};
use super::geo::{all_v4, find, Loc, Net};
use super::labels::{Expect, Truth};
use super::plan::Plan;
use super::population::{TokenIds, Victims};
use super::rng::Rng;
use super::write::token_string;
use super::Scenario;
use crate::event::Reason;

/// An incident ready to inject.
pub(crate) struct Attack {
    /// Its label.
    pub truth: Truth,
    /// Its requests.
    pub events: Vec<Ev>,
}

/// What the builders draw on.
pub(crate) struct Ctx<'a> {
    pub plan: &'a Plan,
    pub victims: Victims,
    pub crowd: &'a [Ident],
    pub ids: &'a mut TokenIds,
    pub rng: Rng,
}

/// Length of the rejection storm.
pub(crate) const STORM_LEN: i64 = 5 * MIN;

/// Builds `scenario`, or `None` when it does not fit the run (too short, no learning period).
pub(crate) fn build(scenario: Scenario, ctx: &mut Ctx<'_>) -> Option<Attack> {
    let day = ctx.plan.attack_day;
    let (events, key) = match scenario {
        Scenario::BruteForce => brute_force(ctx, day + HOUR),
        Scenario::TokenSpray => token_spray(ctx, day + 4 * HOUR),
        Scenario::OffHours => off_hours(ctx),
        Scenario::IpFanout => ip_fanout(ctx, day + 7 * HOUR),
        Scenario::ImpossibleTravel => impossible_travel(ctx, day + 10 * HOUR),
        Scenario::RateSpike => rate_spike(ctx, day + 12 * HOUR),
        Scenario::RevokedReuse => revoked_reuse(ctx, day + 14 * HOUR),
        Scenario::DistributedSpray => distributed_spray(ctx, day + 16 * HOUR),
        Scenario::RejectionStorm => storm(ctx, day + 19 * HOUR),
    };
    let (mut from, mut to) = span(&events)?;
    if scenario == Scenario::RejectionStorm {
        from = day + 19 * HOUR;
        to = from + STORM_LEN - 1;
    }
    if !ctx.plan.fits(from, to, scenario.needs_baseline()) {
        return None;
    }
    let truth = Truth {
        scenario: scenario.name(),
        detector: scenario.detector(),
        key,
        start: from,
        end: to,
        expect: Expect::Detect,
    };
    Some(Attack { truth, events })
}

fn span(events: &[Ev]) -> Option<(i64, i64)> {
    let from = events.iter().map(|e| e.t).min()?;
    let to = events.iter().map(|e| e.t).max()?;
    Some((from, to))
}

/// An address in one of the documentation ranges: attackers without a location.
fn doc_ip(block: u8, host: u8) -> IpAddr {
    let (a, b, c) = match block % 3 {
        0 => (203, 0, 113),
        1 => (198, 51, 100),
        _ => (192, 0, 2),
    };
    IpAddr::V4(Ipv4Addr::new(a, b, c, host.max(1)))
}

fn probe(rng: &mut Rng, t: i64, token: Option<u64>, ip: IpAddr, user: u32) -> Ev {
    let req = PROBE_REQS[rng.index(PROBE_REQS.len())];
    let mut ev = Ev::ok(t, token, ip, user, req, ATTACK_UAS[0]);
    ev.bytes = 48;
    ev
}

/// One IP, 75 rejected attempts without a valid credential in under five minutes.
fn brute_force(ctx: &mut Ctx<'_>, at: i64) -> (Vec<Ev>, String) {
    let ip = doc_ip(0, 10 + ctx.rng.below(100) as u8);
    let events = (0..75)
        .map(|i| {
            let t = at + i * 3_900 + ctx.rng.range(0, 500);
            probe(&mut ctx.rng, t, None, ip, 0).rejected(Reason::Invalid)
        })
        .collect();
    (events, ip.to_string())
}

/// One IP, 24 never-seen tokens in nine minutes.
fn token_spray(ctx: &mut Ctx<'_>, at: i64) -> (Vec<Ev>, String) {
    let ip = doc_ip(1, 20 + ctx.rng.below(100) as u8);
    let mut events = Vec::new();
    for i in 0..24 {
        let token = ctx.ids.fresh();
        for _ in 0..ctx.rng.range(1, 3) {
            let t = at + i * 22_000 + ctx.rng.range(0, 20_000);
            events.push(probe(&mut ctx.rng, t, Some(token), ip, 0).rejected(Reason::Invalid));
        }
    }
    (events, ip.to_string())
}

/// 18 IPs over 45 minutes, each trying two or three never-seen tokens once.
fn distributed_spray(ctx: &mut Ctx<'_>, at: i64) -> (Vec<Ev>, String) {
    let mut events = Vec::new();
    for i in 0..18u8 {
        let ip = doc_ip(i, 150 + i);
        for _ in 0..ctx.rng.range(2, 4) {
            let token = ctx.ids.fresh();
            let t = at + ctx.rng.range(0, 45 * MIN);
            events.push(probe(&mut ctx.rng, t, Some(token), ip, 0).rejected(Reason::Invalid));
        }
    }
    (events, "global".to_string())
}

/// The steady service at 20× its 1/min baseline for 15 minutes (19/min on top of its own).
fn rate_spike(ctx: &mut Ctx<'_>, at: i64) -> (Vec<Ev>, String) {
    let v = ctx.victims.spike;
    let mut events = Vec::new();
    let mut t = at;
    loop {
        t += ctx.rng.exp_ms(MIN as f64 / 19.0);
        if t >= at + 15 * MIN {
            break;
        }
        let mut ev = Ev::ok(t, Some(v.token), v.ip, v.user, 2, 3);
        ev.bytes = ctx.rng.range(200, 3000) as u32;
        events.push(ev);
    }
    (events, token_string(v.token))
}

fn uses(ctx: &mut Ctx<'_>, v: Ident, ip: IpAddr, from: i64, n: i64, spread: i64) -> Vec<Ev> {
    (0..n)
        .map(|_| {
            let t = from + ctx.rng.range(0, spread);
            let req = HUMAN_REQS[ctx.rng.index(HUMAN_REQS.len())];
            let mut ev = Ev::ok(t, Some(v.token), ip, v.user, req, 2);
            ev.bytes = ctx.rng.range(300, 6000) as u32;
            ev
        })
        .collect()
}

/// The London worker's key used at home, then from Sydney twenty minutes later.
fn impossible_travel(ctx: &mut Ctx<'_>, at: i64) -> (Vec<Ev>, String) {
    let v = ctx.victims.travel;
    let sydney = find("Sydney", Net::Home).unwrap_or(v.loc);
    let far = sydney.host(&mut ctx.rng);
    let arrive = at + 3 * MIN + 20 * MIN;
    let mut events = Vec::new();
    for (ip, from, n) in [(v.ip, at, 4), (far, arrive, 4)] {
        for i in 0..n {
            events.extend(uses(ctx, v, ip, from + i * MIN, 1, 1));
        }
    }
    (events, token_string(v.token))
}

/// A leaked key used from 30 IPs in 25 /24s across several countries within ten minutes.
fn ip_fanout(ctx: &mut Ctx<'_>, at: i64) -> (Vec<Ev>, String) {
    let v = ctx.victims.fanout;
    let mut nets: Vec<Loc> = all_v4(Net::Home);
    nets.retain(|l| *l != v.loc);
    let mut events = Vec::new();
    let mut ips = Vec::new();
    for k in 0..25.min(nets.len()) {
        let pick = k + ctx.rng.index(nets.len() - k);
        nets.swap(k, pick);
        ips.push(nets[k].host(&mut ctx.rng));
    }
    let first: Vec<Loc> = nets.iter().take(5.min(ips.len())).copied().collect();
    for net in first {
        let extra = loop {
            let ip = net.host(&mut ctx.rng);
            if !ips.contains(&ip) {
                break ip;
            }
        };
        ips.push(extra);
    }
    for ip in ips {
        let n = ctx.rng.range(1, 3);
        events.extend(uses(ctx, v, ip, at, n, 10 * MIN));
    }
    (events, token_string(v.token))
}

/// The strictly office-hours Berlin key used at 03:00 local on a Sunday, 12 times.
fn off_hours(ctx: &mut Ctx<'_>) -> (Vec<Ev>, String) {
    let v = ctx.victims.night;
    let off = v.loc.utc_offset();
    let plan = ctx.plan;
    let sunday = (0..=(plan.end - plan.start) / DAY + 1)
        .map(|d| day_start(plan.start + off) + d * DAY + 3 * HOUR - off)
        .find(|&t| weekday(t + off) == 6 && plan.fits(t, t + 15 * MIN, true));
    let at = sunday.unwrap_or(plan.attack_day + 3 * HOUR - off);
    let start = at + ctx.rng.range(0, 5 * MIN);
    (
        uses(ctx, v, v.ip, start, 12, 10 * MIN),
        token_string(v.token),
    )
}

/// The revoked key tried 20 times in ten minutes from one address.
fn revoked_reuse(ctx: &mut Ctx<'_>, at: i64) -> (Vec<Ev>, String) {
    let v = ctx.victims.revoked;
    let ip = doc_ip(2, 50 + ctx.rng.below(50) as u8);
    let events = (0..20)
        .map(|i| {
            let t = at + i * 28_000 + ctx.rng.range(0, 5_000);
            probe(&mut ctx.rng, t, Some(v.token), ip, v.user).rejected(Reason::Revoked)
        })
        .collect();
    (events, token_string(v.token))
}

/// An auth backend outage: known clients' requests fail and they retry; the merger also turns
/// most normal requests in the window into rejections.
fn storm(ctx: &mut Ctx<'_>, at: i64) -> (Vec<Ev>, String) {
    let n = (ctx.crowd.len() as i64 * 3 / 10).clamp(120, 600);
    let events = (0..n)
        .filter_map(|_| {
            let who = *ctx.crowd.get(ctx.rng.index(ctx.crowd.len()))?;
            let t = at + ctx.rng.range(0, STORM_LEN);
            let mut ev = Ev::ok(t, Some(who.token), who.ip, who.user, 0, 0);
            ev.bytes = 48;
            Some(ev.rejected(Reason::Invalid))
        })
        .collect();
    (events, "global".to_string())
}
