//! Durable, checksummed state files: atomic writes (tmp + fsync + rename + directory fsync)
//! and a one-line header that lets a reader tell a good file from a damaged one.
//!
//! Used for tailer checkpoints, the detector snapshot and the frozen set. A writer never
//! leaves a torn file: the new bytes go to `<name>.tmp`, are fsynced, renamed over `<name>`,
//! and the directory is fsynced so the rename itself survives a power cut. What the disk
//! may still do (a flipped bit, a file truncated by a filesystem repair, an operator's
//! editor) the header catches:
//!
//! ```text
//! tokenwatch-state 1 <kind> <body-length> <sha256-hex of body>\n
//! <body>
//! ```
//!
//! [`read_state`] checks the header, the kind, the length and the hash. A file that fails
//! is never trusted: it is renamed aside to `<name>.corrupt-<unix-secs>`, reported at ERROR
//! with the path and the reason, and the caller starts without it (fresh state) — never a
//! crash loop. Files written before the header existed (no `tokenwatch-state` prefix) are
//! still accepted when the caller's parser accepts them, and gain a header on the next
//! write. Append-only files (the response journal) checksum each line instead.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// First word of every framed state file.
pub const MAGIC: &str = "tokenwatch-state";
/// Version of the header format.
const FORMAT: u32 = 1;
/// A header is one short line; anything longer is not a header.
const MAX_HEADER: usize = 256;

/// What [`read_state`] found.
#[derive(Debug)]
pub enum Loaded {
    /// Neither the file nor a complete tmp sibling exists.
    Missing,
    /// The body: verified against its header, or an older headerless file the caller's
    /// parser accepted.
    Found(Vec<u8>),
    /// Damaged or unreadable: set aside (when it could be moved) and reported.
    Rejected(Rejected),
}

/// A state file that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct Rejected {
    /// The file as it was named.
    pub path: PathBuf,
    /// What was wrong (never file content).
    pub reason: String,
    /// Where it was moved (`None`: unreadable, or the directory refused the rename).
    pub moved_to: Option<PathBuf>,
}

/// The temporary sibling a write goes through (`checkpoints.json` → `checkpoints.json.tmp`).
pub fn tmp_path(path: &Path) -> PathBuf {
    sibling(path, ".tmp")
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically and durably (tmp, fsync, rename, fsync the dir).
/// For files without a header: the `--addr-file`, and the response journal's compaction
/// (its lines carry their own checksums). Whole-file state goes through [`write_state`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_parts(path, &[bytes])
}

/// Writes a state file of `kind`: header and body, atomically and durably.
pub fn write_state(path: &Path, kind: &str, body: &[u8]) -> io::Result<()> {
    write_state_parts(path, kind, &[body])
}

/// [`write_state`] for a body given in pieces (written back to back), so a large body need
/// not be copied into one buffer first.
pub fn write_state_parts(path: &Path, kind: &str, body: &[&[u8]]) -> io::Result<()> {
    let mut sum = Sha256::new();
    let mut len = 0;
    for p in body {
        sum.update(p);
        len += p.len();
    }
    let sum = hex::encode(sum.finalize());
    let header = format!("{MAGIC} {FORMAT} {kind} {len} {sum}\n");
    let mut parts = Vec::with_capacity(body.len() + 1);
    parts.push(header.as_bytes());
    parts.extend_from_slice(body);
    write_parts(path, &parts)
}

/// A state file written as a stream: the body goes straight to the tmp file through a
/// buffer while its length and hash are taken, and [`commit`](StateWriter::commit) puts the
/// header in front (a fixed-width placeholder is overwritten) before the rename. A body of
/// any size then costs a buffer's worth of memory, not a copy of itself.
pub struct StateWriter {
    /// `None` once committed; an uncommitted writer removes its tmp file when dropped.
    out: Option<io::BufWriter<File>>,
    sum: Sha256,
    len: u64,
    kind: String,
    path: PathBuf,
}

impl StateWriter {
    /// Starts writing `path`'s tmp sibling.
    pub fn create(path: &Path, kind: &str) -> io::Result<StateWriter> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp_path(path))?;
        let mut out = io::BufWriter::with_capacity(1 << 16, f);
        out.write_all(fixed_header(kind, 0, &[0; 32]).as_bytes())?;
        Ok(StateWriter {
            out: Some(out),
            sum: Sha256::new(),
            len: 0,
            kind: kind.to_string(),
            path: path.to_path_buf(),
        })
    }

    /// Writes the real header, fsyncs, renames over the path, fsyncs the directory; returns
    /// the body's length.
    pub fn commit(mut self) -> io::Result<u64> {
        use std::io::{Seek, SeekFrom};
        let out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("already committed"))?;
        let sum: [u8; 32] = std::mem::take(&mut self.sum).finalize().into();
        let mut f = out.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(fixed_header(&self.kind, self.len, &sum).as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(tmp_path(&self.path), &self.path)?;
        sync_dir(&self.path)?;
        Ok(self.len)
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(tmp_path(&self.path));
        }
    }
}

impl Write for StateWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("already committed"))?;
        let n = out.write(buf)?;
        self.sum.update(buf.get(..n).unwrap_or_default());
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

/// A header whose length does not depend on the body (length zero-padded to 20 digits), so
/// a placeholder can be written first and replaced in place.
fn fixed_header(kind: &str, len: u64, sum: &[u8; 32]) -> String {
    format!("{MAGIC} {FORMAT} {kind} {len:020} {}\n", hex::encode(sum))
}

/// The header line (with its `\n`) for `body`.
fn header(kind: &str, body: &[u8]) -> String {
    let sum = hex::encode(Sha256::digest(body));
    format!("{MAGIC} {FORMAT} {kind} {} {sum}\n", body.len())
}

/// Header and body as one buffer (what [`write_state`] puts on disk).
pub fn frame(kind: &str, body: &[u8]) -> Vec<u8> {
    let mut out = header(kind, body).into_bytes();
    out.extend_from_slice(body);
    out
}

/// Checks a framed file: `Ok(Some(body))` when header, kind, length and hash agree,
/// `Ok(None)` when there is no header at all (an older file), `Err(reason)` otherwise.
pub fn unframe<'a>(kind: &str, bytes: &'a [u8]) -> Result<Option<&'a [u8]>, String> {
    if !bytes.starts_with(MAGIC.as_bytes()) {
        return Ok(None);
    }
    let head = bytes.get(..bytes.len().min(MAX_HEADER)).unwrap_or(bytes);
    let nl = memchr::memchr(b'\n', head).ok_or("header line is incomplete (truncated)")?;
    let (line, rest) = bytes.split_at(nl);
    let body = rest.get(1..).unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| "header is not UTF-8".to_string())?;
    let fields: Vec<&str> = line.split(' ').collect();
    let [_, format, found_kind, len, sum] = fields.as_slice() else {
        return Err("malformed header".into());
    };
    if *format != FORMAT.to_string() {
        return Err(format!("unsupported state format {format:?}"));
    }
    if *found_kind != kind {
        return Err(format!("holds {found_kind:?} state, expected {kind:?}"));
    }
    let len: usize = len
        .parse()
        .map_err(|_| "malformed length in header".to_string())?;
    if body.len() != len {
        return Err(format!(
            "body is {} bytes, header says {len} (truncated or extended)",
            body.len()
        ));
    }
    if hex::encode(Sha256::digest(body)) != *sum {
        return Err("checksum mismatch (content changed after it was written)".into());
    }
    Ok(Some(body))
}

/// Reads the state file at `path` written by [`write_state`] with the same `kind`.
///
/// A headerless file is accepted when `legacy_ok` accepts it (files from before the
/// header). A damaged file is moved aside and reported ([`set_aside`]). The tmp sibling (an
/// interrupted write, complete only if its own header checks out) is used only when the
/// main file is missing or damaged, so a half-written tmp never wins over a good file.
pub fn read_state(path: &Path, kind: &str, legacy_ok: impl Fn(&[u8]) -> bool) -> Loaded {
    let check = |bytes: &[u8]| -> Result<Vec<u8>, String> {
        match unframe(kind, bytes)? {
            Some(body) => Ok(body.to_vec()),
            None if bytes.is_empty() => Err("empty file".into()),
            None if legacy_ok(bytes) => Ok(bytes.to_vec()),
            None => Err("no tokenwatch-state header and not a readable older format".into()),
        }
    };
    let main = match read_optional(path) {
        Ok(m) => m,
        Err(e) => return Loaded::Rejected(unreadable(path, &e)),
    };
    let damage = match main.as_deref().map(check) {
        Some(Ok(body)) => return Loaded::Found(body),
        Some(Err(reason)) => Some(reason),
        None => None,
    };
    let tmp = tmp_path(path);
    if let Ok(Some(Ok(body))) = read_optional(&tmp).map(|t| t.as_deref().map(check)) {
        if let Some(reason) = &damage {
            set_aside(path, reason);
        }
        tracing::warn!(path = %tmp.display(), "using the state file of an interrupted write");
        return Loaded::Found(body);
    }
    match damage {
        Some(reason) => Loaded::Rejected(set_aside(path, &reason)),
        None => Loaded::Missing,
    }
}

/// Moves a damaged state file to `<name>.corrupt-<unix-secs>` (kept for a human to look at)
/// and reports it at ERROR. If the directory refuses the rename (read-only), the file stays
/// and is ignored again at the next start: reported each time, never trusted.
pub fn set_aside(path: &Path, reason: &str) -> Rejected {
    let moved_to = move_aside(path);
    let shown = moved_to.as_deref().map(|p| p.display().to_string());
    tracing::error!(
        path = %path.display(),
        reason,
        moved_to = shown.as_deref().unwrap_or("(not moved)"),
        "damaged state file set aside; starting without it"
    );
    Rejected {
        path: path.to_path_buf(),
        reason: reason.to_string(),
        moved_to,
    }
}

/// Renames `path` to a fresh `<name>.corrupt-<unix-secs>[-n]`; `None` (logged) when the
/// directory refuses.
pub fn move_aside(path: &Path) -> Option<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut to = sibling(path, &format!(".corrupt-{secs}"));
    for n in 1..100 {
        if !to.exists() {
            break;
        }
        to = sibling(path, &format!(".corrupt-{secs}-{n}"));
    }
    match fs::rename(path, &to) {
        Ok(()) => Some(to),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot move the damaged state file aside; ignoring it in place");
            None
        }
    }
}

fn unreadable(path: &Path, e: &io::Error) -> Rejected {
    tracing::error!(path = %path.display(), error = %e, "cannot read the state file; starting without it");
    Rejected {
        path: path.to_path_buf(),
        reason: format!("cannot read: {e}"),
        moved_to: None,
    }
}

/// Reads a whole file, `Ok(None)` when it does not exist.
fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `parts` to the tmp sibling, fsyncs, renames over `path`, fsyncs the directory.
fn write_parts(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    for p in parts {
        f.write_all(p)?;
    }
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Fsyncs the directory holding `path`, making a rename in it durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &[u8]) -> bool {
        b.starts_with(b"{")
    }

    fn found(l: Loaded) -> Option<Vec<u8>> {
        match l {
            Loaded::Found(b) => Some(b),
            _ => None,
        }
    }

    fn corrupt_files(dir: &Path) -> usize {
        fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn streamed_state_reads_back_and_an_abandoned_stream_leaves_nothing() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("snap.json");
        let mut w = StateWriter::create(&p, "snap")?;
        for _ in 0..10_000 {
            w.write_all(b"{\"k\":1}")?;
        }
        assert_eq!(w.commit()?, 70_000);
        let body = found(read_state(&p, "snap", json)).expect("found");
        assert_eq!(body.len(), 70_000);
        // Dropped before commit: the tmp file goes, the committed file stays as it was.
        let mut w = StateWriter::create(&p, "snap")?;
        w.write_all(b"half")?;
        drop(w);
        assert!(!tmp_path(&p).exists());
        assert_eq!(
            found(read_state(&p, "snap", json)).map(|b| b.len()),
            Some(70_000)
        );
        Ok(())
    }

    #[test]
    fn write_then_read() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("state.json");
        assert!(matches!(read_state(&p, "k", json), Loaded::Missing));
        write_state(&p, "k", b"{1}")?;
        write_state(&p, "k", b"{2}")?;
        assert!(fs::read(&p)?.starts_with(b"tokenwatch-state 1 k 3 "));
        assert_eq!(found(read_state(&p, "k", json)), Some(b"{2}".to_vec()));
        assert!(!tmp_path(&p).exists());
        Ok(())
    }

    #[test]
    fn legacy_file_loads() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("state.json");
        fs::write(&p, b"{old}")?;
        assert_eq!(found(read_state(&p, "k", json)), Some(b"{old}".to_vec()));
        Ok(())
    }

    #[test]
    fn every_kind_of_damage_is_set_aside() -> io::Result<()> {
        let good = frame("k", b"{\"a\":1}");
        let mut flipped = good.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 0x01;
        }
        let mut magic_flipped = good.clone();
        magic_flipped[0] ^= 0x20;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated body", good[..good.len() - 2].to_vec()),
            ("truncated header", good[..20].to_vec()),
            ("flipped body byte", flipped),
            ("flipped magic", magic_flipped),
            ("wrong kind", frame("other", b"{}")),
            ("empty", Vec::new()),
            ("garbage", b"\x00\x01garbage".to_vec()),
        ];
        for (what, bytes) in cases {
            let dir = tempfile::tempdir()?;
            let p = dir.path().join("state.json");
            fs::write(&p, &bytes)?;
            let Loaded::Rejected(r) = read_state(&p, "k", json) else {
                panic!("{what}: not rejected");
            };
            assert!(!p.exists(), "{what}: moved aside");
            let moved = r.moved_to.unwrap_or_default();
            assert_eq!(fs::read(&moved)?, bytes, "{what}: kept intact");
            assert_eq!(corrupt_files(dir.path()), 1, "{what}");
            // The next start finds nothing and starts fresh.
            assert!(matches!(read_state(&p, "k", json), Loaded::Missing));
        }
        Ok(())
    }

    #[test]
    fn tmp_used_only_when_main_missing_or_damaged() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("state.json");
        fs::write(tmp_path(&p), frame("k", b"{tmp}"))?;
        assert_eq!(found(read_state(&p, "k", json)), Some(b"{tmp}".to_vec()));
        write_state(&p, "k", b"{main}")?;
        fs::write(tmp_path(&p), frame("k", b"{tmp}"))?;
        assert_eq!(found(read_state(&p, "k", json)), Some(b"{main}".to_vec()));
        fs::write(&p, b"garbage")?;
        assert_eq!(found(read_state(&p, "k", json)), Some(b"{tmp}".to_vec()));
        assert_eq!(
            corrupt_files(dir.path()),
            1,
            "the damaged main file is kept aside"
        );
        // A torn tmp is never used.
        fs::write(&p, b"garbage")?;
        let torn = frame("k", b"{tmp}");
        fs::write(tmp_path(&p), &torn[..torn.len() - 1])?;
        assert!(matches!(read_state(&p, "k", json), Loaded::Rejected(_)));
        Ok(())
    }
}
