//! Pre-trade risk: per-account limits and trading states, and the one check every new
//! order passes before it is sent anywhere.
//!
//! The check is a pure function of the account's settings, the order and an [`Exposure`]
//! snapshot the caller takes from its state, so it is tested as a table and gives the same
//! answer on replay.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::order::{OrderRequest, RejectReason, Side, TradingMode};

/// Whether an account, or one symbol of it, may trade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TradingState {
    /// Orders pass the limits as usual.
    #[default]
    Active,
    /// Only orders that reduce the position.
    ReduceOnly,
    /// The kill switch: no new orders.
    Halted,
}

impl TradingState {
    fn rank(self) -> u8 {
        match self {
            TradingState::Active => 0,
            TradingState::ReduceOnly => 1,
            TradingState::Halted => 2,
        }
    }

    /// The stricter of two states.
    pub fn stricter(self, other: TradingState) -> TradingState {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// Limits of one account for one trading mode; `None` is "no limit".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskLimits {
    /// Largest base quantity of one order.
    pub max_order_quantity: Option<Decimal>,
    /// Largest quote notional of one order.
    pub max_order_notional: Option<Decimal>,
    /// Most working orders at once.
    pub max_open_orders: Option<u32>,
    /// Largest absolute position per symbol after a complete fill.
    pub max_position: Option<Decimal>,
    /// Largest sum of |position| x price over every symbol, this order included.
    pub max_gross_exposure: Option<Decimal>,
    /// Largest distance of a limit price from the last market price, basis points.
    pub price_band_bps: Option<u32>,
    /// Most orders per sliding second.
    pub max_orders_per_second: Option<u32>,
    /// Realised loss today (fees included) at which only reducing orders pass.
    pub max_daily_loss: Option<Decimal>,
}

/// Everything risk knows about one account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRisk {
    /// Account-wide state.
    pub state: TradingState,
    /// Per-symbol states; the stricter of account and symbol applies.
    pub symbol_states: BTreeMap<String, TradingState>,
    /// Limits for PAPER orders (LIVE orders pass these too).
    pub paper: RiskLimits,
    /// The stricter limits LIVE orders pass in addition.
    pub live: RiskLimits,
}

impl AccountRisk {
    /// The state that applies to `symbol`.
    pub fn state_for(&self, symbol: &str) -> TradingState {
        self.symbol_states
            .get(symbol)
            .map_or(self.state, |s| self.state.stricter(*s))
    }
}

/// What the engine knows about the account when an order arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposure {
    /// Last market price of the symbol, if known.
    pub last_price: Option<Decimal>,
    /// Signed position in the symbol.
    pub position: Decimal,
    /// Working orders of the account.
    pub open_orders: usize,
    /// Sum of |position| x last price over every symbol of the account.
    pub gross_exposure: Decimal,
    /// Orders accepted in the last second.
    pub orders_last_second: u32,
    /// Realised profit and loss today, fees included (negative is a loss).
    pub daily_pnl: Decimal,
}

/// Why risk refused an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The machine-readable reason.
    pub reason: RejectReason,
    /// The human detail.
    pub message: String,
}

fn deny(reason: RejectReason, message: String) -> Result<(), Denial> {
    Err(Denial { reason, message })
}

/// Whether `order` only reduces `position` (opposite side, no larger than it).
pub fn reduces(order: &OrderRequest, position: Decimal) -> bool {
    let qty = order.quantity.get();
    match order.side {
        Side::Buy => position < Decimal::ZERO && qty <= -position,
        Side::Sell => position > Decimal::ZERO && qty <= position,
    }
}

/// Checks `order` against the account's state and limits.
///
/// # Errors
/// The first [`Denial`], in this order: trading state, order rate, quantity, notional,
/// price band, open orders, position, gross exposure, daily loss.
pub fn check(risk: &AccountRisk, order: &OrderRequest, x: &Exposure) -> Result<(), Denial> {
    let reducing = reduces(order, x.position);
    match risk.state_for(order.symbol.as_str()) {
        TradingState::Halted => {
            return deny(
                RejectReason::TradingHalted,
                format!("trading is halted for {} {}", order.account, order.symbol),
            );
        }
        TradingState::ReduceOnly if !reducing => {
            return deny(
                RejectReason::ReduceOnly,
                format!(
                    "{} {} is reduce-only and the order does not reduce the position {}",
                    order.account, order.symbol, x.position
                ),
            );
        }
        TradingState::ReduceOnly | TradingState::Active => {}
    }
    check_limits(&risk.paper, "paper", order, x, reducing)?;
    if order.mode == TradingMode::Live {
        check_limits(&risk.live, "live", order, x, reducing)?;
    }
    Ok(())
}

fn check_limits(
    l: &RiskLimits,
    set: &str,
    order: &OrderRequest,
    x: &Exposure,
    reducing: bool,
) -> Result<(), Denial> {
    let qty = order.quantity.get();
    let signed = order.side.sign() * qty;
    if let Some(max) = l.max_orders_per_second
        && x.orders_last_second >= max
    {
        return deny(
            RejectReason::RiskOrderRate,
            format!("{set} limit: at most {max} orders per second"),
        );
    }
    if let Some(max) = l.max_order_quantity
        && qty > max
    {
        return deny(
            RejectReason::RiskMaxQuantity,
            format!("{set} limit: quantity {qty} above {max}"),
        );
    }
    let price = order.price.map(|p| p.get()).or(x.last_price);
    if let (Some(max), Some(price)) = (l.max_order_notional, price) {
        let notional = qty * price;
        if notional > max {
            return deny(
                RejectReason::RiskMaxNotional,
                format!("{set} limit: notional {notional} above {max}"),
            );
        }
    }
    if let (Some(bps), Some(limit), Some(last)) = (l.price_band_bps, order.price, x.last_price)
        && last > Decimal::ZERO
    {
        let distance = ((limit.get() - last).abs() / last) * Decimal::from(10_000);
        if distance > Decimal::from(bps) {
            return deny(
                RejectReason::RiskPriceBand,
                format!(
                    "{set} limit: price {limit} is {} bps from the last price {last}, band {bps}",
                    distance.round_dp(1)
                ),
            );
        }
    }
    if let Some(max) = l.max_open_orders
        && x.open_orders >= max as usize
    {
        return deny(
            RejectReason::RiskMaxOpenOrders,
            format!("{set} limit: at most {max} open orders"),
        );
    }
    if reducing {
        // Reducing a position lowers position, exposure and loss risk: always allowed.
        return Ok(());
    }
    let after = x.position + signed;
    if let Some(max) = l.max_position
        && after.abs() > max
    {
        return deny(
            RejectReason::RiskMaxPosition,
            format!("{set} limit: position would be {after}, limit {max}"),
        );
    }
    if let (Some(max), Some(price)) = (l.max_gross_exposure, price) {
        let gross = x.gross_exposure - x.position.abs() * price + after.abs() * price;
        if gross > max {
            return deny(
                RejectReason::RiskGrossExposure,
                format!("{set} limit: gross exposure would be {gross}, limit {max}"),
            );
        }
    }
    if let Some(max) = l.max_daily_loss
        && -x.daily_pnl >= max
    {
        return deny(
            RejectReason::RiskDailyLoss,
            format!(
                "{set} limit: daily loss {} reached the limit {max}; only reducing orders pass",
                -x.daily_pnl
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
