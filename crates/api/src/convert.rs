//! Conversions between the proto messages and the domain, at one boundary.
//!
//! Inbound requests become validated domain values or the complete list of field
//! violations (so a caller fixes every mistake in one round trip). Outbound, domain values
//! become proto messages with decimals rendered as plain strings.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use execbridge_domain::order::{AttachedOrder, MevProtection};
use execbridge_domain::{
    AccountId, ClientOrderId, FieldViolation, Fill, Liquidity, Order, OrderRequest, OrderStatus,
    OrderType, Price, Quantity, RejectReason, Side, Symbol, TimeInForce, TradingMode, ValueError,
    VenueId,
};
use rust_decimal::Decimal;

use crate::v1;

/// Most metadata entries an order may carry.
pub const MAX_METADATA_ENTRIES: usize = 16;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_BYTES: usize = 64;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 256;

/// A `google.protobuf.Timestamp` for `t` (clamped at the epoch).
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The instant of `ts`, if it is a valid time at or after the epoch.
pub fn system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Renders a decimal as a plain string without trailing zeros ("1.5", "100").
///
/// Written out from the mantissa and scale with `itoa` instead of through `Display`: every
/// order update renders several decimals, and the formatting machinery (padding, a growing
/// `String`) cost more than the order's own work in the executor. The text is the same as
/// `d.normalize().to_string()` (a test checks it for arbitrary values).
pub fn decimal(d: Decimal) -> String {
    let d = d.normalize();
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(d.mantissa().unsigned_abs());
    let scale = d.scale() as usize;
    let mut out = String::with_capacity(digits.len() + scale + 3);
    if d.is_sign_negative() && !d.is_zero() {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(digits);
    } else if digits.len() > scale {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(digits);
    }
    out
}

fn opt_decimal(d: Option<Decimal>) -> String {
    d.map(decimal).unwrap_or_default()
}

/// Collects violations while converting one request.
struct Check<'a> {
    prefix: &'a str,
    violations: Vec<FieldViolation>,
}

impl Check<'_> {
    fn field<T>(&mut self, name: &str, result: Result<T, ValueError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.violations
                    .push(FieldViolation::new(format!("{}{name}", self.prefix), e));
                None
            }
        }
    }

    fn fail(&mut self, name: &str, description: impl std::fmt::Display) {
        self.violations.push(FieldViolation::new(
            format!("{}{name}", self.prefix),
            description,
        ));
    }

    fn optional_price(&mut self, name: &str, text: &str) -> Option<Option<Price>> {
        if text.is_empty() {
            return Some(None);
        }
        self.field(name, Price::parse(text)).map(Some)
    }
}

/// Converts an enum field, recording "is required" for UNSPECIFIED (0) and "unknown value"
/// for numbers this build does not know.
fn enum_field<P, T>(
    check: &mut Check<'_>,
    name: &str,
    raw: i32,
    map: impl Fn(P) -> Option<T>,
) -> Option<T>
where
    P: TryFrom<i32>,
{
    match P::try_from(raw).ok().map(map) {
        Some(Some(v)) => Some(v),
        Some(None) => {
            check.fail(name, "is required");
            None
        }
        None => {
            check.fail(name, format!("unknown value {raw}"));
            None
        }
    }
}

/// Domain side of a proto side; `None` for UNSPECIFIED.
pub fn side_from_proto(side: v1::Side) -> Option<Side> {
    match side {
        v1::Side::Unspecified => None,
        v1::Side::Buy => Some(Side::Buy),
        v1::Side::Sell => Some(Side::Sell),
    }
}

/// Proto side of a domain side.
pub fn side_to_proto(side: Side) -> v1::Side {
    match side {
        Side::Buy => v1::Side::Buy,
        Side::Sell => v1::Side::Sell,
    }
}

fn order_type_from_proto(t: v1::OrderType) -> Option<OrderType> {
    Some(match t {
        v1::OrderType::Unspecified => return None,
        v1::OrderType::Market => OrderType::Market,
        v1::OrderType::Limit => OrderType::Limit,
        v1::OrderType::StopLoss => OrderType::StopLoss,
        v1::OrderType::StopLossLimit => OrderType::StopLossLimit,
        v1::OrderType::TakeProfit => OrderType::TakeProfit,
        v1::OrderType::TakeProfitLimit => OrderType::TakeProfitLimit,
    })
}

fn order_type_to_proto(t: OrderType) -> v1::OrderType {
    match t {
        OrderType::Market => v1::OrderType::Market,
        OrderType::Limit => v1::OrderType::Limit,
        OrderType::StopLoss => v1::OrderType::StopLoss,
        OrderType::StopLossLimit => v1::OrderType::StopLossLimit,
        OrderType::TakeProfit => v1::OrderType::TakeProfit,
        OrderType::TakeProfitLimit => v1::OrderType::TakeProfitLimit,
    }
}

fn time_in_force_to_proto(t: TimeInForce) -> v1::TimeInForce {
    match t {
        TimeInForce::Gtc => v1::TimeInForce::Gtc,
        TimeInForce::Ioc => v1::TimeInForce::Ioc,
        TimeInForce::Fok => v1::TimeInForce::Fok,
    }
}

fn mode_from_proto(m: v1::TradingMode) -> Option<TradingMode> {
    match m {
        v1::TradingMode::Unspecified => None,
        v1::TradingMode::Paper => Some(TradingMode::Paper),
        v1::TradingMode::Live => Some(TradingMode::Live),
    }
}

fn mode_to_proto(m: TradingMode) -> v1::TradingMode {
    match m {
        TradingMode::Paper => v1::TradingMode::Paper,
        TradingMode::Live => v1::TradingMode::Live,
    }
}

/// Proto status of a domain status.
pub fn status_to_proto(s: OrderStatus) -> v1::OrderStatus {
    match s {
        OrderStatus::PendingNew => v1::OrderStatus::PendingNew,
        OrderStatus::New => v1::OrderStatus::New,
        OrderStatus::PartiallyFilled => v1::OrderStatus::PartiallyFilled,
        OrderStatus::Filled => v1::OrderStatus::Filled,
        OrderStatus::PendingCancel => v1::OrderStatus::PendingCancel,
        OrderStatus::Canceled => v1::OrderStatus::Canceled,
        OrderStatus::Rejected => v1::OrderStatus::Rejected,
        OrderStatus::Expired => v1::OrderStatus::Expired,
        OrderStatus::Unknown => v1::OrderStatus::Unknown,
    }
}

/// Domain status of a proto status; `None` for UNSPECIFIED.
pub fn status_from_proto(s: v1::OrderStatus) -> Option<OrderStatus> {
    Some(match s {
        v1::OrderStatus::Unspecified => return None,
        v1::OrderStatus::PendingNew => OrderStatus::PendingNew,
        v1::OrderStatus::New => OrderStatus::New,
        v1::OrderStatus::PartiallyFilled => OrderStatus::PartiallyFilled,
        v1::OrderStatus::Filled => OrderStatus::Filled,
        v1::OrderStatus::PendingCancel => OrderStatus::PendingCancel,
        v1::OrderStatus::Canceled => OrderStatus::Canceled,
        v1::OrderStatus::Rejected => OrderStatus::Rejected,
        v1::OrderStatus::Expired => OrderStatus::Expired,
        v1::OrderStatus::Unknown => OrderStatus::Unknown,
    })
}

/// Proto reject reason of a domain reason.
pub fn reject_reason_to_proto(r: RejectReason) -> v1::RejectReason {
    use v1::RejectReason as P;
    match r {
        RejectReason::UnknownSymbol => P::UnknownSymbol,
        RejectReason::UnknownVenue => P::UnknownVenue,
        RejectReason::NoMarketData => P::NoMarketData,
        RejectReason::PostOnlyWouldTake => P::PostOnlyWouldTake,
        RejectReason::FokNotFillable => P::FokNotFillable,
        RejectReason::InsufficientBalance => P::InsufficientBalance,
        RejectReason::TradingHalted => P::TradingHalted,
        RejectReason::ReduceOnly => P::ReduceOnly,
        RejectReason::RiskMaxQuantity => P::RiskMaxQuantity,
        RejectReason::RiskMaxNotional => P::RiskMaxNotional,
        RejectReason::RiskMaxOpenOrders => P::RiskMaxOpenOrders,
        RejectReason::RiskMaxPosition => P::RiskMaxPosition,
        RejectReason::RiskGrossExposure => P::RiskGrossExposure,
        RejectReason::RiskPriceBand => P::RiskPriceBand,
        RejectReason::RiskOrderRate => P::RiskOrderRate,
        RejectReason::RiskDailyLoss => P::RiskDailyLoss,
        RejectReason::SlippageExceeded => P::SlippageExceeded,
        RejectReason::VenueRejected => P::VenueRejected,
        RejectReason::VenueUnavailable => P::VenueUnavailable,
        RejectReason::NoLiquidity => P::NoLiquidity,
    }
}

fn liquidity_to_proto(l: Liquidity) -> v1::Liquidity {
    match l {
        Liquidity::Maker => v1::Liquidity::Maker,
        Liquidity::Taker => v1::Liquidity::Taker,
    }
}

fn attached_from_proto(
    check: &mut Check<'_>,
    name: &str,
    pb: Option<&v1::AttachedOrder>,
) -> Option<Option<AttachedOrder>> {
    let Some(pb) = pb else { return Some(None) };
    let trigger = check.field(
        &format!("{name}.trigger_price"),
        Price::parse(&pb.trigger_price),
    );
    let limit = check.optional_price(&format!("{name}.limit_price"), &pb.limit_price);
    Some(Some(AttachedOrder {
        trigger_price: trigger?,
        limit_price: limit?,
    }))
}

fn attached_to_proto(a: &AttachedOrder) -> v1::AttachedOrder {
    v1::AttachedOrder {
        trigger_price: decimal(a.trigger_price.get()),
        limit_price: a.limit_price.map(|p| decimal(p.get())).unwrap_or_default(),
    }
}

fn check_metadata(check: &mut Check<'_>, metadata: &std::collections::HashMap<String, String>) {
    if metadata.len() > MAX_METADATA_ENTRIES {
        check.fail(
            "metadata",
            format!(
                "at most {MAX_METADATA_ENTRIES} entries, got {}",
                metadata.len()
            ),
        );
    }
    let mut keys: Vec<&String> = metadata.keys().collect();
    keys.sort();
    for key in keys {
        if key.is_empty() || key.len() > MAX_METADATA_KEY_BYTES {
            check.fail(
                "metadata",
                format!("keys must be 1 to {MAX_METADATA_KEY_BYTES} bytes, got {key:?}"),
            );
        }
        if metadata[key].len() > MAX_METADATA_VALUE_BYTES {
            check.fail(
                &format!("metadata[{key}]"),
                format!("values must be at most {MAX_METADATA_VALUE_BYTES} bytes"),
            );
        }
    }
}

/// Validates a proto order request into a domain request.
///
/// `prefix` is put before every field name in the violations ("order." for
/// `SubmitOrderRequest.order`, "orders[3]." in a batch).
///
/// # Errors
/// Every field violation found, in field order.
pub fn order_request_from_proto(
    pb: &v1::OrderRequest,
    prefix: &str,
) -> Result<OrderRequest, Vec<FieldViolation>> {
    let mut c = Check {
        prefix,
        violations: Vec::new(),
    };
    let client_order_id = c.field(
        "client_order_id",
        ClientOrderId::new_checked(pb.client_order_id.as_str()),
    );
    let account = c.field("account", AccountId::new_checked(pb.account.as_str()));
    let venue = c.field("venue", VenueId::new_checked(pb.venue.as_str()));
    let mode = enum_field(&mut c, "mode", pb.mode, mode_from_proto);
    let symbol = c.field("symbol", Symbol::new_checked(pb.symbol.as_str()));
    let side = enum_field(&mut c, "side", pb.side, side_from_proto);
    let order_type = enum_field(&mut c, "type", pb.r#type, order_type_from_proto);
    // Unspecified time in force means GTC (a market order never rests, so it acts as IOC).
    let time_in_force = enum_field(&mut c, "time_in_force", pb.time_in_force, |t| {
        Some(match t {
            v1::TimeInForce::Unspecified | v1::TimeInForce::Gtc => TimeInForce::Gtc,
            v1::TimeInForce::Ioc => TimeInForce::Ioc,
            v1::TimeInForce::Fok => TimeInForce::Fok,
        })
    });
    let quantity = c.field("quantity", Quantity::parse(&pb.quantity));
    let price = c.optional_price("price", &pb.price);
    let stop_price = c.optional_price("stop_price", &pb.stop_price);
    let stop_loss = attached_from_proto(&mut c, "stop_loss", pb.stop_loss.as_ref());
    let take_profit = attached_from_proto(&mut c, "take_profit", pb.take_profit.as_ref());
    check_metadata(&mut c, &pb.metadata);
    let built = (|| {
        Some(OrderRequest {
            client_order_id: client_order_id?,
            account: account?,
            venue: venue?,
            mode: mode?,
            symbol: symbol?,
            side: side?,
            order_type: order_type?,
            time_in_force: time_in_force?,
            post_only: pb.post_only,
            quantity: quantity?,
            price: price?,
            stop_price: stop_price?,
            stop_loss: stop_loss?,
            take_profit: take_profit?,
            slippage_bps: pb.slippage_bps,
            mev_protection: pb.mev_protection.as_ref().map(|m| MevProtection {
                private_relay: m.private_relay,
                tip_lamports: m.tip_lamports,
                max_priority_fee_micro_lamports: m.max_priority_fee_micro_lamports,
            }),
            metadata: pb
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        })
    })();
    match built {
        Some(request) => {
            c.violations.extend(request.cross_field_violations(prefix));
            if c.violations.is_empty() {
                Ok(request)
            } else {
                Err(c.violations)
            }
        }
        None => Err(c.violations),
    }
}

/// The proto form of a domain request.
pub fn order_request_to_proto(r: &OrderRequest) -> v1::OrderRequest {
    v1::OrderRequest {
        client_order_id: r.client_order_id.as_str().to_owned(),
        account: r.account.as_str().to_owned(),
        venue: r.venue.as_str().to_owned(),
        mode: mode_to_proto(r.mode) as i32,
        symbol: r.symbol.as_str().to_owned(),
        side: side_to_proto(r.side) as i32,
        r#type: order_type_to_proto(r.order_type) as i32,
        time_in_force: time_in_force_to_proto(r.time_in_force) as i32,
        post_only: r.post_only,
        quantity: decimal(r.quantity.get()),
        price: r.price.map(|p| decimal(p.get())).unwrap_or_default(),
        stop_price: r.stop_price.map(|p| decimal(p.get())).unwrap_or_default(),
        stop_loss: r.stop_loss.as_ref().map(attached_to_proto),
        take_profit: r.take_profit.as_ref().map(attached_to_proto),
        slippage_bps: r.slippage_bps,
        mev_protection: r.mev_protection.as_ref().map(|m| v1::MevProtection {
            private_relay: m.private_relay,
            tip_lamports: m.tip_lamports,
            max_priority_fee_micro_lamports: m.max_priority_fee_micro_lamports,
        }),
        metadata: r
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The proto form of an order.
pub fn order_to_proto(o: &Order) -> v1::Order {
    v1::Order {
        order_id: o.order_id.as_str().to_owned(),
        request: Some(order_request_to_proto(&o.request)),
        status: status_to_proto(o.status) as i32,
        filled_quantity: decimal(o.filled_quantity),
        remaining_quantity: decimal(o.remaining_quantity()),
        average_fill_price: opt_decimal(o.average_fill_price()),
        reject_reason: o
            .reject_reason
            .map_or(v1::RejectReason::Unspecified, reject_reason_to_proto)
            as i32,
        reject_message: o.reject_message.clone(),
        venue_order_id: o.venue_order_id.clone(),
        created_at: Some(timestamp(o.created_at)),
        updated_at: Some(timestamp(o.updated_at)),
        sequence: o.sequence,
        fees: decimal(o.fees),
        fee_asset: o.fee_asset.clone(),
    }
}

/// The proto form of `fill` of `order`.
pub fn fill_to_proto(order: &Order, fill: &Fill) -> v1::Fill {
    v1::Fill {
        trade_id: fill.trade_id.clone(),
        order_id: order.order_id.as_str().to_owned(),
        client_order_id: order.request.client_order_id.as_str().to_owned(),
        account: order.request.account.as_str().to_owned(),
        venue: order.request.venue.as_str().to_owned(),
        symbol: order.request.symbol.as_str().to_owned(),
        side: side_to_proto(order.request.side) as i32,
        price: decimal(fill.price.get()),
        quantity: decimal(fill.quantity.get()),
        fee: decimal(fill.fee),
        fee_asset: fill.fee_asset.clone(),
        liquidity: liquidity_to_proto(fill.liquidity) as i32,
        executed_at: Some(timestamp(fill.executed_at)),
    }
}

#[cfg(test)]
mod tests;

// ---- Risk, admin and journal conversions (executor) ----

use execbridge_domain::risk::{AccountRisk, RiskLimits, TradingState};

/// Proto trading state of a domain state.
pub fn trading_state_to_proto(s: TradingState) -> v1::TradingState {
    match s {
        TradingState::Active => v1::TradingState::Active,
        TradingState::ReduceOnly => v1::TradingState::ReduceOnly,
        TradingState::Halted => v1::TradingState::Halted,
    }
}

/// Domain trading state of a proto state; `None` for UNSPECIFIED.
pub fn trading_state_from_proto(s: v1::TradingState) -> Option<TradingState> {
    match s {
        v1::TradingState::Unspecified => None,
        v1::TradingState::Active => Some(TradingState::Active),
        v1::TradingState::ReduceOnly => Some(TradingState::ReduceOnly),
        v1::TradingState::Halted => Some(TradingState::Halted),
    }
}

/// Domain trading mode of a proto mode; `None` for UNSPECIFIED.
pub fn trading_mode_from_proto(m: v1::TradingMode) -> Option<TradingMode> {
    mode_from_proto(m)
}

/// Domain reject reason of a proto reason; `None` for UNSPECIFIED.
pub fn reject_reason_from_proto(r: v1::RejectReason) -> Option<RejectReason> {
    use v1::RejectReason as P;
    Some(match r {
        P::Unspecified => return None,
        P::UnknownSymbol => RejectReason::UnknownSymbol,
        P::UnknownVenue => RejectReason::UnknownVenue,
        P::NoMarketData => RejectReason::NoMarketData,
        P::PostOnlyWouldTake => RejectReason::PostOnlyWouldTake,
        P::FokNotFillable => RejectReason::FokNotFillable,
        P::InsufficientBalance => RejectReason::InsufficientBalance,
        P::TradingHalted => RejectReason::TradingHalted,
        P::ReduceOnly => RejectReason::ReduceOnly,
        P::RiskMaxQuantity => RejectReason::RiskMaxQuantity,
        P::RiskMaxNotional => RejectReason::RiskMaxNotional,
        P::RiskMaxOpenOrders => RejectReason::RiskMaxOpenOrders,
        P::RiskMaxPosition => RejectReason::RiskMaxPosition,
        P::RiskGrossExposure => RejectReason::RiskGrossExposure,
        P::RiskPriceBand => RejectReason::RiskPriceBand,
        P::RiskOrderRate => RejectReason::RiskOrderRate,
        P::RiskDailyLoss => RejectReason::RiskDailyLoss,
        P::SlippageExceeded => RejectReason::SlippageExceeded,
        P::VenueRejected => RejectReason::VenueRejected,
        P::VenueUnavailable => RejectReason::VenueUnavailable,
        P::NoLiquidity => RejectReason::NoLiquidity,
    })
}

/// Domain liquidity of a proto liquidity; `None` for UNSPECIFIED.
pub fn liquidity_from_proto(l: v1::Liquidity) -> Option<Liquidity> {
    match l {
        v1::Liquidity::Unspecified => None,
        v1::Liquidity::Maker => Some(Liquidity::Maker),
        v1::Liquidity::Taker => Some(Liquidity::Taker),
    }
}

/// The domain fill of a proto fill (as journaled), `None` if it is malformed.
pub fn fill_from_proto(pb: &v1::Fill) -> Option<Fill> {
    fill_from_fields(&FillFields {
        trade_id: &pb.trade_id,
        price: &pb.price,
        quantity: &pb.quantity,
        fee: &pb.fee,
        fee_asset: &pb.fee_asset,
        liquidity: pb.liquidity,
        executed_at: pb.executed_at.as_ref(),
    })
}

/// The fields of a `v1::Fill` that make a domain [`Fill`], borrowed: a reader that
/// decodes the message in place (the executor's journal replay) converts without building
/// the proto message's strings first.
#[derive(Debug, Clone, Copy, Default)]
pub struct FillFields<'a> {
    /// `trade_id`.
    pub trade_id: &'a str,
    /// `price`.
    pub price: &'a str,
    /// `quantity`.
    pub quantity: &'a str,
    /// `fee`.
    pub fee: &'a str,
    /// `fee_asset`.
    pub fee_asset: &'a str,
    /// `liquidity`.
    pub liquidity: i32,
    /// `executed_at`.
    pub executed_at: Option<&'a prost_types::Timestamp>,
}

/// [`fill_from_proto`] from borrowed fields; `None` when one of them is not valid.
pub fn fill_from_fields(f: &FillFields<'_>) -> Option<Fill> {
    Some(Fill {
        trade_id: f.trade_id.to_owned(),
        price: Price::parse(f.price).ok()?,
        quantity: Quantity::parse(f.quantity).ok()?,
        fee: execbridge_domain::values::parse_decimal(f.fee).ok()?,
        fee_asset: f.fee_asset.to_owned(),
        liquidity: liquidity_from_proto(v1::Liquidity::try_from(f.liquidity).ok()?)?,
        executed_at: f.executed_at.and_then(system_time)?,
    })
}

fn limit_decimal(d: Option<Decimal>) -> String {
    d.map(decimal).unwrap_or_default()
}

/// The proto form of risk limits ("" and 0 mean no limit).
pub fn risk_limits_to_proto(l: &RiskLimits) -> v1::RiskLimits {
    v1::RiskLimits {
        max_order_quantity: limit_decimal(l.max_order_quantity),
        max_order_notional: limit_decimal(l.max_order_notional),
        max_open_orders: l.max_open_orders.unwrap_or(0),
        max_position: limit_decimal(l.max_position),
        max_gross_exposure: limit_decimal(l.max_gross_exposure),
        price_band_bps: l.price_band_bps.unwrap_or(0),
        max_orders_per_second: l.max_orders_per_second.unwrap_or(0),
        max_daily_loss: limit_decimal(l.max_daily_loss),
    }
}

/// Validates proto risk limits; `prefix` goes before each field name.
///
/// # Errors
/// Every field that is not empty and not a positive decimal.
pub fn risk_limits_from_proto(
    pb: &v1::RiskLimits,
    prefix: &str,
) -> Result<RiskLimits, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut amount = |name: &str, text: &str| -> Option<Decimal> {
        if text.is_empty() {
            return None;
        }
        match Quantity::parse(text) {
            Ok(q) => Some(q.get()),
            Err(e) => {
                violations.push(FieldViolation::new(format!("{prefix}{name}"), e));
                None
            }
        }
    };
    let nonzero = |n: u32| (n > 0).then_some(n);
    let limits = RiskLimits {
        max_order_quantity: amount("max_order_quantity", &pb.max_order_quantity),
        max_order_notional: amount("max_order_notional", &pb.max_order_notional),
        max_open_orders: nonzero(pb.max_open_orders),
        max_position: amount("max_position", &pb.max_position),
        max_gross_exposure: amount("max_gross_exposure", &pb.max_gross_exposure),
        price_band_bps: nonzero(pb.price_band_bps),
        max_orders_per_second: nonzero(pb.max_orders_per_second),
        max_daily_loss: amount("max_daily_loss", &pb.max_daily_loss),
    };
    if violations.is_empty() {
        Ok(limits)
    } else {
        Err(violations)
    }
}

/// The proto form of an account's risk settings.
pub fn account_risk_to_proto(account: &str, r: &AccountRisk) -> v1::AccountRisk {
    v1::AccountRisk {
        account: account.to_owned(),
        state: trading_state_to_proto(r.state) as i32,
        symbol_states: r
            .symbol_states
            .iter()
            .map(|(symbol, state)| v1::SymbolTradingState {
                symbol: symbol.clone(),
                state: trading_state_to_proto(*state) as i32,
            })
            .collect(),
        paper_limits: Some(risk_limits_to_proto(&r.paper)),
        live_limits: Some(risk_limits_to_proto(&r.live)),
    }
}

/// The domain form of journaled risk settings.
///
/// # Errors
/// Every malformed field.
pub fn account_risk_from_proto(pb: &v1::AccountRisk) -> Result<AccountRisk, Vec<FieldViolation>> {
    let state = |raw: i32| {
        v1::TradingState::try_from(raw)
            .ok()
            .and_then(trading_state_from_proto)
            .unwrap_or_default()
    };
    let default = v1::RiskLimits::default();
    Ok(AccountRisk {
        state: state(pb.state),
        symbol_states: pb
            .symbol_states
            .iter()
            .map(|s| (s.symbol.clone(), state(s.state)))
            .collect(),
        paper: risk_limits_from_proto(pb.paper_limits.as_ref().unwrap_or(&default), "paper.")?,
        live: risk_limits_from_proto(pb.live_limits.as_ref().unwrap_or(&default), "live.")?,
    })
}
