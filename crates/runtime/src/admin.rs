//! The admin HTTP port: liveness, readiness, Prometheus metrics and the log level.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::{Health, Shutdown};

#[derive(Clone)]
struct AdminState {
    health: Health,
    registry: Registry,
}

/// Serves the admin routes on `listener` until `shutdown`.
///
/// - `GET /healthz`: 200 while the process runs (liveness).
/// - `GET /readyz`: 200 when ready for traffic, 503 otherwise (also during the drain).
/// - `GET /metrics`: the registry in Prometheus text format.
/// - `GET /loglevel`: the log filter in force; `PUT /loglevel` with an `EnvFilter`
///   directive as the body ("debug", "info,execbridge_gateway=trace") replaces it until
///   the next change or restart (400 for an invalid directive, the old one stays).
///
/// The admin port has no authentication: bind it to loopback or a pod-local address, and
/// let the network policy keep it from callers.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    registry: Registry,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/loglevel", get(log_level).put(set_log_level))
        .with_state(AdminState { health, registry });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.wait_owned())
        .await
}

/// Binds nothing: spawns [`serve`] on an already bound `listener`, logging its end.
pub fn spawn(listener: TcpListener, health: Health, registry: Registry, shutdown: Shutdown) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin HTTP listening");
    }
    tokio::spawn(async move {
        if let Err(e) = serve(listener, health, registry, shutdown).await {
            tracing::error!(error = %e, "admin HTTP server failed");
        }
    });
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// `execbridge_ready`: 1 when ready, 0 otherwise, read when scraped (what `/readyz` says,
/// for alert rules).
fn ready_family(ready: bool) -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::core::Collector as _;
    match prometheus::IntGauge::new(
        "execbridge_ready",
        "1 when the process is ready for traffic (GET /readyz is 200), 0 otherwise",
    ) {
        Ok(gauge) => {
            gauge.set(i64::from(ready));
            gauge.collect()
        }
        Err(_) => Vec::new(),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    let mut families = state.registry.gather();
    families.extend(ready_family(state.health.is_ready()));
    match encoder.encode(&families, &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            e.to_string().into_bytes(),
        ),
    }
}

async fn log_level() -> impl IntoResponse {
    format!("{}\n", crate::telemetry::level())
}

async fn set_log_level(body: String) -> impl IntoResponse {
    let directive = body.trim();
    match crate::telemetry::set_level(directive) {
        Ok(()) => {
            tracing::warn!(
                level = directive,
                "log level changed through the admin port"
            );
            (StatusCode::OK, format!("{directive}\n"))
        }
        Err(e @ crate::telemetry::LevelError::Invalid(_)) => {
            (StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")),
    }
}
