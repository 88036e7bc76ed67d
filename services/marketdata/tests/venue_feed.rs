//! The venue websocket feed against a local venue simulator speaking `json-l2` over a real
//! websocket, observed the way a client sees it: through `StreamMarketData` over gRPC.
//!
//! The simulator keeps the true book and update ids; the tests make it lose a delta, drop
//! the connection, refuse reconnects for a while, or go silent, and check the statuses a
//! subscriber sees and that its book ends equal to the venue's.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use execbridge_api::v1::market_data_event::Payload;
use execbridge_api::v1::market_data_service_client::MarketDataServiceClient;
use execbridge_api::v1::stream_market_data_request::Action;
use execbridge_api::v1::{self, Channel as Ch, FeedStatus, StreamMarketDataRequest, Subscribe};
use execbridge_marketdata::config::{FanoutConfig, VenueConfig, VenueSymbolConfig};
use execbridge_marketdata::feed::Feed;
use execbridge_marketdata::feed::json::{JsonL2, Message as VenueMsg, Request as VenueReq};
use execbridge_marketdata::feed::ws::WebsocketFeed;
use execbridge_marketdata::hub::Hub;
use execbridge_marketdata::metrics::Metrics;
use execbridge_marketdata::model::{Book, Depth, InstrumentSpec, Level};
use execbridge_marketdata::service::MarketDataServer;
use execbridge_runtime::Shutdown;
use futures::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const SYMBOL: &str = "BTC-USDT";

fn spec() -> InstrumentSpec {
    InstrumentSpec {
        venue: "local".into(),
        symbol: SYMBOL.into(),
        tick_size: Decimal::new(1, 2),
        lot_size: Decimal::new(1, 3),
    }
}

fn wire(levels: &[Level]) -> Vec<[String; 2]> {
    let s = spec();
    levels
        .iter()
        .map(|l| [s.price(l.price), s.quantity(l.quantity)])
        .collect()
}

/// The venue's side of the world.
#[derive(Default)]
struct VenueState {
    book: Book,
    last_update: u64,
    /// The live connection's outbox and kill switch, once it subscribed.
    connection: Option<(mpsc::UnboundedSender<String>, CancellationToken)>,
    refuse: bool,
    mute: bool,
    accepted: usize,
    /// Requests per connection, in order.
    requests: Vec<Vec<VenueReq>>,
}

/// A local venue simulator speaking `json-l2`.
#[derive(Clone)]
struct LocalVenue {
    state: Arc<Mutex<VenueState>>,
    url: String,
    mute_changed: Arc<tokio::sync::Notify>,
    /// Connection attempts refused so far.
    refused: tokio::sync::watch::Sender<usize>,
}

impl LocalVenue {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let mut book = Book::default();
        book.replace(&Depth {
            bids: (0..5).map(|k| Level::new(100_000 - k, 1_000 + k)).collect(),
            asks: (0..5).map(|k| Level::new(100_001 + k, 2_000 + k)).collect(),
        });
        let venue = LocalVenue {
            state: Arc::new(Mutex::new(VenueState {
                book,
                last_update: 100,
                ..VenueState::default()
            })),
            url,
            mute_changed: Arc::default(),
            refused: tokio::sync::watch::Sender::new(0),
        };
        let v = venue.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                if v.lock().refuse {
                    drop(tcp);
                    v.refused.send_modify(|n| *n += 1);
                    continue;
                }
                tokio::spawn(v.clone().serve(tcp));
            }
        });
        venue
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VenueState> {
        self.state.lock().unwrap()
    }

    async fn serve(self, tcp: tokio::net::TcpStream) {
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        let (tx, mut outbox) = mpsc::unbounded_channel::<String>();
        let kill = CancellationToken::new();
        let index = {
            let mut s = self.lock();
            s.accepted += 1;
            s.requests.push(Vec::new());
            s.requests.len() - 1
        };
        loop {
            let mute = self.lock().mute;
            tokio::select! {
                // A muted venue reads nothing, so it answers no pings either.
                frame = ws.next(), if !mute => {
                    let Some(Ok(Message::Text(text))) = frame else {
                        match frame {
                            Some(Ok(_)) => continue,
                            _ => return,
                        }
                    };
                    let request: VenueReq = serde_json::from_str(text.as_str()).unwrap();
                    let reply = {
                        let mut s = self.lock();
                        s.requests[index].push(request.clone());
                        match request {
                            VenueReq::Subscribe { .. } => {
                                s.connection = Some((tx.clone(), kill.clone()));
                                r#"{"type":"subscribed"}"#.to_owned()
                            }
                            VenueReq::Snapshot { .. } => serde_json::to_string(&VenueMsg::Snapshot {
                                symbol: SYMBOL.into(),
                                last_update: s.last_update,
                                bids: wire(&s.book.depth().bids),
                                asks: wire(&s.book.depth().asks),
                                time_ms: None,
                            })
                            .unwrap(),
                        }
                    };
                    if ws.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
                Some(text) = outbox.recv(), if !mute => {
                    if ws.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                () = self.mute_changed.notified() => {}
                // An abrupt drop: no close frame, as when a venue's load balancer resets.
                () = kill.cancelled() => return,
            }
        }
    }

    /// Changes the book by one update; `deliver` false loses it on the way (a gap).
    fn update(&self, bids: &[Level], asks: &[Level], deliver: bool) {
        let mut s = self.lock();
        s.book.apply(&Depth {
            bids: bids.to_vec(),
            asks: asks.to_vec(),
        });
        s.last_update += 1;
        let message = serde_json::to_string(&VenueMsg::Delta {
            symbol: SYMBOL.into(),
            first_update: s.last_update,
            last_update: s.last_update,
            bids: wire(bids),
            asks: wire(asks),
            time_ms: None,
        })
        .unwrap();
        if let (true, Some((tx, _))) = (deliver, &s.connection) {
            let _ = tx.send(message);
        }
    }

    fn trade(&self, id: &str) {
        let s = self.lock();
        let message = serde_json::to_string(&VenueMsg::Trade {
            symbol: SYMBOL.into(),
            id: id.into(),
            price: "1000.01".into(),
            quantity: "0.5".into(),
            buyer_is_maker: false,
            time_ms: Some(1_700_000_000_000),
        })
        .unwrap();
        if let Some((tx, _)) = &s.connection {
            let _ = tx.send(message);
        }
    }

    fn drop_connection(&self) {
        if let Some((_, kill)) = self.lock().connection.take() {
            kill.cancel();
        }
    }

    fn set_mute(&self, mute: bool) {
        self.lock().mute = mute;
        self.mute_changed.notify_waiters();
    }

    fn book(&self) -> Book {
        self.lock().book.clone()
    }
}

fn venue_config(url: &str, idle_ms: u64) -> VenueConfig {
    VenueConfig {
        name: "local".into(),
        url: url.into(),
        protocol: "json-l2".into(),
        ping_interval_ms: 60_000,
        idle_timeout_ms: idle_ms,
        dead_timeout_ms: 60_000,
        backoff_initial_ms: 20,
        backoff_max_ms: 100,
        symbols: vec![VenueSymbolConfig {
            symbol: SYMBOL.into(),
            tick_size: Decimal::new(1, 2),
            lot_size: Decimal::new(1, 3),
        }],
    }
}

/// The feed and the gRPC service over it, and a subscriber to every channel.
struct Harness {
    hub: Arc<Hub>,
    endpoint: String,
    shutdown: Shutdown,
    client: Client,
}

impl Harness {
    async fn start(venue: &LocalVenue, idle_ms: u64) -> Self {
        let hub = Arc::new(Hub::new(Metrics::unregistered()));
        let shutdown = Shutdown::new();
        let mut feed = WebsocketFeed::new(venue_config(&venue.url, idle_ms), Arc::new(JsonL2));
        feed.register(&hub);
        tokio::spawn(Box::new(feed).run(hub.clone(), shutdown.clone()));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = MarketDataServer::new(
            hub.clone(),
            "local".into(),
            FanoutConfig::default(),
            shutdown.clone(),
        );
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    execbridge_runtime::grpc::incoming(listener),
                    shutdown.wait_owned(),
                ),
        );
        let endpoint = format!("http://{addr}");
        let client = subscribe(&endpoint).await;
        Harness {
            hub,
            endpoint,
            shutdown,
            client,
        }
    }
}

/// A new stream subscribed to every channel of the symbol.
async fn subscribe(endpoint: &str) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(StreamMarketDataRequest {
        action: Some(Action::Subscribe(Subscribe {
            venue: "local".into(),
            symbols: vec![SYMBOL.into()],
            channels: vec![Ch::TopOfBook as i32, Ch::Trades as i32, Ch::Depth as i32],
            policy: 0,
        })),
    })
    .await
    .unwrap();
    let stream = MarketDataServiceClient::new(channel)
        .stream_market_data(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Client {
        stream,
        _requests: tx,
        book: Book::default(),
        statuses: Vec::new(),
        snapshots: 0,
        trades: Vec::new(),
        last_sequence: 0,
        pending: std::collections::VecDeque::new(),
    }
}

/// What a subscriber holds, built only from what it received.
struct Client {
    stream: tonic::Streaming<v1::StreamMarketDataResponse>,
    _requests: mpsc::Sender<StreamMarketDataRequest>,
    book: Book,
    statuses: Vec<FeedStatus>,
    snapshots: usize,
    trades: Vec<String>,
    last_sequence: u64,
    /// Received but not yet looked at (`until` stops in the middle of a message).
    pending: std::collections::VecDeque<v1::MarketDataEvent>,
}

impl Client {
    fn apply(&mut self, e: v1::MarketDataEvent) {
        let s = spec();
        let levels = |v: &[v1::PriceLevel]| -> Vec<Level> {
            v.iter()
                .map(|l| Level::new(s.ticks(&l.price).unwrap(), s.lots(&l.quantity).unwrap()))
                .collect()
        };
        if e.sequence != 0 {
            // Updates only move forward; a snapshot may repeat the sequence of the top
            // of book sent with it to a late joiner.
            assert!(
                e.sequence >= self.last_sequence,
                "{} after {}",
                e.sequence,
                self.last_sequence
            );
            self.last_sequence = e.sequence;
        }
        match e.payload {
            Some(Payload::Status(st)) => {
                self.statuses.push(FeedStatus::try_from(st.status).unwrap())
            }
            Some(Payload::BookSnapshot(b)) => {
                self.snapshots += 1;
                self.book.replace(&Depth {
                    bids: levels(&b.bids),
                    asks: levels(&b.asks),
                });
            }
            Some(Payload::BookDelta(d)) => self.book.apply(&Depth {
                bids: levels(&d.bids),
                asks: levels(&d.asks),
            }),
            Some(Payload::Trade(t)) => self.trades.push(t.trade_id),
            Some(Payload::Gap(g)) => {
                panic!("this subscriber never falls behind, yet lost {}", g.dropped)
            }
            _ => {}
        }
    }

    /// Reads until `done` holds (checked after every event), for at most 10 s.
    async fn until(&mut self, what: &str, mut done: impl FnMut(&Client) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Some(e) = self.pending.pop_front() {
            self.apply(e);
            if done(self) {
                return;
            }
        }
        while !done(self) {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out waiting for {what}; statuses {:?}", self.statuses)
                })
                .expect("the stream stays open")
                .expect("no error");
            self.pending.extend(message.events);
            while let Some(e) = self.pending.pop_front() {
                self.apply(e);
                if done(self) {
                    return;
                }
            }
        }
    }

    fn status(&self) -> Option<FeedStatus> {
        self.statuses.last().copied()
    }
}

fn bid(price: i64, quantity: i64) -> Level {
    Level::new(price, quantity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_gap_turns_the_symbol_resyncing_then_a_fresh_snapshot_makes_it_live_again() {
    let venue = LocalVenue::start().await;
    let mut h = Harness::start(&venue, 60_000).await;
    let c = &mut h.client;
    c.until("LIVE with a book", |c| {
        c.status() == Some(FeedStatus::Live) && c.snapshots > 0
    })
    .await;
    assert_eq!(c.book, venue.book());

    venue.update(&[bid(100_000, 7)], &[], true);
    venue.update(&[bid(99_999, 0)], &[], true);
    c.until("the deltas", |c| c.book == venue.book()).await;

    let snapshots = c.snapshots;
    venue.update(&[bid(99_998, 0)], &[], false);
    venue.update(&[bid(100_000, 9)], &[], true);
    c.until("RESYNCING", |c| c.status() == Some(FeedStatus::Resyncing))
        .await;
    c.until("LIVE again", |c| c.status() == Some(FeedStatus::Live))
        .await;
    assert_eq!(
        c.snapshots,
        snapshots + 1,
        "a fresh snapshot came before LIVE"
    );
    assert_eq!(c.book, venue.book(), "the resynced book is the venue's");
    assert_eq!(
        h.hub
            .metrics
            .upstream_gaps
            .with_label_values(&["local"])
            .get(),
        1
    );

    venue.update(&[bid(99_990, 4)], &[], true);
    venue.trade("t-1");
    c.until("the trade after the delta", |c| c.trades == ["t-1"])
        .await;
    assert_eq!(c.book, venue.book());
    h.shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_disconnect_turns_symbols_reconnecting_and_recovery_leaves_no_corrupted_book() {
    let venue = LocalVenue::start().await;
    let mut h = Harness::start(&venue, 60_000).await;
    let c = &mut h.client;
    c.until("LIVE", |c| {
        c.status() == Some(FeedStatus::Live) && c.snapshots > 0
    })
    .await;
    venue.update(&[bid(100_000, 3)], &[], true);
    c.until("the first delta", |c| c.book == venue.book()).await;

    // The venue drops the connection and refuses the next attempts; the market moves on.
    venue.lock().refuse = true;
    venue.drop_connection();
    c.until("RECONNECTING", |c| {
        c.status() == Some(FeedStatus::Reconnecting)
    })
    .await;
    for k in 0..5 {
        venue.update(&[bid(100_000 - k, 0)], &[bid(100_001 + k, 50 + k)], false);
    }
    venue.update(&[bid(99_000, 11)], &[], false);
    let mut refused = venue.refused.subscribe();
    tokio::time::timeout(Duration::from_secs(10), refused.wait_for(|n| *n >= 3))
        .await
        .expect("it keeps retrying, with backoff")
        .unwrap();
    let reconnects = h
        .hub
        .metrics
        .upstream_reconnects
        .with_label_values(&["local"])
        .get();
    assert!(reconnects >= 3, "{reconnects} reconnect attempts counted");
    venue.lock().refuse = false;

    let c = &mut h.client;
    c.until("LIVE again", |c| c.status() == Some(FeedStatus::Live))
        .await;
    assert_eq!(
        c.book,
        venue.book(),
        "the book after recovery is the venue's"
    );
    assert!(!c.book.is_crossed());
    let accepted = venue.lock().accepted;
    let requests = venue.lock().requests.last().cloned().unwrap();
    assert_eq!(accepted, 2);
    assert!(
        matches!(requests[0], VenueReq::Subscribe { .. }),
        "resubscribed: {requests:?}"
    );
    assert!(
        matches!(requests[1], VenueReq::Snapshot { .. }),
        "re-snapshotted: {requests:?}"
    );

    venue.update(&[bid(99_000, 12)], &[], true);
    c.until("updates after recovery", |c| c.book == venue.book())
        .await;
    h.shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_venue_turns_symbols_stale_and_data_turns_them_live_again() {
    let venue = LocalVenue::start().await;
    let mut h = Harness::start(&venue, 300).await;
    let c = &mut h.client;
    c.until("LIVE", |c| {
        c.status() == Some(FeedStatus::Live) && c.snapshots > 0
    })
    .await;
    venue.set_mute(true);
    c.until("STALE", |c| c.status() == Some(FeedStatus::Stale))
        .await;
    venue.set_mute(false);
    venue.update(&[bid(100_000, 8)], &[], true);
    c.until("LIVE after data", |c| c.status() == Some(FeedStatus::Live))
        .await;
    c.until("the delta", |c| c.book == venue.book()).await;
    assert_eq!(venue.lock().accepted, 1, "STALE is not a reconnect");
    h.shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_share_one_upstream_connection() {
    let venue = LocalVenue::start().await;
    let mut h = Harness::start(&venue, 60_000).await;
    h.client
        .until("LIVE", |c| {
            c.status() == Some(FeedStatus::Live) && c.snapshots > 0
        })
        .await;
    let mut others = Vec::new();
    for _ in 0..20 {
        others.push(subscribe(&h.endpoint).await);
    }
    venue.update(&[bid(100_000, 5)], &[], true);
    for c in &mut others {
        c.until("the book", |c| {
            c.status() == Some(FeedStatus::Live) && c.book == venue.book()
        })
        .await;
    }
    assert_eq!(venue.lock().accepted, 1);
    assert_eq!(h.hub.metrics.subscribers.get(), 21);
    h.shutdown.trigger();
}
