//! The two load shapes, each a series of MARKET BUY `SubmitOrder` calls with unique
//! `client_order_id`s: a closed loop with one call in flight, and an open loop at a fixed
//! rate with as many calls in flight as it takes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use execbridge_api::v1::execution_service_client::ExecutionServiceClient;
use execbridge_api::v1::{self, SubmitOrderRequest, SubmitOrderResponse};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};

use crate::schedule::{self, Schedule};

/// A client of the public `ExecutionService` over one HTTP/2 connection.
pub type Client = ExecutionServiceClient<Channel>;

/// The closed loop stops after this many failed calls: with a deadline of seconds each,
/// a broken target would otherwise keep the run going for hours.
pub const CLOSED_LOOP_ERROR_LIMIT: u64 = 100;

/// Highest latency recorded, in nanoseconds; anything slower is clamped to it (the
/// per-call deadline is well below).
const HISTOGRAM_MAX_NANOS: u64 = 3_600_000_000_000;

/// How far ahead of the first open-loop request the schedule starts, so the pacer thread
/// is running by then.
const OPEN_LOOP_LEAD: Duration = Duration::from_millis(20);

/// Unrecorded calls per connection before the open loop, so every connection is
/// established and warm when the schedule starts.
const OPEN_LOOP_WARMUP_PER_CONNECTION: u64 = 200;

/// An empty latency histogram: nanoseconds, three significant digits.
///
/// # Errors
/// Never in practice: the bounds are constants.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NANOS, 3).context("latency histogram bounds")
}

/// Connects one HTTP/2 connection to `addr`.
///
/// # Errors
/// When the connection cannot be established.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    Ok(ExecutionServiceClient::new(channel))
}

/// Unique `client_order_id`s: `<tag>-<run>-<i>`, at most 29 characters of
/// `[A-Za-z0-9-]`, well inside the API's 36 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, Copy)]
pub struct OrderIds {
    run: u32,
}

impl OrderIds {
    /// Ids of run `run`; a different run number never repeats an id of another run.
    pub fn new(run: u32) -> Self {
        Self { run }
    }

    /// The id of call `i` of the phase `tag` (short, alphanumeric).
    pub fn id(&self, tag: &str, i: u64) -> String {
        format!("{tag}-{:08x}-{i}", self.run)
    }
}

/// The order every call submits: MARKET BUY 0.001 BTC-USDT on the paper venue.
pub fn order_request(client_order_id: String) -> v1::OrderRequest {
    v1::OrderRequest {
        client_order_id,
        account: "bench".into(),
        venue: "paper".into(),
        mode: v1::TradingMode::Paper as i32,
        symbol: "BTC-USDT".into(),
        side: v1::Side::Buy as i32,
        r#type: v1::OrderType::Market as i32,
        quantity: "0.001".into(),
        ..v1::OrderRequest::default()
    }
}

/// Why one call did not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// What kind of failure, for counting: the gRPC code, or the order status and reject
    /// reason ("ORDER_STATUS_REJECTED/REJECT_REASON_NO_LIQUIDITY").
    pub kind: String,
    /// The details of this one.
    pub message: String,
}

impl CallError {
    fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Whether a response acknowledges the order as the benchmark expects: a market order on
/// the paper venue fills at once, so anything but FILLED (a rejection above all) means the
/// path measured is not the one meant.
///
/// # Errors
/// What was wrong.
pub fn check(response: &SubmitOrderResponse) -> Result<(), CallError> {
    let Some(order) = &response.order else {
        return Err(CallError::new("NO_ORDER", "the response has no order"));
    };
    if response.duplicate {
        return Err(CallError::new(
            "DUPLICATE",
            format!("order {} came back as a duplicate", order.order_id),
        ));
    }
    let status = v1::OrderStatus::try_from(order.status).unwrap_or_default();
    if status != v1::OrderStatus::Filled {
        let reason = v1::RejectReason::try_from(order.reject_reason).unwrap_or_default();
        return Err(CallError::new(
            format!("{}/{}", status.as_str_name(), reason.as_str_name()),
            format!("order {}: {}", order.order_id, order.reject_message),
        ));
    }
    Ok(())
}

/// Submits one order with a deadline of `timeout`.
///
/// # Errors
/// The gRPC status, or what [`check`] refused.
async fn submit(
    client: &mut Client,
    client_order_id: String,
    timeout: Duration,
) -> Result<(), CallError> {
    let mut request = Request::new(SubmitOrderRequest {
        order: Some(order_request(client_order_id)),
    });
    request.set_timeout(timeout);
    match client.submit_order(request).await {
        Ok(response) => check(response.get_ref()),
        Err(status) => Err(CallError::new(
            format!("{:?}", status.code()),
            status.message(),
        )),
    }
}

/// Failed calls: how many, of which kinds, and the first one's reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors {
    /// Failed calls.
    pub count: u64,
    /// Failed calls per [`CallError::kind`].
    pub by_kind: BTreeMap<String, u64>,
    /// Why the first one failed.
    pub first: Option<String>,
}

impl Errors {
    /// Counts `error`; `phase` says where it happened when that is not the measurement.
    pub fn note(&mut self, error: &CallError, phase: Option<&str>) {
        self.count += 1;
        *self.by_kind.entry(error.kind.clone()).or_default() += 1;
        self.first.get_or_insert_with(|| match phase {
            Some(phase) => format!("{phase}: {error}"),
            None => error.to_string(),
        });
    }
}

/// What one scenario measured on one target.
#[derive(Debug, Clone)]
pub struct Run {
    /// Latency of the successful calls, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Open loop only: how late each call left after its intended time (pacer and
    /// runtime lag, part of `latency`), in nanoseconds.
    pub send_lag: Option<Histogram<u64>>,
    /// Failed calls.
    pub errors: Errors,
    /// From the first recorded call's start (or intended time) to the last completion.
    pub elapsed: Duration,
}

fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1));
}

/// `warmup` unrecorded calls, then `calls` recorded ones, one at a time on one connection,
/// each timed from just before the call to its response.
///
/// # Errors
/// Only when the histogram cannot be built; failed calls are counted in [`Run::errors`].
pub async fn closed_loop(
    mut client: Client,
    ids: OrderIds,
    warmup: u64,
    calls: u64,
    timeout: Duration,
) -> anyhow::Result<Run> {
    let mut errors = Errors::default();
    for i in 0..warmup {
        if let Err(e) = submit(&mut client, ids.id("cw", i), timeout).await {
            errors.note(&e, Some("warm-up"));
            if errors.count >= CLOSED_LOOP_ERROR_LIMIT {
                break;
            }
        }
    }
    let mut latency = histogram()?;
    let started = Instant::now();
    for i in 0..calls {
        if errors.count >= CLOSED_LOOP_ERROR_LIMIT {
            break;
        }
        let sent = Instant::now();
        match submit(&mut client, ids.id("c", i), timeout).await {
            Ok(()) => record(&mut latency, sent.elapsed()),
            Err(e) => errors.note(&e, None),
        }
    }
    Ok(Run {
        latency,
        send_lag: None,
        errors,
        elapsed: started.elapsed(),
    })
}

/// One open-loop call's timings.
struct Sample {
    intended: Instant,
    sent: Instant,
    done: Instant,
    result: Result<(), CallError>,
}

/// The calls of `schedule`, spread round robin over `clients`, each spawned at its intended
/// time without waiting for earlier ones; latency runs from the intended time to the
/// response (see [`crate::schedule`]).
///
/// # Errors
/// When `clients` is empty, the histograms cannot be built or the pacer thread panics;
/// failed calls are counted in [`Run::errors`].
pub async fn open_loop(
    clients: Vec<Client>,
    schedule: Schedule,
    ids: OrderIds,
    timeout: Duration,
) -> anyhow::Result<Run> {
    anyhow::ensure!(
        !clients.is_empty(),
        "the open loop needs at least one connection"
    );
    let mut errors = Errors::default();
    for (c, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        for i in 0..OPEN_LOOP_WARMUP_PER_CONNECTION {
            if let Err(e) = submit(&mut client, ids.id(&format!("ow{c}"), i), timeout).await {
                errors.note(&e, Some("warm-up"));
            }
        }
    }

    // Every call task holds a sender; the channel closes once the pacer and the last call
    // are done, which ends the collection below.
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let runtime = tokio::runtime::Handle::current();
    let start = Instant::now() + OPEN_LOOP_LEAD;
    let pacer = tokio::task::spawn_blocking(move || {
        // Linux lets a sleeping thread wake up to 50 us late by default (timer slack), and
        // every microsecond of that is charged to the call; 1 ns asks for precise wake-ups.
        // Best effort: the send lag shows what is left.
        let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
        schedule::pace(schedule, start, |i, intended| {
            // `i % len` is below `len`, so the index is in range.
            let index = usize::try_from(i).unwrap_or(0) % clients.len();
            let mut client = clients[index].clone();
            let tx = tx.clone();
            let id = ids.id("o", i);
            runtime.spawn(async move {
                let sent = Instant::now();
                let result = submit(&mut client, id, timeout).await;
                let done = Instant::now();
                // The receiver lives until every sender is gone.
                let _ = tx.send(Sample {
                    intended,
                    sent,
                    done,
                    result,
                });
            });
        });
    });

    let mut latency = histogram()?;
    let mut send_lag = histogram()?;
    let mut last_done = start;
    while let Some(sample) = rx.recv().await {
        record(
            &mut send_lag,
            sample.sent.saturating_duration_since(sample.intended),
        );
        last_done = last_done.max(sample.done);
        match sample.result {
            Ok(()) => record(
                &mut latency,
                sample.done.saturating_duration_since(sample.intended),
            ),
            Err(e) => errors.note(&e, None),
        }
    }
    pacer.await.context("the open-loop pacer failed")?;
    Ok(Run {
        latency,
        send_lag: Some(send_lag),
        errors,
        elapsed: last_done.saturating_duration_since(start),
    })
}

#[cfg(test)]
mod tests;
