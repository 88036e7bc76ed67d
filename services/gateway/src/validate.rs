//! Order validation beyond what each field says about itself: the instrument registry
//! (known and enabled symbol, tick size, lot size, minimum notional, the venue's filters),
//! swap-venue mints and MEV parameters, and text hygiene.
//!
//! Every problem is a [`Violation`] with the field's path and a machine-readable reason,
//! and all of them are reported at once.

use execbridge_domain::order::MevProtection;
use execbridge_domain::{FieldViolation, OrderRequest, OrderType};
use rust_decimal::Decimal;

use crate::policy::{Instrument, InstrumentKind, Policy};

/// One invalid field with a reason a client can switch on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field ("order.price").
    pub field: String,
    /// What is wrong.
    pub description: String,
    /// UPPER_SNAKE_CASE reason.
    pub reason: &'static str,
}

impl Violation {
    /// A violation of `field` for `reason`.
    pub fn new(
        field: impl Into<String>,
        reason: &'static str,
        description: impl std::fmt::Display,
    ) -> Self {
        Self {
            field: field.into(),
            description: description.to_string(),
            reason,
        }
    }
}

impl From<FieldViolation> for Violation {
    fn from(v: FieldViolation) -> Self {
        Self {
            field: v.field,
            description: v.description,
            reason: "INVALID_FIELD",
        }
    }
}

/// Largest builder tip accepted, in lamports (1 SOL).
pub const MAX_TIP_LAMPORTS: u64 = 1_000_000_000;
/// Largest priority fee accepted, in micro-lamports per compute unit.
pub const MAX_PRIORITY_FEE_MICRO_LAMPORTS: u64 = 100_000_000;

/// Checks a swap symbol "<input mint>/<output mint>": both base58 that decode to exactly
/// 32 bytes, and different.
///
/// # Errors
/// The first problem, as a violation of `symbol`.
pub fn swap_pair(symbol: &str) -> Result<(), Violation> {
    let Some((input, output)) = symbol.split_once('/') else {
        return Err(Violation::new(
            "symbol",
            "INVALID_MINT",
            "a swap symbol is \"<input mint>/<output mint>\"",
        ));
    };
    for (side, mint) in [("input", input), ("output", output)] {
        match bs58::decode(mint).into_vec() {
            Ok(bytes) if bytes.len() == 32 => {}
            Ok(bytes) => {
                return Err(Violation::new(
                    "symbol",
                    "INVALID_MINT",
                    format!("the {side} mint decodes to {} bytes, not 32", bytes.len()),
                ));
            }
            Err(_) => {
                return Err(Violation::new(
                    "symbol",
                    "INVALID_MINT",
                    format!("the {side} mint is not base58"),
                ));
            }
        }
    }
    if input == output {
        return Err(Violation::new(
            "symbol",
            "INVALID_MINT",
            "input and output mints are the same",
        ));
    }
    Ok(())
}

fn on_grid(value: Decimal, step: Decimal) -> bool {
    (value % step).is_zero()
}

/// Everything wrong with `order` against `policy`'s registry; `prefix` goes before field
/// names ("order.").
pub fn order(policy: &Policy, order: &OrderRequest, prefix: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let field = |name: &str| format!("{prefix}{name}");
    for (key, value) in &order.metadata {
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
        {
            out.push(Violation::new(
                field("metadata"),
                "INVALID_CHARACTERS",
                "metadata keys may only contain [A-Za-z0-9._:-]",
            ));
        }
        if value.chars().any(char::is_control) {
            out.push(Violation::new(
                format!("{}[{key}]", field("metadata")),
                "INVALID_CHARACTERS",
                "metadata values may not contain control characters",
            ));
        }
    }
    let venue = order.venue.as_str();
    let symbol = order.symbol.as_str();
    let venue_kind = policy
        .instruments
        .iter()
        .find(|((v, _), _)| v == venue)
        .map(|(_, i)| i.kind);
    // On a swap venue the symbol is a pair of mints: check their form before the listing,
    // so a malformed mint is reported as such and not as an unknown pair.
    if venue_kind == Some(InstrumentKind::Swap)
        && let Err(mut v) = swap_pair(symbol)
    {
        v.field = field("symbol");
        out.push(v);
        return out;
    }
    let Some(instrument) = policy
        .instruments
        .get(&(venue.to_owned(), symbol.to_owned()))
    else {
        match venue_kind {
            Some(InstrumentKind::Swap) => out.push(Violation::new(
                field("symbol"),
                "UNSUPPORTED_PAIR",
                format!("the pair {symbol} is not supported on venue {venue:?}"),
            )),
            Some(InstrumentKind::Spot) => out.push(Violation::new(
                field("symbol"),
                "UNKNOWN_SYMBOL",
                format!("{symbol:?} is not listed on venue {venue:?}"),
            )),
            None => out.push(Violation::new(
                field("venue"),
                "UNKNOWN_VENUE",
                format!("venue {venue:?} is not configured"),
            )),
        }
        return out;
    };
    if !instrument.enabled {
        out.push(Violation::new(
            field("symbol"),
            "SYMBOL_DISABLED",
            format!("{symbol} is disabled on {venue}"),
        ));
    }
    check_prices(instrument, order, &field, &mut out);
    let quantity = order.quantity.get();
    if !on_grid(quantity, instrument.lot_size) {
        out.push(Violation::new(
            field("quantity"),
            "QUANTITY_OFF_LOT",
            format!(
                "{quantity} is not a multiple of the lot size {}",
                instrument.lot_size
            ),
        ));
    }
    if let Some(max) = instrument.max_quantity.filter(|m| quantity > *m) {
        out.push(Violation::new(
            field("quantity"),
            "QUANTITY_ABOVE_MAXIMUM",
            format!("{quantity} is above the maximum {max}"),
        ));
    }
    // The notional of a market order is only known at execution; the executor's risk
    // checks price it against the last market price.
    if let Some(price) = order
        .price
        .filter(|_| order.order_type != OrderType::Market)
    {
        let notional = price.get() * quantity;
        if notional < instrument.min_notional {
            out.push(Violation::new(
                field("quantity"),
                "NOTIONAL_BELOW_MINIMUM",
                format!(
                    "notional {notional} is below the minimum {}",
                    instrument.min_notional
                ),
            ));
        }
    }
    match (instrument.kind, &order.mev_protection) {
        (InstrumentKind::Swap, Some(mev)) => check_mev(mev, &field, &mut out),
        (InstrumentKind::Spot, Some(_)) => out.push(Violation::new(
            field("mev_protection"),
            "INVALID_FIELD",
            "MEV protection applies to swap venues only",
        )),
        (_, None) => {}
    }
    out
}

fn check_prices(
    instrument: &Instrument,
    order: &OrderRequest,
    field: &impl Fn(&str) -> String,
    out: &mut Vec<Violation>,
) {
    let mut prices = vec![("price", order.price), ("stop_price", order.stop_price)];
    for (name, attached) in [
        ("stop_loss", &order.stop_loss),
        ("take_profit", &order.take_profit),
    ] {
        if let Some(a) = attached {
            prices.push((
                if name == "stop_loss" {
                    "stop_loss.trigger_price"
                } else {
                    "take_profit.trigger_price"
                },
                Some(a.trigger_price),
            ));
            prices.push((
                if name == "stop_loss" {
                    "stop_loss.limit_price"
                } else {
                    "take_profit.limit_price"
                },
                a.limit_price,
            ));
        }
    }
    for (name, price) in prices {
        if let Some(price) = price.filter(|p| !on_grid(p.get(), instrument.tick_size)) {
            out.push(Violation::new(
                field(name),
                "PRICE_OFF_TICK",
                format!(
                    "{price} is not a multiple of the tick size {}",
                    instrument.tick_size
                ),
            ));
        }
    }
}

fn check_mev(mev: &MevProtection, field: &impl Fn(&str) -> String, out: &mut Vec<Violation>) {
    if mev.tip_lamports > MAX_TIP_LAMPORTS {
        out.push(Violation::new(
            field("mev_protection.tip_lamports"),
            "INVALID_FIELD",
            format!("must be at most {MAX_TIP_LAMPORTS}"),
        ));
    }
    if mev.private_relay && mev.tip_lamports == 0 {
        out.push(Violation::new(
            field("mev_protection.tip_lamports"),
            "INVALID_FIELD",
            "a private relay needs a tip above zero",
        ));
    }
    if mev.max_priority_fee_micro_lamports > MAX_PRIORITY_FEE_MICRO_LAMPORTS {
        out.push(Violation::new(
            field("mev_protection.max_priority_fee_micro_lamports"),
            "INVALID_FIELD",
            format!("must be at most {MAX_PRIORITY_FEE_MICRO_LAMPORTS}"),
        ));
    }
}
