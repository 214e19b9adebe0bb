//! Source names on the wire → this worker's source indices (the edge's own indices are
//! not ours).

use super::HashMap;
use crate::config::Config;

/// Source names → this worker's source indices (the edge's own indices are not ours).
pub(super) struct NameTable {
    names: HashMap<Box<str>, u16>,
    next: u16,
}

impl NameTable {
    /// The configured sources, in config order.
    pub(super) fn new(cfg: &Config) -> NameTable {
        let names: HashMap<Box<str>, u16> = cfg
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str().into(), u16::try_from(i).unwrap_or(u16::MAX)))
            .collect();
        let next = u16::try_from(cfg.sources.len()).unwrap_or(u16::MAX);
        NameTable { names, next }
    }

    /// The index of `name`; a name the config lacks gets the next free index (the engine
    /// knows no name for it).
    pub(super) fn index(&mut self, name: &str) -> u16 {
        if let Some(i) = self.names.get(name) {
            return *i;
        }
        let i = self.next;
        self.next = self.next.saturating_add(1);
        self.names.insert(name.into(), i);
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_source_names_get_indices_past_the_configured_ones() {
        let mut names = NameTable::new(&Config::default());
        let n = Config::default().sources.len() as u16;
        assert_eq!(names.index("elsewhere"), n);
        assert_eq!(names.index("other"), n + 1);
        assert_eq!(names.index("elsewhere"), n);
    }
}
