use std::time::SystemTime;

use execbridge_domain::*;
use rstest::rstest;
use rust_decimal::Decimal;

use super::*;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn quote() -> Quote {
    Quote::around(d("100"))
}

fn order(side: Side, order_type: OrderType, price: Option<&str>, stop: Option<&str>) -> Order {
    let request = OrderRequest {
        client_order_id: ClientOrderId::new_checked("c").unwrap(),
        account: AccountId::new_checked("a").unwrap(),
        venue: VenueId::new_checked("paper").unwrap(),
        mode: TradingMode::Paper,
        symbol: Symbol::new_checked("BTC-USDT").unwrap(),
        side,
        order_type,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        quantity: Quantity::parse("1").unwrap(),
        price: price.map(|p| Price::parse(p).unwrap()),
        stop_price: stop.map(|p| Price::parse(p).unwrap()),
        stop_loss: None,
        take_profit: None,
        slippage_bps: 0,
        mev_protection: None,
        metadata: Default::default(),
    };
    Order::new(
        OrderId::new_checked("s0-1").unwrap(),
        request,
        SystemTime::UNIX_EPOCH,
        1,
    )
}

fn book() -> Book {
    Book::top(&quote())
}

fn taker(price: &str) -> Step {
    Step::Fill {
        price: d(price),
        quantity: d("1"),
        liquidity: Liquidity::Taker,
    }
}

#[rstest]
#[case::market_buy_takes_the_ask(Side::Buy, OrderType::Market, None, vec![Step::Ack, taker("101")])]
#[case::market_sell_takes_the_bid(Side::Sell, OrderType::Market, None, vec![Step::Ack, taker("99")])]
#[case::marketable_limit_takes_the_touch(Side::Buy, OrderType::Limit, Some("105"), vec![Step::Ack, taker("101")])]
#[case::passive_limit_rests(Side::Buy, OrderType::Limit, Some("100"), vec![Step::Ack])]
#[case::passive_sell_rests(Side::Sell, OrderType::Limit, Some("100"), vec![Step::Ack])]
fn on_arrival(
    #[case] side: Side,
    #[case] order_type: OrderType,
    #[case] price: Option<&str>,
    #[case] want: Vec<Step>,
) {
    assert_eq!(
        on_submit(&order(side, order_type, price, None), Some(&book())),
        want
    );
}

#[test]
fn without_a_price_the_order_is_rejected() {
    let steps = on_submit(&order(Side::Buy, OrderType::Market, None, None), None);
    assert!(matches!(
        steps.as_slice(),
        [Step::Reject(RejectReason::NoMarketData, _)]
    ));
}

#[test]
fn a_post_only_order_that_would_take_is_rejected_before_the_ack() {
    let mut o = order(Side::Buy, OrderType::Limit, Some("101"), None);
    o.request.post_only = true;
    let steps = on_submit(&o, Some(&book()));
    assert!(matches!(
        steps.as_slice(),
        [Step::Reject(RejectReason::PostOnlyWouldTake, _)]
    ));
}

#[rstest]
#[case(TimeInForce::Ioc)]
#[case(TimeInForce::Fok)]
fn immediate_orders_that_cannot_fill_expire(#[case] tif: TimeInForce) {
    let mut o = order(Side::Buy, OrderType::Limit, Some("100"), None);
    o.request.time_in_force = tif;
    assert_eq!(on_submit(&o, Some(&book())), vec![Step::Ack, Step::Expire]);
}

#[test]
fn a_resting_limit_fills_at_its_price_when_the_market_crosses() {
    let o = order(Side::Buy, OrderType::Limit, Some("100"), None);
    assert_eq!(on_quote(&o, &book()), vec![]);
    let crossed = Quote {
        bid: d("98"),
        ask: d("99.5"),
        last: d("99"),
    };
    assert_eq!(
        on_quote(&o, &Book::top(&crossed)),
        vec![Step::Fill {
            price: d("100"),
            quantity: d("1"),
            liquidity: Liquidity::Maker
        }]
    );
}

#[rstest]
#[case::stop_sell_triggers_below(Side::Sell, OrderType::StopLoss, "99.5", true)]
#[case::stop_sell_waits_above(Side::Sell, OrderType::StopLoss, "98", false)]
#[case::stop_buy_triggers_above(Side::Buy, OrderType::StopLoss, "100", true)]
#[case::take_profit_sell_triggers_above(Side::Sell, OrderType::TakeProfit, "98", true)]
#[case::take_profit_sell_waits_below(Side::Sell, OrderType::TakeProfit, "100", false)]
fn stops_trigger_on_the_right_side(
    #[case] side: Side,
    #[case] order_type: OrderType,
    #[case] stop: &str,
    #[case] fires: bool,
) {
    let o = order(side, order_type, None, Some(stop));
    let steps = on_quote(&o, &book());
    assert_eq!(steps.first() == Some(&Step::Trigger), fires, "{steps:?}");
    if fires {
        assert!(matches!(
            steps[1],
            Step::Fill {
                liquidity: Liquidity::Taker,
                ..
            }
        ));
    }
}

#[test]
fn other_venues_and_live_orders_are_refused() {
    let mut o = order(Side::Buy, OrderType::Market, None, None);
    o.request.venue = VenueId::new_checked("binance").unwrap();
    assert!(matches!(
        on_submit(&o, Some(&book()))[0],
        Step::Reject(RejectReason::UnknownVenue, _)
    ));
    let mut o = order(Side::Buy, OrderType::Market, None, None);
    o.request.mode = TradingMode::Live;
    assert!(matches!(
        on_submit(&o, Some(&book()))[0],
        Step::Reject(RejectReason::VenueRejected, _)
    ));
}

fn deep() -> Book {
    // Asks: 0.4 @ 101, 0.4 @ 101.0505, 0.4 @ 101.101 (5 bps steps).
    let depth = DepthConfig {
        displayed_size: true,
        synthetic_levels: 2,
        synthetic_step_bps: 5,
    };
    Book::from_top(&quote(), Some(d("0.4")), Some(d("0.4")), &depth)
}

fn fills(steps: &[Step]) -> Vec<(Decimal, Decimal)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Fill {
                price, quantity, ..
            } => Some((*price, *quantity)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_market_order_walks_the_levels_and_pays_for_depth() {
    let o = order(Side::Buy, OrderType::Market, None, None);
    let steps = on_submit(&o, Some(&deep()));
    assert_eq!(
        fills(&steps),
        [
            (d("101"), d("0.4")),
            (d("101.0505"), d("0.4")),
            (d("101.1010"), d("0.2"))
        ]
    );
    assert_eq!(
        steps.last(),
        Some(&Step::Fill {
            price: d("101.1010"),
            quantity: d("0.2"),
            liquidity: Liquidity::Taker
        })
    );
}

#[test]
fn what_the_book_cannot_fill_expires_for_a_market_order() {
    let mut o = order(Side::Buy, OrderType::Market, None, None);
    o.request.quantity = Quantity::parse("2").unwrap();
    let steps = on_submit(&o, Some(&deep()));
    assert_eq!(fills(&steps).iter().map(|f| f.1).sum::<Decimal>(), d("1.2"));
    assert_eq!(steps.last(), Some(&Step::Expire));
}

#[test]
fn fill_or_kill_fills_completely_or_not_at_all() {
    let mut o = order(Side::Buy, OrderType::Limit, Some("101.06"), None);
    o.request.time_in_force = TimeInForce::Fok;
    // 0.8 available at or below 101.06, 1 wanted.
    assert_eq!(on_submit(&o, Some(&deep())), vec![Step::Ack, Step::Expire]);
    o.request.quantity = Quantity::parse("0.8").unwrap();
    assert_eq!(fills(&on_submit(&o, Some(&deep()))).len(), 2);
}

#[test]
fn a_marketable_gtc_limit_takes_what_it_can_and_rests_the_rest() {
    let o = order(Side::Buy, OrderType::Limit, Some("101"), None);
    let steps = on_submit(&o, Some(&deep()));
    assert_eq!(fills(&steps), [(d("101"), d("0.4"))]);
    assert_ne!(steps.last(), Some(&Step::Expire), "the rest keeps working");
}

#[test]
fn a_slippage_tolerance_stops_the_walk() {
    let mut o = order(Side::Buy, OrderType::Market, None, None);
    o.request.slippage_bps = 6;
    let steps = on_submit(&o, Some(&deep()));
    assert_eq!(fills(&steps).len(), 2, "the third level is 10 bps away");
    assert_eq!(steps.last(), Some(&Step::Expire));
}

#[test]
fn an_l2_book_is_sorted_best_first() {
    let b = Book::from_depth(
        vec![(d("98"), d("1")), (d("99"), d("2")), (d("97"), d("0"))],
        vec![(d("102"), d("1")), (d("101"), d("3"))],
        d("100"),
    );
    assert_eq!(b.quote().unwrap().bid, d("99"));
    assert_eq!(b.quote().unwrap().ask, d("101"));
    assert_eq!(b.bids.len(), 2);
}
