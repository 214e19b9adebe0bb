//! The syslog source: a UDP or TCP listener that hands each message's text to the preset.
//!
//! `listen = "udp://127.0.0.1:5514"` is what nginx's `access_log syslog:server=…` sends to
//! (RFC 3164, one message per datagram); `tcp://` takes RFC 6587 octet-counted
//! (`123 <190>1 …`) or newline-framed messages, detected per frame. The header (RFC 3164
//! or RFC 5424) gives the program for the `program` filter and the event time used when the
//! preset's line has none. Messages go through a bounded, dropping [`queue`]; over-long
//! messages are dropped and counted, and a TCP connection that sends an over-long frame is
//! closed (its framing can no longer be trusted).
//!
//! The socket is bound by [`Syslog::start`], before the daemon reports ready, so a bind
//! failure stops the start and `/readyz` never says ready for a port nobody listens on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus::IntCounter;

use crate::event::SourceIdx;
use crate::metrics::{DropReason, Metrics};
use crate::parse::time::Zone;
use crate::source::LineBatch;

pub mod header;
pub mod queue;
mod tcp;
mod udp;

/// Messages held between the socket and the pipeline by default.
pub const DEFAULT_QUEUE_MESSAGES: usize = 65_536;
/// `SO_RCVBUF` asked for by default: at 50,000 datagrams/s the kernel's usual 208 KiB
/// overflowed (1.2 % lost) on a busy machine; 4 MiB lost none (BENCHMARKS.md). The kernel
/// caps it at `net.core.rmem_max`.
pub const DEFAULT_RECV_BUFFER: usize = 4 << 20;
/// TCP connections served at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Where to listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// `udp://IP:PORT`.
    Udp(SocketAddr),
    /// `tcp://IP:PORT`.
    Tcp(SocketAddr),
}

impl Listen {
    /// Parses `udp://IP:PORT` or `tcp://IP:PORT` (IPv6 as `[::1]:PORT`).
    pub fn parse(s: &str) -> Result<Listen, String> {
        let bad =
            |why: &str| format!("invalid listen {s:?}: {why} (e.g. \"udp://127.0.0.1:5514\")");
        let (scheme, addr) = s
            .split_once("://")
            .ok_or_else(|| bad("no udp:// or tcp://"))?;
        let addr: SocketAddr = addr.parse().map_err(|_| bad("not IP:PORT"))?;
        match scheme {
            "udp" => Ok(Listen::Udp(addr)),
            "tcp" => Ok(Listen::Tcp(addr)),
            _ => Err(bad("the scheme must be udp or tcp")),
        }
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        match *self {
            Listen::Udp(a) | Listen::Tcp(a) => a,
        }
    }
}

/// One syslog source's runtime settings.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// The source index batches are tagged with.
    pub source: SourceIdx,
    /// The source name (metric label, logs).
    pub name: String,
    /// Where to listen.
    pub listen: Listen,
    /// Keep only messages from this program (tag / APP-NAME).
    pub program: Option<String>,
    /// Longer messages are dropped (and their TCP connection closed).
    pub max_message_bytes: usize,
    /// Messages held between the socket and the pipeline.
    pub queue_messages: usize,
    /// TCP connections served at once.
    pub max_connections: usize,
    /// `SO_RCVBUF` for the UDP socket (0: leave the kernel's default).
    pub recv_buffer_bytes: usize,
    /// The zone of RFC 3164 times (which carry none).
    pub zone: Zone,
}

/// The counters a syslog source bumps (resolved once).
#[derive(Clone)]
pub struct Counters {
    /// `tokenwatch_source_dropped_total{reason="queue_full"}`.
    pub queue_full: IntCounter,
    /// `…{reason="too_long"}`.
    pub too_long: IntCounter,
    /// `…{reason="malformed"}`.
    pub malformed: IntCounter,
    /// `…{reason="connection_limit"}`.
    pub connection_limit: IntCounter,
    /// Messages from other programs: `tokenwatch_lines_total{result="skipped"}`.
    pub filtered: IntCounter,
}

impl Counters {
    /// The handles for source `name`.
    pub fn new(metrics: &Metrics, name: &str) -> Counters {
        let d = |r| metrics.source_dropped(name, r);
        Counters {
            queue_full: d(DropReason::QueueFull),
            too_long: d(DropReason::TooLong),
            malformed: d(DropReason::Malformed),
            connection_limit: d(DropReason::ConnectionLimit),
            filtered: metrics.source(name).skipped,
        }
    }
}

/// What a receiver needs besides its socket: settings, counters and the queue.
#[derive(Clone)]
struct Shared {
    cfg: Arc<SyslogConfig>,
    counters: Counters,
    queue: queue::Queue,
    stop: Arc<AtomicBool>,
}

impl Shared {
    /// Splits one message and adds it to `batch` (or counts why not).
    fn handle(&self, msg: &[u8], batch: &mut queue::Batcher) {
        let now = crate::event::EventTime::now();
        let m = match header::parse(msg, &self.cfg.zone, now) {
            Ok(m) => m,
            Err(_) => {
                self.counters.malformed.inc();
                return;
            }
        };
        if let Some(want) = &self.cfg.program {
            if m.program != Some(want.as_bytes()) {
                self.counters.filtered.inc();
                return;
            }
        }
        batch.push(m.msg, m.time.unwrap_or(now));
    }
}

/// Starts syslog sources.
#[derive(Debug)]
pub struct Syslog;

/// A running syslog source.
pub struct SyslogHandle {
    stop: Arc<AtomicBool>,
    local: SocketAddr,
    udp: Option<JoinHandle<()>>,
    tcp: Option<tokio::task::JoinHandle<()>>,
    forwarder: JoinHandle<()>,
}

impl Syslog {
    /// Binds the socket and starts receiving into `out`. TCP needs a tokio runtime.
    pub fn start(
        cfg: SyslogConfig,
        out: SyncSender<LineBatch>,
        counters: Counters,
    ) -> std::io::Result<SyslogHandle> {
        if !cfg.listen.addr().ip().is_loopback() {
            tracing::warn!(source = %cfg.name, listen = %cfg.listen.addr(),
                "syslog listens on a non-loopback address: anyone who can reach it can send lines");
        }
        let (queue, forwarder) =
            queue::Queue::start(cfg.queue_messages, out, counters.queue_full.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Shared {
            cfg: Arc::new(cfg.clone()),
            counters,
            queue,
            stop: Arc::clone(&stop),
        };
        let (local, udp, tcp) = match cfg.listen {
            Listen::Udp(addr) => {
                let (local, h) = udp::start(addr, shared)?;
                (local, Some(h), None)
            }
            Listen::Tcp(addr) => {
                let (local, h) = tcp::start(addr, shared)?;
                (local, None, Some(h))
            }
        };
        tracing::info!(source = %cfg.name, %local, "syslog listening");
        Ok(SyslogHandle {
            stop,
            local,
            udp,
            tcp,
            forwarder,
        })
    }
}

impl SyslogHandle {
    /// The bound address (the port, when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops receiving, hands what was received to the pipeline, and waits until every
    /// sender into it is dropped (so the pipeline can see its end).
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.tcp {
            let _ = t.await;
        }
        let (udp, fwd) = (self.udp, self.forwarder);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(u) = udp {
                let _ = u.join();
            }
            let _ = fwd.join();
        })
        .await;
    }
}
