//! The UDP receiver: one blocking thread, one datagram per message.
//!
//! A plain thread rather than a tokio task: the loop is a `recv` and a header split, and
//! the short read timeout doubles as the batch flush timer and the stop check.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};

use super::queue::{Batcher, FLUSH_AFTER};
use super::Shared;

/// The largest UDP payload (IPv4: 65,535 − 8 − 20); one more byte tells "too long" apart.
const MAX_DATAGRAM: usize = 65_536;

/// Binds `addr` and starts the receiver thread.
pub(super) fn start(
    addr: SocketAddr,
    shared: Shared,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let socket = bind(addr, shared.cfg.recv_buffer_bytes)?;
    socket.set_read_timeout(Some(FLUSH_AFTER))?;
    let local = socket.local_addr()?;
    let handle = thread::Builder::new()
        .name("syslog-udp".into())
        .spawn(move || receive(socket, shared))?;
    Ok((local, handle))
}

/// A UDP socket on `addr`, with `SO_RCVBUF` set unless `size` is 0 (the kernel caps it
/// at `net.core.rmem_max` and doubles it for bookkeeping).
fn bind(addr: SocketAddr, size: usize) -> std::io::Result<UdpSocket> {
    if size == 0 {
        return UdpSocket::bind(addr);
    }
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(size)?;
    s.bind(&addr.into())?;
    let got = s.recv_buffer_size()?;
    if got < size {
        tracing::warn!(
            asked = size,
            got,
            "syslog: SO_RCVBUF capped by net.core.rmem_max"
        );
    }
    Ok(s.into())
}

fn receive(socket: UdpSocket, shared: Shared) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut batch = Batcher::new(shared.cfg.source, shared.queue.clone());
    let max = shared.cfg.max_message_bytes;
    while !shared.stop.load(Ordering::Acquire) {
        match socket.recv(&mut buf) {
            Ok(n) if n > max => shared.counters.too_long.inc(),
            Ok(n) => shared.handle(&buf[..n], &mut batch),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                batch.flush();
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // ICMP errors and the like: nothing to do but go on.
                tracing::debug!(error = %e, "syslog udp recv");
                continue;
            }
        }
        if batch.due() {
            batch.flush();
        }
    }
    batch.flush();
}
