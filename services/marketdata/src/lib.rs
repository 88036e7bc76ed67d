//! execbridge market data: feeds, one normalised book per symbol, and the
//! `StreamMarketData` fanout to many subscribers with snapshots, sequence numbers, status
//! frames and a slow-consumer policy per stream.
//!
//! # Layout
//! - [`config`]: the service's configuration.
//! - [`model`]: the normalised model: ticks and lots, L2 books, snapshots, deltas, trades.
//! - [`feed`]: the [`feed::Feed`] trait, the simulated feed and the venue websocket feed.
//! - [`hub`]: one book and sequence per instrument, status, and the fanout of events,
//!   encoded once, into bounded per-subscriber queues.
//! - [`service`]: the gRPC `MarketDataService` over the hub.
//! - [`metrics`]: the Prometheus metrics.

pub mod config;
pub mod feed;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod service;

use std::sync::Arc;

use execbridge_api::v1::market_data_service_server::SERVICE_NAME;
use execbridge_runtime::{Health, Shutdown, admin, grpc};

pub use config::MarketdataConfig;

/// Why the service stopped with an error.
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
    /// Native TLS material did not load.
    #[error("TLS: {0}")]
    Tls(#[from] execbridge_runtime::tls::TlsError),
}

/// The feeds `config` asks for: the simulated one (if enabled) and one per venue.
pub fn feeds(config: &MarketdataConfig) -> Vec<Box<dyn feed::Feed>> {
    let mut feeds: Vec<Box<dyn feed::Feed>> = Vec::new();
    if config.feed.enabled {
        feeds.push(Box::new(feed::sim::SimulatedFeed::new(&config.feed)));
    }
    for venue in &config.venues {
        // Validated config: json-l2 is the only protocol.
        feeds.push(Box::new(feed::ws::WebsocketFeed::new(
            venue.clone(),
            Arc::new(feed::json::JsonL2),
        )));
    }
    feeds
}

/// Registers every feed's instruments in `hub` and starts the feeds.
pub fn start_feeds(feeds: Vec<Box<dyn feed::Feed>>, hub: &Arc<Hub>, shutdown: &Shutdown) {
    for mut feed in feeds {
        feed.register(hub);
        tokio::spawn(feed.run(hub.clone(), shutdown.clone()));
    }
}

use hub::Hub;

/// Runs the service until `shutdown`: binds both ports, starts the feeds, serves.
///
/// # Errors
/// [`Error`] when a port cannot be bound or the server fails.
pub async fn run(config: MarketdataConfig, shutdown: Shutdown) -> Result<(), Error> {
    let tls = execbridge_runtime::tls::TlsContext::from_config(&config.server.tls)?;
    let listener = grpc::bind(config.server.listen).await?;
    let admin_listener = grpc::bind(config.server.admin_listen).await?;
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(
            std::time::Duration::from_millis(config.server.tls.reload_interval_ms),
            shutdown.clone(),
        ));
    }
    let registry = prometheus::Registry::new();
    let metrics = metrics::Metrics::register(&registry);
    let rpc = execbridge_runtime::metrics::register(&registry);
    let (health, health_service) = Health::new(&[SERVICE_NAME]).await;
    admin::spawn(admin_listener, health.clone(), registry, shutdown.clone());

    let hub = Arc::new(Hub::new(metrics));
    start_feeds(feeds(&config), &hub, &shutdown);

    let (reflection_v1, reflection_v1alpha) =
        grpc::reflection(&execbridge_api::public_descriptor_set())?;
    let service = service::MarketDataServer::new(
        hub,
        config.feed.default_venue.clone(),
        config.fanout.clone(),
        shutdown.clone(),
    )
    .with_message_limits(
        config.server.max_decoding_message_bytes,
        config.server.max_encoding_message_bytes,
    );
    let router = grpc::server(&config.server)
        .add_service(rpc.wrap(health_service))
        .add_service(rpc.wrap(reflection_v1))
        .add_service(rpc.wrap(reflection_v1alpha))
        .add_service(rpc.wrap(service));
    health.set_ready().await;
    let acceptor = grpc::Acceptor::new(listener, tls, &config.server);
    grpc::serve_on(router, acceptor, health, shutdown).await?;
    Ok(())
}
