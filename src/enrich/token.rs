//! Deciding whether a token value is a secret (fingerprint it) or a non-secret id (keep it).

use super::fingerprint::FingerprintCache;
use super::Fingerprinter;
use crate::event::TokenId;

pub use crate::config::TokenKind;

/// Prefixes of well-known secret formats (OpenAI/Dify/LobeChat keys, Vault, GitHub, Slack, GitLab).
const SECRET_PREFIXES: &[&str] = &[
    "sk-",
    "app-",
    "dataset-",
    "hvs.",
    "hvb.",
    "s.",
    "ghp_",
    "gho_",
    "ghs_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "glpat-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
];

/// Ids longer than this are treated as key material in `auto` mode.
const MAX_ID_LEN: usize = 23;

/// Turns a raw token from a log into a safe [`TokenId`]; the raw value is not retained.
/// Returns `None` for an absent token (`-`, empty, or a bare `Bearer`).
pub fn identify(raw: &str, kind: TokenKind, fp: &Fingerprinter) -> Option<TokenId> {
    classify(raw, kind, |secret| fp.fingerprint(secret))
}

/// [`identify`], with secrets' fingerprints through `cache` (the pipeline's hot path).
pub fn identify_cached(
    raw: &str,
    kind: TokenKind,
    fp: &Fingerprinter,
    cache: &mut FingerprintCache,
) -> Option<TokenId> {
    classify(raw, kind, |secret| cache.fingerprint(fp, secret))
}

/// The id of `raw`, with `fingerprint` making a secret's.
fn classify(
    raw: &str,
    kind: TokenKind,
    fingerprint: impl FnOnce(&[u8]) -> TokenId,
) -> Option<TokenId> {
    let (had_scheme, value) = strip_scheme(raw.trim_start());
    let value = value.trim_end();
    if value.is_empty() || value == "-" {
        return None;
    }
    let secret = match kind {
        TokenKind::Id => false,
        TokenKind::Secret => true,
        TokenKind::Auto => had_scheme || looks_secret(value),
    };
    Some(if secret {
        fingerprint(value.as_bytes())
    } else {
        TokenId::new(value)
    })
}

/// Strips an `Authorization` scheme (`Bearer `, `Basic `, `Token `), case-insensitively.
fn strip_scheme(raw: &str) -> (bool, &str) {
    // Most values carry no scheme: one byte test skips the three compares.
    if !matches!(raw.as_bytes().first(), Some(b'b' | b'B' | b't' | b'T')) {
        return (false, raw);
    }
    for scheme in ["bearer ", "basic ", "token "] {
        if raw.len() >= scheme.len()
            && raw.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        {
            return (true, raw[scheme.len()..].trim_start());
        }
    }
    (false, raw)
}

/// A secret's shape: a known prefix, a JWT, or long key material.
fn looks_secret(v: &str) -> bool {
    let first = v.as_bytes().first();
    if v.len() > 8
        && SECRET_PREFIXES
            .iter()
            .any(|p| p.as_bytes().first() == first && v.starts_with(p))
    {
        return true;
    }
    if v.starts_with("eyJ") && v.bytes().filter(|&b| b == b'.').count() == 2 {
        return true;
    }
    v.len() > MAX_ID_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> Fingerprinter {
        Fingerprinter::new(b"k")
    }

    #[test]
    fn auto_keeps_ids_and_hashes_secrets() {
        let f = fp();
        let id = identify("ak_3f9c2b11d0aa", TokenKind::Auto, &f).unwrap();
        assert_eq!(id.as_str(), "ak_3f9c2b11d0aa");
        for secret in [
            "Bearer app-abcdefgh",
            "sk-proj-abcdefghijklmnop",
            "hvs.CAESIJ4",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
            "0123456789abcdef0123456789abcdef",
        ] {
            let t = identify(secret, TokenKind::Auto, &f).unwrap();
            assert!(t.as_str().starts_with("fp:"), "{secret} kept raw");
        }
        // The same key with and without the scheme is the same token.
        assert_eq!(
            identify("Bearer sk-abcdefghijkl", TokenKind::Auto, &f),
            identify("sk-abcdefghijkl", TokenKind::Secret, &f)
        );
    }

    #[test]
    fn absent_and_forced_kinds() {
        let f = fp();
        assert_eq!(identify("-", TokenKind::Auto, &f), None);
        assert_eq!(identify("", TokenKind::Secret, &f), None);
        assert_eq!(identify("Bearer ", TokenKind::Auto, &f), None);
        let long = "hmac-sha256:0123456789abcdef0123456789abcdef";
        assert_eq!(identify(long, TokenKind::Id, &f).unwrap().as_str(), long);
        assert!(identify("ak_1", TokenKind::Secret, &f)
            .unwrap()
            .as_str()
            .starts_with("fp:"));
    }
}
