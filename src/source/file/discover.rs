//! Finds the files a source's include patterns match, and the directories to watch.

use std::path::{Component, Path, PathBuf};

/// True when a path component holds glob syntax.
fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The regular files that `patterns` (paths or globs) match now, sorted and deduplicated.
/// Unreadable directories and bad patterns yield nothing (config validation reports them).
pub fn expand(patterns: &[String]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in patterns {
        if !is_glob(p) {
            out.push(PathBuf::from(p));
            continue;
        }
        if let Ok(paths) = glob::glob(p) {
            out.extend(paths.flatten());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The directory to watch for one pattern and whether the watch must be recursive: the
/// longest glob-free prefix of its directory part.
pub fn watch_dir(pattern: &str) -> Option<(PathBuf, bool)> {
    let path = Path::new(pattern);
    let parent = path.parent()?;
    let mut dir = PathBuf::new();
    let mut recursive = false;
    for c in parent.components() {
        match c {
            Component::Normal(s) if is_glob(&s.to_string_lossy()) => {
                recursive = true;
                break;
            }
            other => dir.push(other),
        }
    }
    if dir.as_os_str().is_empty() {
        dir.push(".");
    }
    Some((dir, recursive))
}

/// The directory holding a symlink's final target, `None` for a plain file.
pub fn symlink_target_dir(path: &Path) -> Option<PathBuf> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    let target = std::fs::canonicalize(path).ok()?;
    target.parent().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_dirs() {
        let w = |p| watch_dir(p).map(|(d, r)| (d.to_string_lossy().into_owned(), r));
        assert_eq!(w("/var/log/app.log"), Some(("/var/log".into(), false)));
        assert_eq!(w("/var/log/*.log"), Some(("/var/log".into(), false)));
        assert_eq!(w("/var/*/x/a.log"), Some(("/var".into(), true)));
        assert_eq!(w("a.log"), Some((".".into(), false)));
    }

    #[test]
    fn expand_globs_and_paths() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        std::fs::write(d.path().join("a.log"), b"")?;
        std::fs::write(d.path().join("b.log"), b"")?;
        std::fs::write(d.path().join("c.txt"), b"")?;
        let pat = format!("{}/*.log", d.path().display());
        let lit = format!("{}/c.txt", d.path().display());
        assert_eq!(expand(&[pat, lit]).len(), 3);
        Ok(())
    }
}
