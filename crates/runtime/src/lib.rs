//! What every execbridge service shares, so each `main.rs` stays a few lines.
//!
//! # Layout
//! - [`config`]: typed configuration from defaults, a TOML file and environment overrides,
//!   validated before anything binds.
//! - [`shutdown`]: the one shutdown signal and the drain that follows it.
//! - [`health`]: gRPC health and readiness, shared by the gRPC server and the admin port.
//! - [`admin`]: the admin HTTP port (`/healthz`, `/readyz`, `/metrics`).
//! - [`grpc`]: listener and tonic server setup with the limits every service needs.
//! - [`metrics`]: gRPC call metrics (a wrapper per service) and certificate expiry.
//! - [`telemetry`]: structured logging.
//! - [`tracing_otel`]: OpenTelemetry traces over OTLP and W3C context propagation.
//! - [`tls`]: native mTLS: hot-reloaded rustls configuration, peer identity, the client
//!   connector.
//! - [`cli`]: the thin-binary entry point: parse, validate, run, drain.

pub mod admin;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod tracing_otel;

pub use config::{ConfigError, LogConfig, ServerConfig, Validate};
pub use health::Health;
pub use shutdown::Shutdown;
