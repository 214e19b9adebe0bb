//! GeoIP from `.mmdb` files: MaxMind GeoIP2/GeoLite2 City and the flat ip-location-db schema.
//!
//! Several files may be given (ip-location-db ships IPv4 and IPv6 as two files); a lookup asks
//! each in turn and takes the first answer with coordinates. Each file's schema is detected at
//! open by reading its first records, not from `database_type`, which third-party builders
//! fill freely. Files without coordinates (ASN, Country-only) are skipped with a warning.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use maxminddb::{MaxMindDbError, Reader, WithinOptions};

use super::intern::Interner;
use super::record::{Rec, Schema};
use super::reserved::{is_locatable, lookup_form};
use super::{GeoLookup, Location};

/// Distinct city names shared at most (GeoLite2 City has ~100k; active ones are far fewer).
const MAX_CITY_NAMES: usize = 50_000;
/// Records read at open to detect a file's schema.
const PROBE_RECORDS: usize = 64;
/// Where `geoipupdate` writes, in the order looked at.
const DEFAULT_DIRS: [&str; 2] = ["/var/lib/GeoIP", "/usr/share/GeoIP"];

/// Why GeoIP databases could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// No file was given.
    #[error("no GeoIP database given")]
    NoDatabase,
    /// A file could not be read or is not a MaxMind DB.
    #[error("GeoIP database {}: {source}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        source: MaxMindDbError,
    },
    /// No file has coordinates (e.g. only an ASN or Country database was given).
    #[error(
        "GeoIP database {}: no city coordinates in it (database_type {database_type:?}); \
         give a City database (GeoLite2/GeoIP2 City or ip-location-db city)",
        .path.display()
    )]
    NoLocations {
        /// The (last) file given.
        path: PathBuf,
        /// Its metadata `database_type`.
        database_type: String,
    },
}

/// One opened file.
struct Db {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
    schema: Schema,
    has_v6: bool,
}

/// Locates addresses with one or more `.mmdb` files.
pub struct MmdbGeo {
    dbs: Vec<Db>,
    cities: Interner,
    errors: AtomicU64,
}

/// Opens `paths` as one [`GeoLookup`]; see [`MmdbGeo::open`].
pub fn open(paths: &[PathBuf]) -> Result<Arc<dyn GeoLookup>, GeoError> {
    Ok(Arc::new(MmdbGeo::open(paths)?))
}

/// The City database `geoipupdate` maintains, if installed: `GeoLite2-City.mmdb` in
/// `/var/lib/GeoIP` or `/usr/share/GeoIP` (the first found).
pub fn default_paths() -> Vec<PathBuf> {
    default_paths_in(&DEFAULT_DIRS.map(Path::new))
}

fn default_paths_in(dirs: &[&Path]) -> Vec<PathBuf> {
    dirs.iter()
        .map(|d| d.join("GeoLite2-City.mmdb"))
        .find(|p| p.is_file())
        .into_iter()
        .collect()
}

impl MmdbGeo {
    /// Opens every file (each read into memory); fails on the first unreadable one, or if
    /// none has coordinates.
    pub fn open(paths: &[PathBuf]) -> Result<MmdbGeo, GeoError> {
        let mut dbs = Vec::with_capacity(paths.len());
        let mut last_type = None;
        for path in paths {
            let reader = Reader::open_readfile(path).map_err(|source| GeoError::Open {
                path: path.clone(),
                source,
            })?;
            let Some(schema) = detect(&reader) else {
                let t = reader.metadata().database_type.clone();
                tracing::warn!(path = %path.display(), database_type = %t,
                    "GeoIP database has no city coordinates; ignored");
                last_type = Some((path.clone(), t));
                continue;
            };
            let has_v6 = reader.metadata().ip_version == 6;
            tracing::info!(path = %path.display(), ?schema,
                database_type = %reader.metadata().database_type, "GeoIP database opened");
            dbs.push(Db {
                path: path.clone(),
                reader,
                schema,
                has_v6,
            });
        }
        if dbs.is_empty() {
            return Err(match last_type {
                Some((path, database_type)) => GeoError::NoLocations {
                    path,
                    database_type,
                },
                None => GeoError::NoDatabase,
            });
        }
        Ok(MmdbGeo {
            dbs,
            cities: Interner::new(MAX_CITY_NAMES),
            errors: AtomicU64::new(0),
        })
    }

    /// Each file in lookup order with its detected schema.
    pub fn files(&self) -> impl Iterator<Item = (&Path, Schema)> {
        self.dbs.iter().map(|d| (d.path.as_path(), d.schema))
    }

    /// Lookups that failed on a corrupt record (answered `None`).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn locate_in(&self, db: &Db, ip: IpAddr) -> Option<Location> {
        if ip.is_ipv6() && !db.has_v6 {
            return None;
        }
        let found = db.reader.lookup(ip).and_then(|r| r.decode::<Rec<'_>>());
        let rec = match found {
            Ok(rec) => rec?,
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let f = rec.fields()?;
        Some(Location {
            lat: f.lat as f32,
            lon: f.lon as f32,
            accuracy_km: f
                .accuracy_km
                .map_or(0, |a| a.clamp(0.0, f64::from(u16::MAX)) as u16),
            country: f.country.and_then(country_code),
            city: f.city.map(|c| self.cities.get(c)),
        })
    }
}

impl GeoLookup for MmdbGeo {
    fn locate(&self, ip: IpAddr) -> Option<Location> {
        let ip = lookup_form(ip);
        if !is_locatable(ip) {
            return None;
        }
        self.dbs.iter().find_map(|db| self.locate_in(db, ip))
    }
}

/// The schema of the first records that have coordinates; failing that, a MaxMind City
/// `database_type` (its records are all read permissively anyway).
fn detect(reader: &Reader<Vec<u8>>) -> Option<Schema> {
    let probed = reader
        .networks(WithinOptions::default())
        .ok()
        .and_then(|records| {
            records
                .take(PROBE_RECORDS)
                .filter_map(|r| r.ok()?.decode::<Rec<'_>>().ok()?)
                .find_map(|rec| rec.schema())
        });
    let named_city = || {
        let t = &reader.metadata().database_type;
        (t.contains("City") && !t.contains("ASN")).then_some(Schema::MaxMindCity)
    };
    probed.or_else(named_city)
}

/// A two-letter ISO code, upper-cased; anything else is dropped.
fn country_code(s: &str) -> Option<[u8; 2]> {
    match s.as_bytes() {
        &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let missing = PathBuf::from("/nonexistent/GeoLite2-City.mmdb");
        let e = MmdbGeo::open(std::slice::from_ref(&missing)).err().unwrap();
        assert!(
            e.to_string().contains("/nonexistent/GeoLite2-City.mmdb"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.mmdb");
        std::fs::write(&junk, b"not a database").unwrap();
        let e = MmdbGeo::open(std::slice::from_ref(&junk)).err().unwrap();
        assert!(matches!(e, GeoError::Open { .. }) && e.to_string().contains("junk.mmdb"));
        assert!(matches!(MmdbGeo::open(&[]), Err(GeoError::NoDatabase)));
    }

    #[test]
    fn default_paths_take_the_first_present() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        assert!(default_paths_in(&[a.path(), b.path()]).is_empty());
        std::fs::write(b.path().join("GeoLite2-City.mmdb"), b"x").unwrap();
        assert_eq!(
            default_paths_in(&[a.path(), b.path()]),
            vec![b.path().join("GeoLite2-City.mmdb")]
        );
    }

    #[test]
    fn country_codes_are_two_letters() {
        assert_eq!(country_code("gb"), Some(*b"GB"));
        assert_eq!(country_code("GBR"), None);
        assert_eq!(country_code("1A"), None);
    }
}
