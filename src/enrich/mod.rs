//! Enrichment: turning a raw token into a safe [`TokenId`](crate::event::TokenId) (keyed
//! fingerprint or non-secret id), and (later) GeoIP.

pub mod fingerprint;
pub mod geo;
pub mod token;

pub use fingerprint::{FingerprintCache, Fingerprinter};
pub use token::{identify, identify_cached, TokenKind};
