//! The spanned TOML document: finding which key a byte offset belongs to, where a key is,
//! and cutting a bad key out so deserialization can go on and find the next problem.

use std::fmt::Write as _;
use std::ops::Range;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// Renders `source[1].format`.
pub(crate) fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

fn contains(span: &Range<usize>, pos: usize) -> bool {
    span.start <= pos && pos < span.end.max(span.start + 1)
}

/// The deepest key path whose key or value covers byte `pos`.
pub(crate) fn path_at(table: &DeTable<'_>, pos: usize) -> Option<Vec<Seg>> {
    // A key itself is the most specific place (an unknown `[[hook]]` is about the key `hook`,
    // not about its first table).
    if let Some((k, _)) = table.iter().find(|(k, _)| contains(&k.span(), pos)) {
        return Some(vec![Seg::Key(k.get_ref().to_string())]);
    }
    for (k, v) in table.iter() {
        if let Some(mut inner) = path_in_value(v.get_ref(), pos) {
            inner.insert(0, Seg::Key(k.get_ref().to_string()));
            return Some(inner);
        }
    }
    table
        .iter()
        .find(|(k, v)| contains(&k.span(), pos) || contains(&v.span(), pos))
        .map(|(k, _)| vec![Seg::Key(k.get_ref().to_string())])
}

fn path_in_value(value: &DeValue<'_>, pos: usize) -> Option<Vec<Seg>> {
    match value {
        DeValue::Table(t) => path_at(t, pos),
        DeValue::Array(a) => path_in_array(a, pos),
        _ => None,
    }
}

fn path_in_array(array: &DeArray<'_>, pos: usize) -> Option<Vec<Seg>> {
    for (i, item) in array.iter().enumerate() {
        if let Some(mut inner) = path_in_value(item.get_ref(), pos) {
            inner.insert(0, Seg::Index(i));
            return Some(inner);
        }
    }
    array
        .iter()
        .position(|item| contains(&item.span(), pos))
        .map(|i| vec![Seg::Index(i)])
}

/// The value at `path`, if present.
pub(crate) fn get<'a, 'i>(
    table: &'a DeTable<'i>,
    path: &[Seg],
) -> Option<&'a Spanned<DeValue<'i>>> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(k) = first else { return None };
    let mut cur = table.get(k.as_str())?;
    for seg in rest {
        cur = match (seg, cur.get_ref()) {
            (Seg::Key(k), DeValue::Table(t)) => t.get(k.as_str())?,
            (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The span of the key at `path` (falling back to its value's span, e.g. for array items).
pub(crate) fn key_span(table: &DeTable<'_>, path: &[Seg]) -> Option<Range<usize>> {
    let (last, parent) = path.split_last()?;
    let key = match last {
        Seg::Key(k) => k,
        Seg::Index(_) => return get(table, path).map(|v| v.span()),
    };
    let holder = if parent.is_empty() {
        table
    } else {
        get(table, parent)?.get_ref().as_table()?
    };
    holder.get_key_value(key.as_str()).map(|(k, _)| k.span())
}

/// Removes what `path` names so the next deserialization pass skips it. An array item that
/// is a table is never removed on its own (the indices of later items would shift and break
/// the paths of later errors): its whole array goes instead.
pub(crate) fn remove(table: &mut DeTable<'_>, path: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    match last {
        Seg::Key(k) => table_at(table, parent).is_some_and(|t| t.remove(k.as_str()).is_some()),
        Seg::Index(i) => {
            let is_table = get(table, path).is_some_and(|v| v.get_ref().is_table());
            if is_table {
                return remove(table, parent);
            }
            array_at(table, parent).is_some_and(|a| remove_item(a, *i))
        }
    }
}

fn value_at<'a, 'i>(table: &'a mut DeTable<'i>, path: &[Seg]) -> Option<&'a mut DeValue<'i>> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(k) = first else { return None };
    let mut cur = table.get_mut(k.as_str())?.get_mut();
    for seg in rest {
        cur = match (seg, cur) {
            (Seg::Key(k), DeValue::Table(t)) => t.get_mut(k.as_str())?.get_mut(),
            (Seg::Index(i), DeValue::Array(a)) => a.get_mut(*i)?.get_mut(),
            _ => return None,
        };
    }
    Some(cur)
}

fn table_at<'a, 'i>(table: &'a mut DeTable<'i>, path: &[Seg]) -> Option<&'a mut DeTable<'i>> {
    if path.is_empty() {
        return Some(table);
    }
    match value_at(table, path)? {
        DeValue::Table(t) => Some(t),
        _ => None,
    }
}

fn array_at<'a, 'i>(table: &'a mut DeTable<'i>, path: &[Seg]) -> Option<&'a mut DeArray<'i>> {
    match value_at(table, path)? {
        DeValue::Array(a) => Some(a),
        _ => None,
    }
}

/// `DeArray` has no `remove`: rebuild it without item `index`.
fn remove_item(array: &mut DeArray<'_>, index: usize) -> bool {
    if index >= array.len() {
        return false;
    }
    let mut kept = DeArray::new();
    for (i, item) in array.iter().enumerate() {
        if i != index {
            kept.push(item.clone());
        }
    }
    *array = kept;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "[server]\nlisten = \"x\"\n\n[[source]]\nname = \"a\"\n\
                       trusted_proxies = [\"10.0.0.0/8\", \"bad\"]\n\n[[source]]\nformat = \"f\"\n";

    fn parse() -> DeTable<'static> {
        DeTable::parse(DOC).unwrap().into_inner()
    }

    #[test]
    fn finds_paths_by_offset() {
        let t = parse();
        let at = |needle: &str| {
            let pos = DOC.find(needle).unwrap();
            path_at(&t, pos).map(|p| render(&p))
        };
        assert_eq!(at("\"x\"").as_deref(), Some("server.listen"));
        assert_eq!(at("listen").as_deref(), Some("server.listen"));
        assert_eq!(
            at("\"bad\"").as_deref(),
            Some("source[0].trusted_proxies[1]")
        );
        assert_eq!(at("\"f\"").as_deref(), Some("source[1].format"));
    }

    #[test]
    fn removes_keys_items_and_whole_arrays_of_tables() {
        let mut t = parse();
        let p = |s: &[Seg]| s.to_vec();
        let k = |s: &str| Seg::Key(s.to_string());
        assert!(remove(
            &mut t,
            &p(&[
                k("source"),
                Seg::Index(0),
                k("trusted_proxies"),
                Seg::Index(1)
            ])
        ));
        let tp = get(&t, &[k("source"), Seg::Index(0), k("trusted_proxies")]).unwrap();
        assert_eq!(tp.get_ref().as_array().map(|a| a.len()), Some(1));
        assert!(remove(&mut t, &[k("server"), k("listen")]));
        assert!(get(&t, &[k("server"), k("listen")]).is_none());
        assert!(remove(&mut t, &[k("source"), Seg::Index(1)]));
        assert!(get(&t, &[k("source")]).is_none());
        assert!(!remove(&mut t, &[k("nope")]));
    }

    #[test]
    fn key_span_points_at_the_key() {
        let t = parse();
        let k = |s: &str| Seg::Key(s.to_string());
        let span = key_span(&t, &[k("source"), Seg::Index(1), k("format")]).unwrap();
        assert_eq!(&DOC[span], "format");
    }
}
