//! The module graph of `src/`: no import cycles between top-level modules (the entries of
//! `src/lib.rs`), nothing imports `cli` (the top: one file per verb), and `config` (which
//! feeds every stage) imports no stage that reads it.
//!
//! The scanner reads the source text (comments and string literals blanked) for
//! `crate::NAME`, `$crate::NAME`, `use crate::{NAME, …}` and `super::` chains that climb
//! to the crate root, so an edge is reported with the file and line that made it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One import of another top-level module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

impl std::fmt::Display for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} ({}:{})",
            self.from, self.to, self.file, self.line
        )
    }
}

/// Modules nobody may import, and what `config` may not import (it feeds them).
const TOP: &str = "cli";
const CONFIG_MAY_NOT_IMPORT: [&str; 4] = ["detect", "respond", "scale", "server"];

#[test]
fn no_import_cycles_between_top_level_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&root);
    assert!(files.len() > 50, "scanned only {} files", files.len());
    let edges = edges(&files);
    // The scanner must see the graph it claims to check (a known edge).
    assert!(
        edges.iter().any(|e| e.from == "detect" && e.to == "event"),
        "the scanner found no detect -> event edge: it is not reading imports"
    );
    let problems = problems(&edges);
    assert!(
        problems.is_empty(),
        "module graph problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_reports_a_planted_cycle_with_file_and_line() {
    let files = vec![
        (
            "a.rs".to_string(),
            "//! a\nuse crate::b::Thing;\n// crate::c in a comment is no edge\nfn f() { let _ = \"crate::c\"; }\n"
                .to_string(),
        ),
        (
            "b/mod.rs".to_string(),
            "pub mod inner;\npub struct Thing;\n".to_string(),
        ),
        (
            "b/inner.rs".to_string(),
            "fn g() {\n    super::super::c::h();\n}\n".to_string(),
        ),
        (
            "c.rs".to_string(),
            "use crate::{\n    event::X,\n    a::f,\n};\nlet c = '\"'; let s = r#\"crate::b\"#;\n"
                .to_string(),
        ),
        ("event.rs".to_string(), "//! leaf\n".to_string()),
    ];
    let edges = edges(&files);
    let shown: Vec<String> = edges.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "a -> b (src/a.rs:2)",
            "b -> c (src/b/inner.rs:2)",
            "c -> event (src/c.rs:2)",
            "c -> a (src/c.rs:3)",
        ],
    );
    let problems = problems(&edges);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    for want in [
        "cycle a, b, c",
        "a -> b (src/a.rs:2)",
        "b -> c (src/b/inner.rs:2)",
        "c -> a (src/c.rs:3)",
    ] {
        assert!(p.contains(want), "{want:?} missing from {p}");
    }
    assert!(!p.contains("event"), "{p}");
}

#[test]
fn the_scanner_reports_imports_of_cli_and_config_importing_a_stage() {
    let files = vec![
        (
            "config/mod.rs".to_string(),
            "use crate::detect::Severity;\n".to_string(),
        ),
        (
            "server.rs".to_string(),
            "fn x() { crate::cli::run(); }\n".to_string(),
        ),
        ("main.rs".to_string(), "use tokenwatch::cli;\n".to_string()),
    ];
    let problems = problems(&edges(&files));
    assert_eq!(
        problems,
        [
            "config imports a stage it feeds: config -> detect (src/config/mod.rs:1)",
            "cli is the top, nothing imports it: server -> cli (src/server.rs:1)",
        ]
    );
}

/// Every `.rs` file under `root`, as (path relative to `root`, text); `main.rs` (which may
/// import anything) and `lib.rs` (which declares the modules) are left out.
fn read_tree(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                if rel != "main.rs" && rel != "lib.rs" {
                    out.push((rel, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
    }
    out.sort();
    out
}

/// The edges between different top-level modules, in file order.
fn edges(files: &[(String, String)]) -> Vec<Edge> {
    let mut out = Vec::new();
    for (rel, text) in files {
        if rel == "main.rs" || rel == "lib.rs" {
            continue;
        }
        let module_path = module_path(rel);
        let from = module_path[0].clone();
        let code = blank_comments_and_strings(text);
        let mut seen = BTreeSet::new();
        for (to, at) in targets(&code, &module_path) {
            let line = code[..at].matches('\n').count() + 1;
            if to != from && seen.insert((to.clone(), line)) {
                out.push(Edge {
                    from: from.clone(),
                    to,
                    file: format!("src/{rel}"),
                    line,
                });
            }
        }
    }
    out
}

/// `a.rs` → [a]; `a/mod.rs` → [a]; `a/b/c.rs` → [a, b, c].
fn module_path(rel: &str) -> Vec<String> {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    rel.split('/').map(str::to_string).collect()
}

/// The top-level modules `code` names, with the byte offset of each mention.
fn targets(code: &str, module_path: &[String]) -> Vec<(String, usize)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let word_start = i == 0 || !is_ident(b[i - 1]);
        if word_start && code[i..].starts_with("crate::") {
            let at = i;
            i += "crate::".len();
            i = skip_ws(b, i);
            if b.get(i) == Some(&b'{') {
                // `use crate::{a::x, b, c::{y, z}}`: the first segment of each item.
                let mut depth = 0usize;
                let mut expect_item = true;
                while i < b.len() {
                    match b[i] {
                        b'{' => {
                            depth += 1;
                            expect_item = depth == 1;
                        }
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        b',' if depth == 1 => expect_item = true,
                        c if expect_item && is_ident(c) => {
                            let end = ident_end(b, i);
                            out.push((code[i..end].to_string(), i));
                            expect_item = false;
                            i = end;
                            continue;
                        }
                        _ => {}
                    }
                    i += 1;
                }
            } else {
                let end = ident_end(b, i);
                if end > i {
                    out.push((code[i..end].to_string(), at));
                }
                i = end;
            }
            continue;
        }
        if word_start && code[i..].starts_with("super::") {
            // Count the chain; once it climbs past this file's module it names the root.
            let at = i;
            let mut ups = 0;
            while code[i..].starts_with("super::") {
                ups += 1;
                i = skip_ws(b, i + "super::".len());
            }
            if ups >= module_path.len() {
                let end = ident_end(b, i);
                if end > i {
                    out.push((code[i..end].to_string(), at));
                }
                i = end;
            }
            continue;
        }
        i += 1;
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn ident_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ident(b[i]) {
        i += 1;
    }
    i
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// `text` with comments, string and char literals replaced by spaces (newlines kept, so
/// offsets and line numbers stay those of the file).
fn blank_comments_and_strings(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = memchr_from(b, b'\n', i).unwrap_or(b.len());
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            // Block comments nest in Rust.
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if let Some(hashes) = raw_string_start(b, i) {
            // r"…", r#"…"#, br"…": no escapes; ends at a quote and as many hashes.
            let open = i + b[i..].iter().position(|&c| c == b'"').unwrap_or(0) + 1;
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let end = find(b, &close, open).map_or(b.len(), |e| e + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '"'); otherwise a lifetime or label.
            let end = if b.get(i + 1) == Some(&b'\\') {
                memchr_from(b, b'\'', i + 2).map(|e| e + 1)
            } else {
                let ch = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch) == Some(&b'\'')).then_some(i + 2 + ch)
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// If a raw string literal starts at `i`, how many `#` it uses.
fn raw_string_start(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && is_ident(b[i - 1]) {
        return None;
    }
    let mut j = i;
    if b.get(j) == Some(&b'b') {
        j += 1;
    }
    if b.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
    (b.get(j + hashes) == Some(&b'"')).then_some(hashes)
}

fn memchr_from(b: &[u8], c: u8, from: usize) -> Option<usize> {
    b.get(from..)?
        .iter()
        .position(|&x| x == c)
        .map(|p| p + from)
}

fn find(b: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// What is wrong with the graph: each cycle (a strongly connected set of modules, with the
/// edges inside it), imports of `cli`, and `config` importing a stage it feeds.
fn problems(edges: &[Edge]) -> Vec<String> {
    let mut out = Vec::new();
    for e in edges {
        if e.from == "config" && CONFIG_MAY_NOT_IMPORT.contains(&e.to.as_str()) {
            out.push(format!("config imports a stage it feeds: {e}"));
        }
    }
    for e in edges {
        if e.to == TOP {
            out.push(format!("{TOP} is the top, nothing imports it: {e}"));
        }
    }
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        graph.entry(&e.from).or_default().insert(&e.to);
        graph.entry(&e.to).or_default();
    }
    for scc in strongly_connected(&graph) {
        if scc.len() < 2 {
            continue;
        }
        let inside: Vec<String> = edges
            .iter()
            .filter(|e| scc.contains(e.from.as_str()) && scc.contains(e.to.as_str()))
            .map(|e| format!("  {e}"))
            .collect();
        let names: Vec<&str> = scc.iter().copied().collect();
        out.push(format!(
            "cycle {}; its edges:\n{}",
            names.join(", "),
            inside.join("\n")
        ));
    }
    out
}

/// Tarjan's strongly connected components (the graph is small: recursion is fine).
fn strongly_connected<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<BTreeSet<&'a str>> {
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<BTreeSet<&'a str>>,
    }
    fn visit<'a>(v: &'a str, g: &BTreeMap<&'a str, BTreeSet<&'a str>>, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in &g[v] {
            if !s.index.contains_key(w) {
                visit(w, g, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.insert(w);
                if w == v {
                    break;
                }
            }
            s.out.push(scc);
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(v, graph, &mut s);
        }
    }
    s.out
}
