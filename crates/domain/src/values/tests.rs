use rstest::rstest;
use rust_decimal::Decimal;

use super::*;

#[rstest]
#[case("abc-123", true)]
#[case("a.b_c:d-e", true)]
#[case("", false)]
#[case("has space", false)]
#[case("emoji-\u{1F600}", false)]
#[case("123456789012345678901234567890123456", true)]
#[case("1234567890123456789012345678901234567", false)]
fn client_order_ids_follow_the_venue_rule(#[case] text: &str, #[case] ok: bool) {
    assert_eq!(ClientOrderId::new_checked(text).is_ok(), ok, "{text:?}");
}

#[test]
fn a_too_long_client_order_id_says_how_long_it_was() {
    let err = ClientOrderId::new_checked("x".repeat(40)).unwrap_err();
    assert_eq!(
        err,
        ValueError::Length {
            min: 1,
            max: 36,
            len: 40
        }
    );
    assert_eq!(err.to_string(), "must be 1 to 36 characters, got 40");
}

#[rstest]
#[case("1", Some("1"))]
#[case("0.5", Some("0.5"))]
#[case("-2.25", Some("-2.25"))]
#[case("1e5", None)]
#[case("1_000", None)]
#[case(".5", None)]
#[case("5.", None)]
#[case("+1", None)]
#[case("NaN", None)]
#[case(" 1", None)]
#[case("99999999999999999999999999999999", None)]
fn decimals_are_plain_digits(#[case] text: &str, #[case] want: Option<&str>) {
    let got = parse_decimal(text).ok();
    assert_eq!(got, want.map(|w| w.parse::<Decimal>().unwrap()), "{text:?}");
}

#[rstest]
#[case("0")]
#[case("-1")]
#[case("0.000")]
fn prices_must_be_positive(#[case] text: &str) {
    assert!(matches!(
        Price::parse(text),
        Err(ValueError::NotPositive(_))
    ));
}

#[test]
fn quantities_are_normalised() {
    assert_eq!(Quantity::parse("1.500").unwrap().to_string(), "1.5");
}

#[test]
fn venues_are_lower_case() {
    assert!(VenueId::new_checked("paper").is_ok());
    assert!(matches!(
        VenueId::new_checked("Paper"),
        Err(ValueError::Charset { found: 'P', .. })
    ));
}
