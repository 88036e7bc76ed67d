use rust_decimal::Decimal;

use super::*;

fn depth(bids: &[(i64, i64)], asks: &[(i64, i64)]) -> Depth {
    let levels = |v: &[(i64, i64)]| v.iter().map(|(p, q)| Level::new(*p, *q)).collect();
    Depth {
        bids: levels(bids),
        asks: levels(asks),
    }
}

#[test]
fn a_delta_changes_adds_and_removes_levels() {
    let mut book = Book::default();
    book.replace(&depth(&[(100, 5), (99, 3)], &[(101, 2), (102, 7)]));
    book.apply(&depth(&[(100, 0), (98, 1)], &[(101, 4)]));
    assert_eq!(
        book.depth(),
        depth(&[(99, 3), (98, 1)], &[(101, 4), (102, 7)])
    );
    assert_eq!(book.best_bid(), Some(Level::new(99, 3)));
    assert_eq!(book.best_ask(), Some(Level::new(101, 4)));
    assert!(!book.is_crossed());
}

#[test]
fn the_diff_of_two_books_turns_one_into_the_other() {
    let mut a = Book::default();
    a.replace(&depth(&[(100, 5), (99, 3)], &[(101, 2), (103, 1)]));
    let mut b = Book::default();
    b.replace(&depth(&[(100, 6), (97, 3)], &[(101, 2), (102, 9)]));
    let delta = a.diff(&b);
    assert_eq!(
        delta,
        depth(&[(100, 6), (99, 0), (97, 3)], &[(102, 9), (103, 0)])
    );
    a.apply(&delta);
    assert_eq!(a, b);
}

#[test]
fn venue_decimals_become_ticks_and_lots_only_on_the_grid() {
    let spec = InstrumentSpec {
        venue: "v".into(),
        symbol: "BTC-USDT".into(),
        tick_size: Decimal::new(1, 2),
        lot_size: Decimal::new(1, 4),
    };
    assert_eq!(spec.ticks("60000.01"), Ok(6_000_001));
    assert_eq!(spec.lots("0.2500"), Ok(2_500));
    assert_eq!(spec.price(6_000_001), "60000.01");
    assert_eq!(spec.quantity(2_500), "0.25");
    assert!(matches!(
        spec.ticks("60000.015"),
        Err(GridError::OffGrid { .. })
    ));
    assert!(matches!(spec.ticks("abc"), Err(GridError::NotDecimal(_))));
}
