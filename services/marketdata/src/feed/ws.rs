//! The venue websocket feed: one connection per venue, whatever the number of subscribers.
//!
//! After every connect it subscribes to every configured symbol and asks for a fresh
//! snapshot of each; deltas that arrive before a symbol's snapshot are buffered and the
//! ones the snapshot does not include are applied after it. A delta whose first update id
//! is beyond the last one applied is a gap: the symbol turns RESYNCING, a new snapshot is
//! requested, and it turns LIVE again once applied. Losing the connection turns every
//! symbol RECONNECTING; the first retry is immediate, later ones back off exponentially
//! with jitter up to a cap. Pings go out every `ping_interval`; any frame from the venue
//! counts as life: after `idle_timeout` without one the symbols turn STALE, after
//! `dead_timeout` the connection is dropped and remade.
//!
//! The venue's format plugs in through [`VenueProtocol`] (see [`super::json`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use execbridge_api::v1::FeedStatus;
use execbridge_runtime::Shutdown;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::Feed;
use crate::config::VenueConfig;
use crate::hub::{Hub, InstrumentId};
use crate::model::{Depth, GridError, InstrumentSpec, Level, TradePrint, Update};

/// A message from a venue, in the venue's own terms (decimal strings, update ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VenueMessage {
    /// The full book including every update up to `last_update`.
    Snapshot {
        /// Symbol as configured.
        symbol: String,
        /// Last update id included.
        last_update: u64,
        /// `(price, quantity)`.
        bids: Vec<(String, String)>,
        /// `(price, quantity)`.
        asks: Vec<(String, String)>,
        /// Venue time, Unix ms.
        time_ms: Option<u64>,
    },
    /// Changed levels covering `first_update..=last_update`; quantity 0 removes a level.
    Delta {
        /// Symbol as configured.
        symbol: String,
        /// First update id covered.
        first_update: u64,
        /// Last update id covered.
        last_update: u64,
        /// `(price, quantity)`.
        bids: Vec<(String, String)>,
        /// `(price, quantity)`.
        asks: Vec<(String, String)>,
        /// Venue time, Unix ms.
        time_ms: Option<u64>,
    },
    /// A trade.
    Trade {
        /// Symbol as configured.
        symbol: String,
        /// Venue trade id.
        id: String,
        /// Price.
        price: String,
        /// Quantity.
        quantity: String,
        /// The buyer was the resting order.
        buyer_is_maker: bool,
        /// Venue time, Unix ms.
        time_ms: Option<u64>,
    },
}

/// Why a venue frame could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not the venue's format.
    #[error("malformed venue message: {0}")]
    Malformed(String),
    /// A price or quantity off the instrument's grid.
    #[error("{symbol}: {source}")]
    Grid {
        /// Symbol.
        symbol: String,
        /// What was wrong.
        source: GridError,
    },
}

/// A venue's websocket wire format.
pub trait VenueProtocol: Send + Sync + 'static {
    /// Text frames that subscribe to `symbols` after a connect.
    fn subscribe(&self, symbols: &[String]) -> Vec<String>;

    /// A text frame that asks for a fresh snapshot of `symbol`, answered in-band with a
    /// [`VenueMessage::Snapshot`]. (Venues whose snapshots come over REST, like Binance's,
    /// will fetch them beside the socket; the state machine here is the same.)
    fn request_snapshot(&self, symbol: &str) -> Option<String>;

    /// Decodes one text frame.
    ///
    /// # Errors
    /// [`ProtocolError`] when the frame is not the venue's format.
    fn decode(&self, text: &str) -> Result<Vec<VenueMessage>, ProtocolError>;
}

/// Exponential backoff with jitter; the first retry after a loss is immediate.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Backoff starting at `initial` (for the second retry) and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// The wait before the next attempt, counting this one as a failure: zero for the
    /// first, then `initial * 2^(n-1)` capped at `max`, of which a random half is jitter
    /// (so many clients that lost the same venue do not come back in step).
    pub fn next_delay(&mut self) -> Duration {
        let n = self.failures;
        self.failures = self.failures.saturating_add(1);
        if n == 0 {
            return Duration::ZERO;
        }
        let exp = self
            .initial
            .saturating_mul(1u32 << (n - 1).min(20))
            .min(self.max);
        let half = exp / 2;
        half + half.mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    /// A connection worked: the next loss retries immediately again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Where one symbol's book stands on the current connection.
#[derive(Debug)]
enum SymbolState {
    /// Waiting for a snapshot; deltas that arrive meanwhile, oldest first.
    AwaitingSnapshot(Vec<(u64, u64, Depth, SystemTime)>),
    /// Applied every update up to this id.
    Live(u64),
}

/// Deltas buffered while a snapshot is awaited before the buffer is restarted.
const MAX_BUFFERED_DELTAS: usize = 10_000;

/// Why a session (one connection) ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("connect: {0}")]
    Connect(String),
    #[error("connection: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the venue closed the connection")]
    Closed,
    #[error("nothing from the venue for {0:?}")]
    Dead(Duration),
    #[error("shutdown")]
    Shutdown,
}

/// One venue's websocket feed.
pub struct WebsocketFeed {
    config: VenueConfig,
    protocol: Arc<dyn VenueProtocol>,
    specs: Vec<InstrumentSpec>,
    ids: Vec<InstrumentId>,
    by_symbol: HashMap<String, usize>,
}

impl WebsocketFeed {
    /// A feed for `config`, speaking `protocol`.
    pub fn new(config: VenueConfig, protocol: Arc<dyn VenueProtocol>) -> Self {
        let specs: Vec<InstrumentSpec> = config
            .symbols
            .iter()
            .map(|s| InstrumentSpec {
                venue: config.name.clone(),
                symbol: s.symbol.clone(),
                tick_size: s.tick_size,
                lot_size: s.lot_size,
            })
            .collect();
        let by_symbol = specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.symbol.clone(), i))
            .collect();
        Self {
            config,
            protocol,
            specs,
            ids: Vec::new(),
            by_symbol,
        }
    }

    fn all_status(&self, hub: &Hub, status: FeedStatus, reason: &str) {
        for id in &self.ids {
            hub.set_status(*id, status, reason);
        }
    }

    async fn run_forever(self: Box<Self>, hub: Arc<Hub>, shutdown: Shutdown) {
        let venue = self.config.name.clone();
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.backoff_initial_ms),
            Duration::from_millis(self.config.backoff_max_ms),
        );
        let mut first = true;
        loop {
            if !first {
                hub.metrics
                    .upstream_reconnects
                    .with_label_values(&[venue.as_str()])
                    .inc();
            }
            first = false;
            let mut reached_live = false;
            let end = self.session(&hub, &shutdown, &mut reached_live).await;
            if reached_live {
                backoff.reset();
            }
            if matches!(end, SessionEnd::Shutdown) || shutdown.is_triggered() {
                return;
            }
            let reason = end.to_string();
            tracing::warn!(venue = %venue, reason = %reason, "venue feed lost; reconnecting");
            self.all_status(&hub, FeedStatus::Reconnecting, &reason);
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    /// One connection, from connect to loss. Cancellation safe at every await: state that
    /// matters (the hub's books and statuses) is only changed between awaits.
    async fn session(&self, hub: &Hub, shutdown: &Shutdown, reached_live: &mut bool) -> SessionEnd {
        let dead = Duration::from_millis(self.config.dead_timeout_ms);
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        let connect = tokio::time::timeout(
            dead,
            tokio_tungstenite::connect_async(self.config.url.as_str()),
        );
        let mut ws = tokio::select! {
            r = connect => match r {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(e)) => return SessionEnd::Connect(e.to_string()),
                Err(_) => return SessionEnd::Connect(format!("no answer within {dead:?}")),
            },
            () = shutdown.wait() => return SessionEnd::Shutdown,
        };
        tracing::info!(venue = %self.config.name, url = %self.config.url, "venue feed connected");
        let symbols: Vec<String> = self.specs.iter().map(|s| s.symbol.clone()).collect();
        let mut states: Vec<SymbolState> = self
            .specs
            .iter()
            .map(|_| SymbolState::AwaitingSnapshot(Vec::new()))
            .collect();
        let mut hello: Vec<String> = self.protocol.subscribe(&symbols);
        hello.extend(
            symbols
                .iter()
                .filter_map(|s| self.protocol.request_snapshot(s)),
        );
        for text in hello {
            if let Err(e) = ws.send(Message::text(text)).await {
                return SessionEnd::Socket(e);
            }
        }
        let mut ping = tokio::time::interval(Duration::from_millis(self.config.ping_interval_ms));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut last_heard = Instant::now();
        let mut stale = false;
        loop {
            let mut requests: Vec<String> = Vec::new();
            tokio::select! {
                frame = ws.next() => {
                    last_heard = Instant::now();
                    if stale {
                        stale = false;
                        self.resume(hub, &states);
                    }
                    match frame {
                        Some(Ok(Message::Text(text))) => match self.protocol.decode(text.as_str()) {
                            Ok(messages) => {
                                for m in messages {
                                    if let Err(e) = self.handle(hub, &mut states, m, &mut requests) {
                                        tracing::warn!(venue = %self.config.name, error = %e, "venue message rejected");
                                    }
                                }
                            }
                            Err(e) => tracing::warn!(venue = %self.config.name, error = %e, "venue frame not understood"),
                        },
                        Some(Ok(Message::Close(_))) | None => return SessionEnd::Closed,
                        // Pings are answered by tungstenite on the next read or write.
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return SessionEnd::Socket(e),
                    }
                    if !*reached_live && states.iter().all(|s| matches!(s, SymbolState::Live(_))) {
                        *reached_live = true;
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                        return SessionEnd::Socket(e);
                    }
                }
                () = tokio::time::sleep_until(last_heard + idle), if !stale => {
                    stale = true;
                    for (state, id) in states.iter().zip(&self.ids) {
                        if matches!(state, SymbolState::Live(_)) {
                            hub.set_status(*id, FeedStatus::Stale, &format!("nothing from the venue for {idle:?}"));
                        }
                    }
                }
                () = tokio::time::sleep_until(last_heard + dead) => {
                    return SessionEnd::Dead(dead);
                }
                () = shutdown.wait() => {
                    let _ = ws.close(None).await;
                    return SessionEnd::Shutdown;
                }
            }
            for text in requests {
                if let Err(e) = ws.send(Message::text(text)).await {
                    return SessionEnd::Socket(e);
                }
            }
        }
    }

    /// Data flows again after STALE: symbols with a good book are LIVE again.
    fn resume(&self, hub: &Hub, states: &[SymbolState]) {
        for (state, id) in states.iter().zip(&self.ids) {
            if matches!(state, SymbolState::Live(_)) {
                hub.set_status(*id, FeedStatus::Live, "data resumed");
            }
        }
    }

    fn depth(
        &self,
        i: usize,
        bids: &[(String, String)],
        asks: &[(String, String)],
    ) -> Result<Depth, ProtocolError> {
        let spec = &self.specs[i];
        let grid = |source| ProtocolError::Grid {
            symbol: spec.symbol.clone(),
            source,
        };
        let side = |levels: &[(String, String)]| -> Result<Vec<Level>, ProtocolError> {
            levels
                .iter()
                .map(|(p, q)| {
                    Ok(Level::new(
                        spec.ticks(p).map_err(grid)?,
                        spec.lots(q).map_err(grid)?,
                    ))
                })
                .collect()
        };
        Ok(Depth {
            bids: side(bids)?,
            asks: side(asks)?,
        })
    }

    /// Applies one venue message; snapshot requests to send go to `requests`.
    fn handle(
        &self,
        hub: &Hub,
        states: &mut [SymbolState],
        message: VenueMessage,
        requests: &mut Vec<String>,
    ) -> Result<(), ProtocolError> {
        let symbol = match &message {
            VenueMessage::Snapshot { symbol, .. }
            | VenueMessage::Delta { symbol, .. }
            | VenueMessage::Trade { symbol, .. } => symbol,
        };
        let Some(&i) = self.by_symbol.get(symbol) else {
            return Ok(()); // Not ours (another subscription on a shared stream).
        };
        let id = self.ids[i];
        match message {
            VenueMessage::Snapshot {
                last_update,
                bids,
                asks,
                time_ms,
                ..
            } => {
                let depth = match self.depth(i, &bids, &asks) {
                    Ok(depth) => depth,
                    Err(e) => {
                        requests.extend(self.protocol.request_snapshot(&self.specs[i].symbol));
                        return Err(e);
                    }
                };
                let buffered =
                    match std::mem::replace(&mut states[i], SymbolState::Live(last_update)) {
                        SymbolState::AwaitingSnapshot(b) => b,
                        // An unrequested snapshot still replaces the book.
                        SymbolState::Live(_) => Vec::new(),
                    };
                let mut updates = vec![Update::Snapshot(depth)];
                let mut last = last_update;
                let mut gap = None;
                for (first_update, last_update, delta, _) in buffered {
                    if last_update <= last {
                        continue;
                    }
                    if first_update > last + 1 {
                        gap = Some((last + 1, first_update));
                        break;
                    }
                    updates.push(Update::Delta(delta));
                    last = last_update;
                }
                hub.publish(id, &updates, venue_time(time_ms));
                if let Some((expected, got)) = gap {
                    self.resync(hub, states, i, expected, got, requests);
                } else {
                    states[i] = SymbolState::Live(last);
                    hub.set_status(id, FeedStatus::Live, "snapshot applied");
                }
            }
            VenueMessage::Delta {
                first_update,
                last_update,
                bids,
                asks,
                time_ms,
                ..
            } => {
                let delta = self.depth(i, &bids, &asks)?;
                match &mut states[i] {
                    SymbolState::AwaitingSnapshot(buffer) => {
                        if buffer.len() >= MAX_BUFFERED_DELTAS {
                            buffer.clear();
                            requests.extend(self.protocol.request_snapshot(&self.specs[i].symbol));
                        }
                        buffer.push((first_update, last_update, delta, venue_time(time_ms)));
                    }
                    SymbolState::Live(last) => {
                        if last_update <= *last {
                            // Already included (a replay after the snapshot).
                        } else if first_update <= *last + 1 {
                            *last = last_update;
                            hub.publish(id, &[Update::Delta(delta)], venue_time(time_ms));
                        } else {
                            let expected = *last + 1;
                            states[i] = SymbolState::AwaitingSnapshot(vec![(
                                first_update,
                                last_update,
                                delta,
                                venue_time(time_ms),
                            )]);
                            self.resync(hub, states, i, expected, first_update, requests);
                        }
                    }
                }
            }
            VenueMessage::Trade {
                id: trade_id,
                price,
                quantity,
                buyer_is_maker,
                time_ms,
                ..
            } => {
                let spec = &self.specs[i];
                let grid = |source| ProtocolError::Grid {
                    symbol: spec.symbol.clone(),
                    source,
                };
                let trade = TradePrint {
                    id: trade_id,
                    price: spec.ticks(&price).map_err(grid)?,
                    quantity: spec.lots(&quantity).map_err(grid)?,
                    buyer_is_maker,
                };
                hub.publish(id, &[Update::Trade(trade)], venue_time(time_ms));
            }
        }
        Ok(())
    }

    /// A gap: the symbol is RESYNCING until a fresh snapshot is applied.
    fn resync(
        &self,
        hub: &Hub,
        states: &mut [SymbolState],
        i: usize,
        expected: u64,
        got: u64,
        requests: &mut Vec<String>,
    ) {
        if !matches!(states[i], SymbolState::AwaitingSnapshot(_)) {
            states[i] = SymbolState::AwaitingSnapshot(Vec::new());
        }
        hub.metrics
            .upstream_gaps
            .with_label_values(&[self.config.name.as_str()])
            .inc();
        tracing::warn!(venue = %self.config.name, symbol = %self.specs[i].symbol, expected, got, "sequence gap; resyncing");
        hub.set_status(
            self.ids[i],
            FeedStatus::Resyncing,
            &format!("sequence gap: expected update {expected}, got {got}"),
        );
        requests.extend(self.protocol.request_snapshot(&self.specs[i].symbol));
    }
}

fn venue_time(ms: Option<u64>) -> SystemTime {
    ms.map_or_else(SystemTime::now, |ms| UNIX_EPOCH + Duration::from_millis(ms))
}

impl Feed for WebsocketFeed {
    fn register(&mut self, hub: &Hub) {
        self.ids = self
            .specs
            .iter()
            .map(|s| {
                hub.register(
                    s.clone(),
                    FeedStatus::Reconnecting,
                    "connecting to the venue",
                )
            })
            .collect();
    }

    fn run(
        mut self: Box<Self>,
        hub: Arc<Hub>,
        shutdown: Shutdown,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        if self.ids.len() != self.specs.len() {
            self.register(&hub);
        }
        Box::pin(self.run_forever(hub, shutdown))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
