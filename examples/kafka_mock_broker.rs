//! A librdkafka mock cluster for `bench/kafka_global.sh` on a machine without `tansu`:
//! one in-process broker with tokenwatch's topics, its bootstrap address on stdout, until
//! killed. Enough for CPU-per-record figures (the broker is not what is measured); not a
//! stand-in for Kafka's timing.
//!
//! ```text
//! kafka_mock_broker PARTITIONS
//! ```

use std::io::Write;

fn main() -> anyhow::Result<()> {
    let partitions: i32 = std::env::args().nth(1).map_or(Ok(3), |p| p.parse())?;
    let m = rdkafka::mocking::MockCluster::new(1)?;
    for t in ["auth.by_token", "auth.by_ip"] {
        m.create_topic(t, partitions, 1)?;
    }
    m.create_topic("detections", 1, 1)?;
    m.create_topic("tokens.known", 3, 1)?;
    let mut out = std::io::stdout();
    writeln!(out, "{}", m.bootstrap_servers())?;
    out.flush()?;
    loop {
        std::thread::park();
    }
}
