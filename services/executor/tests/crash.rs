//! The crash test: `kill -9` the real executor binary at random moments during a batch of
//! orders, restart it, and prove what the journal promises:
//! - every acknowledged order is present exactly once after the restarts;
//! - no client_order_id produced two venue orders (counted in the paper venue's ledger);
//! - every order ends terminal (or is resolved by reconciliation);
//! - the audit trail's hash chain verifies.
//!
//! A third run keeps no finished order in memory (`shard.retain_finished_orders = 0`):
//! retries of forgotten orders must be refused with `CLIENT_ORDER_ID_USED` naming the
//! first order, never sent again; its counts come from the journal, since the executor no
//! longer lists forgotten orders.
//!
//! A fourth run writes a snapshot every 500 journal records into 64 KiB segments, so
//! kills land while snapshots are written and segments deleted, and restarts start from
//! a snapshot and the journal after it.
//!
//! Every run compacts the paper venue's ledger each time it has grown by 16 KiB, at a
//! start or while running (at a reconciliation tick, every 100 ms, once the journal has
//! caught up), so kills land around compactions and reconciliation after a kill reads a
//! compacted ledger holding the open orders only; venue orders are counted in the ledger
//! and the history its compactions kept.
//!
//! `EXECBRIDGE_CRASH_ROUNDS` sets the number of kills (default 20; 100 for the long run),
//! `EXECBRIDGE_CRASH_ORDERS` the batch size (default 10,000).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use execbridge_api::internal::v1 as internal;
use execbridge_api::internal::v1::executor_service_client::ExecutorServiceClient;
use execbridge_api::v1;
use execbridge_marketdata::MarketdataConfig;
use execbridge_testutil::{Running, free_addr, restartable_addr, server_config, wait_serving};
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const ACCOUNTS: usize = 4;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Executor {
    child: Child,
}

impl Drop for Executor {
    /// A failed assertion must not leave the executor running after the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a run changes from the executor's defaults.
#[derive(Clone, Copy, Default)]
struct Settings {
    /// `shard.retain_finished_orders`.
    retain: Option<usize>,
    /// `journal.snapshot_every_records` (with small segments, so they are deleted).
    snapshot_every: Option<usize>,
}

fn start_executor(
    dir: &Path,
    listen: SocketAddr,
    marketdata: &str,
    settings: Settings,
) -> Executor {
    let mut command = Command::new(env!("CARGO_BIN_EXE_execbridge-executor"));
    if let Some(retain) = settings.retain {
        command.env(
            "EXECBRIDGE_EXECUTOR_SHARD__RETAIN_FINISHED_ORDERS",
            retain.to_string(),
        );
    }
    if let Some(every) = settings.snapshot_every {
        command
            .env(
                "EXECBRIDGE_EXECUTOR_JOURNAL__SNAPSHOT_EVERY_RECORDS",
                every.to_string(),
            )
            .env("EXECBRIDGE_EXECUTOR_JOURNAL__SEGMENT_BYTES", "65536");
    }
    let child = command
        .env("EXECBRIDGE_EXECUTOR_SERVER__LISTEN", listen.to_string())
        .env(
            "EXECBRIDGE_EXECUTOR_SERVER__ADMIN_LISTEN",
            free_addr().to_string(),
        )
        .env("EXECBRIDGE_EXECUTOR_MARKETDATA__ENDPOINT", marketdata)
        .env("EXECBRIDGE_EXECUTOR_JOURNAL__DIR", dir)
        .env("EXECBRIDGE_EXECUTOR_PAPER__LEDGER_COMPACT_BYTES", "16384")
        // Every history file stays: the venue's orders are counted across all of them.
        .env("EXECBRIDGE_EXECUTOR_PAPER__LEDGER_HISTORY_FILES", "0")
        .env("EXECBRIDGE_EXECUTOR_SHARD__RECONCILE_INTERVAL_MS", "100")
        .env("EXECBRIDGE_EXECUTOR_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the executor binary starts");
    Executor { child }
}

fn order(i: usize) -> v1::OrderRequest {
    execbridge_testutil::paper_market_order("c", i as u64, ACCOUNTS as u64)
}

async fn connect(addr: SocketAddr) -> ExecutorServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    ExecutorServiceClient::new(channel)
}

async fn all_orders(
    client: &mut ExecutorServiceClient<Channel>,
    account: &str,
    open_only: bool,
) -> Vec<v1::Order> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_orders(internal::ListOrdersRequest {
                caller: None,
                request: Some(v1::ListOrdersRequest {
                    account: account.into(),
                    open_only,
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                }),
            })
            .await
            .expect("list orders")
            .into_inner()
            .response
            .unwrap();
        out.extend(page.orders);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_batch_loses_no_acknowledged_order_and_sends_none_twice() {
    crash_rounds(1, Settings::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_batched_submits_loses_no_acknowledged_order_and_sends_none_twice() {
    crash_rounds(25, Settings::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_finished_orders_are_forgotten_still_sends_none_twice() {
    crash_rounds(
        5,
        Settings {
            retain: Some(0),
            ..Settings::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_snapshots_are_written_and_segments_deleted_loses_nothing() {
    crash_rounds(
        25,
        Settings {
            snapshot_every: Some(500),
            ..Settings::default()
        },
    )
    .await;
}

/// The history files the ledger's compactions kept (`paper-venue.jsonl.<n>`).
fn ledger_history_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .is_some_and(|name| {
                    name.strip_prefix("paper-venue.jsonl.")
                        .is_some_and(|n| n.parse::<u64>().is_ok())
                })
        })
        .count()
}

/// The first LSN of the oldest journal segment left.
fn oldest_segment_lsn(dir: &Path) -> Option<u64> {
    execbridge_executor::journal::segments(dir)
        .unwrap()
        .first()
        .and_then(|p| execbridge_executor::journal::first_lsn_of(p))
}

/// The order a refused retry names, when its first order was forgotten.
fn forgotten(error: &v1::OrderError) -> Option<String> {
    (error.reason == "CLIENT_ORDER_ID_USED")
        .then(|| error.metadata.get("order_id").cloned())
        .flatten()
}

/// Per client order id, how many orders the journal accepted; per final status, how many
/// orders; and how many are not terminal.
fn journal_counts(dir: &Path) -> (HashMap<String, usize>, BTreeMap<String, usize>, usize) {
    let updates = execbridge_executor::journal::read_updates(dir, 1, u64::MAX).unwrap();
    let mut accepted: HashMap<String, usize> = HashMap::new();
    let mut last: HashMap<String, i32> = HashMap::new();
    for u in updates {
        let order = u.order.as_ref().unwrap();
        if u.event == v1::OrderEventType::Accepted as i32 {
            *accepted
                .entry(order.request.clone().unwrap().client_order_id)
                .or_insert(0) += 1;
        }
        last.insert(order.order_id.clone(), order.status);
    }
    let mut statuses = BTreeMap::new();
    let mut open = 0;
    for status in last.into_values() {
        let status = v1::OrderStatus::try_from(status).unwrap();
        *statuses
            .entry(
                status
                    .as_str_name()
                    .trim_start_matches("ORDER_STATUS_")
                    .to_owned(),
            )
            .or_insert(0) += 1;
        open += usize::from(!terminal(status));
    }
    (accepted, statuses, open)
}

/// [`journal_counts`] read through `ListOrders`, with reject reasons.
async fn listed_counts(
    listen: SocketAddr,
) -> (HashMap<String, usize>, BTreeMap<String, usize>, usize) {
    let mut client = connect(listen).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut open = 0;
    for a in 0..ACCOUNTS {
        let account = format!("acct-{a}");
        for o in all_orders(&mut client, &account, false).await {
            *seen
                .entry(o.request.clone().unwrap().client_order_id)
                .or_insert(0) += 1;
            let status = v1::OrderStatus::try_from(o.status).unwrap();
            let reason = v1::RejectReason::try_from(o.reject_reason)
                .map(|r| {
                    r.as_str_name()
                        .trim_start_matches("REJECT_REASON_")
                        .to_owned()
                })
                .unwrap_or_default();
            let name = status.as_str_name().trim_start_matches("ORDER_STATUS_");
            let key = if reason == "UNSPECIFIED" {
                name.to_owned()
            } else {
                format!("{name}/{reason}")
            };
            *statuses.entry(key).or_insert(0) += 1;
            open += usize::from(!terminal(status));
        }
    }
    (seen, statuses, open)
}

fn terminal(status: v1::OrderStatus) -> bool {
    matches!(
        status,
        v1::OrderStatus::Filled
            | v1::OrderStatus::Canceled
            | v1::OrderStatus::Rejected
            | v1::OrderStatus::Expired
    )
}

/// Submits the orders `per_call` at a time (1: `SubmitOrder`; more: `SubmitOrderBatch`)
/// from 32 workers while the executor is killed and restarted with `settings`.
async fn crash_rounds(per_call: usize, settings: Settings) {
    let retain = settings.retain;
    let rounds = env_or("EXECBRIDGE_CRASH_ROUNDS", 20);
    let total = env_or("EXECBRIDGE_CRASH_ORDERS", 10_000);
    let mut md = MarketdataConfig {
        server: server_config(),
        ..Default::default()
    };
    md.feed.tick_interval_ms = 10;
    let marketdata = Running::start(md.server.listen, |s| execbridge_marketdata::run(md, s)).await;
    let dir = tempfile::tempdir().unwrap();
    // Killed and restarted on this port many times.
    let listen = restartable_addr();
    let mut executor = start_executor(dir.path(), listen, &marketdata.endpoint(), settings);
    wait_serving(listen, Duration::from_secs(30)).await;

    // Kill points: after this many acknowledgements (random, spread over the batch).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        std::env::var("EXECBRIDGE_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(7),
    );
    let mut kill_at: Vec<usize> = (0..rounds).map(|_| rng.random_range(1..total)).collect();
    kill_at.sort_unstable();

    let queue = Arc::new(Mutex::new((0..total).rev().collect::<Vec<usize>>()));
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::new()));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let duplicates = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let mismatched = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let client = connect(listen).await;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (queue, acked, acked_count, duplicates, failures, mismatched, refused) = (
            queue.clone(),
            acked.clone(),
            acked_count.clone(),
            duplicates.clone(),
            failures.clone(),
            mismatched.clone(),
            refused.clone(),
        );
        let mut client = client.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let taken: Vec<usize> = {
                    let mut q = queue.lock().unwrap();
                    let keep = q.len() - q.len().min(per_call);
                    q.split_off(keep)
                };
                if taken.is_empty() {
                    if acked_count.load(Ordering::SeqCst) >= total {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                // Each order's outcome: the id of its order (from the order, or from the
                // refusal of a retry whose order was forgotten), or None when unknown (a
                // kill).
                let known = |o: v1::Order| Some(o.order_id);
                let outcomes: Vec<Option<String>> = if per_call == 1 {
                    let result = client
                        .submit_order(internal::SubmitOrderRequest {
                            caller: None,
                            request: Some(v1::SubmitOrderRequest {
                                order: Some(order(taken[0])),
                            }),
                        })
                        .await;
                    vec![match result {
                        Ok(r) => {
                            let r = r.into_inner().response.unwrap();
                            if r.duplicate {
                                duplicates.fetch_add(1, Ordering::SeqCst);
                            }
                            known(r.order.unwrap())
                        }
                        Err(status) => {
                            let id = forgotten(&execbridge_api::status::to_order_error(&status));
                            refused.fetch_add(usize::from(id.is_some()), Ordering::SeqCst);
                            id
                        }
                    }]
                } else {
                    let result = client
                        .submit_order_batch(internal::SubmitOrderBatchRequest {
                            caller: None,
                            orders: taken.iter().map(|&i| order(i)).collect(),
                        })
                        .await;
                    match result {
                        Ok(r) => {
                            let results = r.into_inner().results;
                            assert_eq!(results.len(), taken.len(), "one result per order");
                            results
                                .into_iter()
                                .enumerate()
                                .map(|(k, r)| {
                                    assert_eq!(r.index as usize, k, "results in request order");
                                    if r.duplicate {
                                        duplicates.fetch_add(1, Ordering::SeqCst);
                                    }
                                    match r.outcome {
                                        Some(v1::order_result::Outcome::Order(o)) => known(o),
                                        Some(v1::order_result::Outcome::Error(e)) => {
                                            let id = forgotten(&e);
                                            refused.fetch_add(
                                                usize::from(id.is_some()),
                                                Ordering::SeqCst,
                                            );
                                            id
                                        }
                                        None => None,
                                    }
                                })
                                .collect()
                        }
                        Err(_) => vec![None; taken.len()],
                    }
                };
                let mut retry = Vec::new();
                for (i, outcome) in taken.into_iter().zip(outcomes) {
                    match outcome {
                        Some(order_id) => {
                            let mut acked = acked.lock().unwrap();
                            let client_order_id = order(i).client_order_id;
                            match acked.insert(client_order_id, order_id.clone()) {
                                Some(previous) if previous != order_id => {
                                    mismatched.fetch_add(1, Ordering::SeqCst);
                                }
                                Some(_) => {}
                                None => {
                                    acked_count.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                        // Killed mid-call: the outcome is unknown, so retry with the same id.
                        None => retry.push(i),
                    }
                }
                if !retry.is_empty() {
                    failures.fetch_add(retry.len(), Ordering::SeqCst);
                    queue.lock().unwrap().extend(retry);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    let mut kills = 0;
    for point in &kill_at {
        while acked_count.load(Ordering::SeqCst) < *point {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        executor.child.kill().expect("SIGKILL");
        let _ = executor.child.wait();
        kills += 1;
        executor = start_executor(dir.path(), listen, &marketdata.endpoint(), settings);
        wait_serving(listen, Duration::from_secs(60)).await;
    }
    for w in workers {
        w.await.unwrap();
    }
    let batch_time = started.elapsed();
    // Reconciliation runs every 100 ms; give it a moment, then restart once more so the
    // final state is what the journal alone rebuilds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if settings.snapshot_every.is_some() {
        // Kills may have cut every snapshot and prune short (a slow build writes a
        // snapshot in longer than an executor lived between kills, and the trail may
        // still be catching up): let one snapshot finish and the segments it covers go,
        // so the last start below restores it and replays only the journal after it.
        let deadline = Instant::now() + Duration::from_secs(120);
        while oldest_segment_lsn(dir.path()) <= Some(1) {
            assert!(
                Instant::now() < deadline,
                "no journal segment was deleted in 120 s after the batch; snapshots: {:?}",
                execbridge_executor::snapshot::list(dir.path()).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    executor.child.kill().unwrap();
    let _ = executor.child.wait();
    let mut executor = start_executor(dir.path(), listen, &marketdata.endpoint(), settings);
    wait_serving(listen, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let acked = acked.lock().unwrap().clone();
    let (seen, statuses, open) = match retain {
        Some(_) => journal_counts(dir.path()),
        None => listed_counts(listen).await,
    };
    let venue =
        execbridge_executor::venue::count_venue_orders(&dir.path().join("paper-venue.jsonl"))
            .expect("the venue ledger");
    let venue_orders: usize = venue.values().sum();
    let compactions = ledger_history_files(dir.path());
    let max_per_id = venue.values().copied().max().unwrap_or(0);
    let missing: Vec<&String> = acked.keys().filter(|k| !seen.contains_key(*k)).collect();
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let unknown_ids: HashSet<&String> = seen.keys().filter(|k| !acked.contains_key(*k)).collect();
    let audit = execbridge_executor::audit::verify(
        dir.path().join("audit.sqlite").to_str().unwrap(),
        "execbridge_audit",
    )
    .expect("the audit trail reads");
    println!(
        "crash test ({}): {kills} kill -9 rounds, {total} orders in {:.1}s; acknowledged {} \
         (of which {} answered as duplicates after a retry, {} refused as forgotten), {} \
         submissions failed by a kill and were retried; orders in the executor{} {}; venue orders {venue_orders} (max {max_per_id} \
         per client_order_id; ledger compacted {compactions} times); statuses {statuses:?}; \
         not terminal {open}; audit entries {} ({})",
        if per_call == 1 {
            "SubmitOrder".to_owned()
        } else {
            format!("SubmitOrderBatch of {per_call}")
        },
        batch_time.as_secs_f64(),
        acked.len(),
        duplicates.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst),
        match retain {
            Some(n) => format!(" (its journal; {n} finished orders retained in memory)"),
            None => String::new(),
        },
        seen.len(),
        audit.entries,
        if audit.first_bad.is_none() {
            "chain OK"
        } else {
            "CHAIN BROKEN"
        },
    );
    assert_eq!(
        acked.len(),
        total,
        "every order was acknowledged in the end"
    );
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(twice.is_empty(), "present twice: {twice:?}");
    assert!(
        compactions >= 1,
        "the ledger grew by far more than 16 KiB and was never compacted"
    );
    assert!(
        unknown_ids.is_empty(),
        "orders nobody sent: {unknown_ids:?}"
    );
    assert_eq!(
        mismatched.load(Ordering::SeqCst),
        0,
        "a retry got another order id"
    );
    if max_per_id > 1 {
        // Kept for the post-mortem: the journal, the snapshots, the ledger, the trail.
        let kept = dir.keep();
        let twice: Vec<_> = venue
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k)
            .collect();
        panic!(
            "a client_order_id reached the venue twice: {:?} (files kept in {})",
            &twice[..twice.len().min(5)],
            kept.display()
        );
    }
    assert_eq!(open, 0, "orders left unresolved");
    assert_eq!(audit.first_bad, None, "the audit chain verifies");
    assert_eq!(kills, rounds);
    if settings.snapshot_every.is_some() {
        let snapshots = execbridge_executor::snapshot::list(dir.path()).unwrap();
        let oldest_segment = oldest_segment_lsn(dir.path());
        println!(
            "snapshots kept: {:?}; oldest journal segment starts at lsn {oldest_segment:?}",
            snapshots.iter().map(|(lsn, _)| lsn).collect::<Vec<_>>()
        );
        assert!(!snapshots.is_empty(), "no snapshot was written");
        assert!(oldest_segment > Some(1), "no journal segment was deleted");
    }
    executor.child.kill().unwrap();
    let _ = executor.child.wait();
    marketdata.stop().await;
}
