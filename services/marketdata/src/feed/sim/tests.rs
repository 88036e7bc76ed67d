use std::sync::Arc;

use execbridge_api::v1::FeedStatus;

use super::*;
use crate::config::FeedConfig;
use crate::metrics::Metrics;

fn feed(seed: u64) -> SimulatedFeed {
    SimulatedFeed::new(&FeedConfig {
        seed,
        ..FeedConfig::default()
    })
}

fn run(feed: &mut SimulatedFeed, steps: usize) -> Vec<Vec<Vec<Update>>> {
    (0..steps).map(|_| feed.step()).collect()
}

#[test]
fn the_same_seed_gives_the_same_market() {
    assert_eq!(run(&mut feed(7), 200), run(&mut feed(7), 200));
    assert_ne!(run(&mut feed(7), 200), run(&mut feed(8), 200));
}

#[test]
fn books_keep_their_depth_are_never_crossed_and_deltas_rebuild_them() {
    let mut f = feed(3);
    let mut replayed: Vec<Book> = (0..3)
        .map(|i| f.book(i).expect("three symbols").clone())
        .collect();
    for _ in 0..500 {
        for (i, updates) in f.step().into_iter().enumerate() {
            for u in updates {
                if let Update::Delta(d) = u {
                    replayed[i].apply(&d);
                }
            }
            let book = f.book(i).expect("three symbols");
            assert_eq!(&replayed[i], book, "symbol {i}");
            assert!(!book.is_crossed());
            assert_eq!(book.len(), (10, 10));
        }
    }
}

#[test]
fn trades_print_at_the_touch() {
    let mut f = feed(5);
    let mut trades = 0;
    for _ in 0..300 {
        for (i, updates) in f.step().into_iter().enumerate() {
            let book = f.book(i).expect("three symbols");
            for u in updates {
                if let Update::Trade(t) = u {
                    trades += 1;
                    let touch = if t.buyer_is_maker {
                        book.best_bid()
                    } else {
                        book.best_ask()
                    };
                    assert_eq!(Some(t.price), touch.map(|l| l.price));
                }
            }
        }
    }
    assert!(trades > 0);
}

#[test]
fn registering_publishes_a_snapshot_per_symbol_and_turns_them_live() {
    let hub = Arc::new(Hub::new(Metrics::unregistered()));
    let mut f = feed(1);
    f.register(&hub);
    let btc = hub.lookup("paper", "BTC-USDT").expect("registered");
    assert_eq!(hub.status(btc), Some(FeedStatus::Live));
    let (book, sequence) = hub.book(btc).expect("a book");
    assert_eq!(&book, f.book(0).expect("three symbols"));
    // The snapshot, then the top of book the hub derived from it.
    assert_eq!(sequence, 2);
    let top = hub.top(btc).expect("a top");
    assert_eq!(top.bid, book.best_bid());
    assert_eq!(top.ask, book.best_ask());
}
