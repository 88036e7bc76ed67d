//! `execbridge-bench`: how long `SubmitOrder` takes to be acknowledged through
//! gateway -> executor on loopback, next to a bare tonic server on the same proto.
//!
//! # Layout
//! - [`cli`]: command-line arguments, including the hidden `serve-echo` subcommand.
//! - [`echo`]: the bare `ExecutionService` that answers at once: the floor.
//! - [`stack`]: the child processes under test, on free loopback ports, stopped on drop.
//! - [`schedule`]: when each open-loop request is meant to leave.
//! - [`load`]: the closed loop (one call in flight) and the open loop (a fixed rate).
//! - [`report`]: percentiles, the gateway/echo ratios, the table and the JSON file.
//! - [`scrape`]: the executor's journal sync times over the run, from its metrics.
//! - [`suite`]: the whole run: start, measure every scenario on every target, stop.

pub mod cli;
pub mod echo;
pub mod load;
pub mod report;
pub mod schedule;
pub mod scrape;
pub mod stack;
pub mod suite;
