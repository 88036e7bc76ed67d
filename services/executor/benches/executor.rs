//! Executor benchmarks (release build, fdatasync on):
//! 1. durable submit -> ack latency through the executor's gRPC API at a fixed rate;
//! 2. throughput of concurrent submits with group commit (through gRPC, and straight into
//!    the shard without gRPC);
//! 3. journal replay of 1,000,000 events (the real start path: decode, CRC, engine apply);
//! 4. a snapshot of that state: writing it, its size, and a start from it.
//!
//! `cargo bench -p execbridge-executor --bench executor`. Environment: `BENCH_RATE`
//! (orders/s, default 1000), `BENCH_SECONDS` (default 5), `BENCH_BATCH` (orders, default
//! 50,000), `BENCH_REPLAY_EVENTS` (default 1,000,000), `BENCH_DIR` (where journals go,
//! default the system temp dir: put it on the disk you want measured), `BENCH_AUDIT=none`
//! (run the gRPC benchmarks without the audit trail, to see what it costs),
//! `BENCH_SNAPSHOT_EVERY` (`journal.snapshot_every_records` of the gRPC benchmarks; 0: off),
//! `BENCH_PHASES` (which to run, comma separated, of `grpc` (1, 2a, 2b), `shard` (2c) and
//! `replay` (3, 4); default all).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use execbridge_api::internal::v1 as internal;
use execbridge_api::internal::v1::executor_service_client::ExecutorServiceClient;
use execbridge_api::v1;
use execbridge_executor::ExecutorConfig;
use execbridge_executor::config::AuditSinkKind;
use execbridge_executor::engine::{Engine, Replayed};
use execbridge_executor::journal::{self, AfterSync, Entry, Journal};
use execbridge_executor::paper::Quote;
use execbridge_executor::shard::Shard;
use execbridge_executor::snapshot;
use execbridge_marketdata::MarketdataConfig;
use execbridge_testutil::{Running, resident_bytes, server_config};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

/// The allocator the executor binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn base_dir() -> std::path::PathBuf {
    std::env::var("BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| std::env::temp_dir())
}

fn order(i: u64) -> v1::OrderRequest {
    execbridge_testutil::paper_market_order("b", i, 16)
}

fn submit(i: u64) -> internal::SubmitOrderRequest {
    internal::SubmitOrderRequest {
        caller: None,
        request: Some(v1::SubmitOrderRequest {
            order: Some(order(i)),
        }),
    }
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name}: n={} p50={}us p90={}us p99={}us p99.9={}us max={}us",
        h.len(),
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

async fn latency_and_throughput() {
    let mut md = MarketdataConfig {
        server: server_config(),
        ..Default::default()
    };
    md.feed.tick_interval_ms = 10;
    let marketdata = Running::start(md.server.listen, |s| execbridge_marketdata::run(md, s)).await;
    let dir = tempfile::tempdir_in(base_dir()).unwrap();
    let mut ex = ExecutorConfig {
        server: server_config(),
        ..Default::default()
    };
    ex.marketdata.endpoint = marketdata.endpoint();
    ex.journal.dir = dir.path().to_owned();
    ex.log.level = "warn".into();
    if std::env::var("BENCH_AUDIT").is_ok_and(|v| v == "none") {
        ex.audit.sink = AuditSinkKind::None;
    }
    ex.journal.snapshot_every_records =
        env("BENCH_SNAPSHOT_EVERY", ex.journal.snapshot_every_records);
    let executor = Running::start(ex.server.listen, |s| execbridge_executor::run(ex, s)).await;
    let channel = Channel::from_shared(executor.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = ExecutorServiceClient::new(channel);

    // 1. Open loop at a fixed rate: each order is sent at its scheduled time, whatever the
    //    previous ones are doing, so queueing shows in the latency.
    let rate = env("BENCH_RATE", 1000);
    let seconds = env("BENCH_SECONDS", 5);
    let n = rate * seconds;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let mut c = client.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = c.submit_order(submit(i)).await;
            let _ = tx.send((t.elapsed(), r.is_ok()));
        });
    }
    drop(tx);
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut errors = 0;
    while let Some((d, ok)) = rx.recv().await {
        if ok {
            h.record(d.as_micros() as u64).unwrap();
        } else {
            errors += 1;
        }
    }
    report(
        &format!(
            "durable submit->ack via executor gRPC at {rate}/s for {seconds}s (fdatasync on, {errors} errors)"
        ),
        &h,
    );

    // 2a. Throughput: many concurrent submits over a few connections; group commit makes
    //     one fdatasync cover every order queued while the previous sync ran.
    let batch = env("BENCH_BATCH", 50_000);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let ch = Channel::from_shared(executor.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(ExecutorServiceClient::new(ch));
    }
    let next = Arc::new(std::sync::atomic::AtomicU64::new(n));
    let end = n + batch;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..512 {
        let mut c = clients[w % clients.len()].clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= end {
                    return;
                }
                c.submit_order(submit(i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t.elapsed();
    println!(
        "group commit via executor gRPC: {batch} durable orders (accept+ack+fill, 3 records each) in {:.2}s = {:.0} orders/s with 512 concurrent callers on 4 connections",
        elapsed.as_secs_f64(),
        batch as f64 / elapsed.as_secs_f64()
    );
    // 2b. Batches: SubmitOrderBatch calls of BENCH_BATCH_SIZE orders, several in flight on
    //     each of a few connections; a batch shares one journal commit and one venue pass.
    let size = env("BENCH_BATCH_SIZE", 1000);
    let total = env("BENCH_BATCH_ORDERS", 400_000);
    let calls = total.div_ceil(size);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let base = end;
    let rss_before = resident_bytes(std::process::id());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let mut c = clients[w % clients.len()].clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = 0u64;
            loop {
                let call = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if call >= calls {
                    return acknowledged;
                }
                let first = base + call * size;
                let orders = (first..first + size).map(order).collect();
                let response = c
                    .submit_order_batch(internal::SubmitOrderBatchRequest {
                        caller: None,
                        orders,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                acknowledged += response
                    .results
                    .iter()
                    .filter(|r| {
                        matches!(&r.outcome, Some(v1::order_result::Outcome::Order(o))
                            if o.status != v1::OrderStatus::Rejected as i32)
                    })
                    .count() as u64;
            }
        }));
    }
    let mut acknowledged = 0;
    for t in tasks {
        acknowledged += t.await.unwrap();
    }
    let elapsed = t.elapsed();
    println!(
        "batch throughput via executor gRPC (SubmitOrderBatch of {size}, 16 in flight on 4 connections, fdatasync on): {acknowledged} of {} orders acknowledged in {:.2}s = {:.0} orders/s",
        calls * size,
        elapsed.as_secs_f64(),
        acknowledged as f64 / elapsed.as_secs_f64()
    );
    // Finished orders beyond shard.retain_finished_orders are forgotten, down to a key per
    // order within the idempotency window: what the history costs at the defaults.
    if let (Some(before), Some(after)) = (rss_before, resident_bytes(std::process::id())) {
        let defaults = execbridge_executor::config::ShardConfig::default();
        println!(
            "resident memory over the batches: +{} MiB for {} orders = {:.0} bytes per order (the whole bench process; {} finished orders retained whole, the ids of the others for {} s)",
            after.saturating_sub(before) >> 20,
            calls * size,
            after.saturating_sub(before) as f64 / (calls * size) as f64,
            defaults.retain_finished_orders,
            defaults.idempotency_window_secs,
        );
    }
    executor.stop().await;
    marketdata.stop().await;
}

async fn shard_throughput() {
    // 2c. The same pipeline without gRPC: what the journal and engine sustain.
    let dir = tempfile::tempdir_in(base_dir()).unwrap();
    let mut config = ExecutorConfig::default();
    config.journal.dir = dir.path().to_owned();
    config.audit.sink = AuditSinkKind::Sqlite;
    let (shard, _) = tokio::task::spawn_blocking(move || Shard::open(&config))
        .await
        .unwrap()
        .unwrap();
    shard.market(|e| {
        e.on_quote(
            "paper",
            "BTC-USDT",
            Quote::around(100.into()),
            SystemTime::now(),
        );
    });
    let batch = env("BENCH_BATCH", 50_000) * 2;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..2048 {
        let shard = shard.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= batch {
                    return;
                }
                let req = execbridge_api::convert::order_request_from_proto(&order(i), "").unwrap();
                shard.submit(req).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t.elapsed();
    println!(
        "group commit straight into the shard (no gRPC): {batch} durable orders in {:.2}s = {:.0} orders/s with 2048 concurrent submitters",
        elapsed.as_secs_f64(),
        batch as f64 / elapsed.as_secs_f64()
    );
    shard.close(false).await;
}

struct Nothing;
impl AfterSync for Nothing {
    fn synced(&mut self, _: &[Entry]) {}
}

fn replay() {
    // 3. Build a journal of N events with the real engine, then start a shard on it.
    let events = env("BENCH_REPLAY_EVENTS", 1_000_000);
    let dir = tempfile::tempdir_in(base_dir()).unwrap();
    let mut engine = Engine::in_memory("s0", execbridge_executor::config::PaperConfig::default());
    let now = SystemTime::now();
    engine.on_quote("paper", "BTC-USDT", Quote::around(100.into()), now);
    let journal = Journal::start(
        dir.path(),
        0,
        journal::Options {
            fsync: false,
            segment_bytes: 64 << 20,
            max_batch: 16_384,
            sync_delay: Duration::from_millis(1),
            inline_records: 64,
        },
        Box::new(Nothing),
    )
    .unwrap();
    let t = Instant::now();
    let mut i = 0;
    while engine.last_lsn() < events {
        let req = execbridge_api::convert::order_request_from_proto(&order(i), "").unwrap();
        engine.submit(req, now).unwrap();
        let _ = journal.append(engine.take_outbox(), false).unwrap();
        i += 1;
    }
    let written = engine.last_lsn();
    drop(journal);
    let segments = journal::segments(dir.path()).unwrap();
    // On disk before the replay is timed, as a journal is after a crash: otherwise the
    // kernel's writeback of these fresh pages runs during the replay and is timed with it.
    for path in &segments {
        std::fs::File::open(path).unwrap().sync_all().unwrap();
    }
    let bytes: u64 = segments
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    println!(
        "journal written: {written} events ({i} orders, {:.0} MiB) in {:.2}s (engine + encode, no fsync)",
        bytes as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut n = 0u64;
    journal::replay_records(dir.path(), 1, false, |_: Replayed| {
        n += 1;
        Ok(())
    })
    .unwrap();
    println!(
        "journal read + CRC + decode of {n} events, as a start decodes them: {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let mut config = ExecutorConfig::default();
    config.journal.dir = dir.path().to_owned();
    config.audit.sink = AuditSinkKind::None;
    // Timed alone: the snapshot thread would otherwise start on the replayed journal.
    config.journal.snapshot_every_records = 0;
    let t = Instant::now();
    let (shard, stats) = Shard::open(&config).unwrap();
    println!(
        "journal replay of {} events (read, CRC, decode, engine apply: orders, fills, positions, balances, sequence): {:.2}s = {:.0} events/s",
        stats.records,
        t.elapsed().as_secs_f64(),
        stats.records as f64 / t.elapsed().as_secs_f64()
    );
    // A start keeps no replayed update in memory: a subscriber that resumes from one (the
    // gateway, after the executor restarted) reads its missed updates from the journal.
    let last = shard.subscribe(None).unwrap().last_sequence;
    for back in [1_000, 100_000] {
        let t = Instant::now();
        let resumed = shard.subscribe(Some(last - back)).unwrap();
        let took = t.elapsed();
        assert_eq!(resumed.replay.len() as u64, back);
        println!(
            "a subscriber resuming {back} updates back after that start (read from the journal): {:.1} ms",
            took.as_secs_f64() * 1e3
        );
    }
    drop(shard);

    // 4. A snapshot of the same state at the default history retention: what the snapshot
    //    thread spends on it (replaying the journal into an engine of its own, writing the
    //    file), its size, reading it back, and a start from it.
    let fresh = || Engine::for_replay(&config);
    let t = Instant::now();
    let lsn = snapshot::take(dir.path(), fresh(), written, None).unwrap();
    let took = t.elapsed();
    let (_, path) = snapshot::list(dir.path()).unwrap().remove(0);
    let size = std::fs::metadata(&path).unwrap().len();
    let t = Instant::now();
    let checkpoint = snapshot::read(&path).unwrap();
    let read = t.elapsed();
    println!(
        "snapshot at lsn {lsn} ({} orders held whole, {:.0} MiB): replay + write {:.2}s, read back {:.2}s",
        checkpoint.orders_held(),
        size as f64 / (1 << 20) as f64,
        took.as_secs_f64(),
        read.as_secs_f64()
    );
    drop(checkpoint);
    let t = Instant::now();
    let (shard, stats) = Shard::open(&config).unwrap();
    println!(
        "start from the snapshot ({} journal records after it, segments before it deleted): {:.2}s",
        stats.records,
        t.elapsed().as_secs_f64()
    );
    drop(shard);
}

fn main() {
    println!(
        "execbridge executor benchmarks on {} cores (journal dir {})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        base_dir().display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "grpc,shard,replay".into());
    let run = |phase: &str| phases.split(',').any(|p| p.trim() == phase);
    if run("grpc") {
        rt.block_on(latency_and_throughput());
    }
    if run("shard") {
        rt.block_on(shard_throughput());
    }
    if run("replay") {
        replay();
    }
}
