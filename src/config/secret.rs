//! Secrets: given only as `env:NAME` or `file:PATH`, resolved through a [`SecretSource`],
//! never printed.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an inline secret is refused (shared by the parser and the docs).
pub const INLINE_SECRET: &str = "secrets must be given as env:NAME or file:PATH, never inline";

/// The shortest fingerprint key accepted (bytes): HMAC-SHA256's own output size, so the key
/// is never the weak link of a fingerprint.
pub const MIN_FINGERPRINT_KEY_BYTES: usize = 32;

/// Where secrets are looked up; tests use [`MapSecrets`] instead of the real environment.
pub trait SecretSource {
    /// The value of environment variable `name`, if set.
    fn env(&self, name: &str) -> Option<String>;
    /// The contents of the file at `path`.
    fn file(&self, path: &Path) -> io::Result<String>;
}

/// The process environment and the filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemSecrets;

impl SecretSource for SystemSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// An in-memory environment and filesystem for tests.
#[derive(Debug, Clone, Default)]
pub struct MapSecrets {
    env: HashMap<String, String>,
    files: HashMap<PathBuf, String>,
}

impl MapSecrets {
    /// An empty source: every lookup fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_string(), value.to_string());
        self
    }

    /// Adds a file with the given contents.
    pub fn with_file(mut self, path: impl Into<PathBuf>, contents: &str) -> Self {
        self.files.insert(path.into(), contents.to_string());
        self
    }
}

impl SecretSource for MapSecrets {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }

    fn file(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }
}

/// Where a secret lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// An environment variable.
    Env(String),
    /// A file (its contents, minus one trailing newline).
    File(PathBuf),
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`; anything else is refused without echoing it.
    pub fn parse(s: &str) -> Result<SecretRef, String> {
        if let Some(name) = s.strip_prefix("env:") {
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            return if valid {
                Ok(SecretRef::Env(name.to_string()))
            } else {
                Err(format!(
                    "invalid environment variable name {name:?} in env:NAME"
                ))
            };
        }
        if let Some(path) = s.strip_prefix("file:") {
            return if path.is_empty() {
                Err("empty path in file:PATH".to_string())
            } else {
                Ok(SecretRef::File(PathBuf::from(path)))
            };
        }
        Err(INLINE_SECRET.to_string())
    }

    /// Looks the value up; the error names the reference, never a value.
    pub fn resolve(&self, source: &dyn SecretSource) -> Result<String, String> {
        let value = match self {
            SecretRef::Env(name) => source
                .env(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?,
            SecretRef::File(path) => {
                let text = source
                    .file(path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
                trim_newline(text)
            }
        };
        if value.is_empty() {
            return Err(format!("secret {self} is empty"));
        }
        Ok(value)
    }
}

fn trim_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

/// A secret: its reference, and its value once [`Secret::resolve`] ran (which `Config::load`
/// does). Debug, Display and serialization show only the reference.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    reference: SecretRef,
    value: Option<String>,
}

impl Secret {
    /// An unresolved secret.
    pub fn new(reference: SecretRef) -> Self {
        Secret {
            reference,
            value: None,
        }
    }

    /// Where the secret lives.
    pub fn reference(&self) -> &SecretRef {
        &self.reference
    }

    /// Looks the value up and keeps it.
    pub fn resolve(&mut self, source: &dyn SecretSource) -> Result<(), String> {
        self.value = Some(self.reference.resolve(source)?);
        Ok(())
    }

    /// Refuses a resolved value shorter than `min` bytes; the reason names the reference and
    /// the length, never the value.
    pub fn check_min_len(&self, min: usize) -> Result<(), String> {
        match self.value.as_deref() {
            Some(v) if v.len() < min => Err(format!(
                "secret {} is {} bytes; at least {min} are required (e.g. `openssl rand -hex 32`)",
                self.reference,
                v.len()
            )),
            _ => Ok(()),
        }
    }

    /// The value, if resolved. Never log it.
    pub fn expose(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.reference)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reference.fmt(f)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.reference)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}

/// Accepts only strings, and never quotes a rejected value back (it may be a real secret).
struct SecretVisitor;

impl SecretVisitor {
    fn not_a_string<E: de::Error>() -> E {
        E::custom(format!("expected a string: {INLINE_SECRET}"))
    }
}

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret reference (env:NAME or file:PATH)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        SecretRef::parse(v).map(Secret::new).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(Self::not_a_string())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(Self::not_a_string())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(Self::not_a_string())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(Self::not_a_string())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(Self::not_a_string())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(Self::not_a_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_and_refuses_inline() {
        assert_eq!(
            SecretRef::parse("env:TW_KEY"),
            Ok(SecretRef::Env("TW_KEY".into()))
        );
        assert_eq!(
            SecretRef::parse("file:/run/secrets/k"),
            Ok(SecretRef::File("/run/secrets/k".into()))
        );
        assert_eq!(SecretRef::parse("hunter2"), Err(INLINE_SECRET.to_string()));
        assert!(SecretRef::parse("env:").is_err());
        assert!(SecretRef::parse("env:A-B").is_err());
        assert!(SecretRef::parse("file:").is_err());
    }

    #[test]
    fn resolves_env_and_trims_one_newline_from_files() {
        let src = MapSecrets::new()
            .with_env("A", "alpha")
            .with_file("/k", "key\n\n")
            .with_file("/crlf", "key\r\n")
            .with_file("/empty", "\n");
        let r = |s: &str| SecretRef::parse(s).unwrap().resolve(&src);
        assert_eq!(r("env:A"), Ok("alpha".into()));
        assert_eq!(r("file:/k"), Ok("key\n".into()));
        assert_eq!(r("file:/crlf"), Ok("key".into()));
        assert_eq!(r("env:B"), Err("environment variable B is not set".into()));
        assert_eq!(r("file:/empty"), Err("secret file:/empty is empty".into()));
        assert!(r("file:/missing").unwrap_err().contains("cannot read"));
    }

    #[test]
    fn short_values_are_refused_without_showing_them() {
        let mut s = Secret::new(SecretRef::Env("K".into()));
        s.resolve(&MapSecrets::new().with_env("K", "short-key"))
            .unwrap();
        let e = s.check_min_len(MIN_FINGERPRINT_KEY_BYTES).unwrap_err();
        assert!(e.contains("env:K is 9 bytes; at least 32"), "{e}");
        assert!(!e.contains("short-key"));
        s.resolve(&MapSecrets::new().with_env("K", &"k".repeat(32)))
            .unwrap();
        assert_eq!(s.check_min_len(MIN_FINGERPRINT_KEY_BYTES), Ok(()));
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let mut s = Secret::new(SecretRef::Env("T".into()));
        s.resolve(&MapSecrets::new().with_env("T", "topsecret"))
            .unwrap();
        assert_eq!(s.expose(), Some("topsecret"));
        assert!(!format!("{s:?} {s}").contains("topsecret"));
        assert_eq!(s.to_string(), "env:T");
    }
}
