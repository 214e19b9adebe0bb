//! HTTP server: `/metrics`, `/healthz`, `/readyz`, and the admin API ([`admin`]); plain HTTP,
//! or HTTPS when `[server] tls_cert` and `tls_key` are set ([`tls`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

pub mod admin;
pub mod alertmanager;
pub mod authz;
pub mod slot;
pub mod tls;

pub use slot::AdminSlot;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// The registry to render.
    pub metrics: Metrics,
    /// Released once sources are open and state is loaded.
    pub ready: Arc<AtomicBool>,
}

/// The router with every endpoint.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// 503 until sources are open and state is loaded, and while state cannot be written (a
/// read-only or full state directory: detection and `/metrics` keep working, but a crash
/// would lose what was learned since the last good write, so an operator must look).
async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if !s.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string());
    }
    match s.metrics.state_unwritable() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: state cannot be written ({why})\n"),
        ),
    }
}

/// A bound listener, so the caller learns the real port (e.g. when configured as `:0`)
/// before serving starts.
pub struct Server {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Server> {
        Ok(Server {
            listener: tokio::net::TcpListener::bind(addr).await?,
            tls: None,
        })
    }

    /// Serves HTTPS with `acceptor` instead of HTTP (`None` keeps plain HTTP); see
    /// [`tls::from_config`].
    pub fn with_tls(self, acceptor: Option<tokio_rustls::TlsAcceptor>) -> Server {
        Server {
            tls: acceptor,
            ..self
        }
    }

    /// True when serving HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn serve(
        self,
        state: AppState,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_with(state, Router::new(), shutdown).await
    }

    /// Like [`Server::serve`], with `extra` routes merged in (the admin API:
    /// `server::admin::routes`).
    pub async fn serve_with(
        self,
        state: AppState,
        extra: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = router(state).merge(extra);
        match self.tls {
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Some(acceptor) => {
                let listener = tls::TlsListener::new(self.listener, acceptor)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
    }
}
