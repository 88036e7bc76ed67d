//! `execbridge-marketdata`: the simulated feed and its gRPC fanout.

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the order path allocates many small,
/// short-lived strings and messages, where glibc malloc's consolidation showed up as a
/// fifth of the executor's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    execbridge_runtime::cli::main("marketdata", execbridge_marketdata::run)
}
