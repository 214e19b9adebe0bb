//! One `.mmdb` record, read borrowed and permissively so one type covers both city schemas:
//!
//! * MaxMind GeoIP2/GeoLite2 City: `city.names.en`, `country.iso_code`,
//!   `location.{latitude, longitude, accuracy_radius}` (doubles and a u16);
//! * the flat ip-location-db schema: `city`, `country_code`, `latitude`, `longitude` (floats,
//!   i.e. f32: a typed `f64` field would fail on them).
//!
//! Numbers are read through `deserialize_any`, so f32, f64 and any integer width decode.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// Which city schema a record (and so a file) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// MaxMind GeoIP2/GeoLite2 City (nested maps).
    MaxMindCity,
    /// ip-location-db's flat records (`country_code`, `city`, `latitude`, `longitude`).
    Flat,
}

/// The fields of a record that locate it; everything else is skipped unread.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Rec<'a> {
    #[serde(borrow)]
    city: Option<CityField<'a>>,
    #[serde(borrow)]
    country: Option<Country<'a>>,
    #[serde(borrow)]
    country_code: Option<&'a str>,
    location: Option<LocationRec>,
    latitude: Option<Num>,
    longitude: Option<Num>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Country<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LocationRec {
    latitude: Option<Num>,
    longitude: Option<Num>,
    accuracy_radius: Option<Num>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Names<'a> {
    #[serde(borrow)]
    en: Option<&'a str>,
}

/// The parts of a record a [`Location`](super::Location) is built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Fields<'a> {
    pub lat: f64,
    pub lon: f64,
    pub accuracy_km: Option<f64>,
    pub country: Option<&'a str>,
    pub city: Option<&'a str>,
}

impl<'a> Rec<'a> {
    /// The schema this record is written in, if it has coordinates at all.
    pub(super) fn schema(&self) -> Option<Schema> {
        if self.latitude.is_some() && self.longitude.is_some() {
            Some(Schema::Flat)
        } else if self
            .location
            .as_ref()
            .is_some_and(|l| l.latitude.is_some() && l.longitude.is_some())
        {
            Some(Schema::MaxMindCity)
        } else {
            None
        }
    }

    /// Coordinates and names, whichever schema; `None` without usable coordinates.
    pub(super) fn fields(&self) -> Option<Fields<'a>> {
        let loc = self.location.as_ref();
        let lat = self.latitude.or(loc.and_then(|l| l.latitude))?.0;
        let lon = self.longitude.or(loc.and_then(|l| l.longitude))?.0;
        let valid = lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0;
        if !valid {
            return None;
        }
        let country = self
            .country_code
            .or(self.country.as_ref().and_then(|c| c.iso_code));
        let city = self
            .city
            .as_ref()
            .and_then(|c| c.0)
            .filter(|s| !s.is_empty());
        Some(Fields {
            lat,
            lon,
            accuracy_km: loc.and_then(|l| l.accuracy_radius).map(|n| n.0),
            country,
            city,
        })
    }
}

/// Any number (f32, f64, signed or unsigned of any width, or a numeric string).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Num(f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

struct NumVisitor;

impl Visitor<'_> for NumVisitor {
    type Value = Num;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
        Ok(Num(v))
    }
    fn visit_f32<E>(self, v: f32) -> Result<Num, E> {
        Ok(Num(f64::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
        Ok(Num(v as f64))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
        Ok(Num(v as f64))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Num, E> {
        Ok(Num(v as f64))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
        v.trim()
            .parse()
            .map(Num)
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// `city`: a plain string (flat schema) or a map with `names.en` (MaxMind).
#[derive(Debug, Default)]
struct CityField<'a>(Option<&'a str>);

impl<'de: 'a, 'a> Deserialize<'de> for CityField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CityVisitor(std::marker::PhantomData))
    }
}

struct CityVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for CityVisitor<'a> {
    type Value = CityField<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a city name or a map with names")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(CityField(Some(v)))
    }
    // A name that cannot be borrowed is dropped rather than allocated; the MaxMind decoder
    // always lends.
    fn visit_str<E>(self, _v: &str) -> Result<Self::Value, E> {
        Ok(CityField(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut name = None;
        while let Some(key) = map.next_key::<Key>()? {
            if key.0 {
                name = map.next_value::<Names<'a>>()?.en;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(CityField(name))
    }
}

/// A map key: true if it is `names`.
struct Key(bool);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Key, E> {
        Ok(Key(v == "names"))
    }
    // The MaxMind decoder hands identifiers over as bytes.
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Key, E> {
        Ok(Key(v == b"names"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(json: &str) -> Option<(Option<Schema>, Option<Fields<'_>>)> {
        let r: Rec<'_> = serde_json::from_str(json).ok()?;
        Some((r.schema(), r.fields()))
    }

    #[test]
    fn maxmind_shape() {
        let j = r#"{"city":{"geoname_id":1,"names":{"de":"London","en":"London"}},
            "country":{"iso_code":"GB","names":{"en":"United Kingdom"}},
            "location":{"latitude":51.5,"longitude":-0.12,"accuracy_radius":20,"time_zone":"Europe/London"},
            "subdivisions":[{"iso_code":"ENG"}]}"#;
        let (s, f) = rec(j).unwrap();
        assert_eq!(s, Some(Schema::MaxMindCity));
        let f = f.unwrap();
        assert_eq!(
            (f.city, f.country, f.accuracy_km),
            (Some("London"), Some("GB"), Some(20.0))
        );
    }

    #[test]
    fn flat_shape() {
        let j = r#"{"city":"Sydney","country_code":"AU","latitude":-33.86,"longitude":151.2,"state1":"NSW"}"#;
        let (s, f) = rec(j).unwrap();
        assert_eq!(s, Some(Schema::Flat));
        let f = f.unwrap();
        assert_eq!(
            (f.city, f.country, f.accuracy_km),
            (Some("Sydney"), Some("AU"), None)
        );
    }

    #[test]
    fn no_coordinates_or_bad_ones_locate_nothing() {
        let (s, f) = rec(r#"{"autonomous_system_number":64500}"#).unwrap();
        assert_eq!((s, f), (None, None));
        let (_, f) = rec(r#"{"latitude":123.0,"longitude":0}"#).unwrap();
        assert_eq!(f, None);
        let (_, f) = rec(r#"{"latitude":"12.5","longitude":"7","city":""}"#).unwrap();
        assert_eq!(f.map(|f| (f.lat, f.city)), Some((12.5, None)));
    }
}
