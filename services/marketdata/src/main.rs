//! `execbridge-marketdata`: the simulated feed and its gRPC fanout.

use std::process::ExitCode;

fn main() -> ExitCode {
    execbridge_runtime::cli::main("marketdata", execbridge_marketdata::run)
}
