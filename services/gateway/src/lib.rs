//! execbridge gateway: the only door to the executors.
//!
//! # Layout
//! - [`config`]: the service's configuration.
//! - [`execution`]: the public `ExecutionService`, forwarding to the executor.
//! - [`market_data`]: the public `MarketDataService`, proxied to marketdata.
//! - [`admin_service`]: the public `AdminService` (kill switch, risk limits), forwarded.
//! - [`admission`]: the gate every call passes: concurrency, authentication, rate limits,
//!   permissions; built from [`policy`] ([`auth`], [`limits`]) and hot-reloaded by
//!   [`reload`].
//! - [`validate`]: orders against the instrument registry.
//! - [`routing`]: accounts to executor shards, a circuit breaker per shard.
//! - [`deadline`]: the caller's deadline carried to the upstream call.
//! - [`error`]: the one mapping of errors to gRPC statuses.
//! - [`audit`]: authentication attempts and admission decisions.

pub mod admin_service;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod config;
pub mod deadline;
pub mod error;
pub mod execution;
pub mod limits;
pub mod market_data;
pub mod policy;
pub mod reload;
pub mod routing;
pub mod validate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use execbridge_api::internal::v1::executor_service_client::ExecutorServiceClient;
use execbridge_api::v1::admin_service_server::{self, AdminServiceServer};
use execbridge_api::v1::execution_service_server::{self, ExecutionServiceServer};
use execbridge_api::v1::market_data_service_client::MarketDataServiceClient;
use execbridge_api::v1::market_data_service_server::{self, MarketDataServiceServer};
use execbridge_runtime::tls::TlsContext;
use execbridge_runtime::{Health, Shutdown, admin, grpc};
use tonic::transport::{Channel, Endpoint};

pub use config::GatewayConfig;

/// Why the gateway stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A port could not be bound.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The gRPC server failed, or an upstream endpoint is malformed.
    #[error("gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection descriptors did not load.
    #[error("reflection: {0}")]
    Reflection(#[from] grpc::ReflectionError),
    /// The policy did not compile.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// Native TLS material did not load.
    #[error("TLS: {0}")]
    Tls(#[from] execbridge_runtime::tls::TlsError),
}

/// A lazily connecting channel: the gateway starts whether or not its upstreams are up,
/// and reconnects on its own; over mTLS in native mode.
fn channel(
    upstream: &config::UpstreamConfig,
    tls: Option<&TlsContext>,
    server_name: &str,
) -> Result<Channel, Error> {
    let endpoint = Endpoint::from_shared(upstream.endpoint.clone())?
        .connect_timeout(Duration::from_millis(upstream.connect_timeout_ms))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(grpc::channel_lazy(endpoint, tls, server_name)?)
}

/// Runs the gateway until `shutdown`.
///
/// # Errors
/// [`Error`] when a port cannot be bound or the server fails.
pub async fn run(config: GatewayConfig, shutdown: Shutdown) -> Result<(), Error> {
    // Native TLS material loads before anything binds: without it the gateway must not run.
    let tls = TlsContext::from_config(&config.server.tls)?;
    let listener = grpc::bind(config.server.listen).await?;
    let admin_listener = grpc::bind(config.server.admin_listen).await?;
    let registry = prometheus::Registry::new();
    let rpc = execbridge_runtime::metrics::register(&registry);
    let (health, health_service) = Health::new(&[
        execution_service_server::SERVICE_NAME,
        admin_service_server::SERVICE_NAME,
        market_data_service_server::SERVICE_NAME,
    ])
    .await;
    let compiled = if config.policy.file.is_empty() {
        tracing::warn!("no policy file: the development policy lets anonymous callers paper-trade");
        admission::Compiled::new(policy::PolicyFile::default().compile(std::path::Path::new("."))?)
    } else {
        reload::load(std::path::Path::new(&config.policy.file))?
    };
    let admission = Arc::new(
        admission::Admission::new(compiled, admission::Metrics::register(&registry))
            .with_max_auth_failures_per_connection(config.auth.max_failures_per_connection),
    );
    if !config.policy.file.is_empty() {
        tokio::spawn(reload::watch(
            PathBuf::from(&config.policy.file),
            admission.clone(),
            Duration::from_millis(config.policy.reload_interval_ms),
            shutdown.clone(),
        ));
    }
    admin::spawn(admin_listener, health.clone(), registry, shutdown.clone());
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(
            Duration::from_millis(config.server.tls.reload_interval_ms),
            shutdown.clone(),
        ));
    }
    let server_name = config.server.tls.server_name.as_str();

    let execution = execution::Execution::new(
        admission.clone(),
        Arc::new(routing::Shards::new(
            config
                .shards()
                .into_iter()
                .map(|(id, upstream)| {
                    Ok(routing::Shard {
                        id,
                        client: ExecutorServiceClient::new(channel(
                            &upstream,
                            tls.as_ref(),
                            server_name,
                        )?),
                        breaker: routing::Breaker::new(
                            config.breaker.failure_threshold,
                            Duration::from_millis(config.breaker.cooldown_ms),
                        ),
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?,
        )),
        Duration::from_millis(config.executor.default_timeout_ms),
        shutdown.clone(),
    );
    let market_data = market_data::MarketDataProxy::new(
        admission,
        MarketDataServiceClient::new(channel(&config.marketdata, tls.as_ref(), server_name)?),
        shutdown.clone(),
    );
    let (reflection_v1, reflection_v1alpha) =
        grpc::reflection(&execbridge_api::public_descriptor_set())?;
    // mTLS principals reach admission as `PeerIdentity` (certificate URI SAN, else CN).
    let peers = grpc::PeerLayer::identity(|identity, extensions| {
        extensions.insert(admission::PeerIdentity(identity.to_owned()));
    });
    let (decoding, encoding) = (
        config.server.max_decoding_message_bytes,
        config.server.max_encoding_message_bytes,
    );
    let router = grpc::server_with(&config.server, peers)
        .add_service(rpc.wrap(health_service))
        .add_service(rpc.wrap(reflection_v1))
        .add_service(rpc.wrap(reflection_v1alpha))
        .add_service(
            rpc.wrap(
                AdminServiceServer::new(execution.clone())
                    .max_decoding_message_size(decoding)
                    .max_encoding_message_size(encoding),
            ),
        )
        .add_service(
            rpc.wrap(
                ExecutionServiceServer::new(execution)
                    .max_decoding_message_size(decoding)
                    .max_encoding_message_size(encoding),
            ),
        )
        .add_service(
            rpc.wrap(
                MarketDataServiceServer::new(market_data)
                    .max_decoding_message_size(decoding)
                    .max_encoding_message_size(encoding),
            ),
        );
    health.set_ready().await;
    let acceptor = grpc::Acceptor::new(listener, tls, &config.server);
    grpc::serve_on(router, acceptor, health, shutdown).await?;
    Ok(())
}
