//! The paper venue's matching rules, as pure functions: given an order and the book, what
//! the venue does. The engine turns the steps into order events; [`crate::venue`] holds the
//! venue's own state (its ledger, latency, faults).
//!
//! The book is a [`Book`] of price levels. From a top-of-book feed it is the touch, either
//! with unlimited size (the default, so small orders fill in one print) or with the
//! displayed size followed by synthetic levels ([`DepthConfig`]); from an L2 feed it is the
//! venue's depth as published. Orders that take liquidity walk the levels (one fill per
//! level, so slippage shows in the average price); resting limit orders fill as makers at
//! their limit price, up to the size displayed through it.

use execbridge_domain::{
    Liquidity, Order, OrderRequest, OrderType, RejectReason, Side, TimeInForce, TradingMode,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The venue name this module executes.
pub const VENUE: &str = "paper";

/// Top of book of one instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// Best bid.
    pub bid: Decimal,
    /// Best ask.
    pub ask: Decimal,
    /// Last trade.
    pub last: Decimal,
}

impl Quote {
    /// A book one price unit either side of `last`: the quote that tests and benchmarks
    /// give the paper venue to fill against.
    pub fn around(last: Decimal) -> Self {
        Self {
            bid: last - Decimal::ONE,
            ask: last + Decimal::ONE,
            last,
        }
    }
}

/// One price level; `quantity` `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Price.
    pub price: Decimal,
    /// Size available, `None` for unlimited.
    pub quantity: Option<Decimal>,
}

/// The book the venue matches against: bids best (highest) first, asks best (lowest) first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    /// Bid levels, best first.
    pub bids: Vec<Level>,
    /// Ask levels, best first.
    pub asks: Vec<Level>,
    /// Last trade price.
    pub last: Decimal,
}

/// How a top-of-book feed becomes a [`Book`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DepthConfig {
    /// Fill against the displayed top-of-book size (and the synthetic levels) instead of
    /// treating the touch as unlimited.
    pub displayed_size: bool,
    /// Extra levels behind the touch, each with the touch's size.
    pub synthetic_levels: u32,
    /// Distance between synthetic levels, basis points of the touch price.
    pub synthetic_step_bps: u32,
}

impl Default for DepthConfig {
    fn default() -> Self {
        Self {
            displayed_size: false,
            synthetic_levels: 0,
            synthetic_step_bps: 5,
        }
    }
}

impl Book {
    /// A book with unlimited size at the touch.
    pub fn top(quote: &Quote) -> Self {
        Self::from_top(quote, None, None, &DepthConfig::default())
    }

    /// A book from a top of book with sizes, shaped by `depth`.
    pub fn from_top(
        quote: &Quote,
        bid_size: Option<Decimal>,
        ask_size: Option<Decimal>,
        depth: &DepthConfig,
    ) -> Self {
        let side = |touch: Decimal, size: Option<Decimal>, sign: Decimal| -> Vec<Level> {
            if !depth.displayed_size {
                return vec![Level {
                    price: touch,
                    quantity: None,
                }];
            }
            let size = size.filter(|s| *s > Decimal::ZERO);
            let step = touch * Decimal::from(depth.synthetic_step_bps) / Decimal::from(10_000);
            (0..=depth.synthetic_levels)
                .map(|i| Level {
                    price: touch + sign * step * Decimal::from(i),
                    quantity: size.or(Some(Decimal::ZERO)),
                })
                .filter(|l| l.price > Decimal::ZERO)
                .collect()
        };
        Self {
            bids: side(quote.bid, bid_size, Decimal::NEGATIVE_ONE),
            asks: side(quote.ask, ask_size, Decimal::ONE),
            last: quote.last,
        }
    }

    /// A book from L2 levels (bids and asks in any order; zero sizes dropped).
    pub fn from_depth(
        mut bids: Vec<(Decimal, Decimal)>,
        mut asks: Vec<(Decimal, Decimal)>,
        last: Decimal,
    ) -> Self {
        bids.retain(|(_, q)| *q > Decimal::ZERO);
        asks.retain(|(_, q)| *q > Decimal::ZERO);
        bids.sort_by_key(|b| std::cmp::Reverse(b.0));
        asks.sort_by_key(|a| a.0);
        let level = |(price, q): (Decimal, Decimal)| Level {
            price,
            quantity: Some(q),
        };
        Self {
            bids: bids.into_iter().map(level).collect(),
            asks: asks.into_iter().map(level).collect(),
            last,
        }
    }

    /// Best bid and ask, when both sides have a level.
    pub fn quote(&self) -> Option<Quote> {
        Some(Quote {
            bid: self.bids.first()?.price,
            ask: self.asks.first()?.price,
            last: self.last,
        })
    }

    fn opposite(&self, side: Side) -> &[Level] {
        match side {
            Side::Buy => &self.asks,
            Side::Sell => &self.bids,
        }
    }
}

/// One thing the venue does to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Accepts it.
    Ack,
    /// Refuses it.
    Reject(RejectReason, String),
    /// A stop or take-profit fires.
    Trigger,
    /// Executes `quantity` at `price`.
    Fill {
        /// Execution price.
        price: Decimal,
        /// Executed quantity.
        quantity: Decimal,
        /// Maker or taker.
        liquidity: Liquidity,
    },
    /// Ends it by time in force (the unfilled rest of an IOC, FOK or market order).
    Expire,
}

/// Checks done before the venue acknowledges: venue, mode, features and market data.
pub fn admit(order: &Order, book: Option<&Book>) -> Result<(), Step> {
    let req = &order.request;
    if req.venue.as_str() != VENUE {
        return Err(Step::Reject(
            RejectReason::UnknownVenue,
            format!(
                "venue {:?} is not connected; this executor runs {VENUE:?}",
                req.venue.as_str()
            ),
        ));
    }
    if req.mode == TradingMode::Live {
        return Err(Step::Reject(
            RejectReason::VenueRejected,
            "the paper venue takes PAPER orders only".into(),
        ));
    }
    if req.stop_loss.is_some() || req.take_profit.is_some() {
        return Err(Step::Reject(
            RejectReason::VenueRejected,
            "attached stop-loss and take-profit orders are not supported by the paper venue yet"
                .into(),
        ));
    }
    let Some(quote) = book.and_then(Book::quote) else {
        return Err(Step::Reject(
            RejectReason::NoMarketData,
            format!("no market data for {} yet", req.symbol),
        ));
    };
    if req.post_only && req.order_type == OrderType::Limit && marketable(req, &quote) {
        return Err(Step::Reject(
            RejectReason::PostOnlyWouldTake,
            format!(
                "post-only {:?} at {} would take liquidity (touch {})",
                req.side,
                limit_of(req),
                touch(req.side, &quote)
            ),
        ));
    }
    Ok(())
}

/// What the venue does with a newly submitted order: admission, then the arrival match.
pub fn on_submit(order: &Order, book: Option<&Book>) -> Vec<Step> {
    match admit(order, book) {
        Err(step) => vec![step],
        Ok(()) => {
            let mut steps = vec![Step::Ack];
            if let Some(book) = book {
                steps.extend(evaluate(order, book, true));
            }
            steps
        }
    }
}

/// The arrival match of an acknowledged order (deferred when fill latency is configured).
pub fn on_arrival(order: &Order, book: &Book) -> Vec<Step> {
    evaluate(order, book, true)
}

/// What the venue does with a working order when the market moves.
pub fn on_quote(order: &Order, book: &Book) -> Vec<Step> {
    evaluate(order, book, false)
}

fn touch(side: Side, quote: &Quote) -> Decimal {
    match side {
        Side::Buy => quote.ask,
        Side::Sell => quote.bid,
    }
}

fn limit_of(req: &OrderRequest) -> Decimal {
    req.price.map(|p| p.get()).unwrap_or_default()
}

fn marketable(req: &OrderRequest, quote: &Quote) -> bool {
    let limit = limit_of(req);
    match req.side {
        Side::Buy => quote.ask <= limit,
        Side::Sell => quote.bid >= limit,
    }
}

fn triggered(req: &OrderRequest, quote: &Quote) -> bool {
    let stop = req.stop_price.map(|p| p.get()).unwrap_or_default();
    match (req.order_type, req.side) {
        (OrderType::StopLoss | OrderType::StopLossLimit, Side::Buy) => quote.ask >= stop,
        (OrderType::StopLoss | OrderType::StopLossLimit, Side::Sell) => quote.bid <= stop,
        (OrderType::TakeProfit | OrderType::TakeProfitLimit, Side::Buy) => quote.ask <= stop,
        (OrderType::TakeProfit | OrderType::TakeProfitLimit, Side::Sell) => quote.bid >= stop,
        (OrderType::Market | OrderType::Limit, _) => true,
    }
}

/// Whether `price` is at or better than `limit` for `side`.
fn within(side: Side, price: Decimal, limit: Option<Decimal>) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(l)) => price <= l,
        (Side::Sell, Some(l)) => price >= l,
    }
}

/// Liquidity available to `side` at prices within `limit`; `None` is unlimited.
fn available(book: &Book, side: Side, limit: Option<Decimal>) -> Option<Decimal> {
    let mut total = Decimal::ZERO;
    for level in book
        .opposite(side)
        .iter()
        .take_while(|l| within(side, l.price, limit))
    {
        total += level.quantity?;
    }
    Some(total)
}

/// Takes up to `quantity` from the levels within `limit`: one taker fill per level.
fn walk(book: &Book, side: Side, limit: Option<Decimal>, quantity: Decimal) -> Vec<Step> {
    let mut left = quantity;
    let mut steps = Vec::new();
    for level in book.opposite(side) {
        if left <= Decimal::ZERO || !within(side, level.price, limit) {
            break;
        }
        let take = level.quantity.map_or(left, |q| q.min(left));
        if take > Decimal::ZERO {
            steps.push(Step::Fill {
                price: level.price,
                quantity: take,
                liquidity: Liquidity::Taker,
            });
            left -= take;
        }
    }
    steps
}

/// The worst price a market order accepts under its slippage tolerance.
fn slippage_limit(req: &OrderRequest, quote: &Quote) -> Option<Decimal> {
    if req.slippage_bps == 0 {
        return None;
    }
    let reference = touch(req.side, quote);
    let bps = Decimal::from(req.slippage_bps) / Decimal::from(10_000);
    Some(match req.side {
        Side::Buy => reference * (Decimal::ONE + bps),
        Side::Sell => reference * (Decimal::ONE - bps),
    })
}

/// `fresh`: the order arrives now, so it takes liquidity and its time in force applies.
fn evaluate(order: &Order, book: &Book, fresh: bool) -> Vec<Step> {
    let req = &order.request;
    let mut steps = Vec::new();
    let Some(quote) = book.quote() else {
        return steps;
    };
    let remaining = order.remaining_quantity();
    let mut arriving = fresh;
    if req.order_type.needs_stop_price() && !order.triggered {
        if !triggered(req, &quote) {
            return steps;
        }
        steps.push(Step::Trigger);
        // A triggered stop arrives at the market now.
        arriving = true;
    }
    let limit = if req.order_type.needs_price() {
        if !arriving && !marketable(req, &quote) {
            return steps;
        }
        Some(limit_of(req))
    } else {
        slippage_limit(req, &quote)
    };
    let can_fill = available(book, req.side, limit).is_none_or(|a| a >= remaining);
    if arriving && req.time_in_force == TimeInForce::Fok && !can_fill {
        steps.push(Step::Expire);
        return steps;
    }
    if arriving || !req.order_type.needs_price() {
        let fills = walk(book, req.side, limit, remaining);
        let filled: Decimal = fills
            .iter()
            .map(|s| match s {
                Step::Fill { quantity, .. } => *quantity,
                _ => Decimal::ZERO,
            })
            .sum();
        steps.extend(fills);
        let rests = req.order_type.needs_price() && req.time_in_force == TimeInForce::Gtc;
        if filled < remaining && !rests {
            steps.push(Step::Expire);
        }
    } else {
        // A resting limit order the market traded through: filled as maker at its price,
        // up to the size displayed through it.
        let size = available(book, req.side, limit).map_or(remaining, |a| a.min(remaining));
        if size > Decimal::ZERO {
            steps.push(Step::Fill {
                price: limit_of(req),
                quantity: size,
                liquidity: Liquidity::Maker,
            });
        }
    }
    steps
}

#[cfg(test)]
mod tests;
