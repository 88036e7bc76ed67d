//! The whole run: start the processes, measure each scenario on the echo server and on
//! the gateway, stop the processes, then print and save the figures.

use std::io::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::SystemTime;

use anyhow::{Context as _, anyhow};

use crate::cli::BenchArgs;
use crate::load::{OrderIds, closed_loop, connect, open_loop};
use crate::report::{self, ECHO, GATEWAY, Report, Settings, Summary};
use crate::schedule::Schedule;
use crate::scrape::{self, SyncTimes};
use crate::stack::Stack;

/// Runs the benchmark as `args` say, prints the table to stdout and writes the JSON.
///
/// Returns whether every call succeeded: the figures are printed and saved either way.
///
/// # Errors
/// When a process cannot be started or dies, a connection fails, the run is interrupted
/// (SIGINT) or the results cannot be written. Every child process is stopped first.
pub async fn run(args: BenchArgs) -> anyhow::Result<bool> {
    let schedule = Schedule::new(args.rate, args.duration())
        .ok_or_else(|| anyhow!("--rate must be at least 1"))?;
    let exe =
        std::env::current_exe().context("cannot find this program to start the echo server")?;
    eprintln!(
        "execbridge-bench: starting echo, marketdata, executor and gateway from {}",
        args.bin_dir.display()
    );
    // Dropped on every way out of this function (error, panic), which stops the children.
    let mut stack = Stack::start(&args.bin_dir, &exe, &args.service_env).await?;
    let results = tokio::select! {
        results = measure(&mut stack, &args, schedule) => results?,
        // Ctrl-C: return, so the stack is dropped and its processes stopped.
        _ = tokio::signal::ctrl_c() => return Err(anyhow!("interrupted")),
    };
    let journal_fsync = journal_fsync(&stack).await;
    stack.stop();

    let report = Report {
        benchmark: "SubmitOrder acknowledgement latency, gateway -> executor vs a bare tonic echo server, loopback",
        finished_unix_secs: report::unix_secs_now(),
        cores: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        settings: Settings {
            closed_loop_calls: args.calls,
            closed_loop_warmup: args.warmup,
            open_loop_rate_per_sec: schedule.rate(),
            open_loop_duration_secs: args.duration_secs,
            open_loop_connections: args.connections,
            timeout_ms: args.timeout_ms,
            gateway_policy: "development policy, submit budget 1,000,000/s (e2e/bench/gateway-policy.toml)",
            service_env: args
                .service_env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        },
        ratios: report::ratios(&results),
        results,
        journal_fsync,
    };
    std::io::stdout()
        .lock()
        .write_all(report::table(&report).as_bytes())
        .context("cannot print the results")?;
    report::write_json(&report, &args.out)?;
    eprintln!(
        "execbridge-bench: results written to {}",
        args.out.display()
    );
    if report.errors() > 0 {
        eprintln!(
            "execbridge-bench: {} call(s) failed; these figures do not count",
            report.errors()
        );
    }
    Ok(report.errors() == 0)
}

/// The executor's journal sync times over the run; `None`, with the reason on stderr,
/// when its metrics cannot be read (the latency figures stand without them).
async fn journal_fsync(stack: &Stack) -> Option<SyncTimes> {
    let text = scrape::metrics(stack.executor_admin, std::time::Duration::from_secs(5))
        .await
        .inspect_err(|e| eprintln!("execbridge-bench: no journal sync times: {e:#}"))
        .ok()?;
    let times = scrape::parse_histogram(&text, scrape::FSYNC_METRIC)
        .as_ref()
        .and_then(SyncTimes::of);
    if times.is_none() {
        eprintln!(
            "execbridge-bench: no journal sync times: the executor's metrics have no {} observations",
            scrape::FSYNC_METRIC
        );
    }
    times
}

/// Both scenarios, each on the echo server first and then on the gateway, so the two
/// targets of a scenario are measured back to back under the same conditions.
async fn measure(
    stack: &mut Stack,
    args: &BenchArgs,
    schedule: Schedule,
) -> anyhow::Result<Vec<Summary>> {
    // Sub-second clock bits: a new set of client_order_ids for every run.
    let run_id = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
    let ids = OrderIds::new(run_id);
    let targets: [(&str, SocketAddr); 2] = [(ECHO, stack.echo), (GATEWAY, stack.gateway)];
    let mut results = Vec::new();

    for (target, addr) in targets {
        stack.check_alive()?;
        eprintln!(
            "execbridge-bench: closed loop on {target}: {} warm-up + {} calls, one in flight",
            args.warmup, args.calls
        );
        let client = connect(addr).await?;
        let run = closed_loop(client, ids, args.warmup, args.calls, args.timeout()).await?;
        results.push(Summary::of("closed_loop", target, &run));
    }

    for (target, addr) in targets {
        stack.check_alive()?;
        eprintln!(
            "execbridge-bench: open loop on {target}: {}/s for {} s over {} connection(s)",
            schedule.rate(),
            args.duration_secs,
            args.connections
        );
        let mut clients = Vec::new();
        for _ in 0..args.connections {
            clients.push(connect(addr).await?);
        }
        let run = open_loop(clients, schedule, ids, args.timeout()).await?;
        results.push(Summary::of("open_loop", target, &run));
    }
    stack.check_alive()?;
    Ok(results)
}
