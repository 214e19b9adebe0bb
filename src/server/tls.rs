//! Optional TLS for the HTTP server: rustls (ring) from PEM files, and a listener that runs
//! handshakes beside the accept loop so one slow or silent client cannot stall the others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

/// Why the TLS files could not be used; names the config key and the file, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of `tls_cert` and `tls_key` is set.
    #[error("server.{missing} is required when server.{given} is set")]
    Half {
        /// The key that is set.
        given: &'static str,
        /// The key that is missing.
        missing: &'static str,
    },
    /// A file could not be read or holds no usable PEM item.
    #[error("server.{key} = {}: {reason}", path.display())]
    File {
        /// `tls_cert` or `tls_key`.
        key: &'static str,
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("server.tls_cert = {} with server.tls_key = {}: {reason}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// The acceptor for `[server]`, or `None` when TLS is not configured.
pub fn from_config(cfg: &ServerConfig) -> Result<Option<TlsAcceptor>, TlsError> {
    match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(TlsError::Half {
            given: "tls_cert",
            missing: "tls_key",
        }),
        (None, Some(_)) => Err(TlsError::Half {
            given: "tls_key",
            missing: "tls_cert",
        }),
        (Some(cert), Some(key)) => acceptor(cert, key).map(Some),
    }
}

/// Loads a PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1) into an acceptor
/// that speaks HTTP/1.1 over TLS 1.2 or 1.3.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = read_chain(cert)?;
    let private = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair = |e: rustls::Error| TlsError::Pair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(pair)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(pair)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn file_error(key: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_error("tls_cert", path, e))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("tls_cert", path, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(
            "tls_cert",
            path,
            "no \"BEGIN CERTIFICATE\" block found",
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_error("tls_key", path, e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => file_error(
            "tls_key",
            path,
            "no \"BEGIN PRIVATE KEY\" (or RSA / EC PRIVATE KEY) block found",
        ),
        e => file_error("tls_key", path, format!("bad PEM: {e}")),
    })
}

/// Accepted TLS connections for `axum::serve`: a background task accepts TCP and runs each
/// handshake in its own task (bounded in time and number); finished ones queue here.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener`; must be called inside a tokio runtime.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let task = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener { ready, addr, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Serving stopped: stop accepting too, which closes the socket.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning (as axum does).
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task only ends when aborted by our own drop, so this is not reached
            // while serving; wait forever rather than spin.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cert: Option<&str>, key: Option<&str>) -> ServerConfig {
        ServerConfig {
            tls_cert: cert.map(PathBuf::from),
            tls_key: key.map(PathBuf::from),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn off_unless_both_files_are_set() {
        assert!(matches!(from_config(&cfg(None, None)), Ok(None)));
        let half = from_config(&cfg(Some("/c.pem"), None))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            half.as_deref(),
            Some("server.tls_key is required when server.tls_cert is set")
        );
        let half = from_config(&cfg(None, Some("/k.pem")))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            half.as_deref(),
            Some("server.tls_cert is required when server.tls_key is set")
        );
    }

    #[test]
    fn unreadable_files_name_the_key_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = acceptor(&missing, &missing).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.starts_with("server.tls_cert = "), "{e}");
        assert!(e.contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = acceptor(&empty, &empty).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("no \"BEGIN CERTIFICATE\""));
    }
}
