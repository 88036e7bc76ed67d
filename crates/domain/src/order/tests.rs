use std::time::SystemTime;

use rstest::rstest;
use rust_decimal::Decimal;

use super::*;
use crate::values::*;

fn request(quantity: &str) -> OrderRequest {
    OrderRequest {
        client_order_id: ClientOrderId::new_checked("c-1").unwrap(),
        account: AccountId::new_checked("acct").unwrap(),
        venue: VenueId::new_checked("paper").unwrap(),
        mode: TradingMode::Paper,
        symbol: Symbol::new_checked("BTC-USDT").unwrap(),
        side: Side::Buy,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        quantity: Quantity::parse(quantity).unwrap(),
        price: Some(Price::parse("100").unwrap()),
        stop_price: None,
        stop_loss: None,
        take_profit: None,
        slippage_bps: 0,
        mev_protection: None,
        metadata: Default::default(),
    }
}

fn order(quantity: &str) -> Order {
    Order::new(
        OrderId::new_checked("s0-1").unwrap(),
        request(quantity),
        SystemTime::UNIX_EPOCH,
        1,
    )
}

fn fill(trade_id: &str, quantity: &str) -> OrderEvent {
    OrderEvent::Fill(Fill {
        trade_id: trade_id.into(),
        price: Price::parse("100").unwrap(),
        quantity: Quantity::parse(quantity).unwrap(),
        fee: Decimal::new(1, 2),
        fee_asset: "USDT".into(),
        liquidity: Liquidity::Taker,
        executed_at: SystemTime::UNIX_EPOCH,
    })
}

fn ack() -> OrderEvent {
    OrderEvent::Acknowledged {
        venue_order_id: "v1".into(),
    }
}

#[rstest]
#[case(
    OrderStatus::PendingNew,
    EventKind::Acknowledged,
    false,
    false,
    Some(OrderStatus::New)
)]
#[case(
    OrderStatus::PendingNew,
    EventKind::Rejected,
    false,
    false,
    Some(OrderStatus::Rejected)
)]
#[case(
    OrderStatus::PendingNew,
    EventKind::Unknown,
    false,
    false,
    Some(OrderStatus::Unknown)
)]
#[case(
    OrderStatus::New,
    EventKind::Fill,
    true,
    false,
    Some(OrderStatus::PartiallyFilled)
)]
#[case(
    OrderStatus::New,
    EventKind::Fill,
    true,
    true,
    Some(OrderStatus::Filled)
)]
#[case(
    OrderStatus::PartiallyFilled,
    EventKind::CancelRequested,
    true,
    false,
    Some(OrderStatus::PendingCancel)
)]
#[case(
    OrderStatus::PendingCancel,
    EventKind::CancelRejected,
    true,
    false,
    Some(OrderStatus::PartiallyFilled)
)]
#[case(
    OrderStatus::PendingCancel,
    EventKind::CancelRejected,
    false,
    false,
    Some(OrderStatus::New)
)]
#[case(
    OrderStatus::PendingCancel,
    EventKind::Fill,
    true,
    true,
    Some(OrderStatus::Filled)
)]
#[case(
    OrderStatus::PendingCancel,
    EventKind::Fill,
    true,
    false,
    Some(OrderStatus::PendingCancel)
)]
#[case(
    OrderStatus::Unknown,
    EventKind::Acknowledged,
    false,
    false,
    Some(OrderStatus::New)
)]
#[case(
    OrderStatus::New,
    EventKind::Expired,
    false,
    false,
    Some(OrderStatus::Expired)
)]
#[case(OrderStatus::New, EventKind::Rejected, false, false, None)]
#[case(OrderStatus::Filled, EventKind::Fill, true, true, None)]
#[case(OrderStatus::Canceled, EventKind::CancelRequested, false, false, None)]
#[case(OrderStatus::Rejected, EventKind::Acknowledged, false, false, None)]
#[case(OrderStatus::Expired, EventKind::Canceled, false, false, None)]
fn the_transition_table(
    #[case] from: OrderStatus,
    #[case] event: EventKind,
    #[case] any_filled: bool,
    #[case] fully_filled: bool,
    #[case] want: Option<OrderStatus>,
) {
    assert_eq!(from.next(event, any_filled, fully_filled).ok(), want);
}

#[test]
fn terminal_statuses_accept_no_event() {
    let events = [
        EventKind::Acknowledged,
        EventKind::Rejected,
        EventKind::Unknown,
        EventKind::Fill,
        EventKind::Triggered,
        EventKind::CancelRequested,
        EventKind::CancelRejected,
        EventKind::Canceled,
        EventKind::Expired,
    ];
    for from in [
        OrderStatus::Filled,
        OrderStatus::Canceled,
        OrderStatus::Rejected,
        OrderStatus::Expired,
    ] {
        for event in events {
            assert!(
                matches!(
                    from.next(event, true, true),
                    Err(TransitionError::Illegal { .. })
                ),
                "{from:?} + {event:?}"
            );
        }
    }
}

#[test]
fn partial_fills_accumulate_to_filled_with_an_average_price() {
    let mut o = order("2");
    o.apply(&ack(), SystemTime::UNIX_EPOCH, 2).unwrap();
    assert_eq!(
        o.apply(&fill("t1", "0.5"), SystemTime::UNIX_EPOCH, 3)
            .unwrap(),
        OrderStatus::PartiallyFilled
    );
    assert_eq!(o.progress().to_string(), "0.25");
    assert_eq!(
        o.apply(&fill("t2", "1.5"), SystemTime::UNIX_EPOCH, 4)
            .unwrap(),
        OrderStatus::Filled
    );
    assert_eq!(o.remaining_quantity(), Decimal::ZERO);
    assert_eq!(o.average_fill_price().unwrap().to_string(), "100");
    assert_eq!(o.fees.to_string(), "0.02");
    assert_eq!(o.sequence, 4);
}

#[test]
fn a_repeated_trade_id_is_ignored_and_leaves_the_order_unchanged() {
    let mut o = order("2");
    o.apply(&fill("t1", "1"), SystemTime::UNIX_EPOCH, 2)
        .unwrap();
    let before = o.clone();
    let err = o
        .apply(&fill("t1", "1"), SystemTime::UNIX_EPOCH, 3)
        .unwrap_err();
    assert_eq!(
        err,
        TransitionError::DuplicateFill {
            trade_id: "t1".into()
        }
    );
    assert_eq!(o, before);
}

#[test]
fn an_overfill_is_refused() {
    let mut o = order("1");
    let err = o
        .apply(&fill("t1", "1.5"), SystemTime::UNIX_EPOCH, 2)
        .unwrap_err();
    assert!(matches!(err, TransitionError::Overfill { .. }));
    assert_eq!(o.status, OrderStatus::PendingNew);
    assert_eq!(o.filled_quantity, Decimal::ZERO);
}

#[test]
fn a_rejection_records_its_reason() {
    let mut o = order("1");
    o.apply(
        &OrderEvent::Rejected {
            reason: RejectReason::NoMarketData,
            message: "no price".into(),
        },
        SystemTime::UNIX_EPOCH,
        2,
    )
    .unwrap();
    assert_eq!(o.status, OrderStatus::Rejected);
    assert_eq!(o.reject_reason, Some(RejectReason::NoMarketData));
}

#[rstest]
#[case(OrderType::Market, true, false, &["order.price"][..])]
#[case(OrderType::Limit, false, false, &["order.price"][..])]
#[case(OrderType::StopLoss, false, false, &["order.stop_price"][..])]
#[case(OrderType::StopLossLimit, true, true, &[][..])]
#[case(OrderType::Limit, true, false, &[][..])]
fn price_fields_follow_the_order_type(
    #[case] order_type: OrderType,
    #[case] has_price: bool,
    #[case] has_stop: bool,
    #[case] fields: &[&str],
) {
    let mut r = request("1");
    r.order_type = order_type;
    r.price = has_price.then(|| Price::parse("1").unwrap());
    r.stop_price = has_stop.then(|| Price::parse("1").unwrap());
    let got: Vec<_> = r
        .cross_field_violations("order.")
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(got, fields);
}

#[test]
fn post_only_needs_a_resting_limit_order() {
    let mut r = request("1");
    r.post_only = true;
    r.time_in_force = TimeInForce::Ioc;
    let v = r.cross_field_violations("");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].field, "post_only");
}

#[test]
fn a_retry_with_another_payload_names_what_differs() {
    let a = request("1");
    let mut b = request("2");
    assert!(a.differing_fields(&a.clone()).is_empty());
    b.price = Some(Price::parse("101").unwrap());
    assert_eq!(a.differing_fields(&b), ["quantity", "price"]);
}

#[test]
fn a_trigger_is_remembered() {
    let mut o = order("1");
    o.apply(&ack(), SystemTime::UNIX_EPOCH, 2).unwrap();
    o.apply(&OrderEvent::Triggered, SystemTime::UNIX_EPOCH, 3)
        .unwrap();
    assert!(o.triggered);
    assert_eq!(o.status, OrderStatus::New);
}
