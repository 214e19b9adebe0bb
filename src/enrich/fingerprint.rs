//! Keyed token fingerprints: `fp:` + the first 16 hex digits of HMAC-SHA256(key, token).
//!
//! Keyed, so that someone who reads metrics or detections cannot confirm a guessed token
//! offline without the key; truncated to 64 bits, which is plenty to tell tokens apart.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::event::TokenId;

type HmacSha256 = Hmac<Sha256>;

/// Computes fingerprints with one key. Cheap to clone; the HMAC key schedule is precomputed.
#[derive(Clone)]
pub struct Fingerprinter {
    mac: HmacSha256,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter(<key redacted>)")
    }
}

impl Fingerprinter {
    /// A fingerprinter for `key` (any length; HMAC handles long and short keys).
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail; fall back to an empty key
        // rather than panic should that ever change.
        let mac = HmacSha256::new_from_slice(key)
            .unwrap_or_else(|_| HmacSha256::new_from_slice(&[]).expect("empty HMAC key"));
        Fingerprinter { mac }
    }

    /// The fingerprint of a secret token, e.g. `fp:9f2c4e1a0b3d5c7e`.
    pub fn fingerprint(&self, secret: &[u8]) -> TokenId {
        let mut mac = self.mac.clone();
        mac.update(secret);
        let digest = mac.finalize().into_bytes();
        let mut out = [0u8; 19];
        out[..3].copy_from_slice(b"fp:");
        hex_into(&digest[..8], &mut out[3..]);
        TokenId::new(std::str::from_utf8(&out).unwrap_or("fp:invalid"))
    }
}

/// How many fingerprints a [`FingerprintCache`] remembers (a power of two).
const CACHE_SLOTS: usize = 4096;

/// Remembers the fingerprints of recently seen secrets, so a client that sends the same key
/// on every request costs one HMAC, not one a line (two SHA-256 blocks: on a long-line log
/// without SHA instructions, more than parsing the line).
///
/// The raw secret is never kept: a slot is found and checked by a 128-bit hash of it, two
/// SipHash-1-3 with random per-process keys (std's `RandomState`), which nobody outside the
/// process can steer into a collision. Memory is fixed: a direct-mapped table of
/// [`CACHE_SLOTS`] entries, a new secret overwriting whatever shared its slot, so a flood
/// of distinct secrets only misses.
pub struct FingerprintCache {
    keys: [std::collections::hash_map::RandomState; 2],
    slots: Box<[Option<(u128, TokenId)>]>,
}

impl std::fmt::Debug for FingerprintCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintCache")
    }
}

impl Default for FingerprintCache {
    fn default() -> Self {
        FingerprintCache {
            keys: Default::default(),
            slots: vec![None; CACHE_SLOTS].into_boxed_slice(),
        }
    }
}

impl FingerprintCache {
    /// `fp.fingerprint(secret)`, from the cache when the secret was seen recently.
    pub fn fingerprint(&mut self, fp: &Fingerprinter, secret: &[u8]) -> TokenId {
        use std::hash::{BuildHasher, Hasher};
        let half = |k: &std::collections::hash_map::RandomState| {
            let mut h = k.build_hasher();
            h.write(secret);
            h.finish()
        };
        let [a, b] = &self.keys;
        let key = (u128::from(half(a)) << 64) | u128::from(half(b));
        let slot = self.slots.get_mut(key as usize & (CACHE_SLOTS - 1));
        match slot {
            Some(Some((k, id))) if *k == key => id.clone(),
            Some(s) => {
                let id = fp.fingerprint(secret);
                *s = Some((key, id.clone()));
                id
            }
            None => fp.fingerprint(secret),
        }
    }
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_keyed_and_short() {
        let a = Fingerprinter::new(b"key-one");
        let b = Fingerprinter::new(b"key-two");
        let t = b"sk-live-1234567890abcdefghijkl";
        assert_eq!(a.fingerprint(t), a.fingerprint(t));
        assert_ne!(a.fingerprint(t), b.fingerprint(t));
        let fp = a.fingerprint(t);
        assert_eq!(fp.as_str().len(), 19);
        assert!(fp.as_str().starts_with("fp:"));
        assert!(!fp.as_str().contains("sk-live"));
    }

    #[test]
    fn the_cache_gives_the_same_fingerprints() {
        let f = Fingerprinter::new(b"key-one");
        let mut cache = FingerprintCache::default();
        // More secrets than slots, twice over: hits, misses and overwritten slots.
        for round in 0..2 {
            for i in 0..(CACHE_SLOTS * 2) {
                let secret = format!("sk-proj-{i:032}");
                assert_eq!(
                    cache.fingerprint(&f, secret.as_bytes()),
                    f.fingerprint(secret.as_bytes()),
                    "round {round}, {i}"
                );
            }
        }
        let hot = b"Bearer app-0123456789";
        for _ in 0..3 {
            assert_eq!(cache.fingerprint(&f, hot), f.fingerprint(hot));
        }
    }

    #[test]
    fn matches_reference_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        let f = Fingerprinter::new(b"Jefe");
        assert_eq!(
            f.fingerprint(b"what do ya want for nothing?").as_str(),
            "fp:5bdcc146bf60754e"
        );
    }
}

/// Name of the generated key file in the state directory.
pub const KEY_FILE: &str = "fingerprint.key";

/// Reads the fingerprint key from `dir/fingerprint.key`, creating it (32 random bytes, hex,
/// mode 0600) if it does not exist, so fingerprints stay stable across restarts.
pub fn load_or_create_key(dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let path = dir.join(KEY_FILE);
    if let Some(key) = read_key(&path)? {
        return Ok(key);
    }
    std::fs::create_dir_all(dir)?;
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))?;
    let text = hex::encode(raw);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(&path) {
        Ok(mut f) => {
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            // A new key means new fingerprints: `fp:` values in allowlists, dashboards or
            // other instances made with any earlier key no longer match. Say so, once.
            tracing::warn!(
                "generated a new fingerprint key in {}: fingerprints made with any earlier key \
                 (allowlists, other instances) will not match; set [fingerprint] key to share one",
                path.display()
            );
            Ok(text.into_bytes())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(&path)?.ok_or(e),
        Err(e) => Err(e),
    }
}

/// Reads an existing key file (trimmed), `None` if it does not exist; a key shorter than
/// 32 bytes (someone replaced the generated one) is refused, naming the file, never the key.
pub fn read_key(path: &std::path::Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(mut k) => {
            while k.last().is_some_and(|b| b.is_ascii_whitespace()) {
                k.pop();
            }
            let min = crate::config::MIN_FINGERPRINT_KEY_BYTES;
            if k.len() < min {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: fingerprint key is {} bytes; at least {min} are required",
                        path.display(),
                        k.len()
                    ),
                ));
            }
            Ok(Some(k))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn key_file_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = load_or_create_key(dir.path()).unwrap();
        let k2 = load_or_create_key(dir.path()).unwrap();
        assert_eq!(k1, k2);
        assert_eq!(k1.len(), 64);
        std::fs::write(dir.path().join(KEY_FILE), "too-short\n").unwrap();
        let e = load_or_create_key(dir.path()).unwrap_err();
        assert!(e.to_string().contains("9 bytes; at least 32"), "{e}");
        assert!(!e.to_string().contains("too-short"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
