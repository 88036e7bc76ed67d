//! The whole service as `execbridge-marketdata` runs it (simulated feed, gRPC, admin port),
//! exercised through `StreamMarketData`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use execbridge_api::v1::market_data_event::Payload;
use execbridge_api::v1::market_data_service_client::MarketDataServiceClient;
use execbridge_api::v1::stream_market_data_request::Action;
use execbridge_api::v1::{
    self, Channel as Ch, FeedStatus, StreamMarketDataRequest, Subscribe, Unsubscribe,
};
use execbridge_marketdata::MarketdataConfig;
use execbridge_marketdata::model::{Book, Depth, Level};
use execbridge_testutil::{Running, server_config};
use futures::StreamExt;
use rust_decimal::Decimal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

async fn start() -> (Running, MarketdataConfig) {
    let mut config = MarketdataConfig {
        server: server_config(),
        ..Default::default()
    };
    config.feed.tick_interval_ms = 5;
    let c = config.clone();
    let running = Running::start(config.server.listen, |s| execbridge_marketdata::run(c, s)).await;
    (running, config)
}

fn subscribe(symbols: &[&str], channels: &[Ch]) -> StreamMarketDataRequest {
    StreamMarketDataRequest {
        action: Some(Action::Subscribe(Subscribe {
            venue: String::new(),
            symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
            channels: channels.iter().map(|c| *c as i32).collect(),
            policy: 0,
        })),
    }
}

fn unsubscribe(symbols: &[&str], channels: &[Ch]) -> StreamMarketDataRequest {
    StreamMarketDataRequest {
        action: Some(Action::Unsubscribe(Unsubscribe {
            venue: String::new(),
            symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
            channels: channels.iter().map(|c| *c as i32).collect(),
        })),
    }
}

struct Stream {
    tx: mpsc::Sender<StreamMarketDataRequest>,
    rx: tonic::Streaming<v1::StreamMarketDataResponse>,
}

impl Stream {
    async fn open(running: &Running, first: StreamMarketDataRequest) -> Self {
        let (tx, rx) = mpsc::channel(4);
        tx.send(first).await.unwrap();
        let rx = MarketDataServiceClient::new(running.channel().await)
            .stream_market_data(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }

    async fn batch(&mut self) -> Vec<v1::MarketDataEvent> {
        tokio::time::timeout(Duration::from_secs(5), self.rx.next())
            .await
            .expect("events within 5 s")
            .expect("the stream is open")
            .expect("no error")
            .events
    }
}

fn kind(e: &v1::MarketDataEvent) -> &'static str {
    match e.payload {
        Some(Payload::Status(_)) => "status",
        Some(Payload::TopOfBook(_)) => "top",
        Some(Payload::Trade(_)) => "trade",
        Some(Payload::BookSnapshot(_)) => "snapshot",
        Some(Payload::BookDelta(_)) => "delta",
        Some(Payload::Gap(_)) => "gap",
        None => "none",
    }
}

fn levels(v: &[v1::PriceLevel]) -> Vec<Level> {
    let tick = Decimal::new(1, 2);
    let lot = Decimal::new(1, 4);
    v.iter()
        .map(|l| {
            let p: Decimal = l.price.parse().unwrap();
            let q: Decimal = l.quantity.parse().unwrap();
            Level::new(
                i64::try_from(p / tick).unwrap(),
                i64::try_from(q / lot).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depth_subscriber_gets_the_book_first_then_deltas_that_keep_it_whole() {
    let (running, _) = start().await;
    let mut s = Stream::open(&running, subscribe(&["BTC-USDT"], &[Ch::Depth])).await;
    let first = s.batch().await;
    let kinds: Vec<&str> = first.iter().take(2).map(kind).collect();
    assert_eq!(kinds, ["status", "snapshot"]);
    assert!(
        matches!(&first[0].payload, Some(Payload::Status(st)) if st.status == FeedStatus::Live as i32)
    );
    let mut book = Book::default();
    let mut sequence = 0;
    let mut deltas = 0;
    let mut events: Vec<v1::MarketDataEvent> = first;
    for _ in 0..200 {
        for e in events.drain(..) {
            if e.sequence != 0 {
                assert!(e.sequence > sequence || kind(&e) == "snapshot");
                sequence = e.sequence;
            }
            match e.payload {
                Some(Payload::BookSnapshot(b)) => book.replace(&Depth {
                    bids: levels(&b.bids),
                    asks: levels(&b.asks),
                }),
                Some(Payload::BookDelta(d)) => {
                    deltas += 1;
                    book.apply(&Depth {
                        bids: levels(&d.bids),
                        asks: levels(&d.asks),
                    });
                }
                Some(Payload::TopOfBook(_) | Payload::Trade(_)) => panic!("not subscribed"),
                _ => {}
            }
            if !book.is_empty() {
                assert!(!book.is_crossed());
                assert_eq!(book.len(), (10, 10));
            }
        }
        if deltas >= 50 {
            break;
        }
        events = s.batch().await;
    }
    assert!(deltas >= 50);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_symbols_are_added_and_removed_while_streaming() {
    let (running, _) = start().await;
    let mut s = Stream::open(&running, subscribe(&["BTC-USDT"], &[Ch::TopOfBook])).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..5 {
        for e in s.batch().await {
            seen.insert((e.symbol.clone(), kind(&e)));
        }
    }
    assert!(
        seen.iter()
            .all(|(sym, k)| sym == "BTC-USDT" && matches!(*k, "status" | "top"))
    );

    s.tx.send(subscribe(&["ETH-USDT"], &[Ch::Trades]))
        .await
        .unwrap();
    s.tx.send(unsubscribe(&["BTC-USDT"], &[])).await.unwrap();
    // Whatever was queued before the change drains first; then only ETH trades.
    let mut after = Vec::new();
    for _ in 0..400 {
        after.extend(s.batch().await);
        if after.iter().filter(|e| kind(e) == "trade").count() >= 3 {
            break;
        }
    }
    let first_eth = after
        .iter()
        .position(|e| e.symbol == "ETH-USDT")
        .expect("ETH arrives");
    let tail = &after[first_eth..];
    assert!(
        tail.iter()
            .all(|e| e.symbol == "ETH-USDT" && matches!(kind(e), "status" | "trade")),
        "after the change: {:?}",
        tail.iter()
            .map(|e| (e.symbol.as_str(), kind(e)))
            .collect::<Vec<_>>()
    );
    assert!(tail.iter().filter(|e| kind(e) == "trade").count() >= 3);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_serves_the_fanout_metrics() {
    let (running, config) = start().await;
    let mut s = Stream::open(&running, subscribe(&[], &[])).await;
    s.batch().await;
    s.batch().await;
    let mut conn = tokio::net::TcpStream::connect(config.server.admin_listen)
        .await
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    for name in [
        "marketdata_subscribers 1",
        "marketdata_subscriptions 3",
        "marketdata_queued_events",
        "marketdata_subscriber_queue_depth_bucket",
        "marketdata_feed_to_send_seconds_bucket",
        "marketdata_events_published_total{kind=\"book_delta\"}",
        "marketdata_instruments{status=\"LIVE\",venue=\"paper\"} 3",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    running.stop().await;
}
