//! The entry point every binary shares: parse arguments, load and validate configuration
//! (exit 64 before anything binds), start logging, run the service until a signal, then
//! drain within the grace period.

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{self, LogConfig, ServerConfig, Validate};
use crate::{Shutdown, shutdown, telemetry};

/// `EX_CONFIG` from sysexits.h: the configuration was bad.
pub const EXIT_CONFIG: u8 = 64;

/// Command-line arguments shared by every service.
#[derive(Debug, Parser)]
pub struct Args {
    /// TOML configuration file; without it, built-in defaults and environment overrides.
    #[arg(long, env = "EXECBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// What the runner needs to know of a service's configuration.
pub trait ServiceConfig: Default + Serialize + DeserializeOwned + Validate {
    /// The listening side.
    fn server(&self) -> &ServerConfig;
    /// Logging.
    fn log(&self) -> &LogConfig;
}

/// Runs `service` as a process: the body of every `main`.
///
/// `run` starts the service and returns when it has stopped; it must watch the
/// [`Shutdown`] it is given and stop accepting work when it fires. If it has not returned
/// within `server.shutdown_grace_secs` of the signal, the process exits anyway (code 1).
pub fn main<C, F, Fut, E>(service: &'static str, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let args = Args::parse();
    let config: C = match config::load(service, args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            // Logging is not set up yet, and this must reach a person: stderr directly.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("execbridge-{service}: configuration error: {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check_config {
        #[allow(clippy::print_stdout)]
        match toml::to_string_pretty(&config) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("execbridge-{service}: cannot print the configuration: {e}"),
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match runtime(config.server()) {
        Ok(rt) => rt,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("execbridge-{service}: cannot start the async runtime: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's channel lives on the runtime, so it is built inside it; without
    // an endpoint there is no exporter and no layer.
    let exporter = {
        let _entered = runtime.enter();
        match crate::tracing_otel::layer::<tracing_subscriber::Registry>(
            service,
            &config.server().tracing,
        ) {
            Ok(built) => built,
            Err(e) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("execbridge-{service}: tracing: {e}");
                }
                return ExitCode::FAILURE;
            }
        }
    };
    let (layer, tracing_export) = match exporter {
        Some((layer, export)) => (Some(Box::new(layer) as telemetry::ExtraLayer), Some(export)),
        None => (None, None),
    };
    telemetry::init_with(config.log(), layer);
    let grace = config.server().shutdown_grace();
    let code = runtime.block_on(async move {
        let shutdown = Shutdown::new();
        let watcher = shutdown.clone();
        tokio::spawn(async move {
            match shutdown::os_signal().await {
                Ok(signal) => tracing::info!(signal, "shutdown requested, draining"),
                Err(e) => tracing::error!(error = %e, "cannot watch signals"),
            }
            watcher.trigger();
        });
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
        let run = run(config, shutdown.clone());
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            () = shutdown.wait() => match tokio::time::timeout(grace, &mut run).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(grace_secs = grace.as_secs(), "grace period over, exiting with work in flight");
                    return ExitCode::FAILURE;
                }
            },
        };
        match result {
            Ok(()) => {
                tracing::info!(service, "stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(service, error = %e, "failed");
                ExitCode::FAILURE
            }
        }
    });
    // The spans of the drain go out before the process ends.
    if let Some(export) = tracing_export {
        export.shutdown();
    }
    code
}

/// The multi-threaded runtime a service runs on, with `server.worker_threads` threads
/// (0: tokio's default, one per CPU).
///
/// # Errors
/// When the runtime cannot start its threads.
pub fn runtime(server: &ServerConfig) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if server.worker_threads > 0 {
        builder.worker_threads(server.worker_threads);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(threads: usize) -> usize {
        let server = ServerConfig {
            worker_threads: threads,
            ..ServerConfig::default()
        };
        runtime(&server).unwrap().metrics().num_workers()
    }

    #[test]
    fn the_runtime_has_the_configured_worker_threads() {
        assert_eq!(workers(1), 1);
        assert_eq!(workers(3), 3);
    }

    #[test]
    fn zero_worker_threads_is_one_per_cpu() {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(workers(0), cpus);
    }
}
