//! A token spray under load (`tokenwatch gen --spray N`): N rejected random tokens, each from a
//! new random address, at a steady rate. The worst case for the per-IP detectors' bounded
//! maps (every line a key they have never seen), used to benchmark detection under attack.

use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};

use super::ev::{Ev, ATTACK_UAS, PROBE_REQS};
use super::rng::Rng;
use super::write::LineWriter;
use super::{GenOptions, GenSummary};
use crate::event::{EventTime, Reason};

/// Writes `n` spray lines from `opts.start`, `per_sec` a second, in `opts.format`.
pub fn spray(
    opts: &GenOptions,
    n: u64,
    per_sec: u32,
    out: &mut dyn Write,
) -> io::Result<GenSummary> {
    let mut rng = Rng::stream(opts.seed, 0x5_9A7);
    let mut w = LineWriter::new(opts.format, opts.seed);
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let start = opts.start.as_millis();
    let per_sec = i64::from(per_sec.max(1));
    let mut last = None;
    for i in 0..n {
        // Evenly spaced in event time: line i at start + i / per_sec seconds.
        let t = start
            .saturating_add(i64::try_from(i).unwrap_or(i64::MAX).saturating_mul(1000) / per_sec);
        let req = PROBE_REQS[rng.index(PROBE_REQS.len())];
        let mut ev = Ev::ok(
            t,
            Some(token(&mut rng)),
            addr(&mut rng),
            0,
            req,
            ATTACK_UAS[0],
        );
        ev.bytes = 48;
        out.write_all(w.line(&ev.rejected(Reason::Invalid)))?;
        last = Some(t);
    }
    out.flush()?;
    Ok(GenSummary {
        lines: n,
        incidents: 0,
        hard_cases: 0,
        tokens: n,
        skipped: Vec::new(),
        first: last.map(|_| opts.start),
        last: last.map(EventTime::from_millis),
    })
}

/// A random public IPv4 address (no private, loopback, shared or documentation first octet).
fn addr(rng: &mut Rng) -> IpAddr {
    loop {
        let x = rng.next_u64();
        let a = (11 + x % 213) as u8;
        if matches!(a, 100 | 127 | 169 | 172 | 192 | 198 | 203) {
            continue;
        }
        let [b, c, d] = [(x >> 8) as u8, (x >> 16) as u8, ((x >> 24) as u8).max(1)];
        return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    }
}

/// A token nobody owns: 48 random bits with the top bit set (no population id has it).
fn token(rng: &mut Rng) -> u64 {
    (rng.next_u64() & 0xffff_ffff_ffff) | 0x8000_0000_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_rejected_distinct_and_paced() {
        let opts = GenOptions::default();
        let mut buf = Vec::new();
        let s = spray(&opts, 2_000, 1000, &mut buf).expect("spray");
        let text = String::from_utf8(buf).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!((s.lines, lines.len()), (2_000, 2_000));
        assert!(lines
            .iter()
            .all(|l| l.contains("\" 401 ") && l.ends_with("\"invalid\"")));
        let ips: std::collections::HashSet<&str> =
            lines.iter().filter_map(|l| l.split(' ').next()).collect();
        let toks: std::collections::HashSet<&str> =
            lines.iter().filter_map(|l| l.split('"').nth(7)).collect();
        assert!(
            ips.len() > 1_990 && toks.len() == 2_000,
            "{} {}",
            ips.len(),
            toks.len()
        );
        // 2,000 lines at 1,000 a second span two seconds of event time.
        let span = s.last.map(|l| l.as_millis()).unwrap_or(0) - opts.start.as_millis();
        assert_eq!(span, 1_999);
        // Same seed, same bytes.
        let mut again = Vec::new();
        spray(&opts, 2_000, 1000, &mut again).expect("spray");
        assert_eq!(again, text.as_bytes());
    }
}
