//! `impossible_travel` (DESIGN §6): two consecutive uses of one token from places too far
//! apart for the time between them.
//!
//! Consecutive means the token's previous *located* use (unlocated ones — private,
//! documentation, unknown ranges — are skipped). Speed is computed on the great-circle
//! distance minus both places' accuracy radii (MaxMind's radius is km at 67 % confidence),
//! so coarse locations cannot manufacture speed.
//!
//! What never fires, and why:
//! * moves under `min_km` (roaming phones, commutes, GeoIP noise inside a region);
//! * a change of address inside the same IPv4 /24 or IPv6 /64 (one site, whatever the
//!   database says);
//! * within one country when either side is known only to country precision (no city):
//!   a country centroid says nothing about where in the country the client is;
//! * a jump away from a place the token had not yet *dwelt* in (`min_dwell_secs` between
//!   arriving and the last use there): the warm-up rule; a token used concurrently from two
//!   places flips within seconds, a person or a stable deployment stays;
//! * a return to the place the token came from (A → B → A): a token seen going back and
//!   forth between the same two places is multi-homed (a service in two regions, a
//!   dual-stack client whose IPv4 and IPv6 geolocate apart, a VPN toggled on and off). The
//!   first jump of a stolen token still fires; an attacker alternating with the victim is
//!   the same incident and the first record already raised it.
//!
//! Only uses count: accepted checks, and `forbidden` rejections (the token was valid, just
//! not allowed there). Out-of-order events (older than the token's last located use) are
//! ignored. Not handled (no ASN data yet): VPN, relay and satellite providers, which
//! Panther skips by ASN; allowlist such tokens in `[response]`.

mod places;
mod state;

use serde_json::{json, Map, Value};

use super::TokenDetector;
use crate::config::detectors::impossible_travel::Settings;
use crate::detect::{Finding, Findings, Obs};
use crate::enrich::geo::{distance_km, Location};
use crate::event::Severity;
use crate::event::{Outcome, Reason};

use places::Places;
pub use state::State;
use state::{secs, Net};

/// The detector.
pub struct ImpossibleTravel {
    settings: Settings,
    places: Places,
}

/// The numbers of one move between two places.
struct Trip {
    km: f64,
    accuracy_km: f64,
    secs: u32,
}

impl Trip {
    fn effective_km(&self) -> f64 {
        (self.km - self.accuracy_km).max(0.0)
    }

    fn kmh(&self) -> f64 {
        self.effective_km() / (f64::from(self.secs.max(1)) / 3600.0)
    }
}

impl ImpossibleTravel {
    /// Builds it from its settings.
    pub fn new(settings: &Settings) -> Self {
        ImpossibleTravel {
            settings: settings.clone(),
            places: Places::new(settings.max_places),
        }
    }

    /// Places held for evidence.
    pub fn places(&self) -> usize {
        self.places.len()
    }

    fn accuracy(&self, l: &Location) -> f64 {
        match l.accuracy_km {
            0 => f64::from(self.settings.unknown_accuracy_km),
            a => f64::from(a),
        }
    }

    /// True if going from `st`'s place to `loc` is no move at all for this detector.
    fn same_area(&self, st: &State, from: &Location, to: &Location, net: Net, km: f64) -> bool {
        let coarse_same_country = (st.coarse() || to.city.is_none())
            && from.country.is_some()
            && from.country == to.country;
        st.net().same_site(net) || km < f64::from(self.settings.min_km) || coarse_same_country
    }

    fn finding(&self, st: &State, to: &Location, trip: &Trip, obs: &Obs<'_>) -> Option<Finding> {
        let tok = obs.ev.token.as_ref()?;
        let from = st.place();
        let mut from_ev = place_evidence(&from, self.places.city(from.lat, from.lon));
        let (k, v) = st.net().describe();
        from_ev.insert(k.into(), v.into());
        let mut to_ev = place_evidence(to, to.city.clone());
        if let Some(ip) = obs.ev.ip {
            to_ev.insert("ip".into(), ip.to_string().into());
        }
        let evidence = json!({
            "from": from_ev,
            "to": to_ev,
            "km": trip.km.round(),
            "accuracy_subtracted_km": trip.accuracy_km.round(),
            "minutes": (f64::from(trip.secs) / 6.0).round() / 10.0,
            "kmh": trip.kmh().round(),
            "max_kmh": self.settings.max_kmh,
            "dwell_minutes": st.dwell_s() / 60,
        });
        Some(Finding::about_token(
            "impossible_travel",
            Severity::High,
            tok.clone(),
            obs,
            evidence,
            self.settings.cooldown_secs,
        ))
    }
}

/// A use proves possession of a valid token: accepted, or valid but not allowed.
fn is_use(o: Outcome) -> bool {
    matches!(o, Outcome::Accepted | Outcome::Rejected(Reason::Forbidden))
}

fn place_evidence(l: &Location, city: Option<std::sync::Arc<str>>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "city".into(),
        city.map_or(Value::Null, |c| c.as_ref().into()),
    );
    m.insert(
        "country".into(),
        l.country_str().map_or(Value::Null, Into::into),
    );
    m.insert("lat".into(), json!((f64::from(l.lat) * 1e4).round() / 1e4));
    m.insert("lon".into(), json!((f64::from(l.lon) * 1e4).round() / 1e4));
    m.insert("accuracy_km".into(), l.accuracy_km.into());
    m
}

impl TokenDetector for ImpossibleTravel {
    type State = State;

    fn name(&self) -> &'static str {
        "impossible_travel"
    }

    /// The place names evidence uses (a token's part holds coordinates only).
    fn write_snapshot(&self, out: &mut dyn std::io::Write) -> serde_json::Result<()> {
        super::write_part(out, &self.places)
    }

    fn restore(&mut self, v: Value) -> Result<(), String> {
        self.places.restore(super::from_part(v)?);
        Ok(())
    }

    fn observe(&mut self, st: &mut State, obs: &Obs<'_>, out: &mut Findings) {
        let (Some(to), Some(ip)) = (obs.location, obs.ev.ip) else {
            return;
        };
        if !is_use(obs.ev.outcome) {
            return;
        }
        let t = secs(obs.ev.time);
        let net = Net::of(ip);
        if st.is_empty() {
            st.arrive(to, net, t);
            self.places.remember(to, obs.ev.time);
            return;
        }
        if t < st.last_s() {
            return;
        }
        let from = st.place();
        // Most uses come from where the token already is: no trigonometry for those (the
        // distance of a point to itself is exactly 0).
        let km = if (from.lat, from.lon) == (to.lat, to.lon) {
            0.0
        } else {
            distance_km(&from, to)
        };
        if self.same_area(st, &from, to, net, km) {
            // Keep the finer of the two places: a coarse answer never replaces a city.
            let replace = (from.lat, from.lon) != (to.lat, to.lon) && to.city.is_some();
            if replace {
                self.places.remember(to, obs.ev.time);
            }
            st.stay(replace.then_some(to), net, t);
            return;
        }
        let returning = st
            .previous()
            .is_some_and(|p| distance_km(&p, to) < f64::from(self.settings.min_km));
        let dwelt = st.dwell_s() >= self.settings.min_dwell_secs;
        let trip = Trip {
            km,
            accuracy_km: self.accuracy(&from) + self.accuracy(to),
            secs: t - st.last_s(),
        };
        if dwelt && !returning && trip.kmh() > f64::from(self.settings.max_kmh) {
            if let Some(f) = self.finding(st, to, &trip, obs) {
                out.push(f);
            }
        }
        st.arrive(to, net, t);
        self.places.remember(to, obs.ev.time);
    }
}

#[cfg(test)]
mod tests;
