//! What the gateway does to a connection and its messages: repeated authentication
//! failures close the connection they arrive on (and only that one), and a request
//! message over `server.max_decoding_message_bytes` is refused before it reaches anything.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use execbridge_api::v1::execution_service_client::ExecutionServiceClient;
use execbridge_api::v1::*;
use execbridge_testutil::counted_channel;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

fn order(client_order_id: &str) -> OrderRequest {
    OrderRequest {
        client_order_id: client_order_id.into(),
        account: "acct-1".into(),
        venue: "paper".into(),
        mode: TradingMode::Paper as i32,
        symbol: "BTC-USDT".into(),
        side: Side::Buy as i32,
        r#type: OrderType::Limit as i32,
        time_in_force: TimeInForce::Gtc as i32,
        quantity: "0.5".into(),
        price: "100.00".into(),
        ..Default::default()
    }
}

async fn submit(
    channel: &Channel,
    key: &str,
    order: OrderRequest,
) -> Result<SubmitOrderResponse, tonic::Status> {
    let mut request = tonic::Request::new(SubmitOrderRequest { order: Some(order) });
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    ExecutionServiceClient::new(channel.clone())
        .submit_order(request)
        .await
        .map(tonic::Response::into_inner)
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

const CLOSED_FOR_AUTH: &str = "gateway_connections_closed_total{reason=\"auth_failures\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_authentication_failures_close_that_connection_and_no_other() {
    let (executor, recorder) = recording_executor().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, policy_toml(5)).unwrap();
    let (gateway, admin) = gateway_with(&executor.endpoint(), &policy, |c| {
        c.auth.max_failures_per_connection = 3;
    })
    .await;
    let (guessing, guessing_connections) = counted_channel(gateway.addr);
    let (trading, trading_connections) = counted_channel(gateway.addr);
    submit(&trading, TRADER_KEY, order("good-0")).await.unwrap();
    assert_eq!(sample(&scrape(admin).await, CLOSED_FOR_AUTH), 0.0);

    // Below the limit a failure is only a failure: the connection stays.
    for i in 0..2 {
        let refused = submit(&guessing, &format!("guess-{i}"), order("bad"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(reason(&refused), "UNKNOWN_API_KEY");
    }
    submit(&trading, TRADER_KEY, order("good-1")).await.unwrap();
    assert_eq!(guessing_connections.load(Ordering::SeqCst), 1);

    // The third failure is still answered (the caller learns why), then the connection
    // goes. Whatever this channel sends next is not served on that connection: it is
    // refused as closing, cut with it, or sent on a new connection.
    let third = submit(&guessing, "guess-2", order("bad"))
        .await
        .unwrap_err();
    assert_eq!(third.code(), Code::Unauthenticated, "{third:?}");
    match submit(&guessing, TRADER_KEY, order("good-2")).await {
        Err(status) => {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            let why = reason(&status);
            assert!(why.is_empty() || why == "CONNECTION_CLOSING", "{status:?}");
        }
        Ok(_) => assert_eq!(guessing_connections.load(Ordering::SeqCst), 2),
    }

    // Once closed, the channel has to reconnect; a good credential then works on it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    submit(&guessing, TRADER_KEY, order("good-3"))
        .await
        .unwrap();
    assert_eq!(
        guessing_connections.load(Ordering::SeqCst),
        2,
        "the guessing channel reconnected exactly once"
    );
    let metrics = scrape(admin).await;
    assert_eq!(sample(&metrics, CLOSED_FOR_AUTH), 1.0, "{metrics}");

    // The other client never noticed.
    submit(&trading, TRADER_KEY, order("good-4")).await.unwrap();
    assert_eq!(trading_connections.load(Ordering::SeqCst), 1);
    assert!(
        recorder.count() >= 4,
        "every good order reached the executor"
    );
    gateway.stop().await;
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_limit_at_zero_failures_never_close_a_connection() {
    let (executor, _) = recording_executor().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, policy_toml(5)).unwrap();
    let (gateway, admin) = gateway_with(&executor.endpoint(), &policy, |c| {
        c.auth.max_failures_per_connection = 0;
    })
    .await;
    let (channel, connections) = counted_channel(gateway.addr);
    for i in 0..8 {
        let refused = submit(&channel, &format!("guess-{i}"), order("bad"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    submit(&channel, TRADER_KEY, order("good")).await.unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    assert_eq!(sample(&scrape(admin).await, CLOSED_FOR_AUTH), 0.0);
    gateway.stop().await;
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_decoding_limit_is_refused_before_admission() {
    let (executor, recorder) = recording_executor().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, policy_toml(5)).unwrap();
    let (gateway, _) = gateway_with(&executor.endpoint(), &policy, |c| {
        c.server.max_decoding_message_bytes = 64 * 1024;
    })
    .await;
    let (channel, _) = counted_channel(gateway.addr);

    // Under the limit the message is decoded and judged on its content.
    let mut padded = order("padded");
    padded.client_order_id = "x".repeat(32 * 1024);
    let invalid = submit(&channel, TRADER_KEY, padded).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");

    let mut huge = order("huge");
    huge.client_order_id = "x".repeat(128 * 1024);
    let refused = submit(&channel, TRADER_KEY, huge).await.unwrap_err();
    // tonic says OUT_OF_RANGE where the gRPC spec says RESOURCE_EXHAUSTED.
    assert!(
        matches!(refused.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{refused:?}"
    );
    assert_eq!(recorder.count(), 0, "nothing reached the executor");

    // The connection serves the next call.
    submit(&channel, TRADER_KEY, order("fine")).await.unwrap();
    gateway.stop().await;
    executor.stop().await;
}
