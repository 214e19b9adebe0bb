//! Machines: 24/7 services (steady with hourly noise), organic growth, NAT pools and nightly
//! batch jobs.

use std::net::IpAddr;

use super::actor::{Actor, Ident};
use super::clock::{day_start, DAY, HOUR, MIN};
use super::ev::{Ev, BATCH_REQS, SERVICE_REQS};
use super::labels::Truth;
use super::rng::{mix64, Rng};
use super::write::token_string;

/// How a machine's traffic is shaped.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// A steady rate with ±30 % hourly noise.
    Steady,
    /// Like `Steady`, but the rate doubles linearly over the day starting at `from`.
    Growth {
        /// When growth starts.
        from: i64,
    },
    /// A steady rate spread over a pool of egress addresses in one /24.
    Nat {
        /// The pool.
        ips: Vec<IpAddr>,
    },
    /// About 500 requests at 02:00 local every night, nothing else.
    Batch,
}

/// One service token.
pub(crate) struct Machine {
    rng: Rng,
    id: Ident,
    mode: Mode,
    /// Mean requests per minute (before noise and growth).
    rate_min: f64,
    ua: u8,
    cursor: i64,
    start: i64,
    end: i64,
    burst_left: u32,
    hard_case: Option<&'static str>,
    /// Refused as expired now and then while still accepted (a client refreshing its
    /// access token): `revoked_reuse` must stay quiet on it.
    sporadic_expiry: bool,
    /// Expired refusals still to send in the current refresh burst.
    expired_left: u32,
    /// Accepted requests to go before the next burst may start (a refreshed token is
    /// valid for a while).
    fresh_for: u32,
}

impl Machine {
    /// A machine active from `start` until `end`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rng: Rng,
        id: Ident,
        mode: Mode,
        rate_min: f64,
        ua: u8,
        start: i64,
        end: i64,
        hard_case: Option<&'static str>,
    ) -> Machine {
        Machine {
            rng,
            id,
            mode,
            rate_min,
            ua,
            cursor: start,
            start,
            end,
            burst_left: 0,
            hard_case,
            sporadic_expiry: false,
            expired_left: 0,
            fresh_for: 0,
        }
    }

    /// Makes the machine's token expire now and then: one to four requests in a row are
    /// refused as `expired`, retried within a second or two, then the refreshed token is
    /// accepted again (about one burst per 150 requests).
    pub(crate) fn with_sporadic_expiry(mut self) -> Machine {
        self.sporadic_expiry = true;
        self
    }

    /// The next refusal of a refresh burst, right after the previous request.
    fn next_expired(&mut self) -> Option<Ev> {
        if !self.sporadic_expiry || self.expired_left == 0 {
            return None;
        }
        self.expired_left -= 1;
        self.cursor += self.rng.range(200, 1500);
        if self.cursor >= self.end {
            return None;
        }
        let req = SERVICE_REQS[self.rng.index(SERVICE_REQS.len())];
        let ip = self.egress();
        let ev = Ev::ok(self.cursor, Some(self.id.token), ip, self.id.user, req, self.ua);
        Some(ev.rejected(crate::event::Reason::Expired))
    }

    /// The address a request leaves from (one of the pool for a NAT pool).
    fn egress(&mut self) -> IpAddr {
        match &self.mode {
            Mode::Nat { ips } if !ips.is_empty() => ips[self.rng.index(ips.len())],
            _ => self.id.ip,
        }
    }

    /// Hourly noise factor in [0.7, 1.3], fixed per machine and hour.
    fn noise(&self, t: i64) -> f64 {
        let h = mix64(self.id.token ^ (t.div_euclid(HOUR) as u64).wrapping_mul(0x9E37));
        0.7 + 0.6 * (h >> 11) as f64 / (1u64 << 53) as f64
    }

    fn growth(&self, t: i64) -> f64 {
        match self.mode {
            Mode::Growth { from } => 1.0 + ((t - from) as f64 / DAY as f64).clamp(0.0, 1.0),
            _ => 1.0,
        }
    }

    /// Poisson arrivals thinned by noise and growth.
    fn next_steady(&mut self) -> Option<i64> {
        let peak = 1.3
            * if matches!(self.mode, Mode::Growth { .. }) {
                2.0
            } else {
                1.0
            };
        let mean = MIN as f64 / (self.rate_min * peak).max(1e-6);
        loop {
            self.cursor += self.rng.exp_ms(mean);
            if self.cursor >= self.end {
                return None;
            }
            let rate = self.noise(self.cursor) * self.growth(self.cursor);
            if self.rng.chance(rate / peak) {
                return Some(self.cursor);
            }
        }
    }

    /// About one request a second from 02:00 local each night.
    fn next_batch(&mut self) -> Option<i64> {
        if self.burst_left == 0 {
            let off = self.id.loc.utc_offset();
            let local = self.cursor + off;
            let mut two = day_start(local) + 2 * HOUR;
            if two <= local {
                two += DAY;
            }
            self.cursor = two - off + self.rng.range(0, 90_000);
            self.burst_left = self.rng.range(450, 551) as u32;
        }
        self.burst_left -= 1;
        self.cursor += self.rng.exp_ms(1000.0);
        (self.cursor < self.end).then_some(self.cursor)
    }
}

impl Actor for Machine {
    fn next(&mut self) -> Option<Ev> {
        if let Some(ev) = self.next_expired() {
            return Some(ev);
        }
        let (t, reqs) = match self.mode {
            Mode::Batch => (self.next_batch()?, BATCH_REQS),
            _ => (self.next_steady()?, SERVICE_REQS),
        };
        let ip = self.egress();
        let req = reqs[self.rng.index(reqs.len())];
        let mut ev = Ev::ok(t, Some(self.id.token), ip, self.id.user, req, self.ua);
        ev.bytes = self.rng.range(200, 3000) as u32;
        if self.sporadic_expiry && self.fresh_for == 0 && self.rng.chance(1.0 / 150.0) {
            // This request already carries the expired token; a few retries follow.
            self.expired_left = self.rng.range(0, 4) as u32;
            self.fresh_for = 20;
            return Some(ev.rejected(crate::event::Reason::Expired));
        }
        self.fresh_for = self.fresh_for.saturating_sub(1);
        Some(ev)
    }

    fn truths(&self, out: &mut Vec<Truth>) {
        let Some(name) = self.hard_case else { return };
        let key = token_string(self.id.token);
        let truth = match self.mode {
            Mode::Nat { .. } => Truth::hard(name, "ip_fanout", key, self.start, self.end),
            Mode::Growth { from } => Truth::hard(name, "rate_spike", key, from, self.end),
            _ => Truth::hard(name, "rate_spike", key, self.start, self.end),
        };
        out.push(truth);
        if self.sporadic_expiry {
            out.push(Truth::hard(name, "revoked_reuse", token_string(self.id.token), self.start, self.end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::geo::{find, Net};

    fn ident() -> Ident {
        let loc = find("Frankfurt", Net::Cloud).expect("loc");
        Ident {
            token: 42,
            user: 1,
            ip: "18.184.10.7".parse().expect("ip"),
            loc,
        }
    }

    fn run(mode: Mode, rate: f64, days: i64) -> Vec<Ev> {
        let start = 20_514 * DAY;
        let mut m = Machine::new(
            Rng::new(1),
            ident(),
            mode,
            rate,
            3,
            start,
            start + days * DAY,
            None,
        );
        std::iter::from_fn(|| m.next()).collect()
    }

    #[test]
    fn steady_rate_is_about_right_and_ordered() {
        let evs = run(Mode::Steady, 1.0, 2);
        let n = evs.len() as f64;
        assert!((2400.0..3400.0).contains(&n), "{n}");
        assert!(evs.windows(2).all(|w| w[0].t <= w[1].t));
    }

    #[test]
    fn batch_bursts_at_two_local() {
        let evs = run(Mode::Batch, 0.0, 3);
        assert!((1300..1700).contains(&evs.len()), "{}", evs.len());
        for e in &evs {
            // Frankfurt is UTC+1: 02:00 local is 01:00 UTC; a burst lasts under 15 minutes.
            let tod = e.t.rem_euclid(DAY);
            assert!((HOUR..HOUR + 15 * MIN).contains(&tod), "{tod}");
        }
    }

    #[test]
    fn growth_doubles_the_rate() {
        let start = 20_514 * DAY;
        let evs = run(Mode::Growth { from: start + DAY }, 2.0, 3);
        let day = |d: i64| evs.iter().filter(|e| (e.t - start) / DAY == d).count() as f64;
        let ratio = day(2) / day(0);
        assert!((1.7..2.3).contains(&ratio), "{ratio}");
    }
}
