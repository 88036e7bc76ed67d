//! Orders: what the caller asks for, what execbridge knows, and the state machine.
//!
//! The state machine is one table, [`OrderStatus::next`]: every `(status, event)` pair is
//! named there, and anything not allowed is a [`TransitionError`]. An [`Order`] is rebuilt
//! by applying its events in order, which is how a journal replays it.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::values::{
    AccountId, ClientOrderId, FieldViolation, OrderId, Price, Quantity, Symbol, VenueId,
};

/// Which side of the book an order trades on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    /// Buys the base asset.
    Buy,
    /// Sells the base asset.
    Sell,
}

impl Side {
    /// +1 for a buy, -1 for a sell: the sign of the position change.
    pub fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }
}

/// How an order executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderType {
    /// Immediately, at the best available prices.
    Market,
    /// At `price` or better.
    Limit,
    /// A market order once the stop price is reached against the position.
    StopLoss,
    /// A limit order once the stop price is reached against the position.
    StopLossLimit,
    /// A market order once the stop price is reached in the position's favour.
    TakeProfit,
    /// A limit order once the stop price is reached in the position's favour.
    TakeProfitLimit,
}

impl OrderType {
    /// Whether the type carries a limit price.
    pub fn needs_price(self) -> bool {
        matches!(
            self,
            OrderType::Limit | OrderType::StopLossLimit | OrderType::TakeProfitLimit
        )
    }

    /// Whether the type carries a trigger (stop) price.
    pub fn needs_stop_price(self) -> bool {
        matches!(
            self,
            OrderType::StopLoss
                | OrderType::StopLossLimit
                | OrderType::TakeProfit
                | OrderType::TakeProfitLimit
        )
    }
}

/// How long an order stays working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeInForce {
    /// Good till canceled.
    Gtc,
    /// Immediate or cancel.
    Ioc,
    /// Fill or kill.
    Fok,
}

/// Whether an order reaches a real venue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TradingMode {
    /// Simulated execution.
    Paper,
    /// Real execution.
    Live,
}

/// Whether a fill added or took liquidity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Liquidity {
    /// Rested on the book and was hit.
    Maker,
    /// Crossed the spread.
    Taker,
}

/// Why an order was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // Each variant is documented in the proto enum of the same name.
pub enum RejectReason {
    UnknownSymbol,
    UnknownVenue,
    NoMarketData,
    PostOnlyWouldTake,
    FokNotFillable,
    InsufficientBalance,
    TradingHalted,
    ReduceOnly,
    RiskMaxQuantity,
    RiskMaxNotional,
    RiskMaxOpenOrders,
    RiskMaxPosition,
    RiskGrossExposure,
    RiskPriceBand,
    RiskOrderRate,
    RiskDailyLoss,
    SlippageExceeded,
    VenueRejected,
    VenueUnavailable,
    NoLiquidity,
}

/// The life of an order. See [`OrderStatus::next`] for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Accepted and recorded, not yet acknowledged by the venue.
    PendingNew,
    /// Working at the venue.
    New,
    /// Partly filled, the rest working.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// A cancel was requested.
    PendingCancel,
    /// Canceled.
    Canceled,
    /// Refused.
    Rejected,
    /// Expired by time in force.
    Expired,
    /// The venue outcome is not yet confirmed.
    Unknown,
}

impl OrderStatus {
    /// Whether no event can change the order any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Filled
                | OrderStatus::Canceled
                | OrderStatus::Rejected
                | OrderStatus::Expired
        )
    }

    /// Whether the order may still trade.
    pub fn is_open(self) -> bool {
        !self.is_terminal()
    }

    /// The state machine: the status after `event` given how much is filled after it.
    ///
    /// `fully_filled` is only read for fills and for a rejected cancel (which returns the
    /// order to NEW or PARTIALLY_FILLED depending on `any_filled`).
    ///
    /// # Errors
    /// [`TransitionError::Illegal`] for any pair not in the table.
    pub fn next(
        self,
        event: EventKind,
        any_filled: bool,
        fully_filled: bool,
    ) -> Result<OrderStatus, TransitionError> {
        use EventKind as E;
        use OrderStatus as S;
        let working = if any_filled {
            S::PartiallyFilled
        } else {
            S::New
        };
        let after_fill = if fully_filled {
            S::Filled
        } else {
            S::PartiallyFilled
        };
        let next = match (self, event) {
            (S::PendingNew | S::Unknown, E::Acknowledged) => S::New,
            (S::New | S::PartiallyFilled, E::Acknowledged) => self,
            (S::PendingNew | S::Unknown, E::Rejected) => S::Rejected,
            (S::PendingNew, E::Unknown) => S::Unknown,
            (S::PendingNew | S::New | S::PartiallyFilled | S::Unknown, E::Fill) => after_fill,
            (S::PendingCancel, E::Fill) => {
                if fully_filled {
                    S::Filled
                } else {
                    S::PendingCancel
                }
            }
            (S::New, E::Triggered) => S::New,
            (S::PendingNew | S::New | S::PartiallyFilled | S::Unknown, E::CancelRequested) => {
                S::PendingCancel
            }
            (S::PendingCancel, E::CancelRequested) => S::PendingCancel,
            (S::PendingCancel, E::CancelRejected) => working,
            (
                S::PendingNew | S::New | S::PartiallyFilled | S::PendingCancel | S::Unknown,
                E::Canceled,
            ) => S::Canceled,
            (
                S::PendingNew | S::New | S::PartiallyFilled | S::PendingCancel | S::Unknown,
                E::Expired,
            ) => S::Expired,
            (from, event) => return Err(TransitionError::Illegal { from, event }),
        };
        Ok(next)
    }
}

/// The kind of an [`OrderEvent`], for the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // Mirrors OrderEvent's variants.
pub enum EventKind {
    Acknowledged,
    Rejected,
    Unknown,
    Fill,
    Triggered,
    CancelRequested,
    CancelRejected,
    Canceled,
    Expired,
}

/// A stop-loss or take-profit attached to a parent order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedOrder {
    /// Where it triggers.
    pub trigger_price: Price,
    /// Limit price once triggered; `None` is a market order.
    pub limit_price: Option<Price>,
}

/// Protection against MEV on swap venues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MevProtection {
    /// Send through a private relay.
    pub private_relay: bool,
    /// Tip to the block builder, in lamports.
    pub tip_lamports: u64,
    /// Cap on the priority fee, in micro-lamports per compute unit.
    pub max_priority_fee_micro_lamports: u64,
}

/// The most slippage a caller may ask to tolerate: 100 %.
pub const MAX_SLIPPAGE_BPS: u32 = 10_000;

/// A validated order request: what the caller controls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    /// Idempotency key.
    pub client_order_id: ClientOrderId,
    /// Owning account.
    pub account: AccountId,
    /// Executing venue.
    pub venue: VenueId,
    /// Paper or live.
    pub mode: TradingMode,
    /// Instrument.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Execution type.
    pub order_type: OrderType,
    /// Time in force.
    pub time_in_force: TimeInForce,
    /// Refuse to take liquidity.
    pub post_only: bool,
    /// Base quantity.
    pub quantity: Quantity,
    /// Limit price, for the types that need one.
    pub price: Option<Price>,
    /// Trigger price, for the types that need one.
    pub stop_price: Option<Price>,
    /// Attached protective stop.
    pub stop_loss: Option<AttachedOrder>,
    /// Attached profit target.
    pub take_profit: Option<AttachedOrder>,
    /// Slippage tolerance, basis points; 0 = unchecked.
    pub slippage_bps: u32,
    /// Swap-venue MEV protection.
    pub mev_protection: Option<MevProtection>,
    /// Caller tags.
    pub metadata: BTreeMap<String, String>,
}

impl OrderRequest {
    /// Checks the rules that tie fields together (each field is already valid on its own).
    /// Returns every violation, with `prefix` before each field name.
    pub fn cross_field_violations(&self, prefix: &str) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        let field = |name: &str| format!("{prefix}{name}");
        match (self.order_type.needs_price(), self.price.is_some()) {
            (true, false) => out.push(FieldViolation::new(
                field("price"),
                format!("is required for {:?} orders", self.order_type),
            )),
            (false, true) => out.push(FieldViolation::new(
                field("price"),
                format!("must be empty for {:?} orders", self.order_type),
            )),
            _ => {}
        }
        match (
            self.order_type.needs_stop_price(),
            self.stop_price.is_some(),
        ) {
            (true, false) => out.push(FieldViolation::new(
                field("stop_price"),
                format!("is required for {:?} orders", self.order_type),
            )),
            (false, true) => out.push(FieldViolation::new(
                field("stop_price"),
                format!("must be empty for {:?} orders", self.order_type),
            )),
            _ => {}
        }
        if self.post_only && self.order_type != OrderType::Limit {
            out.push(FieldViolation::new(
                field("post_only"),
                "is only allowed on LIMIT orders",
            ));
        }
        if self.post_only && self.time_in_force != TimeInForce::Gtc {
            out.push(FieldViolation::new(
                field("post_only"),
                "needs time_in_force GTC (a post-only order rests)",
            ));
        }
        if self.slippage_bps > MAX_SLIPPAGE_BPS {
            out.push(FieldViolation::new(
                field("slippage_bps"),
                format!("must be 0 to {MAX_SLIPPAGE_BPS}, got {}", self.slippage_bps),
            ));
        }
        out
    }
}

impl OrderRequest {
    /// The names of the fields in which `other` differs from `self`: how a retry with the
    /// same `client_order_id` but another payload is explained to the caller.
    pub fn differing_fields(&self, other: &OrderRequest) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |name: &'static str, same: bool| {
            if !same {
                out.push(name);
            }
        };
        check("account", self.account == other.account);
        check("venue", self.venue == other.venue);
        check("mode", self.mode == other.mode);
        check("symbol", self.symbol == other.symbol);
        check("side", self.side == other.side);
        check("type", self.order_type == other.order_type);
        check("time_in_force", self.time_in_force == other.time_in_force);
        check("post_only", self.post_only == other.post_only);
        check("quantity", self.quantity == other.quantity);
        check("price", self.price == other.price);
        check("stop_price", self.stop_price == other.stop_price);
        check("stop_loss", self.stop_loss == other.stop_loss);
        check("take_profit", self.take_profit == other.take_profit);
        check("slippage_bps", self.slippage_bps == other.slippage_bps);
        check(
            "mev_protection",
            self.mev_protection == other.mev_protection,
        );
        check("metadata", self.metadata == other.metadata);
        out
    }
}

/// One execution of (part of) an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    /// The venue's trade id; fills are deduplicated on it.
    pub trade_id: String,
    /// Execution price.
    pub price: Price,
    /// Executed quantity.
    pub quantity: Quantity,
    /// Fee charged, in `fee_asset`.
    pub fee: Decimal,
    /// Asset the fee is charged in.
    pub fee_asset: String,
    /// Maker or taker.
    pub liquidity: Liquidity,
    /// When it executed.
    pub executed_at: SystemTime,
}

/// Something that happens to an existing order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// The venue acknowledged the order.
    Acknowledged {
        /// The venue's id for it.
        venue_order_id: String,
    },
    /// Refused by risk or the venue.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// Human detail.
        message: String,
    },
    /// The venue outcome could not be confirmed.
    Unknown {
        /// What happened.
        message: String,
    },
    /// A (partial) execution.
    Fill(Fill),
    /// A stop or take-profit trigger fired.
    Triggered,
    /// A cancel was requested.
    CancelRequested,
    /// The venue refused the cancel (the order keeps working).
    CancelRejected {
        /// Why.
        message: String,
    },
    /// Canceled.
    Canceled,
    /// Expired by time in force.
    Expired,
}

impl OrderEvent {
    /// The kind, for the transition table.
    pub fn kind(&self) -> EventKind {
        match self {
            OrderEvent::Acknowledged { .. } => EventKind::Acknowledged,
            OrderEvent::Rejected { .. } => EventKind::Rejected,
            OrderEvent::Unknown { .. } => EventKind::Unknown,
            OrderEvent::Fill(_) => EventKind::Fill,
            OrderEvent::Triggered => EventKind::Triggered,
            OrderEvent::CancelRequested => EventKind::CancelRequested,
            OrderEvent::CancelRejected { .. } => EventKind::CancelRejected,
            OrderEvent::Canceled => EventKind::Canceled,
            OrderEvent::Expired => EventKind::Expired,
        }
    }
}

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The table has no entry for this pair.
    #[error("illegal transition: {event:?} in status {from:?}")]
    Illegal {
        /// Status before.
        from: OrderStatus,
        /// The event.
        event: EventKind,
    },
    /// The fill's trade id was applied before; the fill is ignored.
    #[error("duplicate fill {trade_id}")]
    DuplicateFill {
        /// The repeated trade id.
        trade_id: String,
    },
    /// The fill would take the filled quantity above the order quantity.
    #[error("overfill: {filled} filled + {fill} > {quantity} ordered")]
    Overfill {
        /// Filled before.
        filled: Decimal,
        /// This fill.
        fill: Decimal,
        /// Ordered.
        quantity: Decimal,
    },
}

/// An order as execbridge knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// execbridge's id.
    pub order_id: OrderId,
    /// The request as accepted.
    pub request: OrderRequest,
    /// Current status.
    pub status: OrderStatus,
    /// Quantity executed so far.
    pub filled_quantity: Decimal,
    /// Sum of price x quantity over fills, for the average price.
    pub filled_notional: Decimal,
    /// Fees paid so far.
    pub fees: Decimal,
    /// Fee asset (the quote asset for the paper venue).
    pub fee_asset: String,
    /// Set when rejected.
    pub reject_reason: Option<RejectReason>,
    /// Human detail of a rejection or an unknown outcome.
    pub reject_message: String,
    /// The venue's id.
    pub venue_order_id: String,
    /// When accepted.
    pub created_at: SystemTime,
    /// Last change.
    pub updated_at: SystemTime,
    /// Sequence of the last update applied.
    pub sequence: u64,
    /// Whether a stop or take-profit trigger has fired.
    pub triggered: bool,
    /// Trade ids applied, for deduplication (foldhash: std's SipHash cost more than the
    /// rest of applying a fill; the ids come from venues, not from callers).
    trade_ids: HashSet<String, foldhash::fast::RandomState>,
}

impl Order {
    /// A newly accepted order in PENDING_NEW.
    pub fn new(order_id: OrderId, request: OrderRequest, now: SystemTime, sequence: u64) -> Self {
        Self {
            order_id,
            request,
            status: OrderStatus::PendingNew,
            filled_quantity: Decimal::ZERO,
            filled_notional: Decimal::ZERO,
            fees: Decimal::ZERO,
            fee_asset: String::new(),
            reject_reason: None,
            reject_message: String::new(),
            venue_order_id: String::new(),
            created_at: now,
            updated_at: now,
            sequence,
            triggered: false,
            trade_ids: HashSet::default(),
        }
    }

    /// Quantity still to execute.
    pub fn remaining_quantity(&self) -> Decimal {
        self.request.quantity.get() - self.filled_quantity
    }

    /// Volume-weighted average fill price, once anything filled.
    pub fn average_fill_price(&self) -> Option<Decimal> {
        (self.filled_quantity > Decimal::ZERO).then(|| {
            (self.filled_notional / self.filled_quantity)
                .round_dp(12)
                .normalize()
        })
    }

    /// Fraction filled, 0 to 1.
    pub fn progress(&self) -> Decimal {
        (self.filled_quantity / self.request.quantity.get())
            .round_dp(6)
            .normalize()
    }

    /// Applies `event`, moving the status through the table.
    ///
    /// On error the order is unchanged.
    ///
    /// # Errors
    /// [`TransitionError`] for an illegal pair, a duplicate trade id or an overfill.
    pub fn apply(
        &mut self,
        event: &OrderEvent,
        now: SystemTime,
        sequence: u64,
    ) -> Result<OrderStatus, TransitionError> {
        let (any_filled, fully_filled) = match event {
            OrderEvent::Fill(fill) => {
                if self.trade_ids.contains(&fill.trade_id) {
                    return Err(TransitionError::DuplicateFill {
                        trade_id: fill.trade_id.clone(),
                    });
                }
                let filled = self.filled_quantity + fill.quantity.get();
                let quantity = self.request.quantity.get();
                if filled > quantity {
                    return Err(TransitionError::Overfill {
                        filled: self.filled_quantity,
                        fill: fill.quantity.get(),
                        quantity,
                    });
                }
                (true, filled == quantity)
            }
            _ => (self.filled_quantity > Decimal::ZERO, false),
        };
        let next = self.status.next(event.kind(), any_filled, fully_filled)?;
        match event {
            OrderEvent::Acknowledged { venue_order_id } => {
                self.venue_order_id.clone_from(venue_order_id);
            }
            OrderEvent::Rejected { reason, message } => {
                self.reject_reason = Some(*reason);
                self.reject_message.clone_from(message);
            }
            OrderEvent::Unknown { message } | OrderEvent::CancelRejected { message } => {
                self.reject_message.clone_from(message);
            }
            OrderEvent::Fill(fill) => {
                self.trade_ids.insert(fill.trade_id.clone());
                self.filled_quantity += fill.quantity.get();
                self.filled_notional += fill.price.get() * fill.quantity.get();
                self.fees += fill.fee;
                if self.fee_asset.is_empty() {
                    self.fee_asset.clone_from(&fill.fee_asset);
                }
            }
            OrderEvent::Triggered => self.triggered = true,
            OrderEvent::CancelRequested | OrderEvent::Canceled | OrderEvent::Expired => {}
        }
        self.status = next;
        self.updated_at = now;
        self.sequence = sequence;
        Ok(next)
    }
}

#[cfg(test)]
mod tests;
