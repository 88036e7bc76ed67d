use std::time::Duration;

use rstest::rstest;

use super::*;

#[rstest]
#[case("100m", Some(Duration::from_millis(100)))]
#[case("5S", Some(Duration::from_secs(5)))]
#[case("2M", Some(Duration::from_secs(120)))]
#[case("1H", Some(Duration::from_secs(3600)))]
#[case("250u", Some(Duration::from_micros(250)))]
#[case("9n", Some(Duration::from_nanos(9)))]
#[case("m", None)]
#[case("10x", None)]
#[case("123456789S", None)]
#[case("-1S", None)]
fn grpc_timeouts_parse(#[case] text: &str, #[case] want: Option<Duration>) {
    assert_eq!(parse_grpc_timeout(text), want);
}
