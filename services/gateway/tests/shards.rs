//! Two executor shards behind one gateway: accounts are spread over them, order updates
//! fan in from both, and a shard that goes away trips its own breaker only.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use execbridge_api::v1::execution_service_client::ExecutionServiceClient;
use execbridge_api::v1::subscribe_order_updates_response::Event;
use execbridge_api::v1::*;
use execbridge_executor::ExecutorConfig;
use execbridge_gateway::GatewayConfig;
use execbridge_gateway::config::ShardEndpoint;
use execbridge_marketdata::MarketdataConfig;
use execbridge_testutil::{Running, server_config};
use futures::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

async fn executor(id: &str, marketdata: &str) -> Running {
    let mut ex = ExecutorConfig {
        server: server_config(),
        ..Default::default()
    };
    ex.marketdata.endpoint = marketdata.to_owned();
    ex.shard.id = id.to_owned();
    Running::start(ex.server.listen, |s| execbridge_executor::run(ex, s)).await
}

fn market(id: &str, account: &str) -> SubmitOrderRequest {
    SubmitOrderRequest {
        order: Some(OrderRequest {
            client_order_id: id.into(),
            account: account.into(),
            venue: "paper".into(),
            mode: TradingMode::Paper as i32,
            symbol: "BTC-USDT".into(),
            side: Side::Buy as i32,
            r#type: OrderType::Market as i32,
            quantity: "0.01".into(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_spread_over_shards_updates_fan_in_and_a_lost_shard_opens_only_its_breaker() {
    let mut md = MarketdataConfig {
        server: server_config(),
        ..Default::default()
    };
    md.feed.tick_interval_ms = 10;
    let marketdata = Running::start(md.server.listen, |s| execbridge_marketdata::run(md, s)).await;
    let s0 = executor("s0", &marketdata.endpoint()).await;
    let s1 = executor("s1", &marketdata.endpoint()).await;
    let mut gw = GatewayConfig {
        server: server_config(),
        ..Default::default()
    };
    gw.executor_shards = vec![
        ShardEndpoint {
            id: "s0".into(),
            endpoint: s0.endpoint(),
        },
        ShardEndpoint {
            id: "s1".into(),
            endpoint: s1.endpoint(),
        },
    ];
    gw.marketdata.endpoint = marketdata.endpoint();
    gw.breaker.failure_threshold = 2;
    gw.breaker.cooldown_ms = 60_000;
    let gateway = Running::start(gw.server.listen, |s| execbridge_gateway::run(gw, s)).await;
    let mut client = ExecutionServiceClient::new(gateway.channel().await);

    let mut updates = client
        .subscribe_order_updates(SubscribeOrderUpdatesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut owner = std::collections::HashMap::new();
    for i in 0..16 {
        let account = format!("acct-{i}");
        let order = client
            .submit_order(market(&format!("o-{i}"), &account))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        let shard = order.order_id.split('-').next().unwrap().to_owned();
        // The same account always lands on the same shard.
        let again = client
            .submit_order(market(&format!("p-{i}"), &account))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        assert_eq!(again.order_id.split('-').next().unwrap(), shard);
        owner.insert(account, shard);
    }
    let shards: BTreeSet<&String> = owner.values().collect();
    assert_eq!(shards.len(), 2, "both shards own accounts: {owner:?}");

    let mut seen = BTreeSet::new();
    let mut live = BTreeSet::new();
    while seen.len() < 2 || live.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), updates.next())
            .await
            .expect("updates arrive")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        match event {
            Event::Update(u) => {
                seen.insert(u.shard);
            }
            Event::Live(c) => {
                live.insert(c.shard);
            }
        }
    }

    // Shard s1 goes away: its accounts fail, then fail fast with the breaker open;
    // the accounts of s0 keep trading.
    s1.stop().await;
    let on_s1 = owner.iter().find(|(_, s)| *s == "s1").unwrap().0.clone();
    let on_s0 = owner.iter().find(|(_, s)| *s == "s0").unwrap().0.clone();
    let mut reasons = Vec::new();
    for i in 0..4 {
        let err = client
            .submit_order(market(&format!("x-{i}"), &on_s1))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        reasons.push(err.get_details_error_info().unwrap().reason);
    }
    assert_eq!(reasons.last().unwrap(), "CIRCUIT_OPEN", "{reasons:?}");
    let ok = client
        .submit_order(market("y-1", &on_s0))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(ok.status, OrderStatus::Filled as i32);

    gateway.stop().await;
    s0.stop().await;
    marketdata.stop().await;
}
