use std::net::SocketAddr;
use std::time::Duration;

use execbridge_api::convert::order_request_from_proto;
use execbridge_api::v1::execution_service_server::ExecutionServiceServer;
use execbridge_api::v1::{self, SubmitOrderResponse};
use execbridge_domain::ClientOrderId;
use execbridge_runtime::{ServerConfig, grpc};

use super::{Errors, OrderIds, check, closed_loop, connect, open_loop, order_request};
use crate::echo::Echo;
use crate::schedule::Schedule;

const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn order_ids_are_valid_client_order_ids_even_at_their_longest() {
    let ids = OrderIds::new(u32::MAX);
    for tag in ["c", "cw", "o", "ow63"] {
        let id = ids.id(tag, u64::MAX);
        assert!(id.len() <= 36, "{id} is longer than 36 characters");
        ClientOrderId::new_checked(id.as_str()).expect("a valid client_order_id");
    }
}

#[test]
fn order_ids_differ_between_phases_calls_and_runs() {
    let a = OrderIds::new(1);
    assert_ne!(a.id("c", 1), a.id("c", 2));
    assert_ne!(a.id("c", 1), a.id("cw", 1));
    assert_ne!(a.id("c", 1), OrderIds::new(2).id("c", 1));
}

#[test]
fn the_benchmark_order_passes_the_api_validation() {
    let order = order_request("c-1".into());
    let domain = order_request_from_proto(&order, "order.").expect("a valid order");
    assert_eq!(domain.quantity.to_string(), "0.001");
}

fn response(status: v1::OrderStatus, duplicate: bool) -> SubmitOrderResponse {
    SubmitOrderResponse {
        order: Some(v1::Order {
            order_id: "s0-1".into(),
            status: status as i32,
            reject_reason: v1::RejectReason::NoMarketData as i32,
            reject_message: "no market data for BTC-USDT yet".into(),
            ..v1::Order::default()
        }),
        duplicate,
    }
}

#[test]
fn only_a_fresh_filled_order_counts_as_success() {
    assert_eq!(check(&response(v1::OrderStatus::Filled, false)), Ok(()));
    let rejected = check(&response(v1::OrderStatus::Rejected, false)).expect_err("a rejection");
    assert_eq!(
        rejected.kind,
        "ORDER_STATUS_REJECTED/REJECT_REASON_NO_MARKET_DATA"
    );
    assert!(rejected.message.contains("no market data"), "{rejected}");
    assert_eq!(
        check(&response(v1::OrderStatus::Filled, true)).map_err(|e| e.kind),
        Err("DUPLICATE".to_owned())
    );
    assert!(check(&SubmitOrderResponse::default()).is_err());
}

#[test]
fn errors_are_counted_by_kind_and_the_first_is_kept() {
    let rejected = check(&response(v1::OrderStatus::Rejected, false)).expect_err("a rejection");
    let duplicate = check(&response(v1::OrderStatus::Filled, true)).expect_err("a duplicate");
    let mut errors = Errors::default();
    errors.note(&duplicate, Some("warm-up"));
    errors.note(&rejected, None);
    errors.note(&rejected, None);
    assert_eq!(errors.count, 3);
    assert_eq!(errors.by_kind.get("DUPLICATE"), Some(&1));
    assert_eq!(
        errors
            .by_kind
            .get("ORDER_STATUS_REJECTED/REJECT_REASON_NO_MARKET_DATA"),
        Some(&2)
    );
    assert!(
        errors
            .first
            .as_deref()
            .is_some_and(|f| f.starts_with("warm-up: DUPLICATE")),
        "{:?}",
        errors.first
    );
}

async fn echo_server() -> SocketAddr {
    let listener = grpc::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(
        grpc::server(&ServerConfig::default())
            .add_service(ExecutionServiceServer::new(Echo::default()))
            .serve_with_incoming(grpc::incoming(listener)),
    );
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closed_loop_records_every_call_after_the_warm_up() {
    let client = connect(echo_server().await).await.expect("connects");
    let run = closed_loop(client, OrderIds::new(1), 10, 50, TIMEOUT)
        .await
        .expect("runs");
    assert_eq!(run.errors.count, 0, "{:?}", run.errors.first);
    assert_eq!(run.latency.len(), 50);
    assert!(run.send_lag.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_records_every_scheduled_call_and_its_send_lag() {
    let addr = echo_server().await;
    let clients = vec![
        connect(addr).await.expect("connects"),
        connect(addr).await.expect("connects"),
    ];
    let schedule = Schedule::new(500, Duration::from_millis(200)).expect("a non-zero rate");
    let run = open_loop(clients, schedule, OrderIds::new(1), TIMEOUT)
        .await
        .expect("runs");
    assert_eq!(run.errors.count, 0, "{:?}", run.errors.first);
    assert_eq!(run.latency.len(), 100);
    assert_eq!(run.send_lag.map(|h| h.len()), Some(100));
    // The last call is due 198 ms in; the run cannot be shorter.
    assert!(
        run.elapsed >= Duration::from_millis(198),
        "{:?}",
        run.elapsed
    );
}

#[tokio::test]
async fn the_open_loop_needs_a_connection() {
    let schedule = Schedule::new(1, Duration::from_secs(1)).expect("a non-zero rate");
    assert!(
        open_loop(Vec::new(), schedule, OrderIds::new(1), TIMEOUT)
            .await
            .is_err()
    );
}
