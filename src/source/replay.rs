//! Replay: read whole files (or stdin) start to end as fast as possible.
//!
//! Reads large chunks and hands out runs of complete lines borrowed from one reusable
//! buffer; the leftover partial line rolls to the front (ripgrep's `LineBuffer` idea).

use std::io::{self, Read};

/// Size of one read; big enough to amortise syscalls, small enough to stay in L2.
const CHUNK: usize = 256 * 1024;

/// Reads `reader` to the end, calling `f` with runs of complete lines (each ending in `\n`,
/// except possibly the very last line of the input). Returns the bytes read.
pub fn for_each_chunk<R: Read>(mut reader: R, mut f: impl FnMut(&[u8])) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0usize;
    let mut total = 0u64;
    loop {
        if filled == buf.len() {
            // One line longer than the buffer: grow (the pipeline's parsers cope with any
            // length; replay has no max_line_bytes because the whole file is wanted).
            buf.resize(buf.len() * 2, 0);
        }
        let n = match reader.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if filled > 0 {
                f(&buf[..filled]);
            }
            return Ok(total);
        }
        total += n as u64;
        filled += n;
        if let Some(last_nl) = memchr::memrchr(b'\n', &buf[..filled]) {
            f(&buf[..=last_nl]);
            buf.copy_within(last_nl + 1..filled, 0);
            filled -= last_nl + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_every_line_once_across_chunk_edges() {
        let mut input = Vec::new();
        for i in 0..100_000 {
            input.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        input.extend_from_slice(b"no newline at end");
        let mut lines = Vec::new();
        let n = for_each_chunk(&input[..], |chunk| {
            for l in chunk.split(|&b| b == b'\n') {
                if !l.is_empty() {
                    lines.push(String::from_utf8_lossy(l).into_owned());
                }
            }
        })
        .unwrap();
        assert_eq!(n, input.len() as u64);
        assert_eq!(lines.len(), 100_001);
        assert_eq!(lines[99_999], "line 99999");
        assert_eq!(lines[100_000], "no newline at end");
    }

    #[test]
    fn grows_for_a_giant_line() {
        let mut input = vec![b'x'; 3 * CHUNK];
        input.push(b'\n');
        input.extend_from_slice(b"after\n");
        let mut seen = Vec::new();
        for_each_chunk(&input[..], |c| {
            seen.extend(c.split(|&b| b == b'\n').map(|l| l.len()))
        })
        .unwrap();
        assert!(seen.contains(&(3 * CHUNK)));
        assert!(seen.contains(&5));
    }
}
