//! City names of recently seen places, for evidence: a token's state keeps coordinates only,
//! so the name of where it came *from* is looked up here by those coordinates. One entry per
//! place (not per token), capped.

use std::sync::Arc;

use crate::detect::bounded::{Aged, BoundedMap};
use crate::enrich::geo::Location;
use crate::event::EventTime;

#[derive(Debug, Clone)]
struct Place {
    city: Option<Arc<str>>,
    seen: EventTime,
}

impl Aged for Place {
    fn last_seen(&self) -> EventTime {
        self.seen
    }
}

/// Capped table from coordinates to city name.
#[derive(Debug)]
pub(super) struct Places {
    map: BoundedMap<u64, Place>,
}

fn key(lat: f32, lon: f32) -> u64 {
    (u64::from(lat.to_bits()) << 32) | u64::from(lon.to_bits())
}

impl Places {
    /// An empty table of at most `cap` places.
    pub(super) fn new(cap: usize) -> Self {
        Places {
            map: BoundedMap::new(cap),
        }
    }

    /// Notes that `loc` was seen at `t`.
    pub(super) fn remember(&mut self, loc: &Location, t: EventTime) {
        let k = key(loc.lat, loc.lon);
        let p = self.map.entry(
            &k,
            || k,
            || Place {
                city: loc.city.clone(),
                seen: t,
            },
        );
        p.seen = p.seen.max(t);
    }

    /// The city at exactly these coordinates, if still known.
    pub(super) fn city(&self, lat: f32, lon: f32) -> Option<Arc<str>> {
        self.map.get(&key(lat, lon))?.city.clone()
    }

    /// Places held.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Refills the table from [`Places`]' serialised form (`[key, city, seen]` triples).
    pub(super) fn restore(&mut self, rows: Vec<(u64, Option<String>, EventTime)>) {
        for (k, city, seen) in rows {
            let city = city.map(Arc::from);
            self.map.insert(k, Place { city, seen });
        }
    }
}

/// The table as `[key, city, seen]` triples in its order (the snapshot part), so evidence
/// after a restart still names where a token came from.
impl serde::Serialize for Places {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.map.iter().map(|(k, p)| (k, p.city.as_deref(), p.seen)))
    }
}
