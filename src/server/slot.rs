//! Admin routes that come and go: the responder role serves the admin API only while it is
//! the active responder; a standby answers 503 (the active one has the frozen set).

use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use tower::ServiceExt;

/// Where the current admin router lives (`None`: standby).
#[derive(Clone, Default)]
pub struct AdminSlot(Arc<RwLock<Option<Router>>>);

impl AdminSlot {
    /// Serves `routes` from now on (`None`: answer 503).
    pub fn set(&self, routes: Option<Router>) {
        match self.0.write() {
            Ok(mut g) => *g = routes,
            Err(p) => *p.into_inner() = routes,
        }
    }

    /// The router to merge into the server: `/api/v1/...` forwarded to the current routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/{*rest}", any(forward))
            .with_state(self.clone())
    }

    fn current(&self) -> Option<Router> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

async fn forward(State(slot): State<AdminSlot>, req: Request<Body>) -> Response {
    let Some(routes) = slot.current() else {
        let body = serde_json::json!({
            "error": "standby responder: the active responder serves the admin API"
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    };
    // A fresh request without the outer route's extensions: axum keeps the `{*rest}`
    // capture there, and the inner `/api/v1/frozen/{token}` would see two path parameters.
    let (parts, body) = req.into_parts();
    let mut fresh = Request::new(body);
    *fresh.method_mut() = parts.method;
    *fresh.uri_mut() = parts.uri;
    *fresh.version_mut() = parts.version;
    *fresh.headers_mut() = parts.headers;
    match routes.oneshot(fresh).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    async fn status(app: &Router, path: &str) -> StatusCode {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        app.clone().oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn a_standby_answers_503_and_an_active_one_serves_its_routes() {
        let slot = AdminSlot::default();
        let app = slot.router();
        assert_eq!(
            status(&app, "/api/v1/frozen").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        slot.set(Some(
            Router::new()
                .route("/api/v1/frozen", get(|| async { "[]" }))
                .route(
                    "/api/v1/frozen/{token}",
                    get(|axum::extract::Path(t): axum::extract::Path<String>| async move { t }),
                ),
        ));
        assert_eq!(status(&app, "/api/v1/frozen").await, StatusCode::OK);
        assert_eq!(status(&app, "/api/v1/frozen/tok_1").await, StatusCode::OK);
        assert_eq!(status(&app, "/api/v1/nope").await, StatusCode::NOT_FOUND);
        slot.set(None);
        assert_eq!(
            status(&app, "/api/v1/frozen").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
