//! Snapshots on a running shard: written by their thread while orders flow, the journal
//! segments they cover deleted (never those the audit trail still needs), and a restart
//! that restores the newest snapshot and replays only the journal after it, to the same
//! state as before.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use execbridge_api::v1;
use execbridge_executor::ExecutorConfig;
use execbridge_executor::config::AuditSinkKind;
use execbridge_executor::engine::{Engine, EngineError, OrderRef};
use execbridge_executor::paper::Quote;
use execbridge_executor::shard::{ReplayStats, Shard};
use execbridge_executor::{audit, journal, snapshot};

const ORDERS: u64 = 800;

fn order(i: u64) -> v1::OrderRequest {
    execbridge_testutil::paper_market_order("snap", i, 3)
}

/// The executor's defaults with the journal in `dir` and the audit trail in `sink`.
fn config_in(dir: &std::path::Path, sink: AuditSinkKind) -> ExecutorConfig {
    let mut config = ExecutorConfig::default();
    config.journal.dir = dir.to_owned();
    config.audit.sink = sink;
    config
}

async fn open(config: &ExecutorConfig) -> (Arc<Shard>, ReplayStats) {
    let config = config.clone();
    tokio::task::spawn_blocking(move || Shard::open(&config))
        .await
        .unwrap()
        .unwrap()
}

/// A shard with a price to trade at.
async fn open_quoted(config: &ExecutorConfig) -> Arc<Shard> {
    let (shard, _) = open(config).await;
    shard.market(|e| {
        e.on_quote(
            "paper",
            "BTC-USDT",
            Quote::around(100.into()),
            SystemTime::now(),
        );
    });
    shard
}

async fn submit(shard: &Arc<Shard>, i: u64) -> v1::Order {
    let req = execbridge_api::convert::order_request_from_proto(&order(i), "").unwrap();
    shard.submit(req).await.unwrap().order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_journal_and_a_restart_replays_only_what_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path(), AuditSinkKind::Sqlite);
    config.journal.segment_bytes = 16 * 1024;
    config.journal.snapshot_every_records = 300;

    let shard = open_quoted(&config).await;
    let first = submit(&shard, 0).await;
    for i in 1..ORDERS {
        submit(&shard, i).await;
    }
    let lsn = shard.peek(|e| e.last_lsn());
    // The snapshot thread looks once a second; the audit trail must have caught up too
    // before the segments it needs may go.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let snapshots = snapshot::list(dir.path()).unwrap();
        let oldest_segment = journal::segments(dir.path())
            .unwrap()
            .first()
            .and_then(|p| journal::first_lsn_of(p))
            .unwrap();
        if snapshots.first().is_some_and(|(l, _)| *l + 300 > lsn) && oldest_segment > 1 {
            assert!(snapshots.len() <= snapshot::KEEP, "{snapshots:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot near lsn {lsn} with old segments deleted: {snapshots:?}, oldest segment {oldest_segment}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let digest = shard.peek(|e| e.digest());
    let last = shard.peek(|e| e.last_sequence());
    let (snapshot_lsn, _) = snapshot::list(dir.path()).unwrap()[0].clone();
    shard.close(false).await;
    drop(shard);

    let (shard, stats) = open(&config).await;
    assert!(
        stats.records <= lsn - snapshot_lsn,
        "replayed {} records; the snapshot at {snapshot_lsn} leaves {}",
        stats.records,
        lsn - snapshot_lsn
    );
    assert_eq!(stats.last_sequence, last);
    assert_eq!(
        shard.peek(|e| e.digest()),
        digest,
        "the restored state differs"
    );
    // The first order is still known: a retry answers with it instead of trading again.
    let again = submit(&shard, 0).await;
    assert_eq!(again.order_id, first.order_id);
    // New orders go on from the restored sequence.
    let next = submit(&shard, ORDERS).await;
    assert!(next.sequence > last, "{} after {last}", next.sequence);
    // A resume from before the oldest segment kept is refused with where it can start.
    match shard.subscribe(Some(0)) {
        Err(EngineError::CursorTooOld { requested, oldest }) => {
            assert_eq!(requested, 0);
            assert!(oldest > 1, "oldest {oldest}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(s) => panic!("a resume from 0 replayed {} updates", s.replay.len()),
    }
    // A resume from after the snapshot: the updates replayed from the journal's tail.
    let recent = shard.catch_up(last - 1).unwrap();
    assert_eq!(recent.first().map(|u| u.sequence), Some(last));
    assert!(
        recent
            .windows(2)
            .all(|w| w[1].sequence == w[0].sequence + 1),
        "no gap"
    );
    shard.close(false).await;
    drop(shard);

    // The audit trail holds every record, chained, deleted segments or not.
    let trail = dir.path().join("audit.sqlite");
    let verdict = audit::verify(trail.to_str().unwrap(), &config.audit.table).unwrap();
    assert_eq!(verdict.first_bad, None);
    assert_eq!(verdict.first_lsn, Some(1));
    assert!(verdict.entries > lsn, "{} entries", verdict.entries);

    // A new sink (the file removed, as after a switch of sinks) can only be filled from the
    // segments still kept: its chain starts at the oldest, whole from there, and `verify`
    // says where it starts instead of calling the missing head a break.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("audit.sqlite{suffix}")));
    }
    let oldest_segment = journal::segments(dir.path())
        .unwrap()
        .first()
        .and_then(|p| journal::first_lsn_of(p))
        .unwrap();
    let (shard, _) = open(&config).await;
    let end = shard.peek(|e| e.last_lsn());
    shard.close(false).await;
    drop(shard);
    let verdict = audit::verify(trail.to_str().unwrap(), &config.audit.table).unwrap();
    assert_eq!(verdict.first_bad, None);
    assert_eq!(verdict.first_lsn, Some(oldest_segment));
    assert_eq!(verdict.entries, end - oldest_segment + 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_execbridge-executor"))
        .args(["verify", trail.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("lsn {oldest_segment} to {end}"))
            && stdout.contains(&format!("the chain starts at lsn {oldest_segment}")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_refuses_a_journal_whose_records_before_the_snapshot_are_gone_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path(), AuditSinkKind::None);
    config.journal.segment_bytes = 4096;
    config.journal.snapshot_every_records = 100;
    let shard = open_quoted(&config).await;
    for i in 0..200 {
        submit(&shard, i).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while journal::segments(dir.path())
        .unwrap()
        .first()
        .and_then(|p| journal::first_lsn_of(p))
        == Some(1)
    {
        assert!(Instant::now() < deadline, "no segment was deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shard.close(false).await;
    drop(shard);
    // Every snapshot lost: the journal alone no longer starts at the beginning.
    for (_, path) in snapshot::list(dir.path()).unwrap() {
        std::fs::remove_file(path).unwrap();
    }
    let err = tokio::task::spawn_blocking(move || Shard::open(&config).map(drop))
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no snapshot reads back") && err.contains("the journal begins at lsn"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_the_venue_took_after_the_snapshot_is_found_there_at_start_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path(), AuditSinkKind::None);
    config.journal.snapshot_every_records = 0;
    // Every acknowledgement is lost: the venue has the order, the journal only its intent.
    config.paper.faults.lost_ack_probability = 1.0;
    let shard = open_quoted(&config).await;
    let before = submit(&shard, 0).await;
    let lsn = shard.read(|e| e.last_lsn()).await.unwrap();
    let fresh = Engine::for_replay(&config);
    assert_eq!(snapshot::take(dir.path(), fresh, lsn, None).unwrap(), lsn);
    // Taken by the venue after the snapshot, its answer lost.
    let after = submit(&shard, 1).await;
    for order in [&before, &after] {
        assert_eq!(order.status, v1::OrderStatus::Unknown as i32, "{order:?}");
    }
    shard.close(false).await;
    drop(shard);

    config.paper.faults.lost_ack_probability = 0.0;
    let (shard, stats) = open(&config).await;
    let ledger =
        execbridge_executor::venue::count_venue_orders(&dir.path().join("paper-venue.jsonl"))
            .unwrap();
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    assert!(
        ledger.values().all(|n| *n == 1),
        "a client_order_id reached the venue twice: {ledger:?}"
    );
    assert!(stats.reconciled >= 2, "{stats:?}");
    for order in [before, after] {
        let by = OrderRef::OrderId(order.order_id.clone());
        let now = shard
            .peek(|e| e.get(&order.request.as_ref().unwrap().account, &by))
            .unwrap();
        assert_ne!(now.status, v1::OrderStatus::Unknown as i32, "{now:?}");
    }
    shard.close(false).await;
}
