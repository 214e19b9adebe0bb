//! Container log wrappers: the inner log line out of Docker's json-file and the CRI format.
//!
//! ```text
//! docker: {"log":"<line>\n","stream":"stdout","time":"2026-03-02T13:55:36.123456789Z"}
//! cri:    2026-03-02T13:55:36.123456789Z stdout F <line>
//! ```
//! Docker splits lines over 16 KiB into entries whose `log` lacks the trailing `\n`; the CRI
//! marks partial pieces `P` and the last one `F`. Pieces are joined per stream (stdout,
//! stderr), bounded by `max_line_bytes`: a longer line is dropped whole and counted like an
//! over-long plain line. A wrapper line that does not decode (invalid JSON, a broken CRI
//! header) is passed on as it is, so the preset counts it as malformed.
//!
//! The [`Unwrapper`] is shared by the tailer, `replay` and `parse`. It also tells the tailer
//! how far a checkpoint may go: never past the first piece of a line still being joined, so
//! a restart reads that line's pieces again (lines of the other stream that were emitted
//! after that point are read again too: at-least-once, like any unacknowledged batch).

use memchr::memchr;

use crate::event::EventTime;
use crate::parse::find_quote_or_backslash;
use crate::parse::time::{rfc3339, Zone};

/// The `wrapper` choice of a `[[source]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WrapperChoice {
    /// Detect per file from its first line (the default).
    #[default]
    Auto,
    /// Plain lines.
    None,
    /// Docker's json-file log driver.
    Docker,
    /// The CRI log format (containerd, CRI-O; Kubernetes `/var/log/containers`).
    Cri,
}

impl WrapperChoice {
    /// Every choice with its config name.
    pub const ALL: [(WrapperChoice, &'static str); 4] = [
        (WrapperChoice::Auto, "auto"),
        (WrapperChoice::None, "none"),
        (WrapperChoice::Docker, "docker"),
        (WrapperChoice::Cri, "cri"),
    ];
}

/// The wrapper a file turned out to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrapper {
    /// Plain lines.
    None,
    /// Docker json-file.
    Docker,
    /// CRI.
    Cri,
}

impl Wrapper {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Wrapper::None => "none",
            Wrapper::Docker => "docker",
            Wrapper::Cri => "cri",
        }
    }

    /// The wrapper of a file whose first line is `line`.
    pub fn detect(line: &[u8]) -> Wrapper {
        if line.starts_with(b"{\"log\":") {
            Wrapper::Docker
        } else if cri_header(line).is_some() {
            Wrapper::Cri
        } else {
            Wrapper::None
        }
    }
}

/// What one physical line came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// A whole inner line was appended to the output.
    Line,
    /// A piece was kept until its line is complete.
    Pending,
    /// A joined line grew over the limit and was dropped (count it as too long).
    TooLong,
}

/// A line being joined from pieces, for one stream.
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    /// File offset of the first piece (checkpoints stay before it).
    start: Option<u64>,
    /// Time of the first piece.
    time: EventTime,
    /// The line went over the limit: drop pieces until its last one.
    dropping: bool,
}

/// Unwraps one file's physical lines (one instance per file: pieces belong to one file).
#[derive(Debug)]
pub struct Unwrapper {
    choice: WrapperChoice,
    kind: Option<Wrapper>,
    max_line: usize,
    /// stdout, stderr.
    pending: [Pending; 2],
    zone: Zone,
    /// The last `YYYY-MM-DDTHH:MM:SS` seen and its instant: runtime stamps of consecutive
    /// lines mostly share their second, and only the fraction then needs reading.
    last_second: Option<([u8; 19], EventTime)>,
}

impl Unwrapper {
    /// An unwrapper for `choice`, joining lines up to `max_line` bytes.
    pub fn new(choice: WrapperChoice, max_line: usize) -> Unwrapper {
        let kind = match choice {
            WrapperChoice::Auto => None,
            WrapperChoice::None => Some(Wrapper::None),
            WrapperChoice::Docker => Some(Wrapper::Docker),
            WrapperChoice::Cri => Some(Wrapper::Cri),
        };
        Unwrapper {
            choice,
            kind,
            max_line,
            pending: Default::default(),
            zone: Zone::default(),
            last_second: None,
        }
    }

    /// The same settings, nothing detected or pending (a truncated file starts over).
    pub fn reset(&mut self) {
        *self = Unwrapper::new(self.choice, self.max_line);
    }

    /// The wrapper in use, once known.
    pub fn wrapper(&self) -> Option<Wrapper> {
        self.kind
    }

    /// True when lines pass through untouched (no wrapper, or detected none): the caller
    /// may skip the unwrapper entirely.
    pub fn is_plain(&self) -> bool {
        self.kind == Some(Wrapper::None)
    }

    /// How far a checkpoint may go, given the end of the last complete physical line.
    pub fn safe_end(&self, line_end: u64) -> u64 {
        self.pending
            .iter()
            .filter_map(|p| p.start)
            .fold(line_end, u64::min)
    }

    /// Unwraps every `\n`-terminated line of `buf` (a last unterminated line too), the
    /// first starting at file offset `base`. Inner lines go to `out` (each ending in `\n`)
    /// and their times to `stamps` (one per line; nothing for plain files). Returns how many
    /// joined lines were dropped as too long.
    pub fn feed_buf(
        &mut self,
        buf: &[u8],
        base: u64,
        out: &mut Vec<u8>,
        stamps: &mut Vec<EventTime>,
    ) -> u32 {
        let mut dropped = 0;
        let mut start = 0;
        while start < buf.len() {
            let end = memchr(b'\n', &buf[start..]).map_or(buf.len(), |i| start + i);
            let line = &buf[start..end];
            if self.feed(line, base + start as u64, out, stamps) == Fed::TooLong {
                dropped += 1;
            }
            start = end + 1;
        }
        dropped
    }

    /// Unwraps one physical line (without its `\n`) that starts at file offset `at`.
    pub fn feed(
        &mut self,
        line: &[u8],
        at: u64,
        out: &mut Vec<u8>,
        stamps: &mut Vec<EventTime>,
    ) -> Fed {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let kind = match self.kind {
            Some(k) => k,
            None if line.is_empty() => Wrapper::None,
            None => *self.kind.insert(Wrapper::detect(line)),
        };
        match kind {
            Wrapper::None => {
                out.extend_from_slice(line);
                out.push(b'\n');
                Fed::Line
            }
            Wrapper::Docker => self.docker(line, at, out, stamps),
            Wrapper::Cri => self.cri(line, at, out, stamps),
        }
    }

    fn docker(
        &mut self,
        line: &[u8],
        at: u64,
        out: &mut Vec<u8>,
        stamps: &mut Vec<EventTime>,
    ) -> Fed {
        let mark = out.len();
        let Some(piece) = docker_entry(line, out) else {
            out.truncate(mark);
            return passthrough(line, out, stamps);
        };
        let complete = out.last() == Some(&b'\n');
        if complete {
            out.pop();
        }
        let time = self.stamp(piece.time);
        self.join(piece.stream, complete, mark, at, time, out, stamps)
    }

    fn cri(&mut self, line: &[u8], at: u64, out: &mut Vec<u8>, stamps: &mut Vec<EventTime>) -> Fed {
        let Some(h) = cri_header(line) else {
            return passthrough(line, out, stamps);
        };
        let mark = out.len();
        out.extend_from_slice(h.text);
        let time = self.stamp(h.time);
        self.join(h.stream, h.full, mark, at, time, out, stamps)
    }

    /// A runtime timestamp (RFC 3339, UTC with a fraction as Docker and the CRI write it);
    /// the epoch when unreadable (the preset's own time is used first anyway).
    fn stamp(&mut self, t: &[u8]) -> EventTime {
        let (Some(second), Some(frac)) = (t.get(..19), t.get(19..)) else {
            return EventTime::default();
        };
        let utc_fraction = frac.last() == Some(&b'Z')
            && frac.first() == Some(&b'.')
            && frac.len() >= 3
            && frac[1..frac.len() - 1].iter().all(u8::is_ascii_digit);
        if utc_fraction {
            if let Some((s, base)) = &self.last_second {
                if s.as_slice() == second {
                    return EventTime::from_millis(base.as_millis() + millis(frac));
                }
            }
        }
        let Some(full) = rfc3339(t, &self.zone) else {
            return EventTime::default();
        };
        if utc_fraction {
            if let Ok(s) = <[u8; 19]>::try_from(second) {
                self.last_second =
                    Some((s, EventTime::from_millis(full.as_millis() - millis(frac))));
            }
        }
        full
    }

    /// The piece just written to `out[mark..]` either ends a line (with what is pending of
    /// its stream) or is kept.
    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        stream: usize,
        complete: bool,
        mark: usize,
        at: u64,
        time: EventTime,
        out: &mut Vec<u8>,
        stamps: &mut Vec<EventTime>,
    ) -> Fed {
        let max = self.max_line;
        let Some(p) = self.pending.get_mut(stream) else {
            return Fed::Pending;
        };
        let piece_len = out.len() - mark;
        if p.dropping || p.buf.len() + piece_len > max {
            out.truncate(mark);
            let first = !p.dropping;
            p.buf = Vec::new(); // a giant line must not stay in memory
            p.dropping = !complete;
            // The line is lost already: the checkpoint need not wait for its end (a file of
            // nothing but `P` pieces must not pin it forever).
            p.start = None;
            // Counted once per line: when it first went over.
            return if first { Fed::TooLong } else { Fed::Pending };
        }
        if p.start.is_none() {
            p.start = Some(at);
            p.time = time;
        }
        if !complete {
            p.buf.extend_from_slice(&out[mark..]);
            out.truncate(mark);
            return Fed::Pending;
        }
        if !p.buf.is_empty() {
            // Rare (split lines only): put the earlier pieces in front of the last one.
            let last = out.split_off(mark);
            out.append(&mut p.buf);
            out.extend_from_slice(&last);
        }
        out.push(b'\n');
        stamps.push(p.time);
        p.start = None;
        Fed::Line
    }
}

/// Milliseconds of a `.ddd…Z` fraction (digits already checked).
fn millis(frac: &[u8]) -> i64 {
    (0..3).fold(0, |ms, i| {
        let d = frac
            .get(1 + i)
            .filter(|c| c.is_ascii_digit())
            .map_or(0, |c| c - b'0');
        ms * 10 + i64::from(d)
    })
}

/// A wrapper line that does not decode goes on unchanged (the preset counts it malformed).
fn passthrough(line: &[u8], out: &mut Vec<u8>, stamps: &mut Vec<EventTime>) -> Fed {
    out.extend_from_slice(line);
    out.push(b'\n');
    stamps.push(EventTime::default());
    Fed::Line
}

/// The parts of a CRI line.
struct CriLine<'a> {
    time: &'a [u8],
    stream: usize,
    full: bool,
    text: &'a [u8],
}

/// `<time> <stdout|stderr> <P|F>[:more tags] <text>`.
fn cri_header(line: &[u8]) -> Option<CriLine<'_>> {
    let sp = memchr(b' ', line)?;
    let time = line.get(..sp)?;
    if time.len() < 20 || time.get(4) != Some(&b'-') || time.get(10) != Some(&b'T') {
        return None;
    }
    let rest = line.get(sp + 1..)?;
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        (0, r)
    } else {
        (1, rest.strip_prefix(b"stderr ")?)
    };
    let tag_end = memchr(b' ', rest).unwrap_or(rest.len());
    let tags = rest.get(..tag_end)?;
    let full = match tags.split(|&b| b == b':').next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let text = rest.get(tag_end + 1..).unwrap_or_default();
    Some(CriLine {
        time,
        stream,
        full,
        text,
    })
}

/// The parts of a Docker entry besides its `log` text.
struct DockerEntry<'a> {
    time: &'a [u8],
    stream: usize,
}

/// Decodes a json-file entry: the `log` value is unescaped onto `out`. The fast path reads
/// the key order Docker writes (`log`, `stream`, `time`, then maybe `attrs`); any other shape
/// goes through serde_json.
fn docker_entry<'l>(line: &'l [u8], out: &mut Vec<u8>) -> Option<DockerEntry<'l>> {
    let mark = out.len();
    let fast = line.strip_prefix(b"{\"log\":\"").and_then(|rest| {
        let used = unescape(rest, out)?;
        let rest = rest.get(used..)?;
        let rest = rest.strip_prefix(b",\"stream\":\"")?;
        let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout\"") {
            (0, r)
        } else {
            (1, rest.strip_prefix(b"stderr\"")?)
        };
        let rest = rest.strip_prefix(b",\"time\":\"")?;
        let q = memchr(b'"', rest)?;
        let tail = rest.get(q + 1..)?;
        (tail == b"}" || (tail.starts_with(b",\"attrs\":") && tail.ends_with(b"}"))).then(|| {
            DockerEntry {
                time: rest.get(..q).unwrap_or_default(),
                stream,
            }
        })
    });
    if fast.is_some() {
        return fast;
    }
    out.truncate(mark);
    slow_docker_entry(line, out)
}

/// Any key order, through serde_json (and its full validation).
fn slow_docker_entry<'l>(line: &'l [u8], out: &mut Vec<u8>) -> Option<DockerEntry<'l>> {
    #[derive(serde::Deserialize)]
    struct Entry<'a> {
        log: String,
        #[serde(default, borrow)]
        stream: Option<&'a str>,
        #[serde(default, borrow)]
        time: Option<&'a str>,
    }
    let e: Entry<'l> = serde_json::from_slice(line).ok()?;
    out.extend_from_slice(e.log.as_bytes());
    Some(DockerEntry {
        time: e.time.unwrap_or_default().as_bytes(),
        stream: usize::from(e.stream == Some("stderr")),
    })
}

/// Unescapes a JSON string body up to its closing quote onto `out`; returns the bytes used
/// (including the quote), or `None` if it is not a valid string.
fn unescape(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut i = 0;
    loop {
        // Runs between escapes are short (an nginx line escapes every quote): eight bytes
        // at a time beats memchr2's vector setup there.
        let j = i + find_quote_or_backslash(s.get(i..)?)?;
        out.extend_from_slice(s.get(i..j)?);
        if s.get(j) == Some(&b'"') {
            return Some(j + 1);
        }
        let (used, c) = match *s.get(j + 1)? {
            b'"' => (2, b'"'),
            b'\\' => (2, b'\\'),
            b'/' => (2, b'/'),
            b'n' => (2, b'\n'),
            b't' => (2, b'\t'),
            b'r' => (2, b'\r'),
            b'b' => (2, 8),
            b'f' => (2, 12),
            b'u' => {
                let used = unicode(s.get(j..)?, out)?;
                i = j + used;
                continue;
            }
            _ => return None,
        };
        out.push(c);
        i = j + used;
    }
}

/// `\uXXXX` (or a surrogate pair `\uD83D\uDE00`) at the start of `s` onto `out` as UTF-8;
/// returns the bytes used. A lone surrogate becomes U+FFFD, as Go and serde write it.
fn unicode(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let hex = |b: &[u8]| -> Option<u32> {
        let t = std::str::from_utf8(b).ok()?;
        u32::from_str_radix(t, 16).ok()
    };
    let hi = hex(s.get(2..6)?)?;
    let (code, used) = if (0xD800..0xDC00).contains(&hi) {
        match s.get(6..8) {
            Some(b"\\u") => match hex(s.get(8..12)?)? {
                lo @ 0xDC00..=0xDFFF => (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), 12),
                _ => (0xFFFD, 6),
            },
            _ => (0xFFFD, 6),
        }
    } else {
        (hi, 6)
    };
    let ch = char::from_u32(code).unwrap_or('\u{FFFD}');
    let mut b = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
    Some(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(u: &mut Unwrapper, input: &str) -> (String, u32, usize) {
        let mut out = Vec::new();
        let mut stamps = Vec::new();
        let d = u.feed_buf(input.as_bytes(), 0, &mut out, &mut stamps);
        (String::from_utf8(out).unwrap(), d, stamps.len())
    }

    #[test]
    fn docker_lines_unescape_and_join() {
        let mut u = Unwrapper::new(WrapperChoice::Auto, 1000);
        let input = concat!(
            r#"{"log":"1.2.3.4 - - [02/Mar/2026:13:55:36 +0000] \"GET / HTTP/1.1\" 401 0 \"-\" \"c\u0026url\"\n","stream":"stdout","time":"2026-03-02T13:55:36.123456789Z"}"#,
            "\n",
            r#"{"log":"part one ","stream":"stdout","time":"2026-03-02T13:55:37Z"}"#,
            "\n",
            r#"{"log":"err\n","stream":"stderr","time":"2026-03-02T13:55:37Z"}"#,
            "\n",
            r#"{"stream":"stdout","log":"part two\n","time":"2026-03-02T13:55:38Z"}"#,
            "\n",
        );
        let (out, dropped, stamps) = run(&mut u, input);
        assert_eq!(u.wrapper(), Some(Wrapper::Docker));
        assert_eq!(
            out,
            "1.2.3.4 - - [02/Mar/2026:13:55:36 +0000] \"GET / HTTP/1.1\" 401 0 \"-\" \"c&url\"\nerr\npart one part two\n"
        );
        assert_eq!((dropped, stamps), (0, 3));
        assert_eq!(u.safe_end(999), 999);
    }

    #[test]
    fn cri_partials_join_per_stream_and_hold_the_checkpoint() {
        let mut u = Unwrapper::new(WrapperChoice::Auto, 1000);
        let mut out = Vec::new();
        let mut stamps = Vec::new();
        let lines = [
            "2026-03-02T13:55:36.1Z stdout P first ",
            "2026-03-02T13:55:36.2Z stderr F other",
            "2026-03-02T13:55:36.3Z stdout F second",
        ];
        let mut at = 0;
        let mut ends = vec![];
        for l in lines {
            u.feed(l.as_bytes(), at, &mut out, &mut stamps);
            at += l.len() as u64 + 1;
            ends.push(u.safe_end(at));
        }
        assert_eq!(String::from_utf8(out).unwrap(), "other\nfirst second\n");
        assert_eq!(ends, vec![0, 0, at]);
        assert_eq!(
            stamps[1],
            rfc3339(b"2026-03-02T13:55:36.1Z", &Zone::default()).unwrap()
        );
        for t in [
            "2026-03-02T13:55:36.123456789Z",
            "2026-03-02T13:55:36.9Z",
            "2026-03-02T13:55:37Z",
            "2026-03-02T13:55:37.05Z",
            "2026-03-02T13:55:37.05+01:00",
        ] {
            let want = rfc3339(t.as_bytes(), &Zone::default()).unwrap();
            assert_eq!(u.stamp(t.as_bytes()), want, "{t}");
        }
    }

    #[test]
    fn over_long_joins_are_dropped_once_and_memory_stays_bounded() {
        let mut u = Unwrapper::new(WrapperChoice::Cri, 10);
        let p = "2026-03-02T13:55:36Z stdout P 123456\n".repeat(1000);
        let (out, dropped, _) = run(&mut u, &p);
        assert_eq!((out.as_str(), dropped), ("", 1));
        assert!(u.pending[0].buf.capacity() <= 10);
        let (out, dropped, _) = run(
            &mut u,
            "2026-03-02T13:55:36Z stdout F end\n2026-03-02T13:55:36Z stdout F ok\n",
        );
        assert_eq!((out.as_str(), dropped), ("ok\n", 0));
        assert_eq!(u.safe_end(5), 5);
    }

    #[test]
    fn broken_wrappers_pass_through_and_plain_files_are_detected() {
        let mut u = Unwrapper::new(WrapperChoice::Docker, 100);
        let (out, _, _) = run(&mut u, "{\"log\":\"x\\q\"}\n{\"log\":\"unterminated\n");
        assert_eq!(out, "{\"log\":\"x\\q\"}\n{\"log\":\"unterminated\n");
        let mut u = Unwrapper::new(WrapperChoice::Auto, 100);
        run(&mut u, "1.2.3.4 - - [x]\n");
        assert!(u.is_plain());
        assert_eq!(
            Wrapper::detect(b"2026-03-02T13:55:36Z stdout X y"),
            Wrapper::None
        );
        let mut out = Vec::new();
        unescape(br#"\ud83d\ude00\ud800x""#, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\u{1F600}\u{FFFD}x");
    }
}
