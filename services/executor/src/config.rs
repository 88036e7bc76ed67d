//! Configuration of the executor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use execbridge_domain::OrderId;
use execbridge_runtime::cli::ServiceConfig;
use execbridge_runtime::config::{check_endpoint, check_range};
use execbridge_runtime::{ConfigError, LogConfig, ServerConfig, Validate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Everything the executor reads at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Listening ports and drain.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// Where prices come from.
    pub marketdata: MarketdataClientConfig,
    /// This shard.
    pub shard: ShardConfig,
    /// The paper venue.
    pub paper: PaperConfig,
    /// The durable order journal.
    pub journal: JournalConfig,
    /// Pre-trade risk defaults (changeable per account at run time).
    pub risk: RiskConfig,
    /// The audit trail.
    pub audit: AuditConfig,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(50052, 9102),
            log: LogConfig::default(),
            marketdata: MarketdataClientConfig::default(),
            shard: ShardConfig::default(),
            paper: PaperConfig::default(),
            journal: JournalConfig::default(),
            risk: RiskConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

impl ServiceConfig for ExecutorConfig {
    fn server(&self) -> &ServerConfig {
        &self.server
    }
    fn log(&self) -> &LogConfig {
        &self.log
    }
}

impl Validate for ExecutorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.log.validate()?;
        check_endpoint("marketdata.endpoint", &self.marketdata.endpoint)?;
        // The shard id prefixes order ids, so it must be valid inside one.
        OrderId::new_checked(format!("{}-1", self.shard.id))
            .map_err(|e| ConfigError::invalid("shard.id", e.to_string()))?;
        if self.shard.id.is_empty() || self.shard.id.len() > 32 {
            return Err(ConfigError::invalid(
                "shard.id",
                "must be 1 to 32 characters",
            ));
        }
        if self.shard.updates_retained == 0 {
            return Err(ConfigError::invalid(
                "shard.updates_retained",
                "must be at least 1",
            ));
        }
        check_range(
            "shard.retain_finished_orders",
            self.shard.retain_finished_orders,
            0..=100_000_000,
        )?;
        // At least a minute covers any client's retry; at most a week keeps the keys'
        // memory (about 90 bytes an order) bounded by the order rate.
        check_range(
            "shard.idempotency_window_secs",
            self.shard.idempotency_window_secs,
            60..=604_800,
        )?;
        for (key, bps) in [
            ("paper.maker_fee_bps", self.paper.maker_fee_bps),
            ("paper.taker_fee_bps", self.paper.taker_fee_bps),
        ] {
            check_range(key, bps, 0..=1000)?;
        }
        if self.journal.segment_bytes < 4096 {
            return Err(ConfigError::invalid(
                "journal.segment_bytes",
                "must be at least 4096",
            ));
        }
        if self.journal.sync_delay_us > 1_000_000 {
            return Err(ConfigError::invalid(
                "journal.sync_delay_us",
                format!(
                    "must be at most 1000000 (one second), got {}",
                    self.journal.sync_delay_us
                ),
            ));
        }
        let every = self.journal.snapshot_every_records;
        if every != 0 && !(100..=1_000_000_000).contains(&every) {
            return Err(ConfigError::invalid(
                "journal.snapshot_every_records",
                format!("must be 0 (no snapshots) or 100 to 1000000000, got {every}"),
            ));
        }
        if self.journal.max_batch == 0 {
            return Err(ConfigError::invalid(
                "journal.max_batch",
                "must be at least 1",
            ));
        }
        check_range(
            "journal.inline_commit_records",
            self.journal.inline_commit_records,
            0..=4096,
        )?;
        let f = &self.paper.faults;
        for (key, p) in [
            ("paper.faults.reject_probability", f.reject_probability),
            ("paper.faults.lost_ack_probability", f.lost_ack_probability),
            (
                "paper.faults.delayed_fill_probability",
                f.delayed_fill_probability,
            ),
            (
                "paper.faults.disconnect_probability",
                f.disconnect_probability,
            ),
        ] {
            check_range(key, p, 0.0..=1.0)?;
        }
        match self.audit.sink {
            AuditSinkKind::Postgres if self.audit.url.is_empty() => {
                return Err(ConfigError::invalid(
                    "audit.url",
                    "is required for the postgres sink",
                ));
            }
            AuditSinkKind::Questdb if self.audit.url.is_empty() => {
                return Err(ConfigError::invalid(
                    "audit.url",
                    "is required for the questdb sink (host:port of the ILP/TCP listener)",
                ));
            }
            _ => {}
        }
        if !self
            .audit
            .table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || self.audit.table.is_empty()
        {
            return Err(ConfigError::invalid(
                "audit.table",
                "must be letters, digits and underscores",
            ));
        }
        check_range(
            "audit.queue_records",
            self.audit.queue_records,
            1..=10_000_000,
        )?;
        check_range(
            "audit.flush_interval_ms",
            self.audit.flush_interval_ms,
            0..=10_000,
        )?;
        for (asset, amount) in &self.paper.initial_balances {
            if *amount < Decimal::ZERO {
                return Err(ConfigError::invalid(
                    format!("paper.initial_balances.{asset}"),
                    "must not be negative",
                ));
            }
        }
        Ok(())
    }
}

/// The marketdata service the paper venue takes its prices from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketdataClientConfig {
    /// gRPC endpoint ("http://127.0.0.1:50053").
    pub endpoint: String,
    /// The venue whose prices the paper venue uses.
    pub venue: String,
    /// Also subscribe to L2 depth (snapshots and deltas) and match against it.
    pub depth: bool,
}

impl Default for MarketdataClientConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:50053".into(),
            venue: "paper".into(),
            depth: false,
        }
    }
}

/// The durable order journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Directory of the segment files. Empty: a fresh temporary directory per process,
    /// which a restart does not find (a warning says so); set it for anything that must
    /// survive a restart (`EXECBRIDGE_EXECUTOR_JOURNAL__DIR`).
    pub dir: PathBuf,
    /// fdatasync every group commit. Turning it off is for benchmarks of the rest only.
    pub fsync: bool,
    /// A new segment file starts after this many bytes.
    pub segment_bytes: u64,
    /// Records nobody waits for (venue answers, fills) are committed at once, without
    /// waiting for `sync_delay_us`, when this many are pending.
    pub max_batch: usize,
    /// Longest a record nobody waits for (a venue's answer, a fill) stays written but not
    /// yet fdatasync'd, in microseconds; any commit someone waits for syncs it sooner.
    pub sync_delay_us: u64,
    /// A call waiting for its records to be durable writes and fdatasyncs the pending
    /// group on its own thread when no commit is under way and the group holds at most
    /// this many records: at low load an acknowledgement then makes no hand-off to the
    /// writer thread and back (two thread wake-ups, tens of microseconds on a VM). Larger
    /// groups (batches, bursts) go to the writer thread, so no request thread is held for
    /// long, and so does every group when `server.worker_threads` is 1 (the one worker
    /// must not wait for a disk). 0: the writer thread commits every group.
    pub inline_commit_records: usize,
    /// A snapshot of the engine's state is written once this many journal records are
    /// durable after the previous one; segments the snapshots cover are then deleted, so
    /// the journal's size and the time a start takes stay bounded. 0 turns snapshots off
    /// (the journal then keeps everything). See `snapshot` in the crate docs.
    pub snapshot_every_records: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            fsync: true,
            segment_bytes: 64 * 1024 * 1024,
            max_batch: 16_384,
            sync_delay_us: 1000,
            inline_commit_records: 4,
            snapshot_every_records: 1_000_000,
        }
    }
}

/// Pre-trade risk defaults: every account starts with these until an admin changes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// Limits of PAPER orders (and of LIVE orders, which pass both sets).
    pub paper: execbridge_domain::RiskLimits,
    /// The stricter limits LIVE orders pass in addition.
    pub live: LiveLimits,
}

/// The LIVE limits, stricter by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LiveLimits(pub execbridge_domain::RiskLimits);

impl Default for LiveLimits {
    fn default() -> Self {
        Self(execbridge_domain::RiskLimits {
            max_order_quantity: None,
            max_order_notional: Some(Decimal::from(100_000)),
            max_open_orders: Some(100),
            max_position: None,
            max_gross_exposure: Some(Decimal::from(1_000_000)),
            price_band_bps: Some(500),
            max_orders_per_second: Some(20),
            max_daily_loss: Some(Decimal::from(10_000)),
        })
    }
}

/// Where the audit trail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSinkKind {
    /// No audit trail.
    None,
    /// An SQLite file (embedded; the default).
    Sqlite,
    /// A PostgreSQL table (clusters).
    Postgres,
    /// QuestDB over the InfluxDB line protocol (TCP), write-only.
    Questdb,
}

/// The audit trail: every journaled record, hash-chained, in a sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Which sink.
    pub sink: AuditSinkKind,
    /// SQLite file; empty: `audit.sqlite` in the journal directory.
    pub path: PathBuf,
    /// PostgreSQL connection string, or the QuestDB `host:port`.
    pub url: String,
    /// Table name.
    pub table: String,
    /// Most durable records waiting for the sink in memory. Past it the trail reads what
    /// it missed back from the journal once the sink keeps up again: memory stays bounded
    /// and acknowledgements never wait for the sink.
    pub queue_records: usize,
    /// How long the trail gathers durable records before it writes them to the sink,
    /// milliseconds (0: as soon as they come). One transaction per interval instead of
    /// one per journal commit keeps the sink's writes, and SQLite's checkpoint fsyncs,
    /// from competing with the journal's fdatasync for the disk; a longer interval makes
    /// fewer, larger writes, each a burst of work on the trail's thread.
    pub flush_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sink: AuditSinkKind::Sqlite,
            path: PathBuf::new(),
            url: String::new(),
            table: "execbridge_audit".into(),
            queue_records: 200_000,
            flush_interval_ms: 10,
        }
    }
}

/// Identity and retention of this shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardConfig {
    /// Shard id: prefixes order ids and names the update sequence.
    pub id: String,
    /// Order updates kept in memory, of those published since the start, for
    /// subscribers that resume (older ones, and those a start replayed, are read back
    /// from the journal).
    pub updates_retained: usize,
    /// Cancel every working order when the executor shuts down.
    pub cancel_on_shutdown: bool,
    /// How often orders with an unconfirmed venue outcome are reconciled, milliseconds.
    pub reconcile_interval_ms: u64,
    /// Finished orders kept whole in memory (queries, trade history, repeated submits);
    /// older ones are forgotten, oldest finished first. Working orders are always kept.
    /// The audit trail keeps everything (the journal, what its snapshots do not cover).
    pub retain_finished_orders: usize,
    /// How long after an order finished its `client_order_id` is refused even once the
    /// order is forgotten, seconds: a retry within this window never reaches the venue
    /// twice. Costs about 90 bytes per order finished within the window (measured by `make bench`).
    pub idempotency_window_secs: u64,
}

impl ShardConfig {
    /// The engine's [`crate::engine::Retention`].
    pub fn retention(&self) -> crate::engine::Retention {
        crate::engine::Retention {
            finished_orders: self.retain_finished_orders,
            idempotency_window: std::time::Duration::from_secs(self.idempotency_window_secs),
        }
    }
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            id: "s0".into(),
            updates_retained: 100_000,
            cancel_on_shutdown: false,
            reconcile_interval_ms: 500,
            retain_finished_orders: 100_000,
            idempotency_window_secs: 3_600,
        }
    }
}

/// The paper venue's economics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaperConfig {
    /// Fee on fills that rested, in basis points of notional.
    pub maker_fee_bps: u32,
    /// Fee on fills that crossed, in basis points of notional.
    pub taker_fee_bps: u32,
    /// Balances every new account starts with (asset -> decimal string).
    #[serde(with = "decimal_map")]
    pub initial_balances: BTreeMap<String, Decimal>,
    /// Seed of the venue's randomness (latency jitter, faults): same seed, same choices.
    pub seed: u64,
    /// Simulated latency.
    pub latency: LatencyConfig,
    /// How the top of book becomes depth.
    pub depth: crate::paper::DepthConfig,
    /// Fault injection.
    pub faults: FaultConfig,
    /// The venue's own record of the orders it received and what it did (the stand-in for
    /// the exchange's side, used by reconciliation). Empty: `paper-venue.jsonl` in the
    /// journal directory.
    pub ledger_path: PathBuf,
    /// Once the ledger has grown by this many bytes since it was last compacted (0:
    /// never), it is rewritten to the facts of the orders the executor holds open, at
    /// start or while running (when the journal has caught up), and the old file is kept
    /// beside it as `<ledger>.<n>`: a start then reads those facts and what was written
    /// since, not every order the venue ever took.
    pub ledger_compact_bytes: u64,
    /// How many of the ledger's history files (`<ledger>.<n>`) a compaction keeps, the
    /// newest; it deletes the older ones (0: keeps all of them). The venue's files then
    /// take at most about this many times `ledger_compact_bytes` of disk, plus the ledger.
    pub ledger_history_files: usize,
}

/// Simulated venue latency, microseconds; each draw adds a uniform jitter of 0 to
/// `jitter_us`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    /// From sending an order to its acknowledgement or rejection.
    pub ack_us: u64,
    /// From the acknowledgement to the arrival match (fills of a marketable order).
    pub fill_us: u64,
    /// From a cancel request to its confirmation.
    pub cancel_us: u64,
    /// Uniform jitter added to each latency.
    pub jitter_us: u64,
}

/// Faults the paper venue injects, each with a probability per order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// The venue rejects the order.
    pub reject_probability: f64,
    /// The venue accepts the order but the acknowledgement is lost: the order turns
    /// UNKNOWN until reconciliation asks the venue.
    pub lost_ack_probability: f64,
    /// The arrival match is delayed by `delayed_fill_us`.
    pub delayed_fill_probability: f64,
    /// The extra delay of a delayed fill.
    pub delayed_fill_us: u64,
    /// The venue connection drops: the order never reaches the venue and is rejected
    /// VENUE_UNAVAILABLE, and the venue stays unreachable for `disconnect_us`.
    pub disconnect_probability: f64,
    /// How long a disconnect lasts.
    pub disconnect_us: u64,
}

impl Default for PaperConfig {
    fn default() -> Self {
        Self {
            maker_fee_bps: 2,
            taker_fee_bps: 10,
            initial_balances: BTreeMap::from([("USDT".to_owned(), Decimal::from(1_000_000))]),
            seed: 42,
            latency: LatencyConfig::default(),
            depth: crate::paper::DepthConfig::default(),
            faults: FaultConfig::default(),
            ledger_path: PathBuf::new(),
            ledger_compact_bytes: 64 << 20,
            ledger_history_files: 8,
        }
    }
}

/// Decimal values as strings in a map (TOML has no decimal type).
mod decimal_map {
    use std::collections::BTreeMap;
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Decimal>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, v.to_string())))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Decimal>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                Decimal::from_str(&v)
                    .map(|d| (k, d))
                    .map_err(|e| serde::de::Error::custom(format!("{v:?} is not a decimal: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use execbridge_runtime::Validate as _;

    use super::ExecutorConfig;

    #[test]
    fn the_journal_settings_are_checked_and_the_bad_key_is_named() {
        assert!(ExecutorConfig::default().validate().is_ok());
        let mut config = ExecutorConfig::default();
        config.journal.inline_commit_records = 0;
        assert!(
            config.validate().is_ok(),
            "0 hands every group to the writer"
        );
        config.journal.inline_commit_records = 5000;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("journal.inline_commit_records") && err.contains("5000"),
            "{err}"
        );
        let mut config = ExecutorConfig::default();
        config.journal.max_batch = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("journal.max_batch"), "{err}");
    }
}
