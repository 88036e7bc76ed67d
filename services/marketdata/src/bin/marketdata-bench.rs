//! `marketdata-bench`: one feed fanned out to many gRPC subscribers over loopback.
//!
//! Starts the real `execbridge-marketdata` binary (release build) as a child process with
//! the simulated feed, opens `--subscribers` streams spread over `--connections` HTTP/2
//! connections from this process, subscribes each to every channel of every symbol and
//! measures, after a warm-up:
//! - deliveries per second (events received, all subscribers together);
//! - feed-to-subscriber latency: from the hub stamping `receive_time` on an event to this
//!   process decoding it (same host clock), p50/p90/p99/p99.9/max;
//! - gap notices (events the server dropped because a subscriber fell behind);
//! - the server's CPU use.
//!
//! Then, with a quiet feed, the server's RSS before and after opening `--idle-connections`
//! connections with one subscribed stream each: idle memory per subscriber connection.
//!
//! The client decodes only the fields it needs (sequence and receive_time) so that its own
//! cost stays small next to the server's on a 2-core machine; everything else about the
//! path is what a client gets (the server cannot tell).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use execbridge_api::v1::stream_market_data_request::Action;
use execbridge_api::v1::{Channel as Ch, SlowConsumerPolicy, StreamMarketDataRequest, Subscribe};
use execbridge_marketdata::MarketdataConfig;
use execbridge_marketdata::config::SymbolConfig;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rust_decimal::Decimal;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
#[command(about = "One feed to many gRPC subscribers: deliveries/s, latency, idle memory")]
struct Args {
    /// Directory with the `execbridge-marketdata` binary.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Subscriber streams.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Connection counts to run, one scenario each.
    #[arg(long, value_delimiter = ',', default_value = "10,1000")]
    connections: Vec<usize>,
    /// Simulated symbols (each subscriber takes all of them).
    #[arg(long, default_value_t = 10)]
    symbols: usize,
    /// Milliseconds between feed ticks (each tick updates every symbol).
    #[arg(long, default_value_t = 40)]
    tick_ms: u64,
    /// L2 levels per side in the simulated book.
    #[arg(long, default_value_t = 10)]
    depth_levels: u16,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections (one stream each) for the idle-memory measurement; 0 skips it.
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
}

/// The response with only what the benchmark reads; prost skips the other fields.
#[derive(Clone, PartialEq, prost::Message)]
struct LightResponse {
    #[prost(message, repeated, tag = "1")]
    events: Vec<LightEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LightEvent {
    #[prost(uint64, tag = "3")]
    sequence: u64,
    #[prost(message, optional, tag = "5")]
    receive_time: Option<LightTimestamp>,
    /// `Gap` (field 11): its `dropped`.
    #[prost(message, optional, tag = "11")]
    gap: Option<LightGap>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
struct LightTimestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
struct LightGap {
    #[prost(uint64, tag = "1")]
    dropped: u64,
}

/// The server as a child process.
struct Server {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    async fn start(args: &Args, tick_ms: u64) -> anyhow::Result<Self> {
        let mut config = MarketdataConfig::default();
        config.server.listen = format!("127.0.0.1:{}", free_port()?).parse()?;
        config.server.admin_listen = format!("127.0.0.1:{}", free_port()?).parse()?;
        config.server.max_concurrent_streams = 4096;
        config.feed.tick_interval_ms = tick_ms;
        config.feed.depth_levels = args.depth_levels;
        config.feed.symbols = (0..args.symbols)
            .map(|i| SymbolConfig {
                symbol: format!("S{i:03}-USDT"),
                venue: "paper".into(),
                initial_price: Decimal::from(100 + i as i64),
                tick_size: Decimal::new(1, 2),
                lot_size: Decimal::new(1, 3),
            })
            .collect();
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("marketdata.toml");
        std::fs::write(&path, toml::to_string(&config)?)?;
        let bin = args.bin_dir.join("execbridge-marketdata");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&path)
            .env("EXECBRIDGE_MARKETDATA_LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let endpoint = format!("http://{}", config.server.listen);
        let server = Server {
            child,
            endpoint,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut server = server;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited: {status}");
            }
            if Endpoint::from_shared(server.endpoint.clone())?
                .connect()
                .await
                .is_ok()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("the server did not start listening within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Resident memory of `pid`, bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time of `pid` (user + system), seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

fn subscribe_all() -> StreamMarketDataRequest {
    StreamMarketDataRequest {
        action: Some(Action::Subscribe(Subscribe {
            venue: "paper".into(),
            symbols: Vec::new(),
            channels: vec![Ch::TopOfBook as i32, Ch::Trades as i32, Ch::Depth as i32],
            policy: SlowConsumerPolicy::DropOldest as i32,
        })),
    }
}

async fn open(
    channel: Channel,
    request: StreamMarketDataRequest,
) -> anyhow::Result<tonic::Streaming<LightResponse>> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let requests = futures::stream::iter([request]).chain(futures::stream::pending());
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/execbridge.v1.MarketDataService/StreamMarketData",
    );
    let codec = tonic_prost::ProstCodec::<StreamMarketDataRequest, LightResponse>::default();
    Ok(grpc
        .streaming(tonic::Request::new(requests), path, codec)
        .await?
        .into_inner())
}

/// What one subscriber measured.
struct Measured {
    events: u64,
    messages: u64,
    dropped: u64,
    latency_us: Histogram<u64>,
}

async fn subscriber(
    mut stream: tonic::Streaming<LightResponse>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Measured> {
    let mut m = Measured {
        events: 0,
        messages: 0,
        dropped: 0,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 2)?,
    };
    while let Some(message) = stream.next().await {
        let message = message?;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let now_us = now.as_secs() as i64 * 1_000_000 + i64::from(now.subsec_micros());
        m.messages += 1;
        for e in &message.events {
            m.events += 1;
            if let Some(g) = e.gap {
                m.dropped += g.dropped;
            }
            if let (Some(t), true) = (e.receive_time, e.sequence != 0) {
                let sent_us = t.seconds * 1_000_000 + i64::from(t.nanos / 1_000);
                m.latency_us
                    .saturating_record((now_us - sent_us).max(1) as u64);
            }
        }
    }
    Ok(m)
}

struct Report {
    connections: usize,
    deliveries_per_sec: f64,
    events_per_message: f64,
    dropped: u64,
    latency_us: Histogram<u64>,
    server_cpu: f64,
    client_cpu: f64,
}

async fn fanout(args: &Args, connections: usize) -> anyhow::Result<Report> {
    let server = Server::start(args, args.tick_ms).await?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(connect(&server.endpoint).await?);
    }
    let mut tasks = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let stream = open(channels[i % connections].clone(), subscribe_all()).await?;
        tasks.push(tokio::spawn(subscriber(
            stream,
            measuring.clone(),
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let cpu_before = cpu_seconds(server.pid());
    let client_cpu_before = cpu_seconds(std::process::id());
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = (cpu_seconds(server.pid()) - cpu_before) / elapsed;
    let client_cpu = (cpu_seconds(std::process::id()) - client_cpu_before) / elapsed;
    stop.store(true, Ordering::Relaxed);
    let mut latency_us = Histogram::new_with_bounds(1, 60_000_000, 2)?;
    let (mut events, mut messages, mut dropped) = (0u64, 0u64, 0u64);
    for t in tasks {
        let m = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .context("a subscriber did not stop")???;
        events += m.events;
        messages += m.messages;
        dropped += m.dropped;
        latency_us.add(&m.latency_us)?;
    }
    drop(server);
    Ok(Report {
        connections,
        deliveries_per_sec: events as f64 / elapsed,
        events_per_message: events as f64 / messages.max(1) as f64,
        dropped,
        latency_us,
        server_cpu,
        client_cpu,
    })
}

/// Server RSS before and after `n` idle subscribed connections, and per connection.
async fn idle_memory(args: &Args, n: usize) -> anyhow::Result<(u64, u64, f64)> {
    // A tick a minute (the longest allowed): the streams get their snapshots, then quiet.
    let server = Server::start(args, 60_000).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(server.pid());
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = connect(&server.endpoint).await?;
        let mut stream = open(channel.clone(), subscribe_all()).await?;
        // Its snapshots, so the subscription is fully set up.
        stream.next().await.context("snapshot")??;
        held.push((channel, stream));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss(server.pid());
    drop(held);
    Ok((before, after, (after as f64 - before as f64) / n as f64))
}

#[allow(clippy::print_stdout)]
fn print(args: &Args, reports: &[Report], idle: Option<(u64, u64, f64)>) {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "\nmarketdata fanout: {} subscribers, {} symbols x (top of book + trades + L2 depth {} levels), \
         tick {} ms, {} s measured after {} s warm-up, {cores} cores (server, clients and \
         feed on the same machine)\n",
        args.subscribers,
        args.symbols,
        args.depth_levels,
        args.tick_ms,
        args.seconds,
        args.warmup_secs
    );
    println!(
        "| connections | deliveries/s | events/msg | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | dropped | server CPU | client CPU |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        let q = |p: f64| r.latency_us.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "| {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.0}% | {:.0}% |",
            r.connections,
            r.deliveries_per_sec,
            r.events_per_message,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            r.latency_us.max() as f64 / 1000.0,
            r.dropped,
            r.server_cpu * 100.0,
            r.client_cpu * 100.0
        );
    }
    if let Some((before, after, per)) = idle {
        println!(
            "\nidle memory: server RSS {:.1} MiB -> {:.1} MiB with {} idle subscribed connections: {:.1} KiB per connection",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            args.idle_connections,
            per / 1024.0
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut reports = Vec::new();
        for &c in &args.connections {
            reports.push(fanout(&args, c.max(1)).await?);
        }
        let idle = if args.idle_connections > 0 {
            Some(idle_memory(&args, args.idle_connections).await?)
        } else {
            None
        };
        print(&args, &reports, idle);
        Ok(())
    })
}
