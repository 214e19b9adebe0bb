//! Background scanning: random never-seen tokens from random addresses all day long (what
//! every public API sees), a few an hour, and once a day a busier hour (some twenty tokens
//! from as many addresses). Benign: `distributed_spray` must learn it as background and
//! fire only on a campaign that stands out from it.

use std::net::{IpAddr, Ipv4Addr};

use super::actor::{Actor, Queue};
use super::clock::{DAY, HOUR, MIN};
use super::ev::{Ev, ATTACK_UAS, PROBE_REQS};
use super::labels::Truth;
use super::plan::Plan;
use super::rng::Rng;
use crate::event::Reason;

/// Mean gap between two background probes (about three an hour).
const MEAN_GAP_MS: f64 = 20.0 * MIN as f64;

/// The scanner actor.
pub(crate) struct Scanner {
    rng: Rng,
    cursor: i64,
    start: i64,
    end: i64,
    /// Hours kept free of bursts around the injected distributed spray.
    quiet: (i64, i64),
    next_burst_day: i64,
    queue: Queue,
}

impl Scanner {
    /// A scanner over the plan's traffic.
    pub(crate) fn new(plan: &Plan, rng: Rng) -> Scanner {
        Scanner {
            rng,
            cursor: plan.start,
            start: plan.start,
            end: plan.horizon,
            quiet: (plan.attack_day + 15 * HOUR, plan.attack_day + 19 * HOUR),
            next_burst_day: plan.start,
            queue: Queue::default(),
        }
    }

    /// A random public IPv4 address (no private, loopback or documentation ranges).
    fn addr(&mut self) -> IpAddr {
        loop {
            let a = self.rng.range(11, 224) as u8;
            if matches!(a, 127 | 172 | 192 | 198 | 203 | 100 | 169) {
                continue;
            }
            let [b, c, d] = [0; 3].map(|_: u8| self.rng.below(256) as u8);
            return IpAddr::V4(Ipv4Addr::new(a, b, c, d.max(1)));
        }
    }

    /// A token nobody owns (48 random bits with the top bit set: no population id has it).
    fn token(&mut self) -> u64 {
        (self.rng.next_u64() & 0xffff_ffff_ffff) | 0x8000_0000_0000
    }

    /// One address trying `tokens` random tokens, each once or twice, from `t`.
    fn probe(&mut self, t: i64, tokens: u32) {
        let ip = self.addr();
        let mut at = t;
        for _ in 0..tokens {
            let token = self.token();
            for _ in 0..self.rng.range(1, 3) {
                let req = PROBE_REQS[self.rng.index(PROBE_REQS.len())];
                let mut ev = Ev::ok(at, Some(token), ip, 0, req, ATTACK_UAS[1]);
                ev.bytes = 48;
                self.queue.push(ev.rejected(Reason::Invalid));
                at += self.rng.range(500, 4000);
            }
        }
    }

    /// Once a day, a busier hour: 15–22 addresses, 1.4 tokens each on average.
    fn plan_burst(&mut self) {
        let day = self.next_burst_day;
        self.next_burst_day += DAY;
        // Never before the cursor: the actor's stream must stay in time order.
        let at = (day + self.rng.range(0, 23) * HOUR).max(self.cursor);
        if at + HOUR > self.end || (at < self.quiet.1 && at + HOUR > self.quiet.0) {
            return;
        }
        let ips = self.rng.range(15, 23) as u32;
        let mut extra = self.rng.range(3, 9) as u32;
        for _ in 0..ips {
            let two = extra > 0 && self.rng.chance(0.5);
            extra -= u32::from(two);
            let t = at + self.rng.range(0, HOUR - MIN);
            self.probe(t, 1 + u32::from(two));
        }
    }
}

impl Actor for Scanner {
    fn next(&mut self) -> Option<Ev> {
        while self.cursor < self.end {
            if self.queue.peek_t().is_some_and(|t| t <= self.cursor) {
                break;
            }
            if self.cursor >= self.next_burst_day {
                self.plan_burst();
                continue;
            }
            self.cursor += self.rng.exp_ms(MEAN_GAP_MS);
            if self.cursor < self.end {
                self.probe(self.cursor, 1);
            }
        }
        self.queue.pop().filter(|e| e.t < self.end)
    }

    fn truths(&self, out: &mut Vec<Truth>) {
        let (q0, q1) = self.quiet;
        for (from, to) in [(self.start, q0 - 1), (q1, self.end)] {
            if to > from {
                out.push(Truth::hard(
                    "background_scan",
                    "distributed_spray",
                    "global".into(),
                    from,
                    to,
                ));
            }
        }
    }

    fn is_normal(&self) -> bool {
        false
    }
}
