//! Snapshot files of the worker's stages, on the single-process path (`tokenwatch run`'s
//! detector snapshot): a JSON head line (offsets, marks, held events), then the engine's
//! own bytes streamed by [`Engine::write_snapshot_to`] through a
//! [`StateWriter`](crate::durable::StateWriter) — never a copy of the engine's state in
//! memory —, every write reported to `tokenwatch_state_file_errors_total{file="detect_snapshot"}`
//! and so to `/readyz`, a damaged file set aside and counted as `error="corrupt"`.

use std::io::{self, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::detect::Engine;
use crate::durable::{read_state, set_aside, Loaded, StateWriter};
use crate::metrics::{Metrics, StateFile};

/// Writes `head` as one JSON line, then `engine`'s snapshot, to `path`; the outcome is
/// counted (a failure keeps `/readyz` at 503 until the next good write) and returned.
pub(super) fn write(
    path: &Path,
    kind: &str,
    head: &impl Serialize,
    engine: &Engine,
    metrics: &Metrics,
) -> io::Result<u64> {
    let r = StateWriter::create(path, kind).and_then(|mut w| {
        serde_json::to_writer(&mut w, head).map_err(io::Error::other)?;
        w.write_all(b"\n")?;
        engine.write_snapshot_to(&mut w)?;
        w.commit()
    });
    metrics.state_write(StateFile::DetectSnapshot, r.as_ref().map(|_| ()));
    if let Err(e) = &r {
        tracing::error!(%e, path = %path.display(), "worker: writing a snapshot (state since the last good one would be lost in a crash)");
    }
    r
}

/// What [`read`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Read {
    /// No snapshot: start afresh.
    Missing,
    /// Restored into the engine and the caller's state.
    Restored,
    /// Damaged or refused: set aside and counted; the caller must start afresh with a new
    /// engine (the old one may hold part of it).
    Damaged,
}

/// Reads the snapshot at `path`: the head line is parsed as `H` and handed with the
/// engine's bytes to `restore`.
pub(super) fn read<H: DeserializeOwned>(
    path: &Path,
    kind: &str,
    metrics: &Metrics,
    restore: impl FnOnce(H, &[u8]) -> Result<(), String>,
) -> Read {
    let body = match read_state(path, kind, |_| false) {
        Loaded::Found(b) => b,
        Loaded::Missing => return Read::Missing,
        Loaded::Rejected(_) => {
            metrics.state_corrupt(StateFile::DetectSnapshot, 1);
            return Read::Damaged;
        }
    };
    let r = split(&body).and_then(|(head, engine)| {
        let head: H = serde_json::from_slice(head).map_err(|e| format!("head: {e}"))?;
        restore(head, engine)
    });
    match r {
        Ok(()) => Read::Restored,
        Err(e) => {
            set_aside(path, &e);
            metrics.state_corrupt(StateFile::DetectSnapshot, 1);
            Read::Damaged
        }
    }
}

/// The head line and the engine's bytes. The head is compact JSON: a raw newline only
/// ever ends it.
fn split(body: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let nl = memchr::memchr(b'\n', body).ok_or("no head line")?;
    let (head, rest) = body.split_at(nl);
    Ok((head, rest.get(1..).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Head {
        next: i64,
    }

    fn engine(m: &Metrics) -> Engine {
        Engine::for_config(&Config::default(), m)
    }

    #[test]
    fn a_snapshot_round_trips_and_damage_is_set_aside_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let m = Metrics::new();
        assert_eq!(read::<Head>(&path, "k", &m, |_, _| Ok(())), Read::Missing);
        write(&path, "k", &Head { next: 7 }, &engine(&m), &m).unwrap();
        let mut got = None;
        let r = read(&path, "k", &m, |h: Head, bytes| {
            got = Some(h);
            engine(&m).restore(bytes)
        });
        assert_eq!((r, got), (Read::Restored, Some(Head { next: 7 })));
        // The engine refusing its bytes: set aside, counted, gone.
        let r = read(&path, "k", &m, |_: Head, _| Err("refused".into()));
        assert_eq!(r, Read::Damaged);
        assert!(!path.exists());
        let corrupt =
            "tokenwatch_state_file_errors_total{error=\"corrupt\",file=\"detect_snapshot\"} 1";
        assert!(m.render().contains(corrupt), "{}", m.render());
    }

    #[test]
    fn a_failed_write_is_counted_and_keeps_readiness_down_until_a_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new();
        let bad = dir.path().join("missing-dir").join("p.json");
        assert!(write(&bad, "k", &Head { next: 1 }, &engine(&m), &m).is_err());
        let failed =
            "tokenwatch_state_file_errors_total{error=\"write\",file=\"detect_snapshot\"} 1";
        assert!(m.render().contains(failed), "{}", m.render());
        assert!(m.state_unwritable().is_some());
        let good = dir.path().join("p.json");
        write(&good, "k", &Head { next: 1 }, &engine(&m), &m).unwrap();
        assert!(m.state_unwritable().is_none());
    }
}
