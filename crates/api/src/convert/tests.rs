use std::time::SystemTime;

use rstest::rstest;

use super::*;

fn valid() -> v1::OrderRequest {
    v1::OrderRequest {
        client_order_id: "c-1".into(),
        account: "acct".into(),
        venue: "paper".into(),
        mode: v1::TradingMode::Paper as i32,
        symbol: "BTC-USDT".into(),
        side: v1::Side::Buy as i32,
        r#type: v1::OrderType::Limit as i32,
        time_in_force: v1::TimeInForce::Gtc as i32,
        quantity: "0.5".into(),
        price: "100.10".into(),
        ..Default::default()
    }
}

fn fields(pb: &v1::OrderRequest) -> Vec<String> {
    order_request_from_proto(pb, "order.")
        .unwrap_err()
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[test]
fn a_valid_request_round_trips() {
    let domain = order_request_from_proto(&valid(), "order.").unwrap();
    let back = order_request_to_proto(&domain);
    let mut want = valid();
    want.price = "100.1".into();
    assert_eq!(back, want);
}

#[rstest]
#[case::bad_quantity(|r: &mut v1::OrderRequest| r.quantity = "abc".into(), "order.quantity")]
#[case::zero_quantity(|r: &mut v1::OrderRequest| r.quantity = "0".into(), "order.quantity")]
#[case::missing_price(|r: &mut v1::OrderRequest| r.price.clear(), "order.price")]
#[case::negative_price(|r: &mut v1::OrderRequest| r.price = "-1".into(), "order.price")]
#[case::no_side(|r: &mut v1::OrderRequest| r.side = 0, "order.side")]
#[case::unknown_type(|r: &mut v1::OrderRequest| r.r#type = 99, "order.type")]
#[case::no_mode(|r: &mut v1::OrderRequest| r.mode = 0, "order.mode")]
#[case::long_id(|r: &mut v1::OrderRequest| r.client_order_id = "x".repeat(37), "order.client_order_id")]
#[case::bad_venue(|r: &mut v1::OrderRequest| r.venue = "Paper".into(), "order.venue")]
#[case::slippage(|r: &mut v1::OrderRequest| r.slippage_bps = 10_001, "order.slippage_bps")]
#[case::attached(|r: &mut v1::OrderRequest| r.stop_loss = Some(v1::AttachedOrder { trigger_price: "x".into(), limit_price: String::new() }), "order.stop_loss.trigger_price")]
#[case::metadata(|r: &mut v1::OrderRequest| { r.metadata.insert("k".into(), "v".repeat(300)); }, "order.metadata[k]")]
fn each_bad_field_is_named(#[case] break_it: fn(&mut v1::OrderRequest), #[case] field: &str) {
    let mut pb = valid();
    break_it(&mut pb);
    assert_eq!(fields(&pb), [field]);
}

#[test]
fn every_violation_is_reported_at_once() {
    let mut pb = valid();
    pb.quantity = "1e3".into();
    pb.account.clear();
    pb.side = 0;
    assert_eq!(
        fields(&pb),
        ["order.account", "order.side", "order.quantity"]
    );
}

#[test]
fn timestamps_round_trip() {
    let now = SystemTime::now();
    assert_eq!(system_time(&timestamp(now)), Some(now));
    assert_eq!(
        system_time(&prost_types::Timestamp {
            seconds: -1,
            nanos: 0
        }),
        None
    );
}

#[rstest]
#[case("0", "0")]
#[case("-0.000", "0")]
#[case("1.500", "1.5")]
#[case("-1.5", "-1.5")]
#[case("100", "100")]
#[case("1e3", "1000")]
#[case("0.00012", "0.00012")]
#[case("-0.00012", "-0.00012")]
#[case("79228162514264337593543950335", "79228162514264337593543950335")]
#[case("-0.0000000000000000000000000001", "-0.0000000000000000000000000001")]
fn decimals_render_plain_without_trailing_zeros(#[case] input: &str, #[case] text: &str) {
    let d = if input.contains('e') {
        Decimal::from_scientific(input).unwrap()
    } else {
        input.parse::<Decimal>().unwrap()
    };
    assert_eq!(decimal(d), text);
}

proptest::proptest! {
    /// The fast rendering is the text `Display` gives the normalized value, for any
    /// mantissa, scale and sign.
    #[test]
    fn decimal_text_equals_the_display_of_the_normalized_value(
        lo: u32, mid: u32, hi: u32, negative: bool, scale in 0u32..=28,
    ) {
        let d = Decimal::from_parts(lo, mid, hi, negative, scale);
        proptest::prop_assert_eq!(decimal(d), d.normalize().to_string());
    }
}
