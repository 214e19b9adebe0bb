#!/usr/bin/env python3
"""Writes tiny GeoIP fixture databases for tokenwatch's tests (never a third-party database).

Usage: mmdb_fixture.py OUT_DIR

Writes three files into OUT_DIR:
  maxmind-city.mmdb  MaxMind GeoLite2/GeoIP2 City schema, IPv6 tree holding IPv4 too;
                     doubles for coordinates, u16 accuracy_radius, city.names.en
  flat-ipv4.mmdb     flat ip-location-db schema, IPv4 only, f32 (float) coordinates
  flat-ipv6.mmdb     flat ip-location-db schema, IPv6 only, f32 coordinates
plus asn.mmdb (no coordinates at all) to check that such files are skipped.

Needs PyPI `mmdb-writer` (pip install mmdb-writer).
"""
import os
import sys

from mmdb_writer import MMDBWriter, MmdbF32, MmdbU16
from netaddr import IPSet

# (network, city, country, lat, lon, accuracy_km)
PLACES = [
    ("81.2.69.0/24", "London", "GB", 51.5074, -0.1278, 20),
    ("2a00:23c4:1a00::/48", "London", "GB", 51.5074, -0.1278, 50),
    ("72.229.10.0/24", "New York", "US", 40.7128, -74.0060, 20),
    ("1.120.10.0/24", "Sydney", "AU", -33.8688, 151.2093, 20),
    ("2001:8003:1a00::/48", "Sydney", "AU", -33.8688, 151.2093, 50),
    ("126.10.10.0/24", "Tokyo", "JP", 35.6762, 139.6503, 20),
    # A range the database has only to country precision: no city, coarse radius.
    ("3.208.0.0/16", None, "US", 37.751, -97.822, 1000),
    # Traps: special-use ranges a lookup must never reach (answered None before the lookup).
    ("203.0.113.0/24", "Documentation", "ZZ", 10.0, 10.0, 1),
    ("10.0.0.0/8", "Private", "ZZ", 10.0, 10.0, 1),
    ("fd00::/8", "Private", "ZZ", 10.0, 10.0, 1),
]


def maxmind_record(city, country, lat, lon, acc):
    rec = {
        "continent": {"code": "EU", "names": {"en": "Somewhere"}},
        "country": {"iso_code": country, "names": {"en": country, "de": country}},
        "registered_country": {"iso_code": country},
        "location": {
            "latitude": lat,
            "longitude": lon,
            "accuracy_radius": MmdbU16(acc),
            "time_zone": "UTC",
        },
        "subdivisions": [{"iso_code": "X1", "names": {"en": "Region"}}],
    }
    if city:
        rec["city"] = {"geoname_id": 1000, "names": {"en": city, "fr": city + "-fr"}}
    return rec


def flat_record(city, country, lat, lon):
    rec = {
        "country_code": country,
        "state1": "Region",
        "latitude": MmdbF32(lat),
        "longitude": MmdbF32(lon),
        "timezone": "UTC",
    }
    if city:
        rec["city"] = city
    return rec


def main(out):
    os.makedirs(out, exist_ok=True)
    mm = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City",
                    languages=["en"], description="tokenwatch test fixture")
    v4 = MMDBWriter(ip_version=4, database_type="ip-location-db-city",
                    languages=["en"], description="tokenwatch test fixture")
    v6 = MMDBWriter(ip_version=6, database_type="ip-location-db-city",
                    languages=["en"], description="tokenwatch test fixture")
    for net, city, cc, lat, lon, acc in PLACES:
        mm.insert_network(IPSet([net]), maxmind_record(city, cc, lat, lon, acc))
        flat = v6 if ":" in net else v4
        flat.insert_network(IPSet([net]), flat_record(city, cc, lat, lon))
    mm.to_db_file(os.path.join(out, "maxmind-city.mmdb"))
    v4.to_db_file(os.path.join(out, "flat-ipv4.mmdb"))
    v6.to_db_file(os.path.join(out, "flat-ipv6.mmdb"))
    asn = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN",
                     languages=["en"], description="tokenwatch test fixture")
    asn.insert_network(IPSet(["81.2.69.0/24"]), {
        "autonomous_system_number": 64500,
        "autonomous_system_organization": "Example Net",
    })
    asn.to_db_file(os.path.join(out, "asn.mmdb"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
