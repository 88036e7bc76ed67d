//! The executor's Prometheus metrics: one set per process, created on first use and
//! registered in the admin registry by [`register`].
//!
//! Process-wide rather than passed around: the journal writer thread, the engine and the
//! price follower all record into it, and threading a handle through each constructor
//! would touch every test that builds them. Several shards in one process (tests) share
//! the series.

use std::collections::HashMap;
use std::sync::LazyLock;

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The metrics.
pub struct Metrics {
    /// Durable order state changes by the status entered, venue and reject reason.
    pub orders: IntCounterVec,
    /// Orders refused by the pre-trade risk check, by reason.
    pub risk_denials: IntCounterVec,
    /// Time of one fdatasync of a journal group commit.
    pub journal_fsync: Histogram,
    /// Records per journal group commit.
    pub journal_batch: Histogram,
    /// Records queued for the journal writer and not yet durable.
    pub journal_queue: IntGauge,
    /// Reconnections to marketdata after the price feed was lost.
    pub marketdata_reconnects: IntCounter,
    /// Open order-update streams (the gateways' subscriptions).
    pub update_subscribers: IntGauge,
    /// Durable records queued for the audit sink.
    pub audit_queue: IntGauge,
    /// Records the audit trail read back from the journal instead of its queue.
    pub audit_read_back: IntCounter,
    /// Failed writes to the audit sink (each retried from the journal).
    pub audit_write_failures: IntCounter,
    /// Finished orders held whole in memory (`shard.retain_finished_orders`).
    pub finished_orders_held: IntGauge,
    /// Client order ids of forgotten orders still refused (`shard.idempotency_window_secs`).
    pub forgotten_client_order_ids: IntGauge,
    /// The LSN of the newest snapshot written.
    pub snapshot_lsn: IntGauge,
    /// Time to bring a snapshot up to date and write it.
    pub snapshot_seconds: Histogram,
    /// Snapshots that failed to be written or to read back.
    pub snapshot_failures: IntCounter,
    /// Journal segments deleted once snapshots (and the audit trail) covered them.
    pub segments_deleted: IntCounter,
}

#[allow(clippy::expect_used)]
static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    orders: IntCounterVec::new(
        Opts::new(
            "executor_orders_total",
            "Durable order state changes, by the status entered, venue and reject reason \
             (NONE unless rejected)",
        ),
        &["status", "venue", "reason"],
    )
    .expect("static metric"),
    risk_denials: IntCounterVec::new(
        Opts::new(
            "executor_risk_denials_total",
            "Orders refused by the pre-trade risk check, by reason",
        ),
        &["reason"],
    )
    .expect("static metric"),
    journal_fsync: Histogram::with_opts(
        HistogramOpts::new(
            "executor_journal_fsync_seconds",
            "Time of one fdatasync of a journal group commit",
        )
        // Fine below a millisecond, where a healthy disk's syncs are: a median read from
        // these buckets (the dashboards', `execbridge-bench`'s) tells 130 µs from 170 µs.
        .buckets(vec![
            0.000_025, 0.000_05, 0.000_075, 0.000_1, 0.000_125, 0.000_15, 0.000_175, 0.000_2,
            0.000_25, 0.000_3, 0.000_4, 0.000_5, 0.000_75, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
            0.1, 0.25, 1.0,
        ]),
    )
    .expect("static metric"),
    journal_batch: Histogram::with_opts(
        HistogramOpts::new(
            "executor_journal_batch_records",
            "Records per journal group commit",
        )
        .buckets(vec![
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
        ]),
    )
    .expect("static metric"),
    journal_queue: IntGauge::new(
        "executor_journal_queue_records",
        "Records queued for the journal writer and not yet durable",
    )
    .expect("static metric"),
    marketdata_reconnects: IntCounter::new(
        "executor_marketdata_reconnects_total",
        "Reconnections to marketdata after the price feed was lost",
    )
    .expect("static metric"),
    update_subscribers: IntGauge::new(
        "executor_order_update_subscribers",
        "Open order-update streams (the gateways' subscriptions)",
    )
    .expect("static metric"),
    audit_queue: IntGauge::new(
        "executor_audit_queue_records",
        "Durable records queued in memory for the audit sink",
    )
    .expect("static metric"),
    audit_read_back: IntCounter::new(
        "executor_audit_read_back_records_total",
        "Records the audit trail read back from the journal because its queue was full or \
         a sink write failed",
    )
    .expect("static metric"),
    audit_write_failures: IntCounter::new(
        "executor_audit_write_failures_total",
        "Failed writes to the audit sink; each is retried from the journal",
    )
    .expect("static metric"),
    finished_orders_held: IntGauge::new(
        "executor_finished_orders_held",
        "Finished orders held whole in memory; older ones are forgotten beyond \
         shard.retain_finished_orders",
    )
    .expect("static metric"),
    forgotten_client_order_ids: IntGauge::new(
        "executor_forgotten_client_order_ids",
        "Client order ids of forgotten orders still refused, until \
         shard.idempotency_window_secs after their order finished",
    )
    .expect("static metric"),
    snapshot_lsn: IntGauge::new(
        "executor_snapshot_lsn",
        "The journal LSN of the newest snapshot written (0: none since start)",
    )
    .expect("static metric"),
    snapshot_seconds: Histogram::with_opts(
        HistogramOpts::new(
            "executor_snapshot_seconds",
            "Time to bring a snapshot up to date from the journal and write it",
        )
        .buckets(vec![
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]),
    )
    .expect("static metric"),
    snapshot_failures: IntCounter::new(
        "executor_snapshot_failures_total",
        "Snapshots that could not be written, or that did not read back at start",
    )
    .expect("static metric"),
    segments_deleted: IntCounter::new(
        "executor_journal_segments_deleted_total",
        "Journal segments deleted because snapshots and the audit trail cover them",
    )
    .expect("static metric"),
});

/// The metrics of this process.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Registers the metrics in `registry` (the admin port's).
pub fn register(registry: &Registry) {
    let m = get();
    let collectors: Vec<Box<dyn Collector>> = vec![
        Box::new(m.orders.clone()),
        Box::new(m.risk_denials.clone()),
        Box::new(m.journal_fsync.clone()),
        Box::new(m.journal_batch.clone()),
        Box::new(m.journal_queue.clone()),
        Box::new(m.marketdata_reconnects.clone()),
        Box::new(m.update_subscribers.clone()),
        Box::new(m.audit_queue.clone()),
        Box::new(m.audit_read_back.clone()),
        Box::new(m.audit_write_failures.clone()),
        Box::new(m.finished_orders_held.clone()),
        Box::new(m.forgotten_client_order_ids.clone()),
        Box::new(m.snapshot_lsn.clone()),
        Box::new(m.snapshot_seconds.clone()),
        Box::new(m.snapshot_failures.clone()),
        Box::new(m.segments_deleted.clone()),
    ];
    for c in collectors {
        // Only a duplicate name fails, which a fresh registry never has.
        let _ = registry.register(c);
    }
}

/// Counts durable order updates in `executor_orders_total`.
///
/// Keeps the counter of each label set it has met, so counting an update (the journal
/// writer counts every one) does not format and hash its labels in the registry again:
/// statuses, reasons and configured venues are few.
#[derive(Default)]
pub struct OrderCounts {
    /// By (status, reject reason): each venue's counter.
    seen: HashMap<(i32, i32), Vec<(String, IntCounter)>, foldhash::fast::RandomState>,
}

impl OrderCounts {
    /// Counts `update` (nothing for an update without its order).
    pub fn count(&mut self, update: &execbridge_api::v1::OrderUpdate) {
        let Some(order) = &update.order else {
            return;
        };
        // An unknown venue is whatever the caller typed: keep the label set bounded.
        let venue = match order.request.as_ref() {
            _ if order.reject_reason == execbridge_api::v1::RejectReason::UnknownVenue as i32 => {
                "unknown"
            }
            Some(r) => r.venue.as_str(),
            None => "",
        };
        let venues = self
            .seen
            .entry((order.status, order.reject_reason))
            .or_default();
        if let Some((_, counter)) = venues.iter().find(|(v, _)| v == venue) {
            counter.inc();
            return;
        }
        let status = execbridge_api::v1::OrderStatus::try_from(order.status)
            .map_or("UNKNOWN", |s| s.as_str_name());
        let reason = execbridge_api::v1::RejectReason::try_from(order.reject_reason)
            .map_or("UNKNOWN", |r| r.as_str_name());
        let counter = get().orders.with_label_values(&[
            strip(status, "ORDER_STATUS_"),
            venue,
            strip(reason, "REJECT_REASON_"),
        ]);
        counter.inc();
        venues.push((venue.to_owned(), counter));
    }
}

/// `name` without the proto enum prefix ("ORDER_STATUS_FILLED" -> "FILLED"); the
/// unspecified reason reads "NONE".
pub fn strip<'a>(name: &'a str, prefix: &str) -> &'a str {
    match name.strip_prefix(prefix).unwrap_or(name) {
        "UNSPECIFIED" => "NONE",
        short => short,
    }
}

/// Counts an order refused by risk.
pub fn risk_denial(reason: execbridge_domain::RejectReason) {
    let name = execbridge_api::convert::reject_reason_to_proto(reason).as_str_name();
    get()
        .risk_denials
        .with_label_values(&[strip(name, "REJECT_REASON_")])
        .inc();
}

/// Counts one open order-update stream while it lives.
pub struct Subscriber(());

impl Subscriber {
    /// Counts a stream until the value is dropped.
    pub fn open() -> Self {
        get().update_subscribers.inc();
        Self(())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        get().update_subscribers.dec();
    }
}
