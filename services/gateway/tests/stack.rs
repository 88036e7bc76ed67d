//! The three services in one process on loopback ports: gateway -> executor -> paper venue,
//! with prices from marketdata, exercised through the public API.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use execbridge_api::v1::execution_service_client::ExecutionServiceClient;
use execbridge_api::v1::market_data_event::Payload;
use execbridge_api::v1::market_data_service_client::MarketDataServiceClient;
use execbridge_api::v1::subscribe_order_updates_response::Event;
use execbridge_api::v1::*;
use execbridge_executor::ExecutorConfig;
use execbridge_gateway::GatewayConfig;
use execbridge_marketdata::MarketdataConfig;
use execbridge_testutil::{Running, free_addr, server_config};
use futures::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

struct Stack {
    gateway: Running,
    executor: Running,
    marketdata: Running,
}

impl Stack {
    async fn start() -> Self {
        let mut md = MarketdataConfig {
            server: server_config(),
            ..Default::default()
        };
        md.feed.tick_interval_ms = 10;
        let marketdata =
            Running::start(md.server.listen, |s| execbridge_marketdata::run(md, s)).await;
        let mut ex = ExecutorConfig {
            server: server_config(),
            ..Default::default()
        };
        ex.marketdata.endpoint = marketdata.endpoint();
        let executor = Running::start(ex.server.listen, |s| execbridge_executor::run(ex, s)).await;
        let gateway = Self::gateway(&executor.endpoint(), &marketdata.endpoint()).await;
        Self {
            gateway,
            executor,
            marketdata,
        }
    }

    async fn gateway(executor: &str, marketdata: &str) -> Running {
        Self::gateway_with_policy(executor, marketdata, None).await
    }

    async fn gateway_with_policy(
        executor: &str,
        marketdata: &str,
        policy: Option<&std::path::Path>,
    ) -> Running {
        let mut gw = GatewayConfig {
            server: server_config(),
            ..Default::default()
        };
        gw.executor.endpoint = executor.to_owned();
        gw.marketdata.endpoint = marketdata.to_owned();
        if let Some(policy) = policy {
            gw.policy.file = policy.display().to_string();
        }
        Running::start(gw.server.listen, |s| execbridge_gateway::run(gw, s)).await
    }

    async fn client(&self) -> ExecutionServiceClient<Channel> {
        ExecutionServiceClient::new(self.gateway.channel().await)
    }

    async fn stop(self) {
        self.gateway.stop().await;
        self.executor.stop().await;
        self.marketdata.stop().await;
    }
}

fn order(id: &str, side: Side, order_type: OrderType, price: &str) -> OrderRequest {
    OrderRequest {
        client_order_id: id.into(),
        account: "acct".into(),
        venue: "paper".into(),
        mode: TradingMode::Paper as i32,
        symbol: "BTC-USDT".into(),
        side: side as i32,
        r#type: order_type as i32,
        quantity: "0.25".into(),
        price: price.into(),
        ..Default::default()
    }
}

fn market(id: &str) -> OrderRequest {
    order(id, Side::Buy, OrderType::Market, "")
}

async fn submit(
    client: &mut ExecutionServiceClient<Channel>,
    order: OrderRequest,
) -> Result<SubmitOrderResponse, tonic::Status> {
    client
        .submit_order(SubmitOrderRequest { order: Some(order) })
        .await
        .map(tonic::Response::into_inner)
}

async fn next_update(stream: &mut tonic::Streaming<SubscribeOrderUpdatesResponse>) -> Event {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an update within 5 s")
        .expect("the stream is open")
        .expect("no error")
        .event
        .expect("an event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_market_order_fills_and_every_change_reaches_a_subscriber() {
    let stack = Stack::start().await;
    let mut client = stack.client().await;
    let mut updates = client
        .subscribe_order_updates(SubscribeOrderUpdatesRequest {
            accounts: vec!["acct".into()],
            resume_from: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next_update(&mut updates).await, Event::Live(_)));

    let done = submit(&mut client, market("m-1")).await.unwrap();
    let placed = done.order.unwrap();
    assert_eq!(placed.status, OrderStatus::Filled as i32);
    assert!(!done.duplicate);

    let mut seen = Vec::new();
    for _ in 0..3 {
        let Event::Update(u) = next_update(&mut updates).await else {
            panic!("expected an update")
        };
        seen.push((u.event, u.order.unwrap().status, u.progress));
    }
    assert_eq!(
        seen,
        [
            (
                OrderEventType::Accepted as i32,
                OrderStatus::PendingNew as i32,
                "0".to_owned()
            ),
            (
                OrderEventType::Acknowledged as i32,
                OrderStatus::New as i32,
                "0".to_owned()
            ),
            (
                OrderEventType::Filled as i32,
                OrderStatus::Filled as i32,
                "1".to_owned()
            ),
        ]
    );

    let trades = client
        .get_trade_history(GetTradeHistoryRequest {
            account: "acct".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trades.fills.len(), 1);
    assert_eq!(trades.fills[0].quantity, "0.25");
    let positions = client
        .get_positions(GetPositionsRequest {
            account: "acct".into(),
            venue: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(positions.positions[0].quantity, "0.25");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resting_limit_order_is_canceled_once() {
    let stack = Stack::start().await;
    let mut client = stack.client().await;
    let placed = submit(
        &mut client,
        order("l-1", Side::Buy, OrderType::Limit, "1000.00"),
    )
    .await
    .unwrap()
    .order
    .unwrap();
    assert_eq!(placed.status, OrderStatus::New as i32);
    let open = client
        .list_orders(ListOrdersRequest {
            account: "acct".into(),
            open_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(open.orders.len(), 1);

    let cancel = CancelOrderRequest {
        account: "acct".into(),
        id: Some(cancel_order_request::Id::OrderId(placed.order_id.clone())),
    };
    let canceled = client
        .cancel_order(cancel.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(canceled.order.unwrap().status, OrderStatus::Canceled as i32);
    let again = client.cancel_order(cancel).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(
        again.get_details_error_info().unwrap().reason,
        "NOT_CANCELABLE"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_field_and_nothing_reaches_the_executor() {
    let stack = Stack::start().await;
    let mut client = stack.client().await;
    let mut bad = order("bad-1", Side::Buy, OrderType::Limit, "");
    bad.quantity = "12abc".into();
    let err = submit(&mut client, bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["order.quantity"]);

    let err = submit(&mut client, order("bad-2", Side::Buy, OrderType::Limit, ""))
        .await
        .unwrap_err();
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "order.price"
    );

    let missing = client
        .submit_order(SubmitOrderRequest { order: None })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);

    let none = client
        .list_orders(ListOrdersRequest {
            account: "acct".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.orders.is_empty(), "no refused order was recorded");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_idempotent_and_a_changed_retry_says_what_differs() {
    let stack = Stack::start().await;
    let mut client = stack.client().await;
    let first = submit(&mut client, market("dup-1")).await.unwrap();
    let again = submit(&mut client, market("dup-1")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.order.unwrap().order_id, first.order.unwrap().order_id);
    let mut changed = market("dup-1");
    changed.quantity = "1".into();
    let err = submit(&mut client, changed).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.reason, "IDEMPOTENCY_MISMATCH");
    assert_eq!(info.metadata["differing_fields"], "quantity");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stream_answers_each_order_in_order() {
    let stack = Stack::start().await;
    let mut client = stack.client().await;
    let mut bad = market("b-2");
    bad.quantity = "-1".into();
    let batches = vec![
        SubmitOrdersRequest {
            orders: vec![market("b-1"), bad, market("b-3")],
            batch_id: "one".into(),
        },
        SubmitOrdersRequest {
            orders: vec![market("b-4")],
            batch_id: "two".into(),
        },
    ];
    let responses: Vec<SubmitOrdersResponse> = client
        .submit_orders(futures::stream::iter(batches))
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[0].batch_id, "one");
    let ids: Vec<_> = responses[0]
        .results
        .iter()
        .map(|r| (r.index, r.client_order_id.as_str()))
        .collect();
    assert_eq!(ids, [(0, "b-1"), (1, "b-2"), (2, "b-3")]);
    match &responses[0].results[1].outcome {
        Some(order_result::Outcome::Error(e)) => {
            assert_eq!(e.code, Code::InvalidArgument as i32);
            assert_eq!(e.field_violations[0].field, "order.quantity");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(matches!(
        responses[1].results[0].outcome,
        Some(order_result::Outcome::Order(_))
    ));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_after_its_last_sequence_without_gap_or_duplicate() {
    let stack = Stack::start().await;
    let mut client = stack.client().await;
    for id in ["r-1", "r-2"] {
        submit(&mut client, market(id)).await.unwrap();
    }
    // Fills may follow the acknowledgement: wait until both orders are done.
    for id in ["r-1", "r-2"] {
        let mut tries = 0;
        loop {
            let order = client
                .get_order(GetOrderRequest {
                    account: "acct".into(),
                    id: Some(get_order_request::Id::ClientOrderId(id.into())),
                })
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap();
            if order.status == OrderStatus::Filled as i32 {
                break;
            }
            tries += 1;
            assert!(tries < 200, "{id} never filled");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let replay = |from: u64| {
        let mut client = client.clone();
        async move {
            let mut stream = client
                .subscribe_order_updates(SubscribeOrderUpdatesRequest {
                    accounts: vec![],
                    resume_from: vec![ShardCursor {
                        shard: "s0".into(),
                        sequence: from,
                    }],
                })
                .await
                .unwrap()
                .into_inner();
            let mut seqs = Vec::new();
            let live = loop {
                match next_update(&mut stream).await {
                    Event::Update(u) => seqs.push(u.sequence),
                    Event::Live(c) => break c.sequence,
                }
            };
            (seqs, live, stream)
        }
    };
    let (all, last, _) = replay(0).await;
    assert_eq!(
        all,
        (1..=last).collect::<Vec<_>>(),
        "a replay from the start has every sequence once"
    );
    let middle = all[all.len() / 2];
    let (rest, live, mut resumed) = replay(middle).await;
    assert_eq!(
        rest,
        ((middle + 1)..=last).collect::<Vec<_>>(),
        "a resume gives exactly what came after"
    );
    assert_eq!(live, last);
    submit(&mut client, market("r-3")).await.unwrap();
    let Event::Update(u) = next_update(&mut resumed).await else {
        panic!("expected an update")
    };
    assert_eq!(u.sequence, last + 1, "live updates continue without a gap");

    let unknown = client
        .subscribe_order_updates(SubscribeOrderUpdatesRequest {
            accounts: vec![],
            resume_from: vec![ShardCursor {
                shard: "nope".into(),
                sequence: 1,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_data_flows_through_the_gateway_and_symbols_change_mid_stream() {
    let stack = Stack::start().await;
    let mut client = MarketDataServiceClient::new(stack.gateway.channel().await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let subscribe = |symbols: &[&str]| StreamMarketDataRequest {
        action: Some(stream_market_data_request::Action::Subscribe(Subscribe {
            venue: String::new(),
            symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
            channels: vec![],
            policy: 0,
        })),
    };
    tx.send(subscribe(&["BTC-USDT"])).await.unwrap();
    let mut events = client
        .stream_market_data(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut symbols = std::collections::BTreeSet::new();
    let mut next_batch = async || {
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .events
    };
    let mut live = false;
    for _ in 0..5 {
        for e in next_batch().await {
            symbols.insert(e.symbol.clone());
            if let Some(Payload::Status(s)) = &e.payload {
                live |= s.status == FeedStatus::Live as i32;
            }
        }
    }
    assert!(live, "a LIVE status frame comes first");
    assert_eq!(symbols.into_iter().collect::<Vec<_>>(), ["BTC-USDT"]);

    tx.send(subscribe(&["ETH-USDT"])).await.unwrap();
    let mut saw_eth = false;
    for _ in 0..20 {
        saw_eth |= next_batch().await.iter().any(|e| e.symbol == "ETH-USDT");
    }
    assert!(saw_eth);

    tx.send(subscribe(&["NOPE-USDT"])).await.unwrap();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
        {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("stream ended without an error"),
        }
    };
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "subscribe.symbols[0]"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_executor_down_a_submit_is_unavailable_with_a_reason() {
    let nowhere = format!("http://{}", free_addr());
    let gateway = Stack::gateway(&nowhere, &nowhere).await;
    let mut client = ExecutionServiceClient::new(gateway.channel().await);
    let err = submit(&mut client, market("u-1")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "EXECUTOR_UNAVAILABLE"
    );
    assert!(err.get_details_retry_info().is_some());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_submits_of_one_id_make_one_order_also_after_a_gateway_restart() {
    let stack = Stack::start().await;
    let client = stack.client().await;
    let calls = (0..100).map(|_| {
        let mut client = client.clone();
        async move { submit(&mut client, market("same-1")).await.unwrap() }
    });
    let answers = futures::future::join_all(calls).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|a| a.order.as_ref().unwrap().order_id.clone())
        .collect();
    assert_eq!(ids.len(), 1, "one order id for 100 submits");
    assert_eq!(
        answers.iter().filter(|a| !a.duplicate).count(),
        1,
        "exactly one original"
    );
    let statuses: std::collections::BTreeSet<i32> = answers
        .iter()
        .map(|a| a.order.as_ref().unwrap().status)
        .collect();
    assert_eq!(statuses.len(), 1, "identical answers");

    // A new gateway in front of the same executor gives the same answer.
    let restarted = Stack::gateway(&stack.executor.endpoint(), &stack.marketdata.endpoint()).await;
    let mut client = ExecutionServiceClient::new(restarted.channel().await);
    let again = submit(&mut client, market("same-1")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        again.order.unwrap().order_id,
        ids.into_iter().next().unwrap()
    );
    let all = client
        .list_orders(ListOrdersRequest {
            account: "acct".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.orders.len(), 1);
    restarted.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_needs_admin_and_halts_the_account() {
    use execbridge_api::v1::admin_service_client::AdminServiceClient;
    let stack = Stack::start().await;
    let halt = SetTradingStateRequest {
        account: "acct".into(),
        symbol: String::new(),
        state: TradingState::Halted as i32,
        reason: "test".into(),
    };
    let denied = AdminServiceClient::new(stack.gateway.channel().await)
        .set_trading_state(halt.clone())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.get_details_error_info().unwrap().reason,
        "MISSING_PERMISSION"
    );

    // A policy whose anonymous principal is an administrator.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let mut file = execbridge_gateway::policy::PolicyFile::default();
    file.anonymous
        .as_mut()
        .unwrap()
        .permissions
        .push(execbridge_gateway::policy::Permission::Admin);
    std::fs::write(&policy, toml::to_string(&file).unwrap()).unwrap();
    let admin_gateway = Stack::gateway_with_policy(
        &stack.executor.endpoint(),
        &stack.marketdata.endpoint(),
        Some(&policy),
    )
    .await;
    let channel = admin_gateway.channel().await;
    AdminServiceClient::new(channel.clone())
        .set_trading_state(halt)
        .await
        .unwrap();
    let mut client = ExecutionServiceClient::new(channel.clone());
    let refused = submit(&mut client, market("halted-1"))
        .await
        .unwrap()
        .order
        .unwrap();
    assert_eq!(refused.status, OrderStatus::Rejected as i32);
    assert_eq!(refused.reject_reason, RejectReason::TradingHalted as i32);
    AdminServiceClient::new(channel)
        .set_trading_state(SetTradingStateRequest {
            account: "acct".into(),
            symbol: String::new(),
            state: TradingState::Active as i32,
            reason: "test over".into(),
        })
        .await
        .unwrap();
    let filled = submit(&mut client, market("active-1"))
        .await
        .unwrap()
        .order
        .unwrap();
    assert_eq!(filled.status, OrderStatus::Filled as i32);
    admin_gateway.stop().await;
    stack.stop().await;
}
