use rust_decimal::Decimal;
use rust_decimal::prelude::FromStr;

use super::*;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[test]
fn buys_average_their_entry_price() {
    let mut p = Position::default();
    p.apply_fill(Side::Buy, d("1"), d("100"));
    p.apply_fill(Side::Buy, d("3"), d("200"));
    assert_eq!(p.quantity, d("4"));
    assert_eq!(p.average_entry_price, d("175"));
    assert_eq!(p.realized_pnl, Decimal::ZERO);
}

#[test]
fn selling_part_of_a_long_realises_profit() {
    let mut p = Position::default();
    p.apply_fill(Side::Buy, d("2"), d("100"));
    p.apply_fill(Side::Sell, d("1"), d("110"));
    assert_eq!(p.quantity, d("1"));
    assert_eq!(p.average_entry_price, d("100"));
    assert_eq!(p.realized_pnl, d("10"));
    assert_eq!(p.unrealized_pnl(d("120")), d("20"));
}

#[test]
fn a_fill_through_flat_opens_the_other_side_at_the_fill_price() {
    let mut p = Position::default();
    p.apply_fill(Side::Buy, d("1"), d("100"));
    p.apply_fill(Side::Sell, d("3"), d("90"));
    assert_eq!(p.quantity, d("-2"));
    assert_eq!(p.average_entry_price, d("90"));
    assert_eq!(p.realized_pnl, d("-10"));
}

#[test]
fn covering_a_short_below_entry_is_a_profit() {
    let mut p = Position::default();
    p.apply_fill(Side::Sell, d("2"), d("100"));
    p.apply_fill(Side::Buy, d("2"), d("95"));
    assert_eq!(p.quantity, Decimal::ZERO);
    assert_eq!(p.average_entry_price, Decimal::ZERO);
    assert_eq!(p.realized_pnl, d("10"));
}
