//! `SubmitOrderBatch` against a real executor over gRPC: one result per order in request
//! order, idempotent resubmission, orders that fail alone, and the batch size limit.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use execbridge_api::internal::v1 as internal;
use execbridge_api::internal::v1::executor_service_client::ExecutorServiceClient;
use execbridge_api::v1;
use execbridge_api::v1::order_result::Outcome;
use execbridge_executor::ExecutorConfig;
use execbridge_marketdata::MarketdataConfig;
use execbridge_testutil::{Running, server_config};
use tonic::transport::Channel;

fn order(id: &str, quantity: &str) -> v1::OrderRequest {
    v1::OrderRequest {
        client_order_id: id.into(),
        account: "batch-acct".into(),
        venue: "paper".into(),
        mode: v1::TradingMode::Paper as i32,
        symbol: "BTC-USDT".into(),
        side: v1::Side::Buy as i32,
        r#type: v1::OrderType::Market as i32,
        quantity: quantity.into(),
        ..Default::default()
    }
}

async fn batch(
    client: &mut ExecutorServiceClient<Channel>,
    orders: Vec<v1::OrderRequest>,
) -> Result<Vec<v1::OrderResult>, tonic::Status> {
    client
        .submit_order_batch(internal::SubmitOrderBatchRequest {
            caller: None,
            orders,
        })
        .await
        .map(|r| r.into_inner().results)
}

fn order_of(result: &v1::OrderResult) -> &v1::Order {
    match &result.outcome {
        Some(Outcome::Order(o)) => o,
        other => panic!("expected an order, got {other:?}"),
    }
}

fn error_of(result: &v1::OrderResult) -> &v1::OrderError {
    match &result.outcome {
        Some(Outcome::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

struct Stack {
    marketdata: Running,
    executor: Running,
    client: ExecutorServiceClient<Channel>,
}

async fn start() -> Stack {
    let mut md = MarketdataConfig {
        server: server_config(),
        ..Default::default()
    };
    md.feed.tick_interval_ms = 10;
    let marketdata = Running::start(md.server.listen, |s| execbridge_marketdata::run(md, s)).await;
    let mut ex = ExecutorConfig {
        server: server_config(),
        ..Default::default()
    };
    ex.marketdata.endpoint = marketdata.endpoint();
    ex.log.level = "warn".into();
    let executor = Running::start(ex.server.listen, |s| execbridge_executor::run(ex, s)).await;
    let mut client = ExecutorServiceClient::new(executor.channel().await);
    // Market orders need the first quote; probe until one fills.
    for attempt in 0..500 {
        let r = batch(
            &mut client,
            vec![order(&format!("probe-{attempt}"), "0.001")],
        )
        .await
        .unwrap();
        if order_of(&r[0]).status == v1::OrderStatus::Filled as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Stack {
        marketdata,
        executor,
        client,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_order_in_order_and_a_resubmission_is_idempotent() {
    let Stack {
        marketdata,
        executor,
        mut client,
    } = start().await;
    let orders: Vec<_> = (0..5).map(|i| order(&format!("b-{i}"), "0.001")).collect();
    let first = batch(&mut client, orders.clone()).await.unwrap();
    assert_eq!(first.len(), 5);
    for (i, r) in first.iter().enumerate() {
        assert_eq!(r.index as usize, i);
        assert_eq!(r.client_order_id, format!("b-{i}"));
        assert!(!r.duplicate);
        assert_eq!(order_of(r).status, v1::OrderStatus::Filled as i32, "{r:?}");
    }
    let ids: Vec<_> = first.iter().map(|r| order_of(r).order_id.clone()).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 5, "five distinct orders");

    // The same batch again: the same orders, flagged as duplicates, nothing new.
    let again = batch(&mut client, orders).await.unwrap();
    for (r, id) in again.iter().zip(&ids) {
        assert!(r.duplicate, "{r:?}");
        assert_eq!(&order_of(r).order_id, id);
    }

    // The same id twice in one batch is one order.
    let twice = batch(
        &mut client,
        vec![order("same", "0.001"), order("same", "0.001")],
    )
    .await
    .unwrap();
    assert_eq!(order_of(&twice[0]).order_id, order_of(&twice[1]).order_id);
    assert!(!twice[0].duplicate && twice[1].duplicate);

    executor.stop().await;
    marketdata.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_order_fails_alone_and_an_oversized_batch_is_refused() {
    let Stack {
        marketdata,
        executor,
        mut client,
    } = start().await;
    let results = batch(
        &mut client,
        vec![
            order("ok-1", "0.001"),
            order("bad-quantity", "abc"),
            // Reuses ok-1's id with another quantity: an idempotency mismatch.
            order("ok-1", "0.002"),
            order("ok-2", "-1"),
            order("ok-3", "0.001"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(order_of(&results[0]).status, v1::OrderStatus::Filled as i32);
    let bad = error_of(&results[1]);
    assert_eq!(bad.code, tonic::Code::InvalidArgument as i32);
    assert!(
        bad.field_violations
            .iter()
            .any(|v| v.field == "orders[1].quantity"),
        "{bad:?}"
    );
    let mismatch = error_of(&results[2]);
    assert_eq!(mismatch.code, tonic::Code::AlreadyExists as i32);
    assert_eq!(mismatch.reason, "IDEMPOTENCY_MISMATCH");
    assert!(
        mismatch.metadata["differing_fields"].contains("quantity"),
        "{mismatch:?}"
    );
    let negative = error_of(&results[3]);
    assert_eq!(negative.code, tonic::Code::InvalidArgument as i32);
    assert!(
        negative
            .field_violations
            .iter()
            .any(|v| v.field == "orders[3].quantity"),
        "{negative:?}"
    );
    assert_eq!(order_of(&results[4]).status, v1::OrderStatus::Filled as i32);

    // An empty batch is answered with no results.
    assert!(batch(&mut client, Vec::new()).await.unwrap().is_empty());

    // More than the limit: the whole call is refused, naming the field, and nothing runs.
    let too_many: Vec<_> = (0..=execbridge_executor::service::MAX_BATCH_ORDERS)
        .map(|i| order(&format!("x-{i}"), "0.001"))
        .collect();
    let err = batch(&mut client, too_many).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("orders"), "{err:?}");
    let probe = batch(&mut client, vec![order("x-0", "0.002")])
        .await
        .unwrap();
    assert!(
        !probe[0].duplicate,
        "x-0 of the refused batch must not exist: {probe:?}"
    );

    executor.stop().await;
    marketdata.stop().await;
}
