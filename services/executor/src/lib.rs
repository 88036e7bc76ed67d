//! execbridge executor: owns the orders of one shard, makes every change durable in its
//! journal before anyone hears of it, checks pre-trade risk, runs orders on the paper venue,
//! publishes every change and writes the audit trail.
//!
//! # Layout
//! - [`config`]: the service's configuration.
//! - [`journal`]: the checksummed append-only log with group commit and fail-stop.
//! - [`engine`]: the shard's state; synchronous, behind one lock; replays the journal.
//! - [`snapshot`]: snapshots of that state, so a start replays only the journal after the
//!   newest, and the segments before them are deleted.
//! - [`shard`]: the engine, its journal and the asynchronous order pipeline.
//! - [`updates`]: the sequenced stream of durable order updates, resumable from the journal.
//! - [`paper`]: the paper venue's matching rules as pure functions.
//! - [`venue`]: the paper venue's own state: ledger, latency, faults.
//! - [`audit`]: the hash-chained audit trail and its sinks (SQLite, PostgreSQL, QuestDB).
//! - [`prices`]: the marketdata subscription that feeds the paper venue.
//! - [`metrics`]: orders, risk denials, journal latency and queue, feed reconnects.
//! - [`service`]: the internal `ExecutorService` and the one mapping of errors to status.

pub mod audit;
pub mod config;
pub mod engine;
pub mod journal;
pub mod metrics;
pub mod paper;
pub mod prices;
pub mod service;
pub mod shard;
pub mod snapshot;
pub mod updates;
pub mod venue;

use std::time::Duration;

use execbridge_api::internal::v1::executor_service_server::{ExecutorServiceServer, SERVICE_NAME};
use execbridge_runtime::{Health, Shutdown, admin, grpc};

pub use config::ExecutorConfig;

/// Why the executor stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A port could not be bound.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection descriptors did not load.
    #[error("reflection: {0}")]
    Reflection(#[from] grpc::ReflectionError),
    /// The journal could not be replayed or opened.
    #[error("start: {0}")]
    Start(#[from] shard::StartError),
    /// Native TLS material did not load.
    #[error("TLS: {0}")]
    Tls(#[from] execbridge_runtime::tls::TlsError),
}

/// Runs the executor until `shutdown`. It replays its journal first (not ready meanwhile)
/// and turns ready once prices arrive from marketdata.
///
/// # Errors
/// [`Error`] when a port cannot be bound, the journal cannot be replayed or the server
/// fails.
pub async fn run(config: ExecutorConfig, shutdown: Shutdown) -> Result<(), Error> {
    let tls = execbridge_runtime::tls::TlsContext::from_config(&config.server.tls)?;
    let listener = grpc::bind(config.server.listen).await?;
    let admin_listener = grpc::bind(config.server.admin_listen).await?;
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(
            Duration::from_millis(config.server.tls.reload_interval_ms),
            shutdown.clone(),
        ));
    }
    let registry = prometheus::Registry::new();
    let rpc = execbridge_runtime::metrics::register(&registry);
    metrics::register(&registry);
    let (health, health_service) = Health::new(&[SERVICE_NAME]).await;
    admin::spawn(admin_listener, health.clone(), registry, shutdown.clone());

    let opening = config.clone();
    let (shard, stats) = tokio::task::spawn_blocking(move || shard::Shard::open(&opening))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    tracing::info!(
        records = stats.records,
        last_sequence = stats.last_sequence,
        reconciled = stats.reconciled,
        elapsed_ms = stats.elapsed.as_millis() as u64,
        journal = %shard.dir.display(),
        "journal replayed"
    );
    // Fail-stop: once the journal fails, the executor is not ready again until restarted.
    let mut durable = shard.durable_watch();
    let watching = health.clone();
    tokio::spawn(async move {
        if durable.wait_for(|d| d.failed.is_some()).await.is_ok() {
            tracing::error!("journal failed: the executor is not ready and acknowledges nothing");
            watching.set_not_ready().await;
        }
    });
    tokio::spawn(shard.clone().reconcile_loop(
        Duration::from_millis(config.shard.reconcile_interval_ms.max(10)),
        shutdown.clone(),
    ));
    tokio::spawn(prices::follow(
        config.marketdata.endpoint.clone(),
        tls.clone()
            .map(|t| (t, config.server.tls.server_name.clone())),
        config.marketdata.venue.clone(),
        config.marketdata.depth,
        shard.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    let (reflection_v1, reflection_v1alpha) =
        grpc::reflection(&execbridge_api::all_descriptor_set())?;
    let router = grpc::server(&config.server)
        .add_service(rpc.wrap(health_service))
        .add_service(rpc.wrap(reflection_v1))
        .add_service(rpc.wrap(reflection_v1alpha))
        .add_service(
            rpc.wrap(
                ExecutorServiceServer::new(service::Executor::new(shard.clone(), shutdown.clone()))
                    .max_decoding_message_size(config.server.max_decoding_message_bytes)
                    .max_encoding_message_size(config.server.max_encoding_message_bytes),
            ),
        );
    let acceptor = grpc::Acceptor::new(listener, tls, &config.server);
    let served = grpc::serve_on(router, acceptor, health, shutdown).await;
    shard.close(config.shard.cancel_on_shutdown).await;
    served?;
    Ok(())
}
