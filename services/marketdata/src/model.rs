//! The normalised market model every feed speaks: prices in whole ticks and quantities in
//! whole lots (integers, never floats), L2 snapshots and deltas, trades, and the book they
//! build.
//!
//! A feed turns its venue's format into [`Update`]s; the hub applies them to one [`Book`]
//! per instrument, numbers them per symbol and turns them into the public protobuf events
//! through [`InstrumentSpec`], the only place where ticks and lots become decimal strings.

use std::collections::BTreeMap;

use execbridge_api::convert::decimal;
use rust_decimal::Decimal;

/// A price in ticks of the instrument's tick size.
pub type Ticks = i64;
/// A quantity in lots of the instrument's lot size.
pub type Lots = i64;

/// One price level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Level {
    /// Price in ticks.
    pub price: Ticks,
    /// Quantity in lots; 0 in a delta removes the level.
    pub quantity: Lots,
}

impl Level {
    /// A level of `quantity` lots at `price` ticks.
    pub fn new(price: Ticks, quantity: Lots) -> Self {
        Self { price, quantity }
    }
}

/// Levels of both sides: a full book (snapshot) or the changed levels (delta). Bids best
/// first (descending), asks best first (ascending).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depth {
    /// Bid levels, highest price first.
    pub bids: Vec<Level>,
    /// Ask levels, lowest price first.
    pub asks: Vec<Level>,
}

/// A trade print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradePrint {
    /// The venue's trade id.
    pub id: String,
    /// Price in ticks.
    pub price: Ticks,
    /// Quantity in lots.
    pub quantity: Lots,
    /// The buyer was the resting order (the aggressor sold).
    pub buyer_is_maker: bool,
}

/// What a feed tells the hub about one instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The full book, replacing what was there.
    Snapshot(Depth),
    /// Changed levels; quantity 0 removes a level.
    Delta(Depth),
    /// A trade.
    Trade(TradePrint),
    /// The last trade price known before this feed's own trades (a previous close, a
    /// venue's ticker), so a top of book has a last price from the start. No event of its
    /// own: it shows in the next top of book.
    LastPrice(Ticks),
}

/// The best levels, last trade price and session volume of one instrument.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Top {
    /// Best bid, if any.
    pub bid: Option<Level>,
    /// Best ask, if any.
    pub ask: Option<Level>,
    /// Last trade price in ticks, if any trade printed.
    pub last: Option<Ticks>,
    /// Cumulative traded quantity in lots.
    pub volume: Lots,
}

/// An L2 book: price level to quantity, per side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    bids: BTreeMap<Ticks, Lots>,
    asks: BTreeMap<Ticks, Lots>,
}

impl Book {
    /// Replaces the whole book with `depth`.
    pub fn replace(&mut self, depth: &Depth) {
        self.bids.clear();
        self.asks.clear();
        self.apply(depth);
    }

    /// Applies changed levels; quantity 0 (or less) removes the level.
    pub fn apply(&mut self, delta: &Depth) {
        for (side, levels) in [(&mut self.bids, &delta.bids), (&mut self.asks, &delta.asks)] {
            for l in levels {
                if l.quantity > 0 {
                    side.insert(l.price, l.quantity);
                } else {
                    side.remove(&l.price);
                }
            }
        }
    }

    /// The best bid.
    pub fn best_bid(&self) -> Option<Level> {
        self.bids
            .iter()
            .next_back()
            .map(|(p, q)| Level::new(*p, *q))
    }

    /// The best ask.
    pub fn best_ask(&self) -> Option<Level> {
        self.asks.iter().next().map(|(p, q)| Level::new(*p, *q))
    }

    /// Every level, best first on each side.
    pub fn depth(&self) -> Depth {
        Depth {
            bids: self
                .bids
                .iter()
                .rev()
                .map(|(p, q)| Level::new(*p, *q))
                .collect(),
            asks: self.asks.iter().map(|(p, q)| Level::new(*p, *q)).collect(),
        }
    }

    /// The levels that turn `self` into `next` (quantity 0 for removed ones).
    pub fn diff(&self, next: &Book) -> Depth {
        fn side(old: &BTreeMap<Ticks, Lots>, new: &BTreeMap<Ticks, Lots>) -> Vec<Level> {
            let mut out: Vec<Level> = new
                .iter()
                .filter(|(p, q)| old.get(p) != Some(q))
                .map(|(p, q)| Level::new(*p, *q))
                .collect();
            out.extend(
                old.keys()
                    .filter(|p| !new.contains_key(p))
                    .map(|p| Level::new(*p, 0)),
            );
            out
        }
        let mut delta = Depth {
            bids: side(&self.bids, &next.bids),
            asks: side(&self.asks, &next.asks),
        };
        delta.bids.sort_by_key(|l| std::cmp::Reverse(l.price));
        delta.asks.sort_by_key(|l| l.price);
        delta
    }

    /// The quantity at a bid price.
    pub fn bid(&self, price: Ticks) -> Option<Lots> {
        self.bids.get(&price).copied()
    }

    /// The quantity at an ask price.
    pub fn ask(&self, price: Ticks) -> Option<Lots> {
        self.asks.get(&price).copied()
    }

    /// Whether the book has no level at all.
    pub fn is_empty(&self) -> bool {
        self.bids.is_empty() && self.asks.is_empty()
    }

    /// Whether the best bid is at or above the best ask (a corrupted or crossed book).
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b.price >= a.price)
    }

    /// Number of bid levels and ask levels.
    pub fn len(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }
}

/// Why a venue's decimal did not fit an instrument's grid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GridError {
    /// Not a decimal number.
    #[error("{0:?} is not a decimal number")]
    NotDecimal(String),
    /// Not a whole multiple of the increment.
    #[error("{value} is not a multiple of {increment}")]
    OffGrid {
        /// The value.
        value: Decimal,
        /// The tick or lot size.
        increment: Decimal,
    },
    /// Too large for the integer representation.
    #[error("{0} is out of range")]
    OutOfRange(Decimal),
}

/// One instrument's identity and grid: how ticks and lots become decimals and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentSpec {
    /// Venue ("paper").
    pub venue: String,
    /// Symbol ("BTC-USDT").
    pub symbol: String,
    /// Price increment.
    pub tick_size: Decimal,
    /// Quantity increment.
    pub lot_size: Decimal,
}

impl InstrumentSpec {
    /// The decimal string of `ticks`.
    pub fn price(&self, ticks: Ticks) -> String {
        decimal(Decimal::from(ticks) * self.tick_size)
    }

    /// The decimal string of `lots`.
    pub fn quantity(&self, lots: Lots) -> String {
        decimal(Decimal::from(lots) * self.lot_size)
    }

    /// A venue price string in ticks.
    ///
    /// # Errors
    /// [`GridError`] when it is not a decimal on the tick grid.
    pub fn ticks(&self, price: &str) -> Result<Ticks, GridError> {
        on_grid(price, self.tick_size)
    }

    /// A venue quantity string in lots.
    ///
    /// # Errors
    /// [`GridError`] when it is not a decimal on the lot grid.
    pub fn lots(&self, quantity: &str) -> Result<Lots, GridError> {
        on_grid(quantity, self.lot_size)
    }
}

fn on_grid(raw: &str, increment: Decimal) -> Result<i64, GridError> {
    let value: Decimal = raw
        .trim()
        .parse()
        .map_err(|_| GridError::NotDecimal(raw.to_owned()))?;
    let units = value
        .checked_div(increment)
        .ok_or(GridError::OutOfRange(value))?;
    if !units.fract().is_zero() {
        return Err(GridError::OffGrid { value, increment });
    }
    i64::try_from(units).map_err(|_| GridError::OutOfRange(value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
