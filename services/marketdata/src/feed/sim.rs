//! The simulated feed: a seeded random walk per symbol with an L2 book around it, in whole
//! ticks and lots.
//!
//! Prices are integers of ticks, so every price is on the tick grid and no floating point
//! touches a price. The same seed gives the same sequence of updates, whatever the timing.
//! Each tick, per symbol: the best bid moves by up to `max_step_ticks`, the spread is 1 to 3
//! ticks, levels that leave the window go, new ones appear, a couple of resting quantities
//! change, and sometimes a trade prints at the touch. The hub derives the top of book.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use execbridge_api::v1::FeedStatus;
use execbridge_runtime::Shutdown;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Feed;
use crate::config::FeedConfig;
use crate::hub::{Hub, InstrumentId};
use crate::model::{Book, Depth, InstrumentSpec, Level, Ticks, TradePrint, Update};

/// One simulated instrument.
#[derive(Debug, Clone)]
struct SimBook {
    spec: InstrumentSpec,
    book: Book,
    best_bid: Ticks,
    trades: u64,
}

/// A deterministic market: call [`SimulatedFeed::step`] for the next updates.
#[derive(Debug)]
pub struct SimulatedFeed {
    rng: ChaCha8Rng,
    books: Vec<SimBook>,
    ids: Vec<InstrumentId>,
    interval: Duration,
    max_step: i64,
    trade_pct: u8,
    levels: i64,
}

impl SimulatedFeed {
    /// A feed at the configured starting prices.
    pub fn new(config: &FeedConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let levels = i64::from(config.depth_levels.max(1));
        let books = config
            .symbols
            .iter()
            .map(|s| {
                // Validated config: initial_price is a positive multiple of tick_size.
                let mid = (s.initial_price / s.tick_size).trunc();
                let mid = i64::try_from(mid).unwrap_or(levels + 2).max(levels + 2);
                let spec = InstrumentSpec {
                    venue: s.venue.clone(),
                    symbol: s.symbol.clone(),
                    tick_size: s.tick_size,
                    lot_size: s.lot_size,
                };
                let best_bid = mid - 1;
                let mut book = Book::default();
                book.replace(&window(
                    &Book::default(),
                    best_bid,
                    best_bid + 2,
                    levels,
                    &mut rng,
                ));
                SimBook {
                    spec,
                    book,
                    best_bid,
                    trades: 0,
                }
            })
            .collect();
        Self {
            rng,
            books,
            ids: Vec::new(),
            interval: Duration::from_millis(config.tick_interval_ms),
            max_step: i64::from(config.max_step_ticks),
            trade_pct: config.trade_probability_pct,
            levels,
        }
    }

    /// The instruments this feed produces, in order.
    pub fn specs(&self) -> impl Iterator<Item = &InstrumentSpec> {
        self.books.iter().map(|b| &b.spec)
    }

    /// The current book of instrument `i` (in [`SimulatedFeed::specs`] order).
    pub fn book(&self, i: usize) -> Option<&Book> {
        self.books.get(i).map(|b| &b.book)
    }

    /// Advances every symbol by one tick; the updates of each, in `specs` order.
    pub fn step(&mut self) -> Vec<Vec<Update>> {
        let mut out = Vec::with_capacity(self.books.len());
        for b in &mut self.books {
            let step = self.rng.random_range(-self.max_step..=self.max_step);
            b.best_bid = (b.best_bid + step).max(self.levels + 1);
            let spread = self.rng.random_range(1..=3);
            let next_book = window(
                &b.book,
                b.best_bid,
                b.best_bid + spread,
                self.levels,
                &mut self.rng,
            );
            let mut next = Book::default();
            next.replace(&next_book);
            let delta = b.book.diff(&next);
            b.book = next;
            let mut updates = Vec::with_capacity(2);
            if !delta.bids.is_empty() || !delta.asks.is_empty() {
                updates.push(Update::Delta(delta));
            }
            if self.rng.random_range(0..100u8) < self.trade_pct {
                let buyer_is_maker = self.rng.random_bool(0.5);
                let quantity = self.rng.random_range(1..=50);
                let touch = if buyer_is_maker {
                    b.book.best_bid()
                } else {
                    b.book.best_ask()
                };
                if let Some(touch) = touch {
                    b.trades += 1;
                    updates.push(Update::Trade(TradePrint {
                        id: format!("{}-{}", b.spec.symbol, b.trades),
                        price: touch.price,
                        quantity,
                        buyer_is_maker,
                    }));
                }
            }
            out.push(updates);
        }
        out
    }
}

/// The book with bids from `bid` down and asks from `ask` up, `levels` each side on
/// consecutive ticks: levels of `old` inside the window keep their quantity (except one
/// random change per side), new ones get a random quantity.
fn window(old: &Book, bid: Ticks, ask: Ticks, levels: i64, rng: &mut ChaCha8Rng) -> Depth {
    let mut depth = Depth::default();
    for k in 0..levels {
        let p = bid - k;
        let q = old.bid(p).unwrap_or_else(|| rng.random_range(1..=500));
        depth.bids.push(Level::new(p, q));
        let p = ask + k;
        let q = old.ask(p).unwrap_or_else(|| rng.random_range(1..=500));
        depth.asks.push(Level::new(p, q));
    }
    let changes = usize::try_from(levels).unwrap_or(1);
    let (i, j) = (rng.random_range(0..changes), rng.random_range(0..changes));
    depth.bids[i].quantity = rng.random_range(1..=500);
    depth.asks[j].quantity = rng.random_range(1..=500);
    depth
}

impl Feed for SimulatedFeed {
    fn register(&mut self, hub: &Hub) {
        let now = SystemTime::now();
        self.ids = self
            .books
            .iter()
            .map(|b| {
                let id = hub.register(b.spec.clone(), FeedStatus::Reconnecting, "starting");
                let mid = b.best_bid + 1;
                hub.publish(
                    id,
                    &[Update::Snapshot(b.book.depth()), Update::LastPrice(mid)],
                    now,
                );
                hub.set_status(id, FeedStatus::Live, "simulated feed");
                id
            })
            .collect();
    }

    fn run(
        mut self: Box<Self>,
        hub: Arc<Hub>,
        shutdown: Shutdown,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            if self.ids.len() != self.books.len() {
                self.register(&hub);
            }
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        let now = SystemTime::now();
                        let steps = self.step();
                        for (id, updates) in self.ids.iter().zip(steps) {
                            hub.publish(*id, &updates, now);
                        }
                    }
                    () = shutdown.wait() => return,
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
