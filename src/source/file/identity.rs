//! File identity: device + inode, confirmed by a fingerprint of the file's head (STYLE 3).
//!
//! The path is not the identity: a renamed file keeps its offset, and an inode reused by a
//! new file is told apart by its different head.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use sha2::{Digest, Sha256};

/// How many head bytes the fingerprint covers at most.
pub const FP_BYTES: usize = 256;

/// Device and inode of an open or statted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevIno {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl DevIno {
    /// Reads device and inode from metadata.
    pub fn of(meta: &Metadata) -> Self {
        DevIno {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Fingerprint of a head: the first line (with its `\n`) capped at [`FP_BYTES`], hashed.
/// `None` while the head holds neither a newline nor `FP_BYTES` bytes (it may still grow).
pub fn fingerprint_of(head: &[u8]) -> Option<u64> {
    let end = match memchr::memchr(b'\n', head) {
        Some(i) if i < FP_BYTES => i + 1,
        _ if head.len() >= FP_BYTES => FP_BYTES,
        _ => return None,
    };
    let digest = Sha256::digest(head.get(..end)?);
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8)?);
    Some(u64::from_be_bytes(first))
}

/// Reads the head of an open file (position-independent) and fingerprints it.
pub fn fingerprint_file(file: &File) -> io::Result<Option<u64>> {
    let mut head = [0u8; FP_BYTES];
    let mut len = 0;
    while len < FP_BYTES {
        let n = file.read_at(&mut head[len..], len as u64)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    Ok(fingerprint_of(&head[..len]))
}

/// Formats a fingerprint for the checkpoint file (hex keeps it exact for every JSON reader).
pub fn fp_to_hex(fp: u64) -> String {
    format!("{fp:016x}")
}

/// Parses a fingerprint written by [`fp_to_hex`].
pub fn fp_from_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_needs_a_line_or_enough_bytes() {
        assert_eq!(fingerprint_of(b""), None);
        assert_eq!(fingerprint_of(b"partial"), None);
        let a = fingerprint_of(b"first\nsecond");
        assert!(a.is_some());
        assert_eq!(a, fingerprint_of(b"first\nother stuff\n"));
        assert_ne!(a, fingerprint_of(b"firsT\n"));
        let long = vec![b'x'; 300];
        assert_eq!(fingerprint_of(&long), fingerprint_of(&long[..FP_BYTES]));
        assert_eq!(fp_from_hex(&fp_to_hex(12345)), Some(12345));
    }
}
