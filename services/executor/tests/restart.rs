//! A shard reopened on its journal: the same state as before the restart, and the order
//! updates a resuming subscriber needs, from memory inside the retained window and from
//! the journal before it, when the journal holds far more updates than the window (every
//! replayed update but the newest few leaves the window during the replay).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::SystemTime;

use execbridge_api::v1;
use execbridge_executor::ExecutorConfig;
use execbridge_executor::config::AuditSinkKind;
use execbridge_executor::paper::Quote;
use execbridge_executor::shard::{ReplayStats, Shard};

const RETAINED: usize = 4;
/// Enough orders for the replay to span several chunks of decoded records.
const ORDERS: u64 = 3_000;

fn order(i: u64) -> v1::OrderRequest {
    execbridge_testutil::paper_market_order("restart", i, 3)
}

async fn open(config: &ExecutorConfig) -> (Arc<Shard>, ReplayStats) {
    let config = config.clone();
    tokio::task::spawn_blocking(move || Shard::open(&config))
        .await
        .unwrap()
        .unwrap()
}

/// A quote for the orders' symbol, so market orders fill.
fn quote(shard: &Shard) {
    shard.market(|e| {
        e.on_quote(
            "paper",
            "BTC-USDT",
            Quote::around(100.into()),
            SystemTime::now(),
        );
    });
}

fn sequences(updates: &[Arc<v1::OrderUpdate>]) -> Vec<u64> {
    updates.iter().map(|u| u.sequence).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_shard_has_the_same_state_and_serves_updates_from_memory_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ExecutorConfig::default();
    config.journal.dir = dir.path().to_owned();
    config.audit.sink = AuditSinkKind::None;
    config.shard.updates_retained = RETAINED;
    // Small segments: a resume from the middle reads only the segments it needs.
    config.journal.segment_bytes = 64 * 1024;

    let (shard, _) = open(&config).await;
    quote(&shard);
    for i in 0..ORDERS {
        let req = execbridge_api::convert::order_request_from_proto(&order(i), "").unwrap();
        let submitted = shard.submit(req).await.unwrap();
        assert_eq!(submitted.order.status, v1::OrderStatus::Filled as i32);
    }
    let digest = shard.peek(|e| e.digest());
    let last = shard.peek(|e| e.last_sequence());
    let lsn = shard.peek(|e| e.last_lsn());
    // Accepted, acknowledged and filled: three updates per order, far more than the window.
    assert_eq!(last, 3 * ORDERS);
    shard.close(false).await;
    drop(shard);

    let (shard, stats) = open(&config).await;
    assert_eq!(stats.records, lsn, "every journal record replayed");
    assert_eq!(stats.last_sequence, last);
    assert_eq!(
        shard.peek(|e| e.digest()),
        digest,
        "the replayed state differs"
    );

    // Inside the retained window: from memory.
    let recent = shard.catch_up(last - 2).unwrap();
    assert_eq!(sequences(&recent), vec![last - 1, last]);
    // Before it: the rest comes from the journal, without a gap or a duplicate.
    let all = shard.catch_up(0).unwrap();
    assert_eq!(sequences(&all), (1..=last).collect::<Vec<_>>());
    assert!(
        execbridge_executor::journal::segments(dir.path())
            .unwrap()
            .len()
            > 10
    );
    let half = shard.catch_up(last / 2).unwrap();
    assert_eq!(sequences(&half), (last / 2 + 1..=last).collect::<Vec<_>>());
    assert!(
        all.iter()
            .all(|u| u.order.as_ref().is_some_and(|o| !o.order_id.is_empty())),
        "every update carries its order"
    );
    shard.close(false).await;
}

/// A shard on `dir` without an audit trail, compacting the venue's ledger each time it
/// has grown by `compact_bytes`.
fn compacting(dir: &std::path::Path, compact_bytes: u64) -> ExecutorConfig {
    let mut config = ExecutorConfig::default();
    config.journal.dir = dir.to_owned();
    config.audit.sink = AuditSinkKind::None;
    config.paper.ledger_compact_bytes = compact_bytes;
    // Every history file stays: the tests count the venue's orders across all of them.
    config.paper.ledger_history_files = 0;
    config
}

async fn submit(shard: &Arc<Shard>, request: &v1::OrderRequest) -> v1::Order {
    let req = execbridge_api::convert::order_request_from_proto(request, "").unwrap();
    shard.submit(req).await.unwrap().order
}

/// The `accepted` facts of a ledger file: the venue orders it holds.
fn accepted_in(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| line.contains(r#""t":"accepted""#))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_compacts_the_venue_ledger_to_the_orders_the_shard_holds_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = compacting(dir.path(), 1);
    let ledger = dir.path().join("paper-venue.jsonl");

    let (shard, _) = open(&config).await;
    quote(&shard);
    let mut filled = Vec::new();
    for i in 0..10 {
        let submitted = submit(&shard, &order(i)).await;
        assert_eq!(submitted.status, v1::OrderStatus::Filled as i32);
        filled.push(submitted.venue_order_id);
    }
    // A buy below the bid rests at the venue.
    let resting = v1::OrderRequest {
        client_order_id: "resting".into(),
        r#type: v1::OrderType::Limit as i32,
        price: "97".into(),
        time_in_force: v1::TimeInForce::Gtc as i32,
        ..order(0)
    };
    let open_order = submit(&shard, &resting).await;
    assert_eq!(open_order.status, v1::OrderStatus::New as i32);
    let digest = shard.peek(|e| e.digest());
    shard.close(false).await;
    drop(shard);
    assert_eq!(accepted_in(&ledger).len(), 11);

    let (shard, _) = open(&config).await;
    assert_eq!(shard.peek(|e| e.digest()), digest, "the same state");
    let kept = accepted_in(&ledger);
    assert_eq!(kept.len(), 1, "only the open order: {kept:?}");
    assert!(kept[0].contains(&format!("\"{}\"", open_order.venue_order_id)));
    assert_eq!(
        accepted_in(&dir.path().join("paper-venue.jsonl.1")).len(),
        11,
        "the old ledger is kept as history"
    );

    // Ids continue after those the compacted ledger no longer holds.
    quote(&shard);
    let next = submit(&shard, &order(10)).await.venue_order_id;
    assert!(next.ends_with("-12"), "{next} after {filled:?}");
    shard.close(false).await;
    drop(shard);
    let counted = execbridge_executor::venue::count_venue_orders(&ledger).unwrap();
    assert_eq!(counted.len(), 12);
    assert!(counted.values().all(|n| *n == 1), "{counted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_shard_compacts_the_venue_ledger_once_it_has_grown_by_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let config = compacting(dir.path(), 4096);
    let ledger = dir.path().join("paper-venue.jsonl");

    let (shard, _) = open(&config).await;
    quote(&shard);
    assert_eq!(
        shard.compact_venue_ledger().await,
        None,
        "an empty ledger is not due"
    );
    let mut took = Vec::new();
    for i in 0..200 {
        submit(&shard, &order(i)).await;
        if let Some(compacted) = shard.compact_venue_ledger().await {
            assert_eq!(compacted.orders, 0, "every order is filled");
            took.push(compacted.took);
        }
    }
    took.sort();
    println!(
        "{} compactions of the venue ledger while running; each took (the order path waits) median {:?}, max {:?}",
        took.len(),
        took.get(took.len() / 2).copied().unwrap_or_default(),
        took.last().copied().unwrap_or_default()
    );
    let compactions = took.len();
    // Each order writes about 270 bytes of facts (accepted, fill): a compaction every 15.
    assert!(compactions >= 10, "{compactions} compactions");
    assert!(
        std::fs::metadata(&ledger).unwrap().len() < 4096,
        "the ledger holds what was written since the last compaction"
    );
    let digest = shard.peek(|e| e.digest());
    shard.close(false).await;
    drop(shard);

    let (shard, _) = open(&config).await;
    assert_eq!(shard.peek(|e| e.digest()), digest, "the same state");
    quote(&shard);
    let next = submit(&shard, &order(200)).await.venue_order_id;
    assert!(next.ends_with("-201"), "{next}: no id made twice");
    shard.close(false).await;
    drop(shard);
    let counted = execbridge_executor::venue::count_venue_orders(&ledger).unwrap();
    assert_eq!(counted.len(), 201);
    assert!(counted.values().all(|n| *n == 1), "{counted:?}");
}
