//! The sender of `bench/syslog.sh`: nginx access lines as RFC 3164 syslog datagrams (the
//! way nginx's `access_log syslog:server=…` sends them), at a fixed rate or as fast as the
//! socket takes them.
//!
//! ```sh
//! cargo run --release --example syslog_send -- 127.0.0.1:5514 1000000 50000   # 50,000/s
//! cargo run --release --example syslog_send -- 127.0.0.1:5514 1000000 0       # flat out
//! ```
//! Prints `sent=N secs=S rate=R` on stdout.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Messages between two pacing checks.
const CHUNK: u64 = 500;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(count), Some(rate)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
        args.get(2).and_then(|r| r.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: syslog_send ADDR COUNT RATE_PER_SEC (0 = as fast as possible)");
        std::process::exit(2);
    };
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(addr.as_str()).expect("connect");
    let messages = messages(1000);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        for _ in 0..CHUNK.min(count - sent) {
            let m = &messages[(sent % messages.len() as u64) as usize];
            // ECONNREFUSED from an earlier ICMP error or ENOBUFS: retry the same datagram.
            while socket.send(m).is_err() {}
            sent += 1;
        }
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            while start.elapsed() < due {
                std::hint::spin_loop();
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("sent={sent} secs={secs:.3} rate={:.0}", sent as f64 / secs);
}

/// `n` distinct messages (tokens and statuses vary; every fifth is a 401).
fn messages(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let (status, reason) = if i % 5 == 0 {
                (401, "invalid")
            } else {
                (200, "-")
            };
            format!(
                "<190>Dec  7 10:00:00 gw1 nginx: 10.{}.{}.7 - - [07/Dec/2026:10:00:00 +0000] \
                 \"POST /v1/chat-messages HTTP/1.1\" {status} 512 \"-\" \"python-requests/2.31\" \
                 \"ak_{i:08x}\" \"{reason}\"",
                i / 256,
                i % 256
            )
            .into_bytes()
        })
        .collect()
}
