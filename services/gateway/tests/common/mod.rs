//! Shared pieces of the gateway's integration tests: a recording executor at the edge,
//! a test policy with keys and tokens, and a gateway started in-process against them.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use execbridge_api::internal::v1 as internal;
use execbridge_api::internal::v1::executor_service_server::{
    ExecutorService, ExecutorServiceServer,
};
use execbridge_api::v1;
use execbridge_gateway::GatewayConfig;
use execbridge_runtime::{Health, Shutdown, grpc};
use execbridge_testutil::{Running, server_config};
use futures::Stream;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

/// An executor that records how many calls reached it and fills every order.
#[derive(Clone, Default)]
pub struct RecordingExecutor {
    pub calls: Arc<AtomicUsize>,
}

impl RecordingExecutor {
    pub fn count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn hit(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

type Updates =
    Pin<Box<dyn Stream<Item = Result<internal::SubscribeOrderUpdatesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExecutorService for RecordingExecutor {
    async fn submit_order(
        &self,
        r: Request<internal::SubmitOrderRequest>,
    ) -> Result<Response<internal::SubmitOrderResponse>, Status> {
        self.hit();
        let order = r.into_inner().request.and_then(|r| r.order);
        Ok(Response::new(internal::SubmitOrderResponse {
            response: Some(v1::SubmitOrderResponse {
                order: Some(v1::Order {
                    order_id: "s0-1".into(),
                    request: order,
                    status: v1::OrderStatus::Filled as i32,
                    ..Default::default()
                }),
                duplicate: false,
            }),
        }))
    }
    async fn submit_order_batch(
        &self,
        r: Request<internal::SubmitOrderBatchRequest>,
    ) -> Result<Response<internal::SubmitOrderBatchResponse>, Status> {
        // Counted per order: a batch of n orders is n orders reaching the executor.
        let orders = r.into_inner().orders;
        let results = orders
            .into_iter()
            .enumerate()
            .map(|(i, order)| {
                self.hit();
                v1::OrderResult {
                    index: u32::try_from(i).unwrap(),
                    client_order_id: order.client_order_id.clone(),
                    outcome: Some(v1::order_result::Outcome::Order(v1::Order {
                        order_id: format!("s0-{}", i + 1),
                        request: Some(order),
                        status: v1::OrderStatus::Filled as i32,
                        ..Default::default()
                    })),
                    duplicate: false,
                }
            })
            .collect();
        Ok(Response::new(internal::SubmitOrderBatchResponse {
            results,
        }))
    }
    async fn cancel_order(
        &self,
        _: Request<internal::CancelOrderRequest>,
    ) -> Result<Response<internal::CancelOrderResponse>, Status> {
        self.hit();
        Ok(Response::new(internal::CancelOrderResponse {
            response: Some(Default::default()),
        }))
    }
    async fn cancel_all(
        &self,
        _: Request<internal::CancelAllRequest>,
    ) -> Result<Response<internal::CancelAllResponse>, Status> {
        self.hit();
        Ok(Response::new(internal::CancelAllResponse {
            response: Some(Default::default()),
        }))
    }
    async fn get_order(
        &self,
        _: Request<internal::GetOrderRequest>,
    ) -> Result<Response<internal::GetOrderResponse>, Status> {
        self.hit();
        Ok(Response::new(internal::GetOrderResponse {
            response: Some(Default::default()),
        }))
    }
    async fn list_orders(
        &self,
        _: Request<internal::ListOrdersRequest>,
    ) -> Result<Response<internal::ListOrdersResponse>, Status> {
        self.hit();
        Ok(Response::new(internal::ListOrdersResponse {
            response: Some(Default::default()),
        }))
    }
    async fn get_trade_history(
        &self,
        _: Request<internal::GetTradeHistoryRequest>,
    ) -> Result<Response<internal::GetTradeHistoryResponse>, Status> {
        self.hit();
        Ok(Response::new(internal::GetTradeHistoryResponse {
            response: Some(Default::default()),
        }))
    }
    async fn get_positions(
        &self,
        _: Request<internal::GetPositionsRequest>,
    ) -> Result<Response<internal::GetPositionsResponse>, Status> {
        self.hit();
        Ok(Response::new(internal::GetPositionsResponse {
            response: Some(Default::default()),
        }))
    }
    async fn set_trading_state(
        &self,
        _: Request<internal::SetTradingStateRequest>,
    ) -> Result<Response<internal::SetTradingStateResponse>, Status> {
        self.hit();
        Err(Status::unimplemented("recording executor"))
    }
    async fn get_risk_limits(
        &self,
        _: Request<internal::GetRiskLimitsRequest>,
    ) -> Result<Response<internal::GetRiskLimitsResponse>, Status> {
        self.hit();
        Err(Status::unimplemented("recording executor"))
    }
    async fn set_risk_limits(
        &self,
        _: Request<internal::SetRiskLimitsRequest>,
    ) -> Result<Response<internal::SetRiskLimitsResponse>, Status> {
        self.hit();
        Err(Status::unimplemented("recording executor"))
    }
    async fn cancel_all_orders(
        &self,
        _: Request<internal::CancelAllOrdersRequest>,
    ) -> Result<Response<internal::CancelAllOrdersResponse>, Status> {
        self.hit();
        Err(Status::unimplemented("recording executor"))
    }
    async fn flatten(
        &self,
        _: Request<internal::FlattenRequest>,
    ) -> Result<Response<internal::FlattenResponse>, Status> {
        self.hit();
        Err(Status::unimplemented("recording executor"))
    }
    type SubscribeOrderUpdatesStream = Updates;
    async fn subscribe_order_updates(
        &self,
        _: Request<internal::SubscribeOrderUpdatesRequest>,
    ) -> Result<Response<Updates>, Status> {
        self.hit();
        Ok(Response::new(Box::pin(futures::stream::pending())))
    }
}

/// Starts the recording executor on a fresh port.
pub async fn recording_executor() -> (Running, RecordingExecutor) {
    let recorder = RecordingExecutor::default();
    let service = recorder.clone();
    let config = server_config();
    let running = Running::start(config.listen, move |shutdown: Shutdown| async move {
        let listener = grpc::bind(config.listen).await?;
        let (health, health_service) = Health::new(&[]).await;
        health.set_ready().await;
        let router = grpc::server(&config)
            .add_service(health_service)
            .add_service(ExecutorServiceServer::new(service));
        grpc::serve(router, listener, health, shutdown)
            .await
            .map_err(std::io::Error::other)
    })
    .await;
    (running, recorder)
}

pub const TRADER_KEY: &str = "trader-key-0123456789abcdef0123456789abcdef";
pub const READER_KEY: &str = "reader-key-0123456789abcdef0123456789abcdef";
pub const LIVE_KEY: &str = "live-key-0123456789abcdef0123456789abcdef";
pub const SLOW_KEY: &str = "slow-key-0123456789abcdef0123456789abcdef";
pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "execbridge";
pub const USDC: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
pub const WSOL: &str = "So11111111111111111111111111111111111111112";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn sha(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The test policy: four principals, three JWT keys, a spot and a swap venue.
pub fn policy_toml(slow_burst: u32) -> String {
    let f = fixtures();
    format!(
        r#"
allow_anonymous = false
max_concurrent_calls = 1000
max_concurrent_streams = 100

[[principals]]
name = "trader"
permissions = ["trade:paper", "orders:read", "marketdata:read"]
accounts = ["acct-1"]
# Load tests run as the trader: room for a fast machine (the "slow" principal is the one
# whose limits are tested).
[principals.limits]
submit = {{ per_second = 100000, burst = 100000 }}
cancel = {{ per_second = 100000, burst = 100000 }}
read = {{ per_second = 100000, burst = 100000 }}
stream = {{ per_second = 1000, burst = 1000 }}

[[principals]]
name = "reader"
permissions = ["orders:read"]
accounts = ["acct-1"]

[[principals]]
name = "live-trader"
permissions = ["trade:paper", "trade:live", "orders:read"]
accounts = ["*"]

[[principals]]
name = "slow"
permissions = ["trade:paper", "orders:read"]
accounts = ["acct-1"]
[principals.limits]
submit = {{ per_second = 1, burst = {slow_burst} }}
cancel = {{ per_second = 100, burst = 100 }}
read = {{ per_second = 100, burst = 100 }}
stream = {{ per_second = 10, burst = 10 }}

[[api_keys]]
principal = "trader"
sha256 = "{trader}"
[[api_keys]]
principal = "reader"
sha256 = "{reader}"
[[api_keys]]
principal = "live-trader"
sha256 = "{live}"
[[api_keys]]
principal = "slow"
sha256 = "{slow}"

[jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway_secs = 0
keys = [
  {{ kid = "hs", algorithm = "HS256", key_file = "{hs}" }},
  {{ kid = "rs", algorithm = "RS256", key_file = "{rs}" }},
  {{ kid = "ed", algorithm = "EdDSA", key_file = "{ed}" }},
]

[[instruments]]
venue = "paper"
symbol = "BTC-USDT"
tick_size = "0.01"
lot_size = "0.0001"
min_notional = "10"
max_quantity = "100"

[[instruments]]
venue = "paper"
symbol = "DIS-USDT"
enabled = false
tick_size = "0.01"
lot_size = "0.01"

[[instruments]]
venue = "jupiter"
symbol = "{WSOL}/{USDC}"
kind = "swap"
tick_size = "0.000001"
lot_size = "0.000001"
"#,
        trader = sha(TRADER_KEY),
        reader = sha(READER_KEY),
        live = sha(LIVE_KEY),
        slow = sha(SLOW_KEY),
        hs = f.join("hs256.secret").display(),
        rs = f.join("rsa_public.pem").display(),
        ed = f.join("ed25519_public.pem").display(),
    )
}

/// Starts a gateway with the policy at `policy` in front of `executor`.
pub async fn gateway(executor: &str, policy: &Path) -> Running {
    gateway_with(executor, policy, |_| {}).await.0
}

/// [`gateway`] with its configuration changed by `configure`; also returns the admin
/// address (`/metrics`).
pub async fn gateway_with(
    executor: &str,
    policy: &Path,
    configure: impl FnOnce(&mut GatewayConfig),
) -> (Running, std::net::SocketAddr) {
    let mut config = GatewayConfig {
        server: server_config(),
        ..Default::default()
    };
    config.executor.endpoint = executor.to_owned();
    config.marketdata.endpoint = executor.to_owned();
    config.policy.file = policy.display().to_string();
    config.policy.reload_interval_ms = 100;
    configure(&mut config);
    let admin = config.server.admin_listen;
    let running =
        Running::start(config.server.listen, |s| execbridge_gateway::run(config, s)).await;
    (running, admin)
}

/// The Prometheus text the admin port at `admin` serves.
pub async fn scrape(admin: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(admin).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).await.unwrap();
    text
}

/// The value of the series `series` (name and labels, as printed) in `text`, 0 if absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signed token with the given claims; `kid` picks the fixture key.
pub fn token(kid: &str, alg: jsonwebtoken::Algorithm, claims: serde_json::Value) -> String {
    let f = fixtures();
    let key = match alg {
        jsonwebtoken::Algorithm::HS256 => {
            jsonwebtoken::EncodingKey::from_secret(&std::fs::read(f.join("hs256.secret")).unwrap())
        }
        jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(
            &std::fs::read(f.join("rsa_private.pem")).unwrap(),
        )
        .unwrap(),
        jsonwebtoken::Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(
            &std::fs::read(f.join("ed25519_private.pem")).unwrap(),
        )
        .unwrap(),
        other => panic!("no fixture for {other:?}"),
    };
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// Standard valid claims for `sub`.
pub fn claims(sub: &str) -> serde_json::Value {
    serde_json::json!({ "sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300, "nbf": now() - 10 })
}
