//! A subscriber that never reads, beside 100 that read as fast as they can, over real gRPC
//! on loopback: the slow one is conflated, dropped or disconnected per its policy, the fast
//! ones get every event in order with their latency, and the process memory stays bounded
//! while the feed keeps publishing far more than the slow one's queue holds.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use execbridge_api::convert::system_time;
use execbridge_api::v1::market_data_event::Payload;
use execbridge_api::v1::market_data_service_client::MarketDataServiceClient;
use execbridge_api::v1::stream_market_data_request::Action;
use execbridge_api::v1::{
    self, Channel as Ch, FeedStatus, SlowConsumerPolicy, StreamMarketDataRequest, Subscribe,
};
use execbridge_marketdata::config::FanoutConfig;
use execbridge_marketdata::hub::Hub;
use execbridge_marketdata::metrics::Metrics;
use execbridge_marketdata::model::{Depth, InstrumentSpec, Level, TradePrint, Update};
use execbridge_marketdata::service::MarketDataServer;
use execbridge_runtime::Shutdown;
use futures::StreamExt;
use rust_decimal::Decimal;
use tokio::sync::{Mutex, mpsc};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

/// The tests measure the process's memory: one at a time.
static SERIAL: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

const FAST: usize = 100;
const FAST_CONNECTIONS: usize = 4;
const ROUNDS: u64 = 1_000;
const QUEUE: usize = 1024;
const QUEUE_BYTES: usize = 1 << 20;
/// Each print on the heavy symbol carries this much, so an unbounded queue would be seen.
const HEAVY_BYTES: usize = 64 * 1024;

fn spec(symbol: &str) -> InstrumentSpec {
    InstrumentSpec {
        venue: "sim".into(),
        symbol: symbol.into(),
        tick_size: Decimal::new(1, 2),
        lot_size: Decimal::new(1, 0),
    }
}

fn rss_bytes() -> u64 {
    execbridge_testutil::resident_bytes(std::process::id()).unwrap_or(0)
}

async fn serve(hub: Arc<Hub>) -> (String, Shutdown) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let fanout = FanoutConfig {
        queue_capacity: QUEUE,
        queue_max_bytes: QUEUE_BYTES,
        ..FanoutConfig::default()
    };
    let service = MarketDataServer::new(hub, "sim".into(), fanout, shutdown.clone());
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            execbridge_runtime::grpc::incoming(listener),
            shutdown.wait_owned(),
        );
    tokio::spawn(server);
    (format!("http://{addr}"), shutdown)
}

fn subscribe(
    symbols: &[&str],
    channels: &[Ch],
    policy: SlowConsumerPolicy,
) -> StreamMarketDataRequest {
    StreamMarketDataRequest {
        action: Some(Action::Subscribe(Subscribe {
            venue: "sim".into(),
            symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
            channels: channels.iter().map(|c| *c as i32).collect(),
            policy: policy as i32,
        })),
    }
}

async fn open(
    channel: Channel,
    requests: Vec<StreamMarketDataRequest>,
) -> (
    tonic::Streaming<v1::StreamMarketDataResponse>,
    mpsc::Sender<StreamMarketDataRequest>,
) {
    let (tx, rx) = mpsc::channel(8);
    for r in requests {
        tx.send(r).await.unwrap();
    }
    let stream = MarketDataServiceClient::new(channel)
        .stream_market_data(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (stream, tx)
}

/// What one fast subscriber saw.
struct FastReport {
    latencies_us: Vec<u64>,
    out_of_order: usize,
    gaps: usize,
    not_live: usize,
}

/// Reads until the light symbol reaches `last` (sent once publishing is over).
async fn fast_reader(
    mut stream: tonic::Streaming<v1::StreamMarketDataResponse>,
    ready: mpsc::Sender<()>,
    mut last: tokio::sync::watch::Receiver<u64>,
) -> FastReport {
    let mut report = FastReport {
        latencies_us: Vec::new(),
        out_of_order: 0,
        gaps: 0,
        not_live: 0,
    };
    let mut seq = 0u64;
    let mut announced = false;
    for _ in 0..1_000_000 {
        let target = *last.borrow();
        if target > 0 && seq >= target {
            return report;
        }
        let message = tokio::select! {
            m = stream.next() => m,
            _ = last.changed() => continue,
        };
        let message = message.expect("the stream stays open").expect("no error");
        let now = SystemTime::now();
        for e in message.events {
            match &e.payload {
                Some(Payload::Gap(_)) => report.gaps += 1,
                Some(Payload::Status(s)) if s.status != FeedStatus::Live as i32 => {
                    report.not_live += 1;
                }
                Some(Payload::Status(_)) => {}
                Some(Payload::BookSnapshot(_)) => {
                    seq = e.sequence;
                    if !announced {
                        announced = true;
                        let _ = ready.send(()).await;
                    }
                }
                // The top of book owed to a late joiner comes before its book snapshot.
                Some(_) if !announced => {}
                Some(_) => {
                    if e.sequence != seq + 1 {
                        report.out_of_order += 1;
                    }
                    seq = e.sequence;
                    let sent = e.receive_time.as_ref().and_then(system_time).unwrap();
                    let us = now.duration_since(sent).unwrap_or_default().as_micros();
                    report.latencies_us.push(us as u64);
                }
                None => {}
            }
        }
    }
    panic!("the fast reader never caught up");
}

struct Outcome {
    shutdown: Shutdown,
    hub: Arc<Hub>,
    slow: tonic::Streaming<v1::StreamMarketDataResponse>,
    rss_growth: i64,
    p99_us: u64,
}

/// 100 fast subscribers to the light symbol, one never-reading subscriber with `policy`
/// to the light symbol's `slow_channels` and the heavy symbol's trades.
async fn run(policy: SlowConsumerPolicy, slow_channels: &[Ch]) -> Outcome {
    let hub = Arc::new(Hub::new(Metrics::unregistered()));
    let light = hub.register(spec("LIGHT"), FeedStatus::Live, "test");
    let heavy = hub.register(spec("HEAVY"), FeedStatus::Live, "test");
    let book = Depth {
        bids: (0..10).map(|k| Level::new(10_000 - k, 5)).collect(),
        asks: (0..10).map(|k| Level::new(10_001 + k, 5)).collect(),
    };
    hub.publish(light, &[Update::Snapshot(book.clone())], SystemTime::now());
    hub.publish(heavy, &[Update::Snapshot(book)], SystemTime::now());
    let (endpoint, shutdown) = serve(hub.clone()).await;

    // The slow one: small HTTP/2 windows so it backs up into its queue quickly.
    let slow_channel = Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .unwrap();
    let (slow, _slow_tx) = open(
        slow_channel,
        vec![
            subscribe(&["LIGHT"], slow_channels, policy),
            subscribe(&["HEAVY"], &[Ch::Trades], policy),
        ],
    )
    .await;

    let (ready_tx, mut ready_rx) = mpsc::channel(FAST);
    let (last_tx, last_rx) = tokio::sync::watch::channel(0u64);
    let mut fast = Vec::new();
    let mut senders = Vec::new();
    for c in 0..FAST_CONNECTIONS {
        let channel = Endpoint::from_shared(endpoint.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        for _ in 0..FAST / FAST_CONNECTIONS {
            let (stream, tx) = open(
                channel.clone(),
                vec![subscribe(
                    &["LIGHT"],
                    &[Ch::TopOfBook, Ch::Trades, Ch::Depth],
                    SlowConsumerPolicy::DropOldest,
                )],
            )
            .await;
            senders.push(tx);
            fast.push(tokio::spawn(fast_reader(
                stream,
                ready_tx.clone(),
                last_rx.clone(),
            )));
        }
        let _ = c;
    }
    for _ in 0..FAST {
        tokio::time::timeout(Duration::from_secs(20), ready_rx.recv())
            .await
            .expect("every fast subscriber gets its snapshot");
    }

    let rss_before = rss_bytes();
    let mut ticker = tokio::time::interval(Duration::from_millis(3));
    let payload = "x".repeat(HEAVY_BYTES);
    for round in 0..ROUNDS {
        ticker.tick().await;
        let price = 10_000 - (round % 5) as i64;
        let qty = 1 + (round % 7) as i64;
        let trade = |id: String| {
            Update::Trade(TradePrint {
                id,
                price: 10_001,
                quantity: 1,
                buyer_is_maker: false,
            })
        };
        hub.publish(
            light,
            &[
                Update::Delta(Depth {
                    bids: vec![Level::new(price, qty)],
                    asks: vec![],
                }),
                trade(format!("l{round}")),
            ],
            SystemTime::now(),
        );
        hub.publish(
            heavy,
            &[trade(format!("{round}{payload}"))],
            SystemTime::now(),
        );
    }
    let rss_after = rss_bytes();
    let (_, last) = hub.book(light).unwrap();
    last_tx.send(last).unwrap();

    let mut latencies = Vec::new();
    for f in fast {
        let report = tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("fast subscribers finish")
            .unwrap();
        assert_eq!(report.gaps, 0, "a fast subscriber lost nothing");
        assert_eq!(
            report.out_of_order, 0,
            "a fast subscriber saw every sequence in order"
        );
        assert_eq!(report.not_live, 0, "a fast subscriber never had to resync");
        latencies.extend(report.latencies_us);
    }
    latencies.sort_unstable();
    let p99_us = latencies[latencies.len() * 99 / 100];
    let p50_us = latencies[latencies.len() / 2];
    eprintln!(
        "{policy:?}: fast subscribers got {} events, p50 {p50_us} us, p99 {p99_us} us; \
         RSS {} -> {} MiB",
        latencies.len(),
        rss_before >> 20,
        rss_after >> 20
    );
    drop(senders);
    Outcome {
        shutdown,
        hub,
        slow,
        rss_growth: rss_after as i64 - rss_before as i64,
        p99_us,
    }
}

/// What the unbounded case would have held for the slow subscriber.
const UNBOUNDED_BYTES: i64 = ROUNDS as i64 * HEAVY_BYTES as i64;

fn assert_bounded(o: &Outcome) {
    assert!(
        o.rss_growth < UNBOUNDED_BYTES / 2,
        "RSS grew {} MiB while {} MiB went to a subscriber that never read",
        o.rss_growth >> 20,
        UNBOUNDED_BYTES >> 20
    );
    // Debug build on a shared 2-core machine, 100 subscribers and the publisher in one
    // process: absolute latency is the benchmark's business (release build). What this
    // catches is a fast subscriber waiting on the slow one, which would be seconds.
    assert!(o.p99_us < 2_000_000, "fast p99 {} us", o.p99_us);
    assert!(o.hub.metrics.queued.get() <= (QUEUE + FAST * 4) as i64);
}

/// Reads what the slow subscriber has, until `done` says so or the stream ends.
async fn read_slow(
    stream: &mut tonic::Streaming<v1::StreamMarketDataResponse>,
    mut done: impl FnMut(&v1::MarketDataEvent) -> bool,
) -> Result<Vec<v1::MarketDataEvent>, tonic::Status> {
    let mut seen = Vec::new();
    for _ in 0..100_000 {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(m))) => {
                for e in m.events {
                    let stop = done(&e);
                    seen.push(e);
                    if stop {
                        return Ok(seen);
                    }
                }
            }
            Ok(Some(Err(status))) => return Err(status),
            Ok(None) => return Ok(seen),
            Err(_) => panic!("the slow subscriber's stream went quiet"),
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_reading_conflating_subscriber_keeps_only_the_latest_top_of_book() {
    let _serial = SERIAL.lock().await;
    let mut o = run(SlowConsumerPolicy::Conflate, &[Ch::TopOfBook]).await;
    assert_bounded(&o);
    assert!(o.hub.metrics.conflated.get() > 0, "tops were conflated");
    // When it finally reads, what it gets ends with the latest heavy trade.
    let last_trade = format!("{}x", ROUNDS - 1);
    let is_last = |e: &v1::MarketDataEvent| matches!(&e.payload, Some(Payload::Trade(t)) if t.trade_id.starts_with(&last_trade));
    let seen = read_slow(&mut o.slow, is_last).await.unwrap();
    assert!(seen.last().is_some_and(is_last));
    // Tops of the light symbol only ever move forward.
    let tops: Vec<u64> = seen
        .iter()
        .filter(|e| e.symbol == "LIGHT" && matches!(e.payload, Some(Payload::TopOfBook(_))))
        .map(|e| e.sequence)
        .collect();
    assert!(tops.windows(2).all(|w| w[0] < w[1]));
    o.shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_reading_drop_oldest_subscriber_gets_a_gap_notice_and_a_resynced_book() {
    let _serial = SERIAL.lock().await;
    let mut o = run(SlowConsumerPolicy::DropOldest, &[Ch::Depth, Ch::Trades]).await;
    assert_bounded(&o);
    assert!(
        o.hub.metrics.subscriber_resyncs.get() == 0,
        "nothing resyncs before it reads"
    );
    let light = o.hub.lookup("sim", "LIGHT").unwrap();
    let (book, _) = o.hub.book(light).unwrap();
    let mut resyncing = false;
    let seen = read_slow(&mut o.slow, |e| {
        let status = match &e.payload {
            Some(Payload::Status(s)) if e.symbol == "LIGHT" => s.status,
            _ => return false,
        };
        let live_again = resyncing && status == FeedStatus::Live as i32;
        resyncing |= status == FeedStatus::Resyncing as i32;
        live_again
    })
    .await
    .unwrap();
    let dropped: u64 = seen
        .iter()
        .filter_map(|e| match e.payload {
            Some(Payload::Gap(g)) => Some(g.dropped),
            _ => None,
        })
        .sum();
    assert!(dropped > 0, "a gap notice says what was lost");
    let light_statuses: Vec<i32> = seen
        .iter()
        .filter(|e| e.symbol == "LIGHT")
        .filter_map(|e| match &e.payload {
            Some(Payload::Status(s)) => Some(s.status),
            _ => None,
        })
        .collect();
    assert_eq!(
        &light_statuses[light_statuses.len() - 2..],
        [FeedStatus::Resyncing as i32, FeedStatus::Live as i32]
    );
    // The resync snapshot is the hub's book: nothing corrupted by the drops.
    let snapshot = seen
        .iter()
        .rev()
        .find_map(|e| match &e.payload {
            Some(Payload::BookSnapshot(s)) if e.symbol == "LIGHT" => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    let s = spec("LIGHT");
    let bids: Vec<Level> = snapshot
        .bids
        .iter()
        .map(|l| Level::new(s.ticks(&l.price).unwrap(), s.lots(&l.quantity).unwrap()))
        .collect();
    assert_eq!(bids, book.depth().bids);
    assert!(o.hub.metrics.subscriber_resyncs.get() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_reading_disconnect_subscriber_is_ended_with_resource_exhausted() {
    let _serial = SERIAL.lock().await;
    let mut o = run(SlowConsumerPolicy::Disconnect, &[Ch::TopOfBook]).await;
    assert_bounded(&o);
    assert_eq!(o.hub.metrics.slow_disconnects.get(), 1);
    let status = read_slow(&mut o.slow, |_| false).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "SLOW_CONSUMER"
    );
    o.shutdown.trigger();
}
