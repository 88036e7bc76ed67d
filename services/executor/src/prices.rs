//! The marketdata subscription that feeds the paper venue: every top of book (and, when
//! `marketdata.depth` is on and the feed publishes it, every L2 snapshot and delta) goes to
//! the engine, which fills the working orders it crosses. Reconnects with capped
//! exponential backoff; the executor is ready only while prices flow and its journal is
//! healthy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use execbridge_api::v1::market_data_event::Payload;
use execbridge_api::v1::market_data_service_client::MarketDataServiceClient;
use execbridge_api::v1::stream_market_data_request::Action;
use execbridge_api::v1::{Channel, StreamMarketDataRequest, Subscribe};
use execbridge_domain::values::parse_decimal;
use execbridge_runtime::grpc;
use execbridge_runtime::tls::TlsContext;
use execbridge_runtime::{Health, Shutdown};
use futures::StreamExt;
use tonic::transport::Endpoint;

use crate::paper::{Book, Quote};
use crate::shard::Shard;
use rust_decimal::Decimal;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why one connection to marketdata ended.
#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the stream ended")]
    Ended,
}

/// Follows the prices of `venue` at `endpoint` until `shutdown`; over mTLS when `tls`
/// (the context and the server name to check, empty for the endpoint's host) is set.
pub async fn follow(
    endpoint: String,
    tls: Option<(TlsContext, String)>,
    venue: String,
    depth: bool,
    shard: Arc<Shard>,
    health: Health,
    shutdown: Shutdown,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let result = tokio::select! {
            r = stream_once(&endpoint, tls.as_ref(), &venue, depth, &shard, &health, &shutdown, &mut backoff) => r,
            () = shutdown.wait() => return,
        };
        if let Err(e) = result {
            crate::metrics::get().marketdata_reconnects.inc();
            health.set_not_ready().await;
            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "marketdata feed lost");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.wait() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The bid and ask ladders of one book: price to quantity.
type Ladders = (BTreeMap<Decimal, Decimal>, BTreeMap<Decimal, Decimal>);

/// L2 books built from snapshots and deltas, per (venue, symbol).
#[derive(Default)]
struct DepthBooks {
    books: HashMap<(String, String), Ladders>,
    last: HashMap<(String, String), Decimal>,
}

fn levels(levels: &[execbridge_api::v1::PriceLevel]) -> Vec<(Decimal, Decimal)> {
    levels
        .iter()
        .filter_map(|l| {
            Some((
                parse_decimal(&l.price).ok()?,
                parse_decimal(&l.quantity).ok()?,
            ))
        })
        .collect()
}

impl DepthBooks {
    fn apply(&mut self, key: (String, String), payload: &Payload) -> Option<Book> {
        match payload {
            Payload::BookSnapshot(s) => {
                let book = self.books.entry(key.clone()).or_default();
                book.0 = levels(&s.bids).into_iter().collect();
                book.1 = levels(&s.asks).into_iter().collect();
            }
            Payload::BookDelta(d) => {
                let book = self.books.get_mut(&key)?;
                for (side, changes) in [(&mut book.0, &d.bids), (&mut book.1, &d.asks)] {
                    for (price, q) in levels(changes) {
                        if q.is_zero() {
                            side.remove(&price);
                        } else {
                            side.insert(price, q);
                        }
                    }
                }
            }
            _ => return None,
        }
        let book = self.books.get(&key)?;
        let last = self.last.get(&key).copied().unwrap_or_default();
        Some(Book::from_depth(
            book.0.iter().map(|(p, q)| (*p, *q)).collect(),
            book.1.iter().map(|(p, q)| (*p, *q)).collect(),
            last,
        ))
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream_once(
    endpoint: &str,
    tls: Option<&(TlsContext, String)>,
    venue: &str,
    depth: bool,
    shard: &Shard,
    health: &Health,
    shutdown: &Shutdown,
    backoff: &mut Duration,
) -> Result<(), FeedError> {
    let endpoint_config = Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    let channel = match tls {
        None => grpc::channel_connect(endpoint_config, None, "").await?,
        Some((tls, name)) => grpc::channel_connect(endpoint_config, Some(tls), name).await?,
    };
    let subscribe = StreamMarketDataRequest {
        action: Some(Action::Subscribe(Subscribe {
            venue: venue.to_owned(),
            symbols: Vec::new(),
            channels: if depth {
                vec![Channel::TopOfBook as i32, Channel::Depth as i32]
            } else {
                vec![Channel::TopOfBook as i32]
            },
            policy: 0,
        })),
    };
    // The request side stays open (pending) so the server keeps the subscription.
    let requests = futures::stream::iter([subscribe]).chain(futures::stream::pending());
    let mut events = MarketDataServiceClient::new(channel)
        .stream_market_data(requests)
        .await?
        .into_inner();
    let mut ready = false;
    let mut books = DepthBooks::default();
    // Ready only once a price is applied: a status frame alone prices nothing.
    let mut priced = false;
    while let Some(message) = events.next().await {
        let message = message?;
        for event in message.events {
            let key = (event.venue.clone(), event.symbol.clone());
            if let Some(payload @ (Payload::BookSnapshot(_) | Payload::BookDelta(_))) =
                &event.payload
            {
                if let Some(book) = books.apply(key, payload) {
                    shard.market(|e| {
                        e.on_book(&event.venue, &event.symbol, book, SystemTime::now())
                    });
                }
                continue;
            }
            let Some(Payload::TopOfBook(top)) = event.payload else {
                continue;
            };
            let (Ok(bid), Ok(ask), Ok(last)) = (
                parse_decimal(&top.bid_price),
                parse_decimal(&top.ask_price),
                parse_decimal(&top.last_price),
            ) else {
                tracing::warn!(symbol = %event.symbol, "unparseable top of book skipped");
                continue;
            };
            priced = true;
            books.last.insert(key.clone(), last);
            if books.books.contains_key(&key) {
                // Depth drives matching; the top of book only moves the last price.
                continue;
            }
            let sizes = (
                parse_decimal(&top.bid_quantity).ok(),
                parse_decimal(&top.ask_quantity).ok(),
            );
            shard.market(|e| {
                e.on_top_of_book(
                    &event.venue,
                    &event.symbol,
                    Quote { bid, ask, last },
                    sizes,
                    SystemTime::now(),
                );
            });
        }
        if !ready && priced && !shutdown.is_triggered() && shard.failed().is_none() {
            ready = true;
            *backoff = FIRST_BACKOFF;
            tracing::info!(endpoint, "marketdata feed live");
            health.set_ready().await;
        }
    }
    Err(FeedError::Ended)
}
