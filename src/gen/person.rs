//! People: office workers, phone users, travellers, expired-token refreshers and key rotators.
//! Poisson arrivals thinned by a diurnal shape inside a local-time window.

use super::actor::{Actor, Ident, Lookahead, Queue};
use super::clock::{day_start, hour, Window, HOUR, MIN};
use super::ev::{Ev, HUMAN_REQS};
use super::geo::Loc;
use super::labels::Truth;
use super::rng::{mix64, Rng};
use super::write::token_string;
use crate::event::Reason;

/// A move to another city: uses stop at home and resume there after a flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Travel {
    /// Departure is the first use at or after this time.
    pub at: i64,
    /// Destination (a home range there).
    pub dest: Loc,
}

/// A key rotated once: the old key is tried `stale_tries` times afterwards.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rotation {
    /// When the new key takes over.
    pub at: i64,
    /// The new token id.
    pub new_token: u64,
    /// How often the old key is still tried (0 for a revoked victim).
    pub stale_tries: u32,
}

/// A phone moving between two nearby cities on carrier addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Roam {
    /// The other city (a carrier range).
    pub other: Loc,
}

/// What a person's behaviour looks like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Habits {
    /// Hours of activity.
    pub window: Window,
    /// Peak requests per hour.
    pub rate_h: f64,
    /// User agent.
    pub ua: u8,
    /// Sometimes a 401 `expired` first thing in the day, then a refresh.
    pub expired_refresh: bool,
    /// IPv6 with a new privacy interface id every day (the /64 stays).
    pub v6_subnet: Option<u16>,
    /// Label name when this person is a hard case (`None`: plain, or an attack victim).
    pub hard_case: Option<&'static str>,
}

/// One person with one token.
pub(crate) struct Person {
    rng: Rng,
    id: Ident,
    habits: Habits,
    off: i64,
    cursor: i64,
    start: i64,
    end: i64,
    la: Lookahead,
    last_use: Option<i64>,
    day: i64,
    travel: Option<Travel>,
    trip: Option<(i64, i64)>,
    rotation: Option<Rotation>,
    old_token: u64,
    stale_span: Option<(i64, i64)>,
    roam: Option<Roam>,
    home: Loc,
    next_hop: i64,
}

impl Person {
    /// A person active from `start` until `end`.
    pub(crate) fn new(rng: Rng, id: Ident, habits: Habits, start: i64, end: i64) -> Person {
        Person {
            rng,
            off: id.loc.utc_offset(),
            old_token: id.token,
            home: id.loc,
            id,
            habits,
            cursor: start,
            start,
            end,
            la: Lookahead::default(),
            last_use: None,
            day: i64::MIN,
            travel: None,
            trip: None,
            rotation: None,
            stale_span: None,
            roam: None,
            next_hop: start,
        }
    }

    /// Adds a trip.
    pub(crate) fn with_travel(mut self, travel: Travel) -> Person {
        self.travel = Some(travel);
        self
    }

    /// Adds a key rotation.
    pub(crate) fn with_rotation(mut self, rotation: Rotation) -> Person {
        self.rotation = Some(rotation);
        self
    }

    /// Makes the person roam between home and another nearby city.
    pub(crate) fn with_roam(mut self, roam: Roam) -> Person {
        self.roam = Some(roam);
        self
    }

    /// The next arrival time inside the window, or `None` after `end`.
    fn draw(&mut self) -> Option<i64> {
        let mean = HOUR as f64 / self.habits.rate_h.max(0.01);
        loop {
            if self.cursor >= self.end {
                return None;
            }
            self.cursor += self.rng.exp_ms(mean);
            let local = self.cursor + self.off;
            if !self.habits.window.contains(local) {
                self.cursor = self.habits.window.next_open(local) - self.off;
                continue;
            }
            if self.cursor < self.end && self.rng.chance(shape(self.habits.window, hour(local))) {
                return Some(self.cursor);
            }
        }
    }

    /// The next request of the main stream; may queue follow-ups.
    fn produce(&mut self, queue: &mut Queue) -> Option<Ev> {
        loop {
            let t = self.draw()?;
            if self.travel.is_some_and(|tr| t >= tr.at) {
                self.depart();
                continue;
            }
            self.refresh_address(t);
            let ev = self.request(t);
            let ev = self.rotate(ev, queue);
            let ev = self.maybe_expired(ev, queue);
            if self.trip.is_some_and(|(_, arrived)| arrived == i64::MAX) {
                self.trip = self.trip.map(|(left, _)| (left, t));
            }
            self.last_use = Some(t);
            return Some(ev);
        }
    }

    /// Flies: the next use is at the destination, no sooner than a plausible flight allows.
    fn depart(&mut self) {
        let Some(tr) = self.travel.take() else { return };
        let km = self.id.loc.km_to(tr.dest);
        let flight = ((km / 800.0 + 1.0) * HOUR as f64) as i64;
        let left = self.last_use.unwrap_or(self.cursor);
        self.id.loc = tr.dest;
        self.off = tr.dest.utc_offset();
        self.id.ip = tr.dest.host(&mut self.rng);
        self.cursor = self.cursor.max(left + flight.max(7 * HOUR));
        self.trip = Some((left, i64::MAX));
    }

    /// Daily IPv6 privacy addresses; carrier address changes while roaming.
    fn refresh_address(&mut self, t: i64) {
        let today = day_start(t);
        if let Some(subnet) = self.habits.v6_subnet {
            if today != self.day {
                let iid = mix64(self.id.token ^ today as u64);
                self.id.ip = self.id.loc.host_in(subnet, iid, &mut self.rng);
            }
        }
        self.day = today;
        if let Some(roam) = self.roam {
            if t >= self.next_hop {
                self.hop(t, roam);
            }
        }
    }

    /// A new carrier address, sometimes in the other city when there was time to get there.
    fn hop(&mut self, t: i64, roam: Roam) {
        let other = if self.id.loc == self.home {
            roam.other
        } else {
            self.home
        };
        let km = self.id.loc.km_to(other);
        let travel_ms = (km / 200.0 * HOUR as f64) as i64;
        let since = t - self.last_use.unwrap_or(i64::MIN / 2);
        if since >= travel_ms && self.rng.chance(0.35) {
            self.id.loc = other;
        }
        self.id.ip = self.id.loc.host(&mut self.rng);
        self.next_hop = t + self.rng.range(HOUR, 4 * HOUR);
    }

    fn request(&mut self, t: i64) -> Ev {
        let req = HUMAN_REQS[self.rng.index(HUMAN_REQS.len())];
        let mut ev = Ev::ok(
            t,
            Some(self.id.token),
            self.id.ip,
            self.id.user,
            req,
            self.habits.ua,
        );
        ev.bytes = self.rng.range(300, 6000) as u32;
        ev
    }

    /// At the rotation time the new key takes over; the old key is tried a few more times.
    fn rotate(&mut self, ev: Ev, queue: &mut Queue) -> Ev {
        let Some(rot) = self.rotation.filter(|r| ev.t >= r.at) else {
            return ev;
        };
        self.rotation = None;
        self.id.token = rot.new_token;
        let fresh = Ev {
            token: Some(rot.new_token),
            ..ev
        };
        if rot.stale_tries == 0 {
            return fresh;
        }
        let mut stale = Ev {
            token: Some(self.old_token),
            bytes: 48,
            ..ev
        }
        .rejected(Reason::Revoked);
        queue.push(fresh.at(ev.t + self.rng.range(1000, 4000)));
        for _ in 1..rot.stale_tries {
            stale.t += self.rng.range(10 * MIN, 50 * MIN);
            queue.push(stale);
        }
        self.stale_span = Some((ev.t, stale.t));
        Ev { t: ev.t, ..stale }
    }

    /// First use of some days: the access token has expired; the client refreshes and retries.
    fn maybe_expired(&mut self, ev: Ev, queue: &mut Queue) -> Ev {
        let first_today = self
            .last_use
            .is_none_or(|last| day_start(last + self.off) != day_start(ev.t + self.off));
        if !self.habits.expired_refresh || ev.reason.is_some() || !first_today {
            return ev;
        }
        if !self.rng.chance(0.5) {
            return ev;
        }
        queue.push(ev.at(ev.t + self.rng.range(800, 4000)));
        Ev { bytes: 48, ..ev }.rejected(Reason::Expired)
    }
}

/// Diurnal shape: quieter at the first and last hour and over lunch.
fn shape(w: Window, h: i64) -> f64 {
    if h == w.from || h + 1 == w.to {
        0.5
    } else if h == 12 || h == 13 {
        0.75
    } else {
        1.0
    }
}

impl Actor for Person {
    fn next(&mut self) -> Option<Ev> {
        let mut la = std::mem::take(&mut self.la);
        let ev = la.next(|q| self.produce(q));
        self.la = la;
        ev
    }

    fn truths(&self, out: &mut Vec<Truth>) {
        let Some(name) = self.habits.hard_case else {
            return;
        };
        let key = token_string(self.old_token);
        let whole = |detector| Truth::hard(name, detector, key.clone(), self.start, self.end);
        match name {
            "traveller" => {
                if let Some((left, arrived)) = self.trip.filter(|t| t.1 != i64::MAX) {
                    out.push(Truth::hard(name, "impossible_travel", key, left, arrived));
                }
            }
            "roaming_mobile" => out.push(whole("impossible_travel")),
            "expired_refresh" => out.push(whole("revoked_reuse")),
            "key_rotation" => {
                if let Some((first, last)) = self.stale_span {
                    out.push(Truth::hard(name, "revoked_reuse", key, first, last));
                }
            }
            _ => out.push(whole("off_hours")),
        }
    }
}
