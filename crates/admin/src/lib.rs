//! pgpilot's admin HTTP API: health probes, Prometheus metrics and JSON
//! views of the pools, the servers and query insight. One file per resource:
//! [`health`] (`/health/live`, `/health/ready`), [`metrics`] (`/metrics`),
//! [`pools`] (`/api/pools`), [`backends`] (`/api/backends`) and [`insight`]
//! (`/api/queries`, `/api/findings`, `/api/endpoints`, `/api/slow`).
//!
//! The API reads the proxy's [`Runtime`] it is handed (pool snapshots,
//! proxy counters, live settings, query insight); only `/api/backends`
//! changes proxy state (adding, draining, removing servers). The
//! readiness probe is the one route that touches PostgreSQL, and it caches
//! its answer so scrapers cannot turn it into load on the database.

pub mod backends;
pub mod cache;
pub mod error;
pub mod health;
pub mod insight;
pub mod metrics;
pub mod pools;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pgpilot_proxy::Runtime;
use tokio::net::TcpListener;

pub use error::{Error, Result};

/// What every handler is given: the proxy's runtime and the readiness cache.
pub struct AdminState {
    /// The running proxy whose figures are served.
    pub rt: Arc<Runtime>,
    /// Last readiness answer, reused for [`health::READY_CACHE_TTL`].
    pub ready: health::ReadyCache,
}

/// Serves the admin API on `listener` until the task is dropped.
///
/// # Errors
/// Only when accepting on `listener` fails fatally; per-connection errors
/// are handled (and dropped) by the HTTP server.
pub async fn serve(rt: Arc<Runtime>, listener: TcpListener) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    axum::serve(listener, router(rt)).await
}

/// The admin routes over `rt`, without a listener (tests drive it directly
/// or bind it themselves). Unknown paths answer 404 `{"error":"not found"}`.
pub fn router(rt: Arc<Runtime>) -> Router {
    let state = Arc::new(AdminState {
        rt,
        ready: health::ReadyCache::default(),
    });
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::handler))
        .route("/api/pools", get(pools::handler))
        .route("/api/backends", get(backends::list).post(backends::add))
        .route(
            "/api/backends/{id}/drain",
            axum::routing::post(backends::drain),
        )
        .route(
            "/api/backends/{id}",
            axum::routing::delete(backends::remove),
        )
        .route("/api/cache", get(cache::summary))
        .route("/api/cache/entries", get(cache::entries))
        .route("/api/cache/shapes", get(cache::shapes))
        .route(
            "/api/cache/invalidate",
            axum::routing::post(cache::invalidate),
        )
        .route("/api/queries", get(insight::queries))
        .route("/api/queries/{fingerprint}", get(insight::query_detail))
        .route(
            "/api/queries/{fingerprint}/explain",
            axum::routing::post(insight::explain_now),
        )
        .route(
            "/api/queries/{fingerprint}/history",
            get(insight::query_history),
        )
        .route("/api/findings", get(insight::findings))
        .route("/api/endpoints", get(insight::endpoints))
        .route("/api/slow", get(insight::slow))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    let body = serde_json::json!({ "error": "not found" });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
