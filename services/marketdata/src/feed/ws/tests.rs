use std::time::Duration;

use super::*;

#[test]
fn the_first_retry_is_immediate_then_the_wait_doubles_with_jitter_up_to_the_cap() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1_000));
    assert_eq!(b.next_delay(), Duration::ZERO);
    for base in [100u64, 200, 400, 800, 1_000, 1_000] {
        let d = b.next_delay();
        let base = Duration::from_millis(base);
        assert!(
            d >= base / 2 && d <= base,
            "{d:?} not within [{:?}, {base:?}]",
            base / 2
        );
    }
    b.reset();
    assert_eq!(b.next_delay(), Duration::ZERO);
}

#[test]
fn the_json_format_reads_snapshots_deltas_and_trades_and_ignores_acknowledgements() {
    let p = crate::feed::json::JsonL2;
    let m = p
        .decode(r#"{"type":"delta","symbol":"X","first_update":3,"last_update":4,"bids":[["1.5","2"]],"asks":[]}"#)
        .unwrap();
    assert_eq!(
        m,
        [VenueMessage::Delta {
            symbol: "X".into(),
            first_update: 3,
            last_update: 4,
            bids: vec![("1.5".into(), "2".into())],
            asks: vec![],
            time_ms: None,
        }]
    );
    assert!(
        p.decode(r#"{"type":"subscribed","symbols":["X"]}"#)
            .unwrap()
            .is_empty()
    );
    assert!(p.decode("not json").is_err());
    assert_eq!(
        p.request_snapshot("X").unwrap(),
        r#"{"op":"snapshot","symbol":"X"}"#
    );
}
