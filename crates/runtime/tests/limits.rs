//! The connection limits of the shared server setup are in force: a header block over
//! `server.max_header_list_bytes` is refused before any handler runs, and connections are
//! recycled after `server.max_connection_age_secs` in plaintext (mesh) mode too.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use execbridge_runtime::{Health, ServerConfig, Shutdown, grpc};
use execbridge_testutil::counted_channel;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

async fn start(config: ServerConfig) -> (SocketAddr, Shutdown) {
    let listener = grpc::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (health, service) = Health::new(&[]).await;
    health.set_ready().await;
    let shutdown = Shutdown::new();
    let router = grpc::server(&config).add_service(service);
    let acceptor = grpc::Acceptor::new(listener, None, &config);
    let stop = shutdown.clone();
    tokio::spawn(async move { grpc::serve_on(router, acceptor, health, stop).await });
    (addr, shutdown)
}

async fn check_with_padding(channel: Channel, padding: usize) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-padding", "a".repeat(padding).parse().unwrap());
    HealthClient::new(channel).check(request).await.map(|_| ())
}

#[tokio::test]
async fn a_header_list_over_the_limit_is_refused_and_one_under_it_is_served() {
    let config = ServerConfig {
        max_header_list_bytes: 8 * 1024,
        ..ServerConfig::default()
    };
    let (addr, shutdown) = start(config).await;
    let (channel, _) = counted_channel(addr);
    check_with_padding(channel.clone(), 4 * 1024).await.unwrap();
    // Under hyper's default limit (16 KiB), so only the configured one refuses it.
    let refused = check_with_padding(channel.clone(), 12 * 1024).await;
    assert!(
        refused.is_err(),
        "a 12 KiB header block passed a limit of 8 KiB"
    );
    // The connection (or a new one) still serves well-formed calls.
    check_with_padding(channel, 1024).await.unwrap();
    shutdown.trigger();
}

#[tokio::test]
async fn connections_are_recycled_after_their_maximum_age_in_plaintext_too() {
    let config = ServerConfig {
        max_connection_age_secs: 1,
        ..ServerConfig::default()
    };
    let (addr, shutdown) = start(config).await;
    let (channel, connections) = counted_channel(addr);
    check_with_padding(channel.clone(), 1).await.unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    check_with_padding(channel, 1).await.unwrap();
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "the connection outlived its maximum age"
    );
    shutdown.trigger();
}
