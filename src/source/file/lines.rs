//! Splits a file's bytes into complete lines, tracking the offset just past the last one.
//!
//! A partial last line waits (bounded by `max_line_bytes`) until its `\n` arrives; a line
//! over the limit is dropped whole without being buffered; NUL runs at a line start (the
//! hole a non-`O_APPEND` writer leaves after a copytruncate) are skipped.

use memchr::memchr;

/// Line-splitting state of one open file.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    partial: Vec<u8>,
    /// Inside a line that is being dropped (too long, or cut by a start-at-end).
    skipping: bool,
    /// Offset just past the last complete line handled (emitted, dropped or NUL-skipped).
    line_end: u64,
    /// Offset of the next byte to feed.
    next: u64,
}

impl LineSplitter {
    /// Starts at a line boundary `offset`.
    pub fn new(offset: u64, max_line: usize) -> Self {
        LineSplitter {
            max_line,
            partial: Vec::new(),
            skipping: false,
            line_end: offset,
            next: offset,
        }
    }

    /// Starts at `offset` inside a line whose rest is dropped silently (start at end).
    pub fn mid_line(offset: u64, max_line: usize) -> Self {
        LineSplitter {
            skipping: true,
            ..Self::new(offset, max_line)
        }
    }

    /// Offset just past the last complete line (what a checkpoint may hold).
    pub fn line_end(&self) -> u64 {
        self.line_end
    }

    /// Offset of the next byte to read.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Feeds the bytes at [`Self::next_offset`], appends complete lines to `out`, and
    /// returns how many over-long lines were dropped.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> u32 {
        let mut dropped = 0;
        let mut at = self.next;
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.partial.is_empty() && !self.skipping {
                let nuls = rest.iter().take_while(|&&b| b == 0).count();
                at += nuls as u64;
                self.line_end = at;
                rest = rest.get(nuls..).unwrap_or_default();
                if rest.is_empty() {
                    break;
                }
            }
            match memchr(b'\n', rest) {
                Some(i) => {
                    let (line, tail) = rest.split_at(i + 1);
                    dropped += u32::from(self.complete(line, out));
                    at += line.len() as u64;
                    self.line_end = at;
                    rest = tail;
                }
                None => {
                    dropped += u32::from(self.hold(rest));
                    break;
                }
            }
        }
        self.next += chunk.len() as u64;
        dropped
    }

    /// Ends the current line with `line` (which ends in `\n`); true if it was too long.
    fn complete(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        if self.skipping {
            self.skipping = false;
            return false;
        }
        let too_long = self.partial.len() + line.len() - 1 > self.max_line;
        if !too_long {
            out.extend_from_slice(&self.partial);
            out.extend_from_slice(line);
        }
        self.partial.clear();
        too_long
    }

    /// Keeps a line's unterminated start; true if that already made it too long.
    fn hold(&mut self, part: &[u8]) -> bool {
        if self.skipping {
            return false;
        }
        if self.partial.len() + part.len() > self.max_line {
            // Free the buffer: a giant line must not stay in memory.
            self.partial = Vec::new();
            self.skipping = true;
            return true;
        }
        self.partial.extend_from_slice(part);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(s: &mut LineSplitter, parts: &[&[u8]]) -> (Vec<u8>, u32) {
        let mut out = Vec::new();
        let mut dropped = 0;
        for p in parts {
            dropped += s.feed(p, &mut out);
        }
        (out, dropped)
    }

    #[test]
    fn partial_line_waits_for_newline() {
        let mut s = LineSplitter::new(0, 100);
        let (out, _) = feed_all(&mut s, &[b"ab\ncd"]);
        assert_eq!(out, b"ab\n");
        assert_eq!((s.line_end(), s.next_offset()), (3, 5));
        let (out, _) = feed_all(&mut s, &[b"e\r\n"]);
        assert_eq!(out, b"cde\r\n");
        assert_eq!(s.line_end(), 8);
    }

    #[test]
    fn long_line_dropped_whole_in_pieces() {
        let mut s = LineSplitter::new(10, 4);
        let (out, dropped) = feed_all(&mut s, &[b"abcd\nabc", b"de", b"fgh", b"\nok\n"]);
        assert_eq!(out, b"abcd\nok\n");
        assert_eq!(dropped, 1);
        assert_eq!(s.line_end(), 10 + 17);
        assert!(s.partial.capacity() <= 4);
        let (out, dropped) = feed_all(&mut s, &[b"abcdef\n"]);
        assert_eq!((out.len(), dropped), (0, 1));
    }

    #[test]
    fn nul_runs_at_line_start_skipped() {
        let mut s = LineSplitter::new(0, 8);
        let (out, dropped) = feed_all(&mut s, &[&[0u8; 100], b"\0\0x\n\0y\n"]);
        assert_eq!(out, b"x\ny\n");
        assert_eq!(dropped, 0);
        assert_eq!(s.line_end(), 107);
        feed_all(&mut s, &[&[0u8; 5]]);
        assert_eq!(s.line_end(), 112);
    }

    #[test]
    fn mid_line_start_drops_rest_silently() {
        let mut s = LineSplitter::mid_line(3, 100);
        let (out, dropped) = feed_all(&mut s, &[b"tail\nnext\n"]);
        assert_eq!((out.as_slice(), dropped), (&b"next\n"[..], 0));
        assert_eq!(s.line_end(), 13);
    }
}
