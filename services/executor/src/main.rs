//! `execbridge-executor`: order state, the journal, the paper venue and order updates of
//! one shard. `execbridge-executor verify <sqlite file | postgres URL> [table]` checks an
//! audit trail's hash chain instead and names the first bad entry (exit 1 if any).

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the order path allocates many small,
/// short-lived strings and messages, where glibc malloc's consolidation showed up as a
/// fifth of the executor's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("verify") {
        return verify(&args[2..]);
    }
    execbridge_runtime::cli::main("executor", execbridge_executor::run)
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn verify(args: &[String]) -> ExitCode {
    let Some(target) = args.first() else {
        eprintln!("usage: execbridge-executor verify <audit.sqlite | postgres://...> [table]");
        return ExitCode::from(64);
    };
    let table = args.get(1).map_or("execbridge_audit", String::as_str);
    match execbridge_executor::audit::verify(target, table) {
        Ok(v) => match v.first_bad {
            None => {
                match v.first_lsn {
                    None => println!("audit chain OK: no entries"),
                    Some(first) => {
                        let last = first + v.entries - 1;
                        println!(
                            "audit chain OK: {} entries, lsn {first} to {last}",
                            v.entries
                        );
                        if first > 1 {
                            println!(
                                "the chain starts at lsn {first}: records before it are not in this trail (the sink began after they were deleted behind a journal snapshot)"
                            );
                        }
                    }
                }
                ExitCode::SUCCESS
            }
            Some((lsn, why)) => {
                println!(
                    "audit chain BROKEN at entry lsn={lsn} (after {} good entries): {why}",
                    v.entries
                );
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("cannot verify {target}: {e}");
            ExitCode::from(2)
        }
    }
}
