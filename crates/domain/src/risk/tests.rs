use std::str::FromStr;

use rstest::rstest;
use rust_decimal::Decimal;

use super::*;
use crate::order::{OrderType, TimeInForce};
use crate::values::{AccountId, ClientOrderId, Price, Quantity, Symbol, VenueId};

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn order(side: Side, qty: &str, price: Option<&str>, mode: TradingMode) -> OrderRequest {
    OrderRequest {
        client_order_id: ClientOrderId::new_checked("c").unwrap(),
        account: AccountId::new_checked("a").unwrap(),
        venue: VenueId::new_checked("paper").unwrap(),
        mode,
        symbol: Symbol::new_checked("BTC-USDT").unwrap(),
        side,
        order_type: if price.is_some() {
            OrderType::Limit
        } else {
            OrderType::Market
        },
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        quantity: Quantity::parse(qty).unwrap(),
        price: price.map(|p| Price::parse(p).unwrap()),
        stop_price: None,
        stop_loss: None,
        take_profit: None,
        slippage_bps: 0,
        mev_protection: None,
        metadata: Default::default(),
    }
}

fn exposure(position: &str) -> Exposure {
    Exposure {
        last_price: Some(d("100")),
        position: d(position),
        gross_exposure: d(position).abs() * d("100"),
        ..Default::default()
    }
}

fn limits() -> RiskLimits {
    RiskLimits {
        max_order_quantity: Some(d("10")),
        max_order_notional: Some(d("500")),
        max_open_orders: Some(2),
        max_position: Some(d("8")),
        max_gross_exposure: Some(d("900")),
        price_band_bps: Some(500),
        max_orders_per_second: Some(3),
        max_daily_loss: Some(d("50")),
    }
}

fn verdict(risk: &AccountRisk, o: &OrderRequest, x: &Exposure) -> Option<RejectReason> {
    check(risk, o, x).err().map(|d| d.reason)
}

#[rstest]
#[case::within_every_limit(Side::Buy, "1", Some("100"), "0", None)]
#[case::quantity_above_the_limit(Side::Buy, "11", None, "0", Some(RejectReason::RiskMaxQuantity))]
#[case::notional_above_the_limit(
    Side::Buy,
    "6",
    Some("100"),
    "0",
    Some(RejectReason::RiskMaxNotional)
)]
#[case::limit_price_outside_the_band(
    Side::Buy,
    "1",
    Some("106"),
    "0",
    Some(RejectReason::RiskPriceBand)
)]
#[case::position_would_exceed(Side::Buy, "2", None, "7", Some(RejectReason::RiskMaxPosition))]
#[case::reducing_is_allowed_past_the_position_limit(Side::Sell, "2", None, "7", None)]
#[case::gross_exposure_would_exceed(
    Side::Sell,
    "4",
    None,
    "-6",
    Some(RejectReason::RiskGrossExposure)
)]
fn limits_table(
    #[case] side: Side,
    #[case] qty: &str,
    #[case] price: Option<&str>,
    #[case] position: &str,
    #[case] want: Option<RejectReason>,
) {
    let risk = AccountRisk {
        paper: limits(),
        ..Default::default()
    };
    let mut l = limits();
    l.max_position = Some(d("20"));
    let risk_wide = AccountRisk {
        paper: l,
        ..Default::default()
    };
    let o = order(side, qty, price, TradingMode::Paper);
    let x = exposure(position);
    if want == Some(RejectReason::RiskGrossExposure) {
        assert_eq!(verdict(&risk_wide, &o, &x), want);
    } else {
        assert_eq!(verdict(&risk, &o, &x), want);
    }
}

#[test]
fn a_halted_symbol_rejects_even_when_the_account_is_active() {
    let mut risk = AccountRisk::default();
    risk.symbol_states
        .insert("BTC-USDT".into(), TradingState::Halted);
    let o = order(Side::Buy, "1", None, TradingMode::Paper);
    assert_eq!(
        verdict(&risk, &o, &exposure("0")),
        Some(RejectReason::TradingHalted)
    );
}

#[test]
fn reduce_only_accepts_only_orders_that_shrink_the_position() {
    let risk = AccountRisk {
        state: TradingState::ReduceOnly,
        ..Default::default()
    };
    let sell = order(Side::Sell, "1", None, TradingMode::Paper);
    let buy = order(Side::Buy, "1", None, TradingMode::Paper);
    assert_eq!(verdict(&risk, &sell, &exposure("2")), None);
    assert_eq!(
        verdict(&risk, &buy, &exposure("2")),
        Some(RejectReason::ReduceOnly)
    );
    let too_much = order(Side::Sell, "3", None, TradingMode::Paper);
    assert_eq!(
        verdict(&risk, &too_much, &exposure("2")),
        Some(RejectReason::ReduceOnly)
    );
}

#[test]
fn live_orders_pass_the_stricter_live_limits_as_well() {
    let risk = AccountRisk {
        paper: limits(),
        live: RiskLimits {
            max_order_quantity: Some(d("0.5")),
            ..Default::default()
        },
        ..Default::default()
    };
    let x = exposure("0");
    assert_eq!(
        verdict(&risk, &order(Side::Buy, "1", None, TradingMode::Paper), &x),
        None
    );
    assert_eq!(
        verdict(&risk, &order(Side::Buy, "1", None, TradingMode::Live), &x),
        Some(RejectReason::RiskMaxQuantity)
    );
}

#[test]
fn order_rate_open_orders_and_daily_loss_are_counted() {
    let risk = AccountRisk {
        paper: limits(),
        ..Default::default()
    };
    let o = order(Side::Buy, "1", None, TradingMode::Paper);
    let mut x = exposure("0");
    x.orders_last_second = 3;
    assert_eq!(verdict(&risk, &o, &x), Some(RejectReason::RiskOrderRate));
    let mut x = exposure("0");
    x.open_orders = 2;
    assert_eq!(
        verdict(&risk, &o, &x),
        Some(RejectReason::RiskMaxOpenOrders)
    );
    let mut x = exposure("1");
    x.daily_pnl = d("-50");
    assert_eq!(verdict(&risk, &o, &x), Some(RejectReason::RiskDailyLoss));
    let close = order(Side::Sell, "1", None, TradingMode::Paper);
    assert_eq!(verdict(&risk, &close, &x), None, "closing stays allowed");
}
