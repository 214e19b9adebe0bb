//! The TCP receiver: RFC 6587 framing, octet-counted (`LEN SP MSG`) or newline-ended,
//! told apart per frame by its first byte (a digit or `<`). Connections beyond
//! `max_connections` are closed at once; a frame over the size cap closes its connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::queue::{Batcher, FLUSH_AFTER};
use super::Shared;

/// How often the accept loop and idle connections look at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Why a connection was closed early.
#[derive(Debug, PartialEq, Eq)]
enum FrameError {
    TooLong,
    BadLength,
}

/// Binds `addr` (synchronously, so a bind error surfaces at start) and spawns the accept
/// loop on the current tokio runtime.
pub(super) fn start(
    addr: SocketAddr,
    shared: Shared,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let rt = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let _guard = rt.enter();
    let listener = TcpListener::from_std(std_listener)?;
    Ok((local, rt.spawn(accept_loop(listener, shared))))
}

async fn accept_loop(listener: TcpListener, shared: Shared) {
    let slots = Arc::new(Semaphore::new(shared.cfg.max_connections));
    let mut conns = JoinSet::new();
    while !shared.stop.load(Ordering::Acquire) {
        let accepted = tokio::time::timeout(STOP_CHECK, listener.accept()).await;
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Err(_) => continue,
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "syslog tcp accept");
                tokio::time::sleep(STOP_CHECK).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            shared.counters.connection_limit.inc();
            tracing::debug!(%peer, "syslog tcp: connection limit reached, closing");
            continue;
        };
        let shared = shared.clone();
        conns.spawn(async move {
            let _permit = permit;
            serve(stream, &shared).await;
        });
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Reads frames until EOF, an error, a bad frame or stop.
async fn serve(stream: TcpStream, shared: &Shared) {
    let cap = shared.cfg.max_message_bytes;
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let mut frame = Vec::new();
    let mut batch = Batcher::new(shared.cfg.source, shared.queue.clone());
    while !shared.stop.load(Ordering::Acquire) {
        if r.buffer().is_empty() {
            // Waiting for a frame's first byte (`fill_buf` is cancel-safe): a quiet
            // connection still flushes its batch and notices a stop.
            match tokio::time::timeout(FLUSH_AFTER, r.fill_buf()).await {
                Err(_) => {
                    batch.flush();
                    continue;
                }
                Ok(Ok([])) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
            }
        }
        // A frame is read whole (reading is not cancel-safe mid-frame), unless we stop.
        let got = tokio::select! {
            got = next_frame(&mut r, cap, &mut frame) => got,
            () = stopped(shared) => break,
        };
        match got {
            Ok(true) => shared.handle(&frame, &mut batch),
            Ok(false) | Err(FrameErrorOrIo::Io) => break,
            Err(FrameErrorOrIo::Frame(e)) => {
                match e {
                    FrameError::TooLong => shared.counters.too_long.inc(),
                    FrameError::BadLength => shared.counters.malformed.inc(),
                }
                break;
            }
        }
        if r.buffer().is_empty() || batch.due() {
            batch.flush();
        }
    }
    batch.flush();
}

/// Resolves once the source is asked to stop.
async fn stopped(shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        tokio::time::sleep(STOP_CHECK).await;
    }
}

/// A bad frame, or the connection failed (reset, EOF inside a frame).
enum FrameErrorOrIo {
    Frame(FrameError),
    Io,
}

impl From<std::io::Error> for FrameErrorOrIo {
    fn from(_: std::io::Error) -> Self {
        FrameErrorOrIo::Io
    }
}

/// Reads the next frame into `out`: `Ok(false)` at a clean EOF. Not cancel-safe once a
/// byte of the frame was consumed.
async fn next_frame<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    cap: usize,
    out: &mut Vec<u8>,
) -> Result<bool, FrameErrorOrIo> {
    out.clear();
    let first = match r.fill_buf().await?.first() {
        None => return Ok(false),
        Some(&b) => b,
    };
    if first.is_ascii_digit() {
        let len = octet_count(r).await?;
        if len > cap {
            return Err(FrameErrorOrIo::Frame(FrameError::TooLong));
        }
        out.resize(len, 0);
        r.read_exact(out).await?;
        return Ok(true);
    }
    newline_frame(r, cap, out).await?;
    Ok(true)
}

/// `LEN SP`: at most 10 digits.
async fn octet_count<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<usize, FrameErrorOrIo> {
    let mut len: usize = 0;
    for _ in 0..=10 {
        let b = r.read_u8().await?;
        match b {
            b'0'..=b'9' => len = len * 10 + usize::from(b - b'0'),
            b' ' => return Ok(len),
            _ => break,
        }
    }
    Err(FrameErrorOrIo::Frame(FrameError::BadLength))
}

/// Up to and without the next `\n` (EOF ends the last frame too); longer than `cap`
/// without one is an error.
async fn newline_frame<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    cap: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameErrorOrIo> {
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if out.len() + take > cap + 1 {
            return Err(FrameErrorOrIo::Frame(FrameError::TooLong));
        }
        out.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            out.pop();
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], cap: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut r = BufReader::with_capacity(8, input);
        let mut out = Vec::new();
        let mut got = Vec::new();
        loop {
            match next_frame(&mut r, cap, &mut out).await {
                Ok(true) => got.push(out.clone()),
                Ok(false) => return (got, None),
                Err(FrameErrorOrIo::Frame(e)) => return (got, Some(e)),
                Err(FrameErrorOrIo::Io) => return (got, None),
            }
        }
    }

    #[tokio::test]
    async fn both_framings_on_one_stream() {
        let (got, err) = frames(b"11 <13>1 - - x<13>hello\n5 <1>ab<1>tail", 100).await;
        assert_eq!(
            got,
            vec![&b"<13>1 - - x"[..], b"<13>hello", b"<1>ab", b"<1>tail"]
        );
        assert_eq!(err, None);
    }

    #[tokio::test]
    async fn over_long_frames_and_bad_lengths_close() {
        assert_eq!(frames(b"999 <1>x", 100).await.1, Some(FrameError::TooLong));
        assert_eq!(frames(&[b'<'; 300], 100).await.1, Some(FrameError::TooLong));
        assert_eq!(
            frames(b"12345678901234 x", 100).await.1,
            Some(FrameError::BadLength)
        );
        assert_eq!(frames(b"12x", 100).await.1, Some(FrameError::BadLength));
        // Exactly at the cap is fine.
        let (got, err) = frames(b"<1>456789\n", 9).await;
        assert_eq!((got.len(), err), (1, None));
    }
}
