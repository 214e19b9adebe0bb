//! Serde adapters for config values whose runtime types live elsewhere in the crate
//! (`Preset`, `ClientIp`, `Cidr`, `StartAt`, `WatchMode`) or need checking as they are read
//! (socket addresses, time zones, regexes). Each error names the bad value and what was expected.

use std::fmt;
use std::net::SocketAddr;

use jiff::tz::{Offset, TimeZone};
use serde::de::{Error as _, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::suggest::unknown_choice;
use crate::net::Cidr;
use crate::parse::{ClientIp, Preset};
use crate::source::file::{StartAt, WatchMode};

/// Reads `HOST:PORT` with an IP host.
pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        D::Error::custom(format!(
            "not a socket address: {s:?} (expected IP:PORT such as 127.0.0.1:9847 or [::1]:9847)"
        ))
    })
}

/// `format`: a preset name.
pub(crate) mod preset {
    use super::*;

    /// Reads a preset name.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Preset, D::Error> {
        let s = String::deserialize(d)?;
        Preset::from_name(&s).ok_or_else(|| {
            let names = Preset::ALL.map(|(_, n)| n);
            D::Error::custom(unknown_choice("format", &s, &names))
        })
    }

    /// Writes a preset name.
    pub(crate) fn serialize<S: Serializer>(p: &Preset, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }
}

/// `client_ip`: `peer` (alias `remote_addr`) | `x_forwarded_for` | `field:<name>`.
pub(crate) mod client_ip {
    use super::*;

    /// Reads a client address choice.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ClientIp, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "peer" | "remote_addr" => Ok(ClientIp::Peer),
            "x_forwarded_for" => Ok(ClientIp::ForwardedFor),
            _ => match s.strip_prefix("field:") {
                Some(name) if !name.trim().is_empty() => Ok(ClientIp::Field(name.to_string())),
                Some(_) => Err(D::Error::custom("empty field name in field:<name>")),
                None => Err(D::Error::custom(unknown_choice(
                    "client_ip",
                    &s,
                    &["peer", "x_forwarded_for", "field:<name>"],
                ))),
            },
        }
    }

    /// Writes a client address choice.
    pub(crate) fn serialize<S: Serializer>(c: &ClientIp, s: S) -> Result<S::Ok, S::Error> {
        match c {
            ClientIp::Peer => s.serialize_str("peer"),
            ClientIp::ForwardedFor => s.serialize_str("x_forwarded_for"),
            ClientIp::Field(name) => s.collect_str(&format_args!("field:{name}")),
        }
    }
}

/// One CIDR, read from a string so that a bad item is reported at its own place (the check
/// runs inside the item's visitor, where toml attaches the item's span).
struct CidrItem(Cidr);

impl<'de> Deserialize<'de> for CidrItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CidrVisitor)
    }
}

struct CidrVisitor;

impl Visitor<'_> for CidrVisitor {
    type Value = CidrItem;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CIDR such as 10.0.0.0/8")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<CidrItem, E> {
        s.parse().map(CidrItem).map_err(|_| {
            E::custom(format!(
                "invalid CIDR {s:?} (expected ADDRESS or ADDRESS/PREFIX such as 10.0.0.0/8)"
            ))
        })
    }
}

/// `trusted_proxies`: a list of CIDRs.
pub(crate) mod cidrs {
    use super::*;

    /// Reads a list of CIDRs.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
        let items = Vec::<CidrItem>::deserialize(d)?;
        Ok(items.into_iter().map(|c| c.0).collect())
    }

    /// Writes a list of CIDRs as strings.
    pub(crate) fn serialize<S: Serializer>(c: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(c.iter().map(|c| c.to_string()))
    }
}

/// `start_at`: `end` | `beginning`.
pub(crate) mod start_at {
    use super::*;

    const NAMES: [(StartAt, &str); 2] = [(StartAt::End, "end"), (StartAt::Beginning, "beginning")];

    /// Reads a start position.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StartAt, D::Error> {
        choice(d, "start_at", &NAMES)
    }

    /// Writes a start position.
    pub(crate) fn serialize<S: Serializer>(v: &StartAt, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name_of(*v, &NAMES))
    }
}

/// `watch`: `notify` | `poll`.
pub(crate) mod watch {
    use super::*;

    const NAMES: [(WatchMode, &str); 2] =
        [(WatchMode::Notify, "notify"), (WatchMode::Poll, "poll")];

    /// Reads a watch mode.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<WatchMode, D::Error> {
        choice(d, "watch mode", &NAMES)
    }

    /// Writes a watch mode.
    pub(crate) fn serialize<S: Serializer>(v: &WatchMode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name_of(*v, &NAMES))
    }
}

/// `wrapper`: `auto` | `none` | `docker` | `cri`.
pub(crate) mod wrapper {
    use super::*;
    use crate::source::wrapper::WrapperChoice;

    /// Reads a wrapper choice.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<WrapperChoice, D::Error> {
        choice(d, "wrapper", &WrapperChoice::ALL)
    }

    /// Writes a wrapper choice.
    pub(crate) fn serialize<S: Serializer>(v: &WrapperChoice, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name_of(*v, &WrapperChoice::ALL))
    }
}

/// `dialect` (json): `auto` | `generic` | `caddy` | `traefik` | `envoy` | `kong`.
pub(crate) mod dialect {
    use super::*;
    use crate::parse::Dialect;

    /// Reads a dialect.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Dialect>, D::Error> {
        choice(d, "dialect", &Dialect::ALL).map(Some)
    }

    /// Writes a dialect.
    pub(crate) fn serialize<S: Serializer>(v: &Option<Dialect>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.map_or("auto", |v| name_of(v, &Dialect::ALL)))
    }
}

fn choice<'de, D: Deserializer<'de>, T: Copy>(
    d: D,
    what: &str,
    names: &[(T, &str)],
) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    names
        .iter()
        .find(|(_, n)| *n == s)
        .map(|(v, _)| *v)
        .ok_or_else(|| {
            let list: Vec<&str> = names.iter().map(|(_, n)| *n).collect();
            D::Error::custom(unknown_choice(what, &s, &list))
        })
}

fn name_of<T: PartialEq>(v: T, names: &[(T, &'static str)]) -> &'static str {
    names.iter().find(|(x, _)| *x == v).map_or("", |(_, n)| *n)
}

/// `pattern`: must compile (checked with the same `regex` crate the parser uses).
pub(crate) mod pattern {
    use super::*;

    /// Reads and compiles a regex, keeping its text.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let s = String::deserialize(d)?;
        match regex::Regex::new(&s) {
            Ok(_) => Ok(Some(s)),
            Err(e) => Err(D::Error::custom(format!(
                "invalid regex: {}",
                regex_reason(&e)
            ))),
        }
    }
}

/// The one-line reason from a regex error (its Display draws a multi-line caret diagram).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || text.lines().last().unwrap_or("").to_string(),
            str::to_string,
        )
}

/// A time zone together with the name it was configured by.
#[derive(Clone, PartialEq)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// Resolves `UTC`, an IANA name such as `Europe/Berlin` (from the system's zoneinfo), or a
    /// fixed offset such as `+02:00`.
    pub fn resolve(name: &str) -> Result<Zone, String> {
        let tz = if name.eq_ignore_ascii_case("utc") || name == "Z" {
            TimeZone::UTC
        } else if name.starts_with(['+', '-']) {
            TimeZone::fixed(parse_offset(name).ok_or_else(|| bad_zone(name))?)
        } else {
            TimeZone::get(name).map_err(|_| bad_zone(name))?
        };
        Ok(Zone {
            name: name.to_string(),
            tz,
        })
    }

    /// The name as configured.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resolved zone.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }
}

impl Default for Zone {
    fn default() -> Self {
        Zone {
            name: "UTC".to_string(),
            tz: TimeZone::UTC,
        }
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name)
    }
}

fn bad_zone(name: &str) -> String {
    format!(
        "unknown timezone {name:?} (expected UTC, an IANA name such as Europe/Berlin, \
         or an offset such as +02:00)"
    )
}

/// `+HH:MM`, `+HHMM` or `+HH` (and `-`).
fn parse_offset(s: &str) -> Option<Offset> {
    let (sign, rest) = match s.split_at_checked(1)? {
        ("+", r) => (1, r),
        ("-", r) => (-1, r),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    let colon_ok = !rest.contains(':') || (rest.len() == 5 && rest.find(':') == Some(2));
    if !colon_ok || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits.get(..2)?.parse::<i32>().ok()?,
            digits.get(2..)?.parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    if h > 25 || m > 59 {
        return None;
    }
    Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Zone::resolve(&s).map_err(D::Error::custom)
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_resolve_by_name_and_offset() {
        assert_eq!(Zone::resolve("UTC").unwrap().time_zone(), &TimeZone::UTC);
        let berlin = Zone::resolve("Europe/Berlin").unwrap();
        assert_eq!(berlin.time_zone().iana_name(), Some("Europe/Berlin"));
        let plus2 = Zone::resolve("+02:00").unwrap();
        assert_eq!(
            plus2.time_zone(),
            &TimeZone::fixed(Offset::from_seconds(7200).unwrap())
        );
        let minus = Zone::resolve("-0530").unwrap();
        assert_eq!(
            minus.time_zone(),
            &TimeZone::fixed(Offset::from_seconds(-(5 * 3600 + 30 * 60)).unwrap())
        );
        for bad in ["Mars/Olympus", "+2:00", "+99:00", "+02:0x", "", "-"] {
            assert!(Zone::resolve(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regex_errors_fit_on_one_line() {
        // Built at run time so the lint that checks literal regexes leaves it alone.
        let bad = ["(?P<ts>", "[0-9+"].concat();
        let e = regex::Regex::new(&bad).unwrap_err();
        let r = regex_reason(&e);
        assert!(!r.contains('\n'));
        assert!(r.contains("unclosed character class"), "{r}");
    }
}
