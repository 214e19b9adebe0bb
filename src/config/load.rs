//! Loading: parse to a spanned document, deserialize, and on each error record it, cut the bad
//! key out and deserialize again, so that one run reports every problem with its place.

use serde::Deserialize;
use toml::de::{DeTable, Deserializer};
use toml::Spanned;

use super::doc::{self, Seg};
use super::error::{ConfigErrors, Diag};
use super::secret::SecretSource;
use super::suggest;
use super::validate;
use super::Config;

/// More problems than this in one file are not worth listing (and bound the retry loop).
const MAX_ERRORS: usize = 200;

/// Loads `text` (from `origin`), resolving secrets through `secrets`.
pub(crate) fn from_toml(
    text: &str,
    origin: &str,
    secrets: &dyn SecretSource,
) -> Result<Config, ConfigErrors> {
    let mut diag = Diag::new(origin, text);
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // A recovered document can lose or invent keys; checking it would add noise.
        for e in syntax {
            diag.error(e.span(), "", format!("TOML syntax error: {}", e.message()));
        }
        return Err(diag.finish());
    }
    let mut pruned = Vec::new();
    let Some(mut config) = deserialize(&doc, &mut diag, &mut pruned) else {
        return Err(diag.finish());
    };
    validate::run(&mut config, doc.get_ref(), &pruned, &mut diag, secrets);
    if diag.has_errors() {
        return Err(diag.finish());
    }
    config.warnings = diag.finish().warnings;
    Ok(config)
}

/// Deserializes with serde, recording and pruning one error per pass. Returns the config built
/// from what was left (for further checks), or `None` when an error could not be pinned down.
/// The paths cut out are pushed to `pruned`.
fn deserialize(
    doc: &Spanned<DeTable<'_>>,
    diag: &mut Diag<'_>,
    pruned: &mut Vec<Vec<Seg>>,
) -> Option<Config> {
    let mut work = doc.clone();
    for _ in 0..MAX_ERRORS {
        let err = match Config::deserialize(Deserializer::from(work.clone())) {
            Ok(config) => return Some(config),
            Err(e) => e,
        };
        let Some(span) = err.span() else {
            diag.error(None, "", err.message().to_string());
            return None;
        };
        // Paths come from the original document so later errors keep their true indices.
        let path = doc::path_at(doc.get_ref(), span.start).unwrap_or_default();
        let parent = parent_path(&path);
        let message = suggest::reword(err.message(), &doc::render(&parent));
        diag.error(Some(span.clone()), &doc::render(&path), message);
        let removed = doc::path_at(work.get_ref(), span.start)
            .is_some_and(|p| doc::remove(work.get_mut(), &p));
        if !removed {
            return None;
        }
        pruned.push(path);
    }
    diag.error(
        None,
        "",
        format!("too many errors (stopped after {MAX_ERRORS})"),
    );
    None
}

/// The path of the table holding the last key (array indices dropped from the end).
fn parent_path(path: &[Seg]) -> Vec<Seg> {
    let mut parent = path.to_vec();
    parent.pop();
    while matches!(parent.last(), Some(Seg::Index(_))) {
        parent.pop();
    }
    parent
}
