use std::sync::Arc;
use std::task::Waker;
use std::time::SystemTime;

use execbridge_api::v1::{FeedStatus, market_data_event::Payload};
use rust_decimal::Decimal;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::*;
use crate::model::{Level, TradePrint};

fn spec(symbol: &str) -> InstrumentSpec {
    InstrumentSpec {
        venue: "v".into(),
        symbol: symbol.into(),
        tick_size: Decimal::new(1, 2),
        lot_size: Decimal::new(1, 0),
    }
}

fn hub_with(symbols: &[&str]) -> (Arc<Hub>, Vec<InstrumentId>) {
    let hub = Arc::new(Hub::new(Metrics::unregistered()));
    let ids = symbols
        .iter()
        .map(|s| {
            let id = hub.register(spec(s), FeedStatus::Reconnecting, "starting");
            hub.publish(id, &[Update::Snapshot(book(100, 101))], SystemTime::now());
            hub.set_status(id, FeedStatus::Live, "test");
            id
        })
        .collect();
    (hub, ids)
}

fn book(bid: i64, ask: i64) -> Depth {
    Depth {
        bids: (0..5).map(|k| Level::new(bid - k, 10)).collect(),
        asks: (0..5).map(|k| Level::new(ask + k, 10)).collect(),
    }
}

fn delta(price: i64, quantity: i64) -> Update {
    Update::Delta(Depth {
        bids: vec![Level::new(price, quantity)],
        asks: vec![],
    })
}

fn trade(n: u64) -> Update {
    Update::Trade(TradePrint {
        id: format!("t{n}"),
        price: 100,
        quantity: 1,
        buyer_is_maker: true,
    })
}

/// Everything the subscriber would send now, as events, resyncing as the stream would.
fn drain(hub: &Hub, sub: &Arc<Subscriber>) -> Result<Vec<v1::MarketDataEvent>, Status> {
    let mut events = Vec::new();
    for _ in 0..10_000 {
        match sub.next(Waker::noop(), 100, 1 << 20, &hub.metrics) {
            Next::Batch(b) => events.extend(b.frames.iter().map(|f| f.decode().expect("a frame"))),
            Next::Resync(ids) => ids.iter().for_each(|id| hub.resync(sub, *id)),
            Next::End(status) => return Err(status),
            Next::Done | Next::Pending => return Ok(events),
        }
    }
    panic!("the queue never emptied");
}

fn statuses(events: &[v1::MarketDataEvent]) -> Vec<FeedStatus> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::Status(s)) => FeedStatus::try_from(s.status).ok(),
            _ => None,
        })
        .collect()
}

/// A subscriber's book rebuilt from its events.
fn replay(spec: &InstrumentSpec, events: &[v1::MarketDataEvent]) -> Book {
    let levels = |v: &[v1::PriceLevel]| -> Vec<Level> {
        v.iter()
            .map(|l| {
                Level::new(
                    spec.ticks(&l.price).unwrap(),
                    spec.lots(&l.quantity).unwrap(),
                )
            })
            .collect()
    };
    let mut book = Book::default();
    for e in events.iter().filter(|e| e.symbol == spec.symbol) {
        match &e.payload {
            Some(Payload::BookSnapshot(s)) => book.replace(&Depth {
                bids: levels(&s.bids),
                asks: levels(&s.asks),
            }),
            Some(Payload::BookDelta(d)) => book.apply(&Depth {
                bids: levels(&d.bids),
                asks: levels(&d.asks),
            }),
            _ => {}
        }
    }
    book
}

#[test]
fn a_late_joiner_gets_status_top_and_book_then_only_later_updates_in_sequence() {
    let (hub, ids) = hub_with(&["A"]);
    hub.publish(ids[0], &[delta(100, 7), trade(1)], SystemTime::now());
    let sub = hub.subscriber(64, 1 << 20, Policy::DropOldest);
    hub.set_channels(&sub, ids[0], ALL_CHANNELS);
    hub.publish(ids[0], &[delta(100, 3)], SystemTime::now());
    let events = drain(&hub, &sub).unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e.payload {
            Some(Payload::Status(_)) => "status",
            Some(Payload::TopOfBook(_)) => "top",
            Some(Payload::BookSnapshot(_)) => "snapshot",
            Some(Payload::BookDelta(_)) => "delta",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["status", "top", "snapshot", "delta", "top"]);
    assert_eq!(statuses(&events), [FeedStatus::Live]);
    let seqs: Vec<u64> = events[1..].iter().map(|e| e.sequence).collect();
    // The top (after the trade) and the book are both at the latest sequence; updates follow.
    let snapshot_seq = seqs[1];
    assert!(seqs[0] <= snapshot_seq);
    assert_eq!(&seqs[2..], [snapshot_seq + 1, snapshot_seq + 2]);
    assert_eq!(replay(&spec("A"), &events), hub.book(ids[0]).unwrap().0);
}

#[test]
fn every_subscriber_shares_one_encoding_of_each_event() {
    let (hub, ids) = hub_with(&["A"]);
    let subs: Vec<_> = (0..3)
        .map(|_| hub.subscriber(64, 1 << 20, Policy::DropOldest))
        .collect();
    for s in &subs {
        hub.set_channels(s, ids[0], TRADES);
    }
    hub.publish(ids[0], &[trade(1)], SystemTime::now());
    let frames: Vec<Arc<Frame>> = subs
        .iter()
        .map(
            |s| match s.next(Waker::noop(), 100, 1 << 20, &hub.metrics) {
                Next::Batch(b) => b.frames.last().expect("the trade").clone(),
                _ => panic!("a batch"),
            },
        )
        .collect();
    assert!(Arc::ptr_eq(&frames[0], &frames[1]) && Arc::ptr_eq(&frames[1], &frames[2]));
}

#[test]
fn a_full_conflating_queue_keeps_the_latest_top_of_book_per_symbol() {
    let (hub, ids) = hub_with(&["A", "B"]);
    let sub = hub.subscriber(8, 1 << 20, Policy::Conflate);
    for id in &ids {
        hub.set_channels(&sub, *id, TOP_OF_BOOK);
    }
    let _ = drain(&hub, &sub).unwrap();
    for i in 0..50 {
        for id in &ids {
            // Each delta moves the best bid: one top of book per publish.
            hub.publish(*id, &[delta(101 + i, 1)], SystemTime::now());
        }
    }
    assert!(sub.len() <= 8);
    let events = drain(&hub, &sub).unwrap();
    assert!(
        events
            .iter()
            .all(|e| !matches!(e.payload, Some(Payload::Gap(_))))
    );
    for (id, symbol) in ids.iter().zip(["A", "B"]) {
        let last = events.iter().rev().find(|e| e.symbol == symbol).unwrap();
        let Some(Payload::TopOfBook(top)) = &last.payload else {
            panic!("a top of book");
        };
        let expected = hub.top(*id).unwrap().bid.unwrap().price;
        assert_eq!(spec(symbol).ticks(&top.bid_price), Ok(expected));
    }
    assert!(hub.metrics.conflated.get() > 0);
}

#[test]
fn dropping_the_oldest_sends_a_gap_notice_and_resyncs_a_book_that_lost_a_delta() {
    let (hub, ids) = hub_with(&["A"]);
    let sub = hub.subscriber(8, 1 << 20, Policy::DropOldest);
    hub.set_channels(&sub, ids[0], DEPTH | TRADES);
    let mut events = drain(&hub, &sub).unwrap();
    for i in 0..40 {
        hub.publish(
            ids[0],
            &[delta(90 - i, 1 + i), trade(i as u64)],
            SystemTime::now(),
        );
    }
    events.extend(drain(&hub, &sub).unwrap());
    let gap = events.iter().find_map(|e| match e.payload {
        Some(Payload::Gap(g)) => Some(g.dropped),
        _ => None,
    });
    assert!(gap.is_some_and(|d| d > 0), "a gap notice");
    assert_eq!(
        statuses(&events),
        [FeedStatus::Live, FeedStatus::Resyncing, FeedStatus::Live]
    );
    // After the resync snapshot the subscriber's book is the hub's.
    assert_eq!(replay(&spec("A"), &events), hub.book(ids[0]).unwrap().0);
    hub.publish(ids[0], &[delta(50, 5)], SystemTime::now());
    events.extend(drain(&hub, &sub).unwrap());
    assert_eq!(replay(&spec("A"), &events), hub.book(ids[0]).unwrap().0);
}

#[test]
fn a_full_disconnecting_queue_ends_the_stream_with_resource_exhausted() {
    let (hub, ids) = hub_with(&["A"]);
    let sub = hub.subscriber(4, 1 << 20, Policy::Disconnect);
    hub.set_channels(&sub, ids[0], TRADES);
    let _ = drain(&hub, &sub).unwrap();
    for i in 0..5 {
        hub.publish(ids[0], &[trade(i)], SystemTime::now());
    }
    assert!(sub.is_closed());
    let status = drain(&hub, &sub).unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "SLOW_CONSUMER");
    assert_eq!(info.metadata["queue_capacity"], "4");
    assert_eq!(sub.len(), 0);
    assert_eq!(hub.metrics.slow_disconnects.get(), 1);
    // The hub forgets it at the next publish.
    hub.publish(ids[0], &[trade(9)], SystemTime::now());
    assert_eq!(hub.metrics.subscriptions.get(), 0);
}

#[test]
fn status_changes_reach_every_channel_of_a_subscribed_symbol() {
    let (hub, ids) = hub_with(&["A"]);
    let sub = hub.subscriber(64, 1 << 20, Policy::DropOldest);
    hub.set_channels(&sub, ids[0], TRADES);
    hub.set_status(ids[0], FeedStatus::Stale, "quiet");
    hub.set_status(ids[0], FeedStatus::Stale, "still quiet");
    hub.set_status(ids[0], FeedStatus::Reconnecting, "lost");
    hub.set_status(ids[0], FeedStatus::Live, "back");
    let events = drain(&hub, &sub).unwrap();
    assert_eq!(
        statuses(&events),
        [
            FeedStatus::Live,
            FeedStatus::Stale,
            FeedStatus::Reconnecting,
            FeedStatus::Live
        ]
    );
}
