//! Atomic durable writes for every state file: tmp + fsync + rename + directory fsync.
//!
//! Used for tailer checkpoints, baseline snapshots and the freeze list. A reader sees either
//! the old or the new content, never a torn file: the new bytes go to `<name>.tmp`, are
//! fsynced, renamed over `<name>`, and the directory is fsynced so the rename itself
//! survives a power cut. Callers put a version tag inside their format; this module only
//! moves bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary sibling a write goes through (`checkpoints.json` → `checkpoints.json.tmp`).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically and durably (tmp, fsync, rename, fsync the dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Reads a state file written by [`write_atomic`]: `Ok(None)` when neither it nor its tmp
/// sibling exists. The tmp sibling (left by an interrupted write) is read only when the
/// main file is missing or `is_valid` rejects it, so a half-written tmp never wins over a
/// good main file.
pub fn read_with_recovery(
    path: &Path,
    is_valid: impl Fn(&[u8]) -> bool,
) -> io::Result<Option<Vec<u8>>> {
    let main = read_optional(path)?;
    if let Some(bytes) = &main {
        if is_valid(bytes) {
            return Ok(main);
        }
    }
    match read_optional(&tmp_path(path))? {
        Some(tmp) if is_valid(&tmp) => Ok(Some(tmp)),
        // Neither is valid: hand back the main file (if any) so the caller reports it.
        _ => Ok(main),
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

/// Writes and fsyncs one file (created or truncated).
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
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

    fn ok(b: &[u8]) -> bool {
        b.starts_with(b"{")
    }

    #[test]
    fn write_then_read() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("state.json");
        assert_eq!(read_with_recovery(&p, ok)?, None);
        write_atomic(&p, b"{1}")?;
        write_atomic(&p, b"{2}")?;
        assert_eq!(read_with_recovery(&p, ok)?, Some(b"{2}".to_vec()));
        assert!(!tmp_path(&p).exists());
        Ok(())
    }

    #[test]
    fn tmp_used_only_when_main_missing_or_bad() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("state.json");
        fs::write(tmp_path(&p), b"{tmp}")?;
        assert_eq!(read_with_recovery(&p, ok)?, Some(b"{tmp}".to_vec()));
        fs::write(&p, b"{main}")?;
        assert_eq!(read_with_recovery(&p, ok)?, Some(b"{main}".to_vec()));
        fs::write(&p, b"garbage")?;
        assert_eq!(read_with_recovery(&p, ok)?, Some(b"{tmp}".to_vec()));
        fs::write(tmp_path(&p), b"torn")?;
        assert_eq!(read_with_recovery(&p, ok)?, Some(b"garbage".to_vec()));
        Ok(())
    }
}
