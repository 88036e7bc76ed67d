//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The benchmark, or one of its own child processes.
#[derive(Debug, Parser)]
#[command(
    name = "execbridge-bench",
    version,
    about = "SubmitOrder acknowledgement latency through gateway -> executor, next to a bare tonic echo server",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Internal: what a child process started by the benchmark runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The benchmark's settings.
    #[command(flatten)]
    pub bench: BenchArgs,
}

/// Subcommands the benchmark starts itself with.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serves the echo `ExecutionService` until SIGTERM or SIGINT.
    #[command(hide = true)]
    ServeEcho {
        /// gRPC address.
        #[arg(long)]
        listen: SocketAddr,
    },
}

/// What to measure and where to write it.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Directory of the service binaries (build them with `cargo build --release --bins`).
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Recorded calls of the closed-loop scenario, per target.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub calls: u64,
    /// Unrecorded calls before the closed-loop scenario, per target.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub warmup: u64,
    /// Open-loop request rate, per second.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: u64,
    /// Open-loop duration, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration_secs: u64,
    /// Connections (HTTP/2 channels) the open-loop calls are spread over, round robin.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub connections: u64,
    /// Deadline of every call, in milliseconds.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub timeout_ms: u64,
    /// Where the JSON results are written (its directory is created).
    #[arg(long, default_value = "bench-results/submit_order.json")]
    pub out: PathBuf,
    /// Extra environment for the three services (repeatable), applied after the
    /// benchmark's own settings; for example `EXECBRIDGE_EXECUTOR_JOURNAL__FSYNC=false`
    /// shows what the journal's fsync costs.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub service_env: Vec<(String, String)>,
}

/// `KEY=VALUE` with a `KEY` of the services' own (`EXECBRIDGE_...`).
///
/// # Errors
/// Why the argument is not one.
pub fn parse_env(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?} is not KEY=VALUE"))?;
    if !key.starts_with("EXECBRIDGE_") || key.len() == "EXECBRIDGE_".len() {
        return Err(format!(
            "{key:?} is not a service setting (EXECBRIDGE_<SERVICE>_<SECTION>__<KEY>)"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

impl BenchArgs {
    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The open-loop duration.
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }
}

#[cfg(test)]
mod tests;
