//! The fast path of the JSON presets (`json`, `vault`): a hand scanner for the lines access
//! and audit logs actually contain, in front of the serde_json walk.
//!
//! serde_json's visitor walk costs about 40 instructions a byte on an access line (every
//! key and ignored string goes through its string machinery); most of a line is values no
//! preset reads. This scanner checks the whole line once (valid UTF-8, no raw control
//! bytes), then jumps from quote to quote with the same search as the nginx scanner, so an
//! ignored string costs a search, not a decode.
//!
//! It answers only when it is sure to agree with serde_json: anything outside the common
//! subset (a `\u` escape, an escaped key, a float or negative number at a mapped path, raw
//! control bytes or tabs, nesting deeper than [`MAX_DEPTH`], any syntax error) returns
//! `None` and serde_json decides, errors and their messages included.

use std::borrow::Cow;

use super::json::{Node, Val};
use super::nginx::find_quote_or_backslash;

/// Deeper lines go to serde_json (whose own limit is 128).
const MAX_DEPTH: u32 = 32;

/// Fills the mapped values of `line` into `out`, or returns `None` to let serde_json decide
/// (`out` may then hold some values: the caller clears it).
pub(super) fn extract<'l, const N: usize>(
    root: &Node,
    line: &'l [u8],
    out: &mut [Val<'l>; N],
) -> Option<()> {
    // A branch-free pass the compiler vectorises; JSON whitespace is then only spaces.
    if line.iter().fold(false, |acc, &c| acc | (c < 0x20)) {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    let mut s = Scan {
        b: line,
        text,
        i: 0,
        out,
    };
    s.spaces();
    if s.peek()? != b'{' {
        return None;
    }
    s.object(Some(root), 0)?;
    s.spaces();
    (s.i == line.len()).then_some(())
}

struct Scan<'l, 'o, const N: usize> {
    b: &'l [u8],
    /// The same bytes, checked UTF-8 once, so strings are sliced without another check.
    text: &'l str,
    i: usize,
    out: &'o mut [Val<'l>; N],
}

impl<'l, const N: usize> Scan<'l, '_, N> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn spaces(&mut self) {
        while self.b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
    }

    /// Consumes `c` (after spaces) or fails.
    fn expect(&mut self, c: u8) -> Option<()> {
        self.spaces();
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn put(&mut self, node: Option<&Node>, v: Val<'l>) {
        if let Some(slot) = node.and_then(Node::slot).and_then(|s| self.out.get_mut(s)) {
            *slot = v;
        }
    }

    /// An object at `self.i` (on its `{`); keys are looked up under `node`.
    fn object(&mut self, node: Option<&Node>, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.spaces();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let (start, end, escaped) = self.string()?;
            if escaped {
                return None;
            }
            let key = self.b.get(start..end)?;
            let child = node.and_then(|n| n.child_bytes(key));
            self.expect(b':')?;
            self.spaces();
            self.value(child, depth)?;
            self.spaces();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.spaces();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array: as the serde walk does, a mapped leaf takes its first element; the rest
    /// (and every element under an unmapped or inner path) is only checked.
    fn array(&mut self, node: Option<&Node>, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.spaces();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        let mut first = node.filter(|n| n.slot().is_some());
        loop {
            self.value(first.take(), depth)?;
            self.spaces();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.spaces();
                }
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// One value at `self.i`, stored when `node` has a slot.
    fn value(&mut self, node: Option<&Node>, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => {
                let (start, end, escaped) = self.string()?;
                if let Some(n) = node.filter(|n| n.slot().is_some()) {
                    let v = self.string_value(start, end, escaped)?;
                    self.put(Some(n), Val::Str(v));
                }
            }
            b'{' => self.object(node, depth + 1)?,
            b'[' => self.array(node, depth + 1)?,
            b't' => {
                self.word(b"true")?;
                self.put(node, Val::Bool(true));
            }
            b'f' => {
                self.word(b"false")?;
                self.put(node, Val::Bool(false));
            }
            b'n' => {
                self.word(b"null")?;
                self.put(node, Val::Null);
            }
            b'-' | b'0'..=b'9' => self.number(node)?,
            _ => return None,
        }
        Some(())
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        let end = self.i + w.len();
        (self.b.get(self.i..end)? == w).then(|| self.i = end)
    }

    /// A string at `self.i` (on its opening quote): the content's range and whether it has
    /// escapes. Only the escapes that stand for one ASCII byte are taken.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            i += find_quote_or_backslash(self.b.get(i..)?)?;
            match self.b.get(i)? {
                b'"' => break,
                _ => {
                    if !matches!(
                        self.b.get(i + 1)?,
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't'
                    ) {
                        return None;
                    }
                    escaped = true;
                    i += 2;
                }
            }
        }
        self.i = i + 1;
        Some((start, i, escaped))
    }

    /// A mapped string's value: borrowed, or unescaped into a copy.
    fn string_value(&self, start: usize, end: usize, escaped: bool) -> Option<Cow<'l, str>> {
        let raw = self.text.get(start..end)?;
        if !escaped {
            return Some(Cow::Borrowed(raw));
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(p) = rest.find('\\') {
            out.push_str(rest.get(..p)?);
            let c = match rest.as_bytes().get(p + 1)? {
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                &c => char::from(c),
            };
            out.push(c);
            rest = rest.get(p + 2..)?;
        }
        out.push_str(rest);
        Some(Cow::Owned(out))
    }

    /// A number: checked by JSON's grammar (as serde_json skips one); a mapped one is taken
    /// only as a non-negative integer of up to 18 digits, which serde_json reads exactly
    /// the same (floats and negatives are left to it).
    fn number(&mut self, node: Option<&Node>) -> Option<()> {
        let negative = self.peek()? == b'-';
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let int_end = self.i;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integer = false;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            integer = false;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'0'..=b'9')) {
            // A leading zero followed by digits: serde_json's error to give.
            return None;
        }
        if node.and_then(Node::slot).is_none() {
            return Some(());
        }
        let digits = self.b.get(int_start..int_end)?;
        if !integer || negative || digits.len() > 18 {
            return None;
        }
        let n = digits
            .iter()
            .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
        self.put(node, Val::Int(n));
        Some(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let from = self.i;
        self.digits();
        (self.i > from).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::json::extract_serde;
    use proptest::prelude::*;

    const N: usize = 8;

    /// Paths like the presets' (flat, nested, and a leaf under an array-valued key).
    fn root() -> Node {
        let mut root = Node::default();
        for (i, p) in [
            "ts",
            "token_id",
            "status",
            "ip",
            "auth.client_token",
            "request.remote_address",
            "request.headers.Authorization",
            "error",
        ]
        .into_iter()
        .enumerate()
        {
            root.add(p, i);
        }
        root
    }

    /// The scanner either declines or gives exactly serde_json's values.
    fn agrees(line: &[u8]) -> Result<bool, String> {
        let root = root();
        let mut fast: [Val<'_>; N] = std::array::from_fn(|_| Val::Null);
        let mut slow: [Val<'_>; N] = std::array::from_fn(|_| Val::Null);
        match extract::<N>(&root, line, &mut fast) {
            None => Ok(false),
            Some(()) => match extract_serde::<N>(&root, line, &mut slow) {
                Ok(()) if slow == fast => Ok(true),
                other => Err(format!(
                    "{:?}: scanner {fast:?}, serde {other:?}",
                    String::from_utf8_lossy(line)
                )),
            },
        }
    }

    #[test]
    fn access_and_audit_lines_take_the_fast_path() {
        for line in [
            r#"{"ts":"2026-03-02T13:55:36.120Z","token_id":"ak_1","user":"u1","ip":"203.0.113.9","method":"POST","path":"/v1/chat","status":401,"reason":"invalid"}"#,
            r#"{"time":"2026-03-02T13:55:36Z","type":"response","auth":{"client_token":"hmac-sha256:c1","accessor":"acc1","policies":["default","app"]},"request":{"client_token":"hmac-sha256:c1","remote_address":"192.0.2.1","remote_port":40123},"error":"1 error occurred:\n\t* permission denied\n\n"}"#,
            r#" { "ts" : 1500000000 , "x" : [1, -2.5e-3, true, false, null, {"a":[]}], "status" : "200" } "#,
            r#"{"request":{"headers":{"Authorization":["Bearer sk-1","x"]}},"status":200,"ts":"2026-03-02T00:00:00Z"}"#,
            "{\"ts\":\"caf\u{e9}\",\"token_id\":\"\\\"q\\\\\\/\"}",
        ] {
            assert_eq!(agrees(line.as_bytes()), Ok(true), "{line}");
        }
    }

    #[test]
    fn lines_outside_the_subset_go_to_serde() {
        for line in [
            "{\"ts\":\"a\tb\"}",                 // raw control byte
            "{\"ts\":1}\r",                      // CR: whitespace to serde, left to it
            r#"{"ts":"\u00e9"}"#,                // \u escape
            r#"{"t\"s":1}"#,                     // escaped key
            r#"{"status":-1}"#,                  // mapped negative
            r#"{"status":4.0}"#,                 // mapped float
            r#"{"status":1234567890123456789}"#, // 19 digits
            r#"{"status":01}"#,                  // leading zero
            r#"{"a":1,}"#,                       // trailing comma
            r#"[1]"#,                            // not an object
            r#"{"a":1} x"#,                      // trailing data
            r#"{"a":tru}"#,                      // bad literal
            r#"{"a":"\x"}"#,                     // bad escape
            r#"{"a":1"#,                         // unterminated
        ] {
            assert_eq!(agrees(line.as_bytes()), Ok(false), "{line}");
        }
        let deep = format!("{{\"ts\":{}1{}}}", "[".repeat(40), "]".repeat(40));
        assert_eq!(agrees(deep.as_bytes()), Ok(false));
    }

    /// JSON-ish text: valid values of every shape, with keys the mapping knows.
    fn value() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "ts",
            "token_id",
            "status",
            "ip",
            "auth",
            "client_token",
            "request",
            "headers",
            "Authorization",
            "remote_address",
            "error",
            "x",
        ]);
        let leaf = prop_oneof![
            "[a-z0-9 .:é-]{0,12}".prop_map(|s| format!("\"{s}\"")),
            prop::sample::select(vec![
                r#""a\"b\\c\/d\n\t""#,
                r#""\u0041""#,
                r#""\ud800""#,
                "0",
                "-0",
                "7",
                "-12",
                "401",
                "1.5",
                "-2.5e-3",
                "1e400",
                "1E+2",
                "123456789012345678",
                "12345678901234567890",
                "true",
                "false",
                "null",
            ])
            .prop_map(str::to_string),
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key.clone(), inner), 0..4).prop_map(|kv| {
                    let body: Vec<String> = kv
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\" : {v}"))
                        .collect();
                    format!("{{{}}}", body.join(", "))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_scanner_agrees_with_serde(v in value(), edit in 0usize..400, byte in prop::sample::select(b"\"\\{}[],: 0-e\x01".to_vec())) {
            let line = format!("{{\"status\":401,\"x\":{v}}}");
            prop_assert!(agrees(line.as_bytes()).is_ok(), "{:?}", agrees(line.as_bytes()));
            // One byte changed: mostly invalid, sometimes still valid in another way.
            let mut bad = line.into_bytes();
            let at = edit % bad.len();
            if edit % 2 == 0 {
                bad[at] = byte;
            } else {
                bad.remove(at);
            }
            prop_assert!(agrees(&bad).is_ok(), "{:?}", agrees(&bad));
        }
    }
}
