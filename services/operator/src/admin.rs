//! The admin HTTP port: `/healthz`, `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::metrics::Metrics;

/// Serves the admin endpoints on `addr` until the process ends.
///
/// # Errors
/// The listener could not bind or the server failed.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { metrics.render() }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin listening");
    axum::serve(listener, app).await
}
