//! The benign population: who uses which token, from where, how often. Every hard case of
//! DESIGN §6 is present at least once when there are enough tokens.

use std::collections::HashSet;

use super::actor::{Actor, Ident};
use super::clock::{Window, DAY, HOUR};
use super::ev::{HUMAN_UAS, MOBILE_UA, SERVICE_UAS};
use super::geo::{all_v4, all_v6_homes, find, Loc, Net};
use super::machine::{Machine, Mode};
use super::person::{Habits, Person, Roam, Rotation, Travel};
use super::plan::Plan;
use super::rng::Rng;

/// Hands out unique token ids (`ak_` + 12 hex).
pub(crate) struct TokenIds {
    rng: Rng,
    seen: HashSet<u64>,
}

impl TokenIds {
    /// Ids drawn from the seed.
    pub(crate) fn new(seed: u64) -> TokenIds {
        TokenIds {
            rng: Rng::stream(seed, 1),
            seen: HashSet::new(),
        }
    }

    /// How many ids were handed out.
    pub(crate) fn count(&self) -> u64 {
        self.seen.len() as u64
    }

    /// An id never handed out before.
    pub(crate) fn fresh(&mut self) -> u64 {
        loop {
            let id = self.rng.next_u64() & 0xffff_ffff_ffff;
            if self.seen.insert(id) {
                return id;
            }
        }
    }
}

/// The tokens attacks are aimed at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Victims {
    /// A steady service (rate spike).
    pub spike: Ident,
    /// A London office worker (impossible travel).
    pub travel: Ident,
    /// A Paris office worker whose key leaks (IP fan-out).
    pub fanout: Ident,
    /// A strictly office-hours Berlin worker (off-hours use).
    pub night: Ident,
    /// A Madrid worker whose old key was revoked (revoked reuse); `token` is the old key.
    pub revoked: Ident,
}

/// Everyone, ready to run.
pub(crate) struct Population {
    /// One actor per token.
    pub actors: Vec<Box<dyn Actor>>,
    /// Attack targets.
    pub victims: Victims,
    /// Plain users and services (the rejection storm retries as them).
    pub crowd: Vec<Ident>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Office,
    Service,
    Batch,
    Growth,
    Nat,
    Traveller,
    Roaming,
    Expired,
    Rotated,
    Busy,
}

/// Kinds with their weight in a large population.
const MIX: [(Kind, u32); 10] = [
    (Kind::Office, 55),
    (Kind::Service, 15),
    (Kind::Batch, 5),
    (Kind::Growth, 3),
    (Kind::Nat, 3),
    (Kind::Traveller, 3),
    (Kind::Roaming, 6),
    (Kind::Expired, 6),
    (Kind::Rotated, 4),
    (Kind::Busy, 1),
];

const TRIPS: [(&str, &str); 5] = [
    ("London", "New York"),
    ("Paris", "Toronto"),
    ("New York", "London"),
    ("Sydney", "Singapore"),
    ("Tokyo", "San Francisco"),
];

const ROAMS: [(&str, &str); 4] = [
    ("Amsterdam", "Brussels"),
    ("New York", "Boston"),
    ("Tokyo", "Osaka"),
    ("Sao Paulo", "Rio de Janeiro"),
];

/// Builds the population for a plan; the revoked victim's key is replaced at `revoke_at`.
pub(crate) struct Builder<'a> {
    plan: &'a Plan,
    seed: u64,
    ids: &'a mut TokenIds,
    pick: Rng,
    homes: Vec<Loc>,
    clouds: Vec<Loc>,
    v6: Vec<Loc>,
    actors: Vec<Box<dyn Actor>>,
    crowd: Vec<Ident>,
}

impl<'a> Builder<'a> {
    /// A builder drawing ids from `ids`.
    pub(crate) fn new(plan: &'a Plan, seed: u64, ids: &'a mut TokenIds) -> Builder<'a> {
        Builder {
            plan,
            seed,
            ids,
            pick: Rng::stream(seed, 2),
            homes: all_v4(Net::Home),
            clouds: all_v4(Net::Cloud),
            v6: all_v6_homes(),
            actors: Vec::new(),
            crowd: Vec::new(),
        }
    }

    /// Victims first, then `tokens` minus five others by the mix.
    pub(crate) fn build(mut self, tokens: u32, revoke_at: i64) -> Population {
        let victims = self.victims(revoke_at);
        for i in 0..tokens.saturating_sub(5) as usize {
            let kind = match MIX.get(i) {
                Some((k, _)) => *k,
                None => self.weighted(),
            };
            self.add(kind);
        }
        let scanner = super::scanner::Scanner::new(self.plan, Rng::stream(self.seed, 999));
        self.actors.push(Box::new(scanner));
        Population {
            actors: self.actors,
            victims,
            crowd: self.crowd,
        }
    }

    fn victims(&mut self, revoke_at: i64) -> Victims {
        let ashburn = find("Ashburn", Net::Cloud).unwrap_or(self.clouds[0]);
        let spike = self.ident(ashburn);
        self.push_machine(spike, Mode::Steady, 1.0, None);
        let travel = self.person_at("London", None);
        let fanout = self.person_at("Paris", None);
        let night = self.person_at("Berlin", None);
        let madrid = find("Madrid", Net::Home).unwrap_or(self.homes[0]);
        let revoked = self.ident(madrid);
        let rotation = Rotation {
            at: revoke_at,
            new_token: self.ids.fresh(),
            stale_tries: 0,
        };
        let person = self
            .person(revoked, office(12.0, 1))
            .with_rotation(rotation);
        self.actors.push(Box::new(person));
        Victims {
            spike,
            travel,
            fanout,
            night,
            revoked,
        }
    }

    fn weighted(&mut self) -> Kind {
        let total: u32 = MIX.iter().map(|m| m.1).sum();
        let mut r = self.pick.below(u64::from(total)) as u32;
        for (kind, w) in MIX {
            if r < w {
                return kind;
            }
            r -= w;
        }
        Kind::Office
    }

    fn add(&mut self, kind: Kind) {
        match kind {
            Kind::Office => self.office_worker(false, "office_worker"),
            Kind::Expired => self.office_worker(true, "expired_refresh"),
            Kind::Service => {
                let rate = 0.03 * 20f64.powf(self.pick.f64());
                self.machine(Mode::Steady, rate, "service", true);
            }
            // Batch jobs and busy services see a refresh burst of `401 expired` now and then.
            Kind::Batch => self.machine_with(Mode::Batch, 0.0, "daily_batch", false, true),
            Kind::Busy => {
                let rate = self.pick.range(2, 7) as f64;
                self.machine_with(Mode::Steady, rate, "busy_sporadic_expiry", false, true);
            }
            Kind::Growth => {
                let from = self.plan.start + DAY + self.pick.range(0, DAY);
                let rate = self.pick.range(10, 50) as f64 / 100.0;
                self.machine(Mode::Growth { from }, rate, "organic_growth", false);
            }
            Kind::Nat => self.nat_pool(),
            Kind::Traveller => self.traveller(),
            Kind::Roaming => self.roamer(),
            Kind::Rotated => self.rotator(),
        }
    }

    fn ident(&mut self, loc: Loc) -> Ident {
        Ident {
            token: self.ids.fresh(),
            user: self.actors.len() as u32 + 1,
            ip: loc.host(&mut self.pick),
            loc,
        }
    }

    fn rng(&self) -> Rng {
        Rng::stream(self.seed, 1000 + self.actors.len() as u64)
    }

    fn person(&mut self, id: Ident, habits: Habits) -> Person {
        Person::new(self.rng(), id, habits, self.plan.start, self.plan.horizon)
    }

    fn person_at(&mut self, city: &str, hard: Option<&'static str>) -> Ident {
        let loc = find(city, Net::Home).unwrap_or(self.homes[0]);
        let id = self.ident(loc);
        let habits = Habits {
            hard_case: hard,
            ..office(14.0, 2)
        };
        let p = self.person(id, habits);
        self.actors.push(Box::new(p));
        id
    }

    fn push_machine(&mut self, id: Ident, mode: Mode, rate: f64, hard: Option<&'static str>) {
        self.push_machine_with(id, mode, rate, hard, false);
    }

    fn push_machine_with(
        &mut self,
        id: Ident,
        mode: Mode,
        rate: f64,
        hard: Option<&'static str>,
        sporadic_expiry: bool,
    ) {
        let ua = SERVICE_UAS[self.pick.index(SERVICE_UAS.len())];
        let (start, end) = (self.plan.start, self.plan.horizon);
        let mut m = Machine::new(self.rng(), id, mode, rate, ua, start, end, hard);
        if sporadic_expiry {
            m = m.with_sporadic_expiry();
        }
        self.actors.push(Box::new(m));
    }

    fn machine(&mut self, mode: Mode, rate: f64, hard: &'static str, crowd: bool) {
        self.machine_with(mode, rate, hard, crowd, false);
    }

    fn machine_with(
        &mut self,
        mode: Mode,
        rate: f64,
        hard: &'static str,
        crowd: bool,
        sporadic_expiry: bool,
    ) {
        let loc = self.clouds[self.pick.index(self.clouds.len())];
        let id = self.ident(loc);
        if crowd {
            self.crowd.push(id);
        }
        self.push_machine_with(id, mode, rate, Some(hard), sporadic_expiry);
    }

    fn office_worker(&mut self, expired_refresh: bool, hard: &'static str) {
        let mut loc = self.homes[self.pick.index(self.homes.len())];
        let mut v6_subnet = None;
        if self.pick.chance(0.1) && !self.v6.is_empty() {
            loc = self.v6[self.pick.index(self.v6.len())];
            v6_subnet = Some(self.pick.below(0x1_0000) as u16);
        }
        let mut id = self.ident(loc);
        if let Some(subnet) = v6_subnet {
            id.ip = loc.host_in(subnet, self.pick.next_u64(), &mut self.pick);
        }
        let rate = self.pick.range(8, 30) as f64;
        let ua = HUMAN_UAS[self.pick.index(HUMAN_UAS.len())];
        let habits = Habits {
            expired_refresh,
            v6_subnet,
            hard_case: Some(hard),
            ..office(rate, ua)
        };
        if !expired_refresh {
            self.crowd.push(id);
        }
        let p = self.person(id, habits);
        self.actors.push(Box::new(p));
    }

    fn nat_pool(&mut self) {
        let loc = self.homes[self.pick.index(self.homes.len())];
        let id = self.ident(loc);
        let mut ips = Vec::with_capacity(8);
        while ips.len() < 8 {
            let ip = loc.host(&mut self.pick);
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        let rate = self.pick.range(30, 100) as f64 / 100.0;
        self.push_machine_with(id, Mode::Nat { ips }, rate, Some("nat_pool"), true);
    }

    fn traveller(&mut self) {
        let (from, to) = TRIPS[self.pick.index(TRIPS.len())];
        let home = find(from, Net::Home).unwrap_or(self.homes[0]);
        let dest = find(to, Net::Home).unwrap_or(self.homes[0]);
        let id = self.ident(home);
        let at = self.plan.start + self.pick.range(1, 3) * DAY + self.pick.range(9, 15) * HOUR;
        let habits = Habits {
            hard_case: Some("traveller"),
            ..office(self.pick.range(10, 25) as f64, 1)
        };
        let p = self.person(id, habits).with_travel(Travel { at, dest });
        self.actors.push(Box::new(p));
    }

    fn roamer(&mut self) {
        let (a, b) = ROAMS[self.pick.index(ROAMS.len())];
        let (Some(home), Some(other)) = (find(a, Net::Mobile), find(b, Net::Mobile)) else {
            return self.office_worker(false, "office_worker");
        };
        let id = self.ident(home);
        let habits = Habits {
            window: Window::WAKING,
            rate_h: self.pick.range(4, 10) as f64,
            ua: MOBILE_UA,
            expired_refresh: false,
            v6_subnet: None,
            hard_case: Some("roaming_mobile"),
        };
        let p = self.person(id, habits).with_roam(Roam { other });
        self.actors.push(Box::new(p));
    }

    fn rotator(&mut self) {
        let loc = self.homes[self.pick.index(self.homes.len())];
        let id = self.ident(loc);
        let rotation = Rotation {
            at: self.plan.start + self.pick.range(1, 4) * DAY + self.pick.range(8, 16) * HOUR,
            new_token: self.ids.fresh(),
            stale_tries: self.pick.range(1, 3) as u32,
        };
        let habits = Habits {
            hard_case: Some("key_rotation"),
            ..office(self.pick.range(8, 25) as f64, 0)
        };
        let p = self.person(id, habits).with_rotation(rotation);
        self.actors.push(Box::new(p));
    }
}

/// Office habits at a peak rate with one user agent.
fn office(rate_h: f64, ua: u8) -> Habits {
    Habits {
        window: Window::OFFICE,
        rate_h,
        ua,
        expired_refresh: false,
        v6_subnet: None,
        hard_case: None,
    }
}
