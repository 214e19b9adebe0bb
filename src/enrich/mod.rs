//! Enrichment: keyed token fingerprints, GeoIP.
