//! The marketdata metrics, one struct registered once and shared by the feeds, the hub
//! and the streams.
//!
//! Hot-path counters are resolved to their label values once here, so a publish or a
//! send touches atomics only (no label hashing, no lock).

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Why events left a subscriber's queue without being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// DROP_OLDEST (or CONFLATE with nothing left to conflate): the queue was full.
    QueueFull,
    /// Superseded by a resync snapshot after an earlier drop.
    Resync,
    /// The stream was disconnected (DISCONNECT policy) with these still queued.
    Disconnected,
}

/// The metrics.
#[derive(Clone)]
pub struct Metrics {
    published_top: IntCounter,
    published_trade: IntCounter,
    published_snapshot: IntCounter,
    published_delta: IntCounter,
    published_status: IntCounter,
    /// Open subscriber streams.
    pub subscribers: IntGauge,
    /// (stream, instrument) subscriptions.
    pub subscriptions: IntGauge,
    /// Events waiting in subscriber queues, all subscribers together.
    pub queued: IntGauge,
    /// Depth of a subscriber's queue when it sends, in events.
    pub queue_depth: Histogram,
    dropped_full: IntCounter,
    dropped_resync: IntCounter,
    dropped_disconnected: IntCounter,
    /// Top-of-book events replaced by a newer one for the same symbol (CONFLATE).
    pub conflated: IntCounter,
    /// Streams ended with RESOURCE_EXHAUSTED (DISCONNECT).
    pub slow_disconnects: IntCounter,
    /// Subscriber resyncs (RESYNCING, snapshot, status) after dropped depth or status.
    pub subscriber_resyncs: IntCounter,
    /// Upstream (re)connections after a loss, by venue.
    pub upstream_reconnects: IntCounterVec,
    /// Sequence gaps seen upstream, by venue.
    pub upstream_gaps: IntCounterVec,
    /// Instruments in each feed status, by venue.
    pub instrument_status: IntGaugeVec,
    /// Time from the hub receiving an event to handing it to the stream, seconds; one
    /// observation per sent batch, of its oldest event.
    pub feed_to_send: Histogram,
    /// Events per response message sent to a subscriber.
    pub batch_events: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    ///
    /// # Panics
    /// Never for a fresh registry: the definitions are static and valid. A second
    /// registration in the same registry keeps the first (the error is ignored).
    pub fn register(registry: &Registry) -> Self {
        #[allow(clippy::expect_used)]
        let counter_vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("static metric")
        };
        #[allow(clippy::expect_used)]
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("static metric");
        #[allow(clippy::expect_used)]
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("static metric");

        let published = counter_vec(
            "marketdata_events_published_total",
            "Events published by the feeds, by kind",
            "kind",
        );
        let dropped = counter_vec(
            "marketdata_dropped_events_total",
            "Events removed from a subscriber queue without being sent, by reason",
            "reason",
        );
        let conflated = counter_vec(
            "marketdata_conflated_events_total",
            "Top-of-book events replaced by a newer one for the same symbol, by reason",
            "reason",
        );
        #[allow(clippy::expect_used)]
        let queue_depth = Histogram::with_opts(
            HistogramOpts::new(
                "marketdata_subscriber_queue_depth",
                "Events queued for a subscriber when it sends",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0,
            ]),
        )
        .expect("static metric");
        #[allow(clippy::expect_used)]
        let feed_to_send = Histogram::with_opts(
            HistogramOpts::new(
                "marketdata_feed_to_send_seconds",
                "From the hub receiving an event to handing it to the subscriber's stream",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005,
                0.01, 0.025, 0.1, 1.0,
            ]),
        )
        .expect("static metric");
        #[allow(clippy::expect_used)]
        let batch_events = Histogram::with_opts(
            HistogramOpts::new(
                "marketdata_batch_events",
                "Events per response message sent to a subscriber",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("static metric");
        #[allow(clippy::expect_used)]
        let instrument_status = IntGaugeVec::new(
            Opts::new(
                "marketdata_instruments",
                "Instruments in each feed status (LIVE, STALE, RESYNCING, RECONNECTING)",
            ),
            &["venue", "status"],
        )
        .expect("static metric");

        let this = Self {
            published_top: published.with_label_values(&["top_of_book"]),
            published_trade: published.with_label_values(&["trade"]),
            published_snapshot: published.with_label_values(&["book_snapshot"]),
            published_delta: published.with_label_values(&["book_delta"]),
            published_status: published.with_label_values(&["status"]),
            subscribers: gauge("marketdata_subscribers", "Open subscriber streams"),
            subscriptions: gauge(
                "marketdata_subscriptions",
                "Subscribed (stream, instrument) pairs",
            ),
            queued: gauge(
                "marketdata_queued_events",
                "Events waiting in subscriber queues, all subscribers together",
            ),
            queue_depth,
            dropped_full: dropped.with_label_values(&["queue_full"]),
            dropped_resync: dropped.with_label_values(&["resync"]),
            dropped_disconnected: dropped.with_label_values(&["disconnected"]),
            conflated: conflated.with_label_values(&["queue_full"]),
            slow_disconnects: counter(
                "marketdata_slow_consumer_disconnects_total",
                "Streams ended with RESOURCE_EXHAUSTED because their queue was full",
            ),
            subscriber_resyncs: counter(
                "marketdata_subscriber_resyncs_total",
                "Resyncs of one subscriber's symbol after its queue dropped depth or status",
            ),
            upstream_reconnects: counter_vec(
                "marketdata_upstream_reconnects_total",
                "Upstream connection attempts after a loss, by venue",
                "venue",
            ),
            upstream_gaps: counter_vec(
                "marketdata_sequence_gaps_total",
                "Sequence gaps detected in an upstream feed, by venue",
                "venue",
            ),
            instrument_status,
            feed_to_send,
            batch_events,
        };
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(published),
            Box::new(this.subscribers.clone()),
            Box::new(this.subscriptions.clone()),
            Box::new(this.queued.clone()),
            Box::new(this.queue_depth.clone()),
            Box::new(dropped),
            Box::new(conflated),
            Box::new(this.slow_disconnects.clone()),
            Box::new(this.subscriber_resyncs.clone()),
            Box::new(this.upstream_reconnects.clone()),
            Box::new(this.upstream_gaps.clone()),
            Box::new(this.instrument_status.clone()),
            Box::new(this.feed_to_send.clone()),
            Box::new(this.batch_events.clone()),
        ];
        for c in collectors {
            // Only a duplicate name fails, which a fresh registry never has.
            let _ = registry.register(c);
        }
        this
    }

    /// Metrics registered nowhere, for tests and tools.
    pub fn unregistered() -> Self {
        Self::register(&Registry::new())
    }

    pub(crate) fn published(&self, kind: crate::hub::Kind) -> &IntCounter {
        use crate::hub::Kind;
        match kind {
            Kind::TopOfBook => &self.published_top,
            Kind::Trade => &self.published_trade,
            Kind::Snapshot => &self.published_snapshot,
            Kind::Delta => &self.published_delta,
            Kind::Status | Kind::Gap => &self.published_status,
        }
    }

    /// Counts `n` events dropped for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        match reason {
            DropReason::QueueFull => self.dropped_full.inc_by(n),
            DropReason::Resync => self.dropped_resync.inc_by(n),
            DropReason::Disconnected => self.dropped_disconnected.inc_by(n),
        }
    }
}
