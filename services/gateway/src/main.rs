//! `execbridge-gateway`: the public execbridge API.

use std::process::ExitCode;

fn main() -> ExitCode {
    execbridge_runtime::cli::main("gateway", execbridge_gateway::run)
}
