//! Config problems: each one located as `FILE:LINE:COL: KEY.PATH: reason`.

use std::fmt;
use std::ops::Range;

/// One problem found while loading a config (an error, or a warning that does not stop loading).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the config came from (a file path, or `<embedded default>`).
    pub origin: String,
    /// 1-based line and column, when the problem has a place in the text.
    pub location: Option<(usize, usize)>,
    /// Dotted key path such as `source[1].format` (empty for whole-file problems).
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one load: loading fails if `errors` is not empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// Problems that stop the config from loading.
    pub errors: Vec<ConfigError>,
    /// Problems worth telling the user that do not stop loading (e.g. a missing GeoIP file).
    pub warnings: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for e in &self.errors {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{e}")?;
        }
        for w in &self.warnings {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Collects problems for one text, turning byte spans into line and column.
pub(crate) struct Diag<'t> {
    origin: String,
    text: &'t str,
    errors: Vec<(usize, ConfigError)>,
    warnings: Vec<(usize, ConfigError)>,
}

impl<'t> Diag<'t> {
    /// A collector for `text`, which came from `origin`.
    pub(crate) fn new(origin: &str, text: &'t str) -> Self {
        Diag {
            origin: origin.to_string(),
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records an error at `span` (or without a place).
    pub(crate) fn error(&mut self, span: Option<Range<usize>>, path: &str, message: String) {
        let e = self.make(span.as_ref(), path, message);
        self.errors.push((span.map_or(0, |s| s.start), e));
    }

    /// Records a warning at `span` (or without a place).
    pub(crate) fn warning(&mut self, span: Option<Range<usize>>, path: &str, message: String) {
        let w = self.make(span.as_ref(), path, message);
        self.warnings.push((span.map_or(0, |s| s.start), w));
    }

    /// True once any error was recorded.
    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Everything recorded, each list in text order.
    pub(crate) fn finish(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|(pos, _)| *pos);
        self.warnings.sort_by_key(|(pos, _)| *pos);
        ConfigErrors {
            errors: self.errors.into_iter().map(|(_, e)| e).collect(),
            warnings: self.warnings.into_iter().map(|(_, w)| w).collect(),
        }
    }

    fn make(&self, span: Option<&Range<usize>>, path: &str, message: String) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            location: span.map(|s| line_col(self.text, s.start)),
            path: path.to_string(),
            message,
        }
    }
}

/// 1-based line and column (in characters) of byte offset `pos` in `text`.
pub(crate) fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = text.get(..pos).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_chars() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 9), (2, 3)); // after the two-byte é
        assert_eq!(line_col(t, 999), (3, 1));
    }

    #[test]
    fn display_formats() {
        let e = ConfigError {
            origin: "tw.toml".into(),
            location: Some((12, 1)),
            path: "source[1].format".into(),
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "tw.toml:12:1: source[1].format: bad");
        let all = ConfigErrors {
            errors: vec![e.clone(), e.clone()],
            warnings: vec![ConfigError {
                location: None,
                path: String::new(),
                ..e
            }],
        };
        assert_eq!(
            all.to_string(),
            "tw.toml:12:1: source[1].format: bad\ntw.toml:12:1: source[1].format: bad\nwarning: tw.toml: bad"
        );
    }
}
