//! Property tests of the order state machine and positions: random event sequences never
//! reach an illegal state, and a position always equals the sum of its fills.
#![allow(clippy::unwrap_used)]

use std::time::SystemTime;

use execbridge_domain::order::EventKind;
use execbridge_domain::*;
use proptest::prelude::*;
use rust_decimal::Decimal;

fn request(quantity: u32) -> OrderRequest {
    OrderRequest {
        client_order_id: ClientOrderId::new_checked("c").unwrap(),
        account: AccountId::new_checked("a").unwrap(),
        venue: VenueId::new_checked("paper").unwrap(),
        mode: TradingMode::Paper,
        symbol: Symbol::new_checked("BTC-USDT").unwrap(),
        side: Side::Buy,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        quantity: Quantity::new_checked(Decimal::from(quantity)).unwrap(),
        price: Some(Price::new_checked(Decimal::from(100)).unwrap()),
        stop_price: None,
        stop_loss: None,
        take_profit: None,
        slippage_bps: 0,
        mev_protection: None,
        metadata: Default::default(),
    }
}

fn event() -> impl Strategy<Value = OrderEvent> {
    prop_oneof![
        Just(OrderEvent::Acknowledged {
            venue_order_id: "v".into()
        }),
        Just(OrderEvent::Rejected {
            reason: RejectReason::VenueRejected,
            message: "no".into()
        }),
        Just(OrderEvent::Unknown {
            message: "lost".into()
        }),
        (0u32..6, 1u32..5).prop_map(|(trade, qty)| OrderEvent::Fill(Fill {
            trade_id: format!("t{trade}"),
            price: Price::new_checked(Decimal::from(100)).unwrap(),
            quantity: Quantity::new_checked(Decimal::from(qty)).unwrap(),
            fee: Decimal::ZERO,
            fee_asset: "USDT".into(),
            liquidity: Liquidity::Maker,
            executed_at: SystemTime::UNIX_EPOCH,
        })),
        Just(OrderEvent::Triggered),
        Just(OrderEvent::CancelRequested),
        Just(OrderEvent::CancelRejected {
            message: "late".into()
        }),
        Just(OrderEvent::Canceled),
        Just(OrderEvent::Expired),
    ]
}

proptest! {
    #[test]
    fn random_event_sequences_never_reach_an_illegal_state(
        quantity in 1u32..10,
        events in prop::collection::vec(event(), 0..40),
    ) {
        let mut order = Order::new(
            OrderId::new_checked("s0-1").unwrap(),
            request(quantity),
            SystemTime::UNIX_EPOCH,
            1,
        );
        let total = Decimal::from(quantity);
        for (i, event) in events.iter().enumerate() {
            let before = order.clone();
            match order.apply(event, SystemTime::UNIX_EPOCH, i as u64 + 2) {
                Ok(status) => {
                    prop_assert!(!before.status.is_terminal(), "a terminal order changed: {:?} after {:?}", event.kind(), before.status);
                    prop_assert_eq!(status, order.status);
                }
                Err(_) => prop_assert_eq!(&order, &before, "a refused event changed the order"),
            }
            prop_assert!(order.filled_quantity <= total, "overfilled");
            prop_assert!(order.filled_quantity >= Decimal::ZERO);
            prop_assert_eq!(order.status == OrderStatus::Filled, order.filled_quantity == total && event.kind() == EventKind::Fill || before.status == OrderStatus::Filled);
            if order.status == OrderStatus::PartiallyFilled {
                prop_assert!(order.filled_quantity > Decimal::ZERO && order.filled_quantity < total);
            }
            if order.status == OrderStatus::New {
                prop_assert!(order.filled_quantity.is_zero());
            }
        }
    }

    #[test]
    fn a_position_equals_the_sum_of_its_fills(
        fills in prop::collection::vec((any::<bool>(), 1u32..1000, 1u32..100_000), 1..60),
        mark in 1u32..100_000,
    ) {
        let mut position = Position::default();
        let mut net = Decimal::ZERO;
        let mut cash = Decimal::ZERO;
        let scale = Decimal::new(1, 3);
        for (buy, qty, price) in &fills {
            let side = if *buy { Side::Buy } else { Side::Sell };
            let qty = Decimal::from(*qty) * scale;
            let price = Decimal::from(*price) * scale;
            position.apply_fill(side, qty, price);
            net += side.sign() * qty;
            cash -= side.sign() * qty * price;
        }
        prop_assert_eq!(position.quantity, net);
        // Realised plus unrealised profit equals the cash flow marked to market.
        let mark = Decimal::from(mark) * scale;
        let total = position.realized_pnl + position.unrealized_pnl(mark);
        let expected = cash + net * mark;
        prop_assert!((total - expected).abs() < Decimal::new(1, 6), "{total} != {expected}");
        if position.quantity.is_zero() {
            prop_assert!(position.average_entry_price.is_zero());
        }
    }
}
