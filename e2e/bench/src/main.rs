//! `execbridge-bench`: runs the SubmitOrder latency benchmark, or (hidden subcommand) the
//! echo server it compares against.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use execbridge_bench::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("execbridge-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::ServeEcho { listen }) => runtime
            .block_on(execbridge_bench::echo::serve(listen))
            .map(|()| true),
        None => runtime.block_on(execbridge_bench::suite::run(cli.bench)),
    };
    // An interrupted open loop leaves its pacer thread sleeping until the schedule ends;
    // dropping the runtime would wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // Figures were printed, but some calls failed: the run does not count.
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("execbridge-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
