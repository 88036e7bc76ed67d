//! The three services in native TLS mode, in process: client → gateway, gateway →
//! executor and executor → marketdata all run over mTLS with certificates from this
//! crate, and the client certificate's SPIFFE id is the principal the gateway admits.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use execbridge_api::v1::execution_service_client::ExecutionServiceClient;
use execbridge_api::v1::*;
use execbridge_devcerts::{Ca, Leaf, spiffe_id, write_identity};
use execbridge_runtime::config::{TlsConfig, TlsMode};
use execbridge_runtime::grpc;
use execbridge_runtime::tls::{TlsContext, TlsFiles};
use execbridge_runtime::{ServerConfig, Shutdown};
use execbridge_testutil::server_config;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const DAY: Duration = Duration::from_secs(86_400);

fn native(dir: &Path, name: &str) -> ServerConfig {
    let files = TlsFiles::in_dir(&dir.join(name));
    ServerConfig {
        tls: TlsConfig {
            mode: TlsMode::Native,
            cert_file: files.cert.display().to_string(),
            key_file: files.key.display().to_string(),
            ca_file: files.ca.display().to_string(),
            reload_interval_ms: 100,
            ..TlsConfig::default()
        },
        ..server_config()
    }
}

fn channel(addr: SocketAddr, client: &TlsContext) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5));
    grpc::channel_lazy(endpoint, Some(client), "").unwrap()
}

async fn wait_serving(addr: SocketAddr, client: &TlsContext) {
    let start = Instant::now();
    loop {
        let status = HealthClient::new(channel(addr, client))
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status);
        if status.is_ok_and(|s| s == ServingStatus::Serving as i32) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{addr} not serving over mTLS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn policy(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        format!(
            r#"
allow_anonymous = false

[[principals]]
name = "{orchestrator}"
permissions = ["trade:paper", "orders:read", "marketdata:read"]
accounts = ["acct"]

[[instruments]]
venue = "paper"
symbol = "BTC-USDT"
tick_size = "0.01"
lot_size = "0.0001"
min_notional = "10"
max_quantity = "100"
"#,
            orchestrator = spiffe_id("orchestrator")
        ),
    )
    .unwrap();
    path
}

fn market(id: &str) -> SubmitOrderRequest {
    SubmitOrderRequest {
        order: Some(OrderRequest {
            client_order_id: id.into(),
            account: "acct".into(),
            venue: "paper".into(),
            mode: TradingMode::Paper as i32,
            symbol: "BTC-USDT".into(),
            side: Side::Buy as i32,
            r#type: OrderType::Market as i32,
            quantity: "0.25".into(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_runs_over_mtls_and_the_certificate_identity_is_the_gateway_principal() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("stack CA", DAY).unwrap();
    for name in [
        "gateway",
        "executor",
        "marketdata",
        "orchestrator",
        "stranger",
    ] {
        let issued = ca.issue(&Leaf::dev(name, DAY)).unwrap();
        write_identity(&dir.path().join(name), &issued, &ca.cert_pem()).unwrap();
    }
    let client =
        TlsContext::load(TlsFiles::in_dir(&dir.path().join("orchestrator")), true).unwrap();
    let shutdown = Shutdown::new();

    let mut md = execbridge_marketdata::MarketdataConfig {
        server: native(dir.path(), "marketdata"),
        ..Default::default()
    };
    md.feed.tick_interval_ms = 10;
    let md_addr = md.server.listen;
    let stop = shutdown.clone();
    tokio::spawn(async move { execbridge_marketdata::run(md, stop).await.unwrap() });
    wait_serving(md_addr, &client).await;

    let mut ex = execbridge_executor::ExecutorConfig {
        server: native(dir.path(), "executor"),
        ..Default::default()
    };
    ex.marketdata.endpoint = format!("http://{md_addr}");
    ex.journal.dir = dir.path().join("journal");
    let ex_addr = ex.server.listen;
    let stop = shutdown.clone();
    tokio::spawn(async move { execbridge_executor::run(ex, stop).await.unwrap() });
    // Ready only once prices arrived over the executor → marketdata mTLS hop.
    wait_serving(ex_addr, &client).await;

    let mut gw = execbridge_gateway::GatewayConfig {
        server: native(dir.path(), "gateway"),
        ..Default::default()
    };
    gw.executor.endpoint = format!("http://{ex_addr}");
    gw.marketdata.endpoint = format!("http://{md_addr}");
    gw.policy.file = policy(dir.path()).display().to_string();
    let gw_addr = gw.server.listen;
    let stop = shutdown.clone();
    tokio::spawn(async move { execbridge_gateway::run(gw, stop).await.unwrap() });
    wait_serving(gw_addr, &client).await;

    // No API key, no token: the certificate is the credential.
    let placed = ExecutionServiceClient::new(channel(gw_addr, &client))
        .submit_order(market("tls-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        placed.order.unwrap().request.unwrap().client_order_id,
        "tls-1"
    );

    // A valid certificate whose identity has no principal.
    let stranger = TlsContext::load(TlsFiles::in_dir(&dir.path().join("stranger")), true).unwrap();
    let refused = ExecutionServiceClient::new(channel(gw_addr, &stranger))
        .submit_order(market("tls-2"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Plaintext to the gateway's TLS port.
    let plain = Endpoint::from_shared(format!("http://{gw_addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    assert!(
        ExecutionServiceClient::new(plain)
            .submit_order(market("tls-3"))
            .await
            .is_err()
    );

    shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(200)).await;
}
