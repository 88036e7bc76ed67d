//! The audit trail: every journaled record, once durable, written to a pluggable sink as a
//! hash chain, so that removing, reordering or editing an entry is detectable.
//!
//! Each entry's `hash` is SHA-256 over the previous entry's hash and the entry's canonical
//! text (`lsn|sequence|time|kind|account|order_id|client_order_id|payload`); the first
//! entry chains from 64 zeros. [`verify`] walks a chain and names the first entry that does
//! not fit.
//!
//! Sinks: an SQLite file (the default, embedded), a PostgreSQL table (clusters) and QuestDB
//! over its line protocol (feature `questdb`, write-only). The journal is the source of
//! truth and the audit trail a copy: a sink is written on its own thread so a slow sink
//! never delays an acknowledgement, and at start the trail catches up from the journal
//! with whatever a crash kept from it.
//!
//! The same catch-up keeps the running trail complete with bounded memory: at most
//! `audit.queue_records` durable records wait for the sink; what does not fit, and what a
//! failed sink write did not take, is read back from the journal once the sink keeps up
//! again (after a failure, following a pause that doubles up to 10 s).
//!
//! The trail writes what it gathered over `audit.flush_interval_ms` in one transaction.
//! At 1,000 orders/s SQLite otherwise commits about 1,000 small transactions a second;
//! each rewrites the table's last page in the WAL, and the frequent checkpoints that
//! follow fsync the WAL and the file, on the disk the journal's fdatasync is waiting for.
//!
//! What the trail reports as written, and so what journal segments may be deleted behind
//! (see [`crate::snapshot`]), is on the sink's disk: SQLite commits with
//! `synchronous=FULL` and PostgreSQL sessions with `synchronous_commit = on`. QuestDB's
//! line protocol over TCP acknowledges nothing: with that sink, written means sent, and
//! rows QuestDB loses are a gap the journal may no longer fill.

mod postgres;
#[cfg(feature = "questdb")]
mod questdb;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use execbridge_api::v1;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::{AuditSinkKind, ExecutorConfig};
use crate::journal::{self, Entry, Payload};

pub use self::postgres::PostgresSink;
#[cfg(feature = "questdb")]
pub use self::questdb::QuestdbSink;
pub use self::sqlite::SqliteSink;

/// The hash the first entry chains from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why the audit trail failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The sink failed.
    #[error("audit sink {sink}: {message}")]
    Sink {
        /// Which sink.
        sink: &'static str,
        /// What failed.
        message: String,
    },
    /// The journal could not be read for the catch-up.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// The sink cannot be read back (QuestDB is write-only here).
    #[error("the {0} sink cannot be verified from here")]
    NotReadable(&'static str),
}

impl AuditError {
    pub(crate) fn sink(sink: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Sink {
            sink,
            message: e.to_string(),
        }
    }
}

/// One entry of the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The journal record's LSN: strictly increasing, without gaps.
    pub lsn: u64,
    /// The order update sequence (0 for admin changes).
    pub sequence: u64,
    /// Unix nanoseconds.
    pub time_nanos: i64,
    /// What happened ("ORDER_FILLED", "ADMIN_SET_RISK_LIMITS").
    pub kind: String,
    /// The account.
    pub account: String,
    /// The order, for order events.
    pub order_id: String,
    /// The caller's order id, for order events.
    pub client_order_id: String,
    /// The details, JSON.
    pub payload: String,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry must have after `prev_hash`.
    pub fn expected_hash(&self, prev_hash: &str) -> String {
        use std::fmt::Write as _;
        let mut h = HashText(Sha256::new());
        h.0.update(prev_hash.as_bytes());
        h.0.update(b"\n");
        // Hashed as it is formatted, without building the text.
        let _ = write!(
            h,
            "{}|{}|{}|{}|{}|{}|{}|{}",
            self.lsn,
            self.sequence,
            self.time_nanos,
            self.kind,
            self.account,
            self.order_id,
            self.client_order_id,
            self.payload
        );
        // Into a stack buffer: `hex::encode` builds its string a char at a time, which
        // was about 6% of the audit thread's work.
        let mut text = [0u8; 64];
        match hex::encode_to_slice(h.0.finalize(), &mut text) {
            Ok(()) => std::str::from_utf8(&text).unwrap_or_default().to_owned(),
            Err(_) => String::new(),
        }
    }
}

/// Feeds formatted text straight into a hash.
struct HashText(Sha256);

impl std::fmt::Write for HashText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// The details of an order event, as the trail stores them (JSON).
#[derive(serde::Serialize)]
struct OrderPayload<'a> {
    status: &'a str,
    symbol: &'a str,
    venue: &'a str,
    side: i32,
    r#type: i32,
    quantity: &'a str,
    price: &'a str,
    filled_quantity: &'a str,
    average_fill_price: &'a str,
    venue_order_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reject_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fill: Option<FillPayload<'a>>,
}

#[derive(serde::Serialize)]
struct FillPayload<'a> {
    trade_id: &'a str,
    price: &'a str,
    quantity: &'a str,
    fee: &'a str,
    fee_asset: &'a str,
    liquidity: i32,
}

/// Builds the unchained entry of a journal record.
pub fn entry_of(e: &Entry) -> AuditEntry {
    let time_nanos = e.time.seconds * 1_000_000_000 + i64::from(e.time.nanos);
    let (sequence, kind, account, order_id, client_order_id, payload) = match &e.payload {
        Payload::Update(u) => {
            let default_order = v1::Order::default();
            let default_request = v1::OrderRequest::default();
            let order = u.order.as_ref().unwrap_or(&default_order);
            let request = order.request.as_ref().unwrap_or(&default_request);
            let kind = v1::OrderEventType::try_from(u.event).map_or_else(
                |_| format!("ORDER_{}", u.event),
                |k| {
                    let name = k.as_str_name();
                    format!(
                        "ORDER_{}",
                        name.strip_prefix("ORDER_EVENT_TYPE_").unwrap_or(name)
                    )
                },
            );
            let status = v1::OrderStatus::try_from(order.status)
                .map(|s| {
                    let name = s.as_str_name();
                    name.strip_prefix("ORDER_STATUS_").unwrap_or(name)
                })
                .unwrap_or_default();
            let rejected = order.reject_reason != 0 || !order.reject_message.is_empty();
            let payload = OrderPayload {
                status,
                symbol: &request.symbol,
                venue: &request.venue,
                side: request.side,
                r#type: request.r#type,
                quantity: &request.quantity,
                price: &request.price,
                filled_quantity: &order.filled_quantity,
                average_fill_price: &order.average_fill_price,
                venue_order_id: &order.venue_order_id,
                reject_reason: rejected.then(|| {
                    v1::RejectReason::try_from(order.reject_reason)
                        .map(|r| r.as_str_name())
                        .unwrap_or_default()
                }),
                message: rejected.then_some(order.reject_message.as_str()),
                fill: u.fill.as_ref().map(|fill| FillPayload {
                    trade_id: &fill.trade_id,
                    price: &fill.price,
                    quantity: &fill.quantity,
                    fee: &fill.fee,
                    fee_asset: &fill.fee_asset,
                    liquidity: fill.liquidity,
                }),
            };
            (
                u.sequence,
                kind,
                request.account.clone(),
                order.order_id.clone(),
                request.client_order_id.clone(),
                serde_json::to_string(&payload).unwrap_or_default(),
            )
        }
        Payload::Admin(a) => {
            let risk = a.risk.clone().unwrap_or_default();
            let payload = json!({
                "principal": a.principal,
                "correlation_id": a.correlation_id,
                "reason": a.reason,
                "state": risk.state,
                "symbol_states": risk.symbol_states.iter().map(|s| (s.symbol.clone(), s.state)).collect::<Vec<_>>(),
                "paper_limits": format!("{:?}", risk.paper_limits.unwrap_or_default()),
                "live_limits": format!("{:?}", risk.live_limits.unwrap_or_default()),
            });
            (
                0,
                format!("ADMIN_{}", a.action),
                risk.account,
                String::new(),
                String::new(),
                payload.to_string(),
            )
        }
    };
    AuditEntry {
        lsn: e.lsn,
        sequence,
        time_nanos,
        kind,
        account,
        order_id,
        client_order_id,
        payload,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// Where the trail is written.
pub trait AuditSink: Send {
    /// The last entry's LSN and hash, `None` for an empty trail.
    ///
    /// # Errors
    /// When the sink cannot be read.
    fn last(&mut self) -> Result<Option<(u64, String)>, AuditError>;
    /// Appends entries (already chained, in LSN order) atomically.
    ///
    /// # Errors
    /// When the sink refuses.
    fn write(&mut self, entries: &[AuditEntry]) -> Result<(), AuditError>;
    /// Every entry in LSN order, for verification.
    ///
    /// # Errors
    /// When the sink cannot be read back.
    fn read_all(&mut self) -> Result<Vec<AuditEntry>, AuditError>;
}

/// Chains entries after (`lsn`, `hash`), skipping those already written.
struct Chain {
    last_lsn: u64,
    last_hash: String,
}

impl Chain {
    /// The end of the chain `sink` holds (the genesis for an empty trail).
    fn end_of(sink: &mut dyn AuditSink) -> Result<Self, AuditError> {
        let (last_lsn, last_hash) = sink.last()?.unwrap_or((0, GENESIS.to_owned()));
        Ok(Self {
            last_lsn,
            last_hash,
        })
    }

    fn link(&mut self, entries: &[Entry]) -> Vec<AuditEntry> {
        let mut out = Vec::with_capacity(entries.len());
        let after = self.last_lsn;
        if after == 0
            && let Some(first) = entries.first()
            && first.lsn > 1
        {
            tracing::warn!(
                first_lsn = first.lsn,
                "the audit trail starts at lsn {}: the sink is new and the journal's older records were deleted behind a snapshot; `verify` reports the chain from there",
                first.lsn
            );
        }
        for e in entries.iter().filter(|e| e.lsn > after) {
            let mut entry = entry_of(e);
            entry.prev_hash = std::mem::take(&mut self.last_hash);
            entry.hash = entry.expected_hash(&entry.prev_hash);
            self.last_hash.clone_from(&entry.hash);
            self.last_lsn = entry.lsn;
            out.push(entry);
        }
        out
    }
}

/// Hands durable records to the audit thread without ever blocking the journal writer.
///
/// At most `audit.queue_records` records wait in memory. A group that does not fit is left
/// out, and the feed notes the newest LSN it left out; the thread reads what it missed
/// back from the journal (the source of truth) once it has written what was queued. A
/// slow sink therefore costs journal reads, never memory without bound, and never a
/// record.
#[derive(Clone)]
pub struct AuditFeed {
    tx: mpsc::Sender<Vec<Entry>>,
    shared: Arc<FeedState>,
}

struct FeedState {
    capacity: usize,
    /// Records in the channel.
    queued: AtomicUsize,
    /// The newest LSN left out of the queue (0: none yet).
    left_out: AtomicU64,
    /// The newest LSN the sink holds.
    written: Arc<AtomicU64>,
}

impl AuditFeed {
    /// Queues a group of durable records, or leaves it for the journal when the queue is
    /// full. Called by the journal writer only, so the room checked is the room used.
    pub fn send(&self, entries: &[Entry]) {
        let Some(last) = entries.last() else {
            return;
        };
        let s = &self.shared;
        let metrics = crate::metrics::get();
        if s.queued.load(Ordering::Acquire) + entries.len() > s.capacity {
            s.left_out.fetch_max(last.lsn, Ordering::AcqRel);
            return;
        }
        s.queued.fetch_add(entries.len(), Ordering::AcqRel);
        metrics.audit_queue.add(entries.len() as i64);
        if self.tx.send(entries.to_vec()).is_err() {
            tracing::warn!("audit trail stopped; records are only in the journal");
        }
    }
}

/// The running audit trail.
pub struct Audit {
    feed: AuditFeed,
    thread: Option<thread::JoinHandle<()>>,
}

/// Opens the configured sink.
///
/// # Errors
/// [`AuditError`] when it cannot be opened.
pub fn open_sink(
    config: &ExecutorConfig,
    journal_dir: &Path,
) -> Result<Option<Box<dyn AuditSink>>, AuditError> {
    let a = &config.audit;
    Ok(match a.sink {
        AuditSinkKind::None => None,
        AuditSinkKind::Sqlite => {
            let path = if a.path.as_os_str().is_empty() {
                journal_dir.join("audit.sqlite")
            } else {
                a.path.clone()
            };
            Some(Box::new(SqliteSink::open(&path, &a.table)?))
        }
        AuditSinkKind::Postgres => Some(Box::new(PostgresSink::connect(&a.url, &a.table)?)),
        #[cfg(feature = "questdb")]
        AuditSinkKind::Questdb => Some(Box::new(QuestdbSink::connect(
            &a.url,
            &a.table,
            &journal_dir.join("audit-questdb.state"),
        )?)),
        #[cfg(not(feature = "questdb"))]
        AuditSinkKind::Questdb => {
            return Err(AuditError::sink(
                "questdb",
                "this build has no QuestDB support (cargo feature `questdb`)",
            ));
        }
    })
}

/// The nice value of the background threads (audit, snapshots): above the order path's 0.
const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's priority, so that on a busy machine the trail's JSON,
/// hashing and sink writes (and the snapshot thread's replay) wait for the order path, not
/// the other way round. Both may lag: the trail's queue is bounded, and what does not fit
/// is read back from the journal later; a snapshot is only taken later.
pub(crate) fn lower_priority(thread: &'static str) {
    // On Linux, setpriority with a thread id sets that thread's nice value alone.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
        tracing::debug!(error = %e, thread, "the thread keeps the normal priority");
    }
}

/// Records read back from the journal per sink write.
const READ_BACK_BATCH: usize = 10_000;
/// The first pause after a failed sink write; it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(10);

/// The sink, the end of its chain, and the journal to read missing records from.
struct Trail {
    sink: Box<dyn AuditSink>,
    chain: Chain,
    journal_dir: PathBuf,
    /// The chain's end may not be the sink's (a write failed): read it again first.
    stale: bool,
}

impl Trail {
    /// A trail whose chain goes on from what `sink` holds.
    fn open(mut sink: Box<dyn AuditSink>, journal_dir: &Path) -> Result<Self, AuditError> {
        Ok(Self {
            chain: Chain::end_of(sink.as_mut())?,
            sink,
            journal_dir: journal_dir.to_owned(),
            stale: false,
        })
    }

    /// Takes the chain's end from the sink again.
    fn resync(&mut self) -> Result<(), AuditError> {
        self.chain = Chain::end_of(self.sink.as_mut())?;
        self.stale = false;
        Ok(())
    }

    /// Writes `group` (consecutive durable records), reading whatever is missing before
    /// it back from the journal first.
    fn write(&mut self, group: &[Entry]) -> Result<(), AuditError> {
        if self.stale {
            self.resync()?;
        }
        if let Some(first) = group.first()
            && first.lsn > self.chain.last_lsn + 1
        {
            self.read_back(first.lsn - 1)?;
        }
        self.append(group).map(drop)
    }

    /// Chains the records after the chain's end and writes them; returns how many were
    /// new. A failed write leaves the chain's end to be read from the sink again.
    fn append(&mut self, records: &[Entry]) -> Result<usize, AuditError> {
        let linked = self.chain.link(records);
        if !linked.is_empty() {
            self.sink
                .write(&linked)
                .inspect_err(|_| self.stale = true)?;
        }
        Ok(linked.len())
    }

    /// Writes the journal's records after the chain's end up to `to`.
    fn read_back(&mut self, to: u64) -> Result<(), AuditError> {
        if self.stale {
            self.resync()?;
        }
        let from = self.chain.last_lsn + 1;
        if from > to {
            return Ok(());
        }
        let mut batch = Vec::new();
        let mut failed = None;
        let dir = self.journal_dir.clone();
        // A chain that holds entries goes on from its end or not at all: segments are
        // deleted only once the trail has their records, so a later first record is
        // damage to report, never a gap to chain over. (An empty sink starts at the
        // oldest segment kept; see `Chain::link`.)
        let mut expect = (self.chain.last_lsn > 0).then_some(from);
        let read = journal::replay_from(&dir, from, |record| {
            if let Some(lsn) = expect.take()
                && record.lsn != lsn
            {
                return Err(journal::JournalError::Io {
                    path: dir.display().to_string(),
                    message: format!(
                        "the audit trail ends at lsn {}, the journal's records start at {}",
                        lsn - 1,
                        record.lsn
                    ),
                });
            }
            if record.lsn > to {
                return Ok(());
            }
            if let Some(entry) = Entry::from_record(record) {
                batch.push(entry);
            }
            if batch.len() >= READ_BACK_BATCH {
                if let Err(e) = self.write_read_back(&batch) {
                    failed = Some(e);
                    return Err(journal::JournalError::Failed("audit sink write".into()));
                }
                batch.clear();
            }
            Ok(())
        });
        if let Some(e) = failed {
            return Err(e);
        }
        read?;
        self.write_read_back(&batch)?;
        if self.chain.last_lsn < to {
            return Err(AuditError::sink(
                "journal",
                format!(
                    "the audit trail needs records up to lsn {to}, the journal ends at {}",
                    self.chain.last_lsn
                ),
            ));
        }
        Ok(())
    }

    fn write_read_back(&mut self, batch: &[Entry]) -> Result<(), AuditError> {
        let written = self.append(batch)?;
        crate::metrics::get().audit_read_back.inc_by(written as u64);
        Ok(())
    }

    /// The thread: writes queued groups, reads back what was left out of the queue, and
    /// after a failed write pauses, then goes on from what the sink holds (the journal
    /// has the rest).
    fn run(mut self, rx: &mpsc::Receiver<Vec<Entry>>, feed: &FeedState, flush_interval: Duration) {
        let metrics = crate::metrics::get();
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            // Behind (left-out records or a failed write): retry even if nothing comes.
            let behind = self.stale || feed.left_out.load(Ordering::Acquire) > self.chain.last_lsn;
            let first = if behind {
                match rx.recv_timeout(pause) {
                    Ok(group) => Some(group),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(group) => Some(group),
                    Err(_) => break,
                }
            };
            let mut group = first.unwrap_or_default();
            let drained = gather(rx, &mut group, flush_interval);
            feed.queued.fetch_sub(group.len(), Ordering::AcqRel);
            metrics.audit_queue.sub(group.len() as i64);
            let result = self.write(&group).and_then(|()| {
                // Everything queued is written: now what did not fit in the queue.
                let left_out = feed.left_out.load(Ordering::Acquire);
                if drained && left_out > self.chain.last_lsn {
                    self.read_back(left_out)
                } else {
                    Ok(())
                }
            });
            match result {
                Ok(()) => {
                    pause = FIRST_RETRY_PAUSE;
                    feed.written.store(self.chain.last_lsn, Ordering::Release);
                }
                Err(e) => {
                    metrics.audit_write_failures.inc();
                    tracing::error!(error = %e, retry_in = ?pause, "audit trail write failed; it goes on from the journal after a pause");
                    // The group is in the journal: the next attempt reads it back.
                    if let Some(last) = group.last() {
                        feed.left_out.fetch_max(last.lsn, Ordering::AcqRel);
                    }
                    thread::sleep(pause);
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
        // Closing (the journal has stopped): whatever was left out, from the journal.
        let left_out = feed.left_out.load(Ordering::Acquire);
        if let Err(e) = self.read_back(left_out) {
            tracing::error!(error = %e, "audit trail incomplete at shutdown; the next start catches it up from the journal");
        }
    }
}

/// A group past this many records is written without waiting for more.
const MAX_WRITE_RECORDS: usize = 50_000;

/// Adds to `group` what `rx` brings until `flush_interval` after now (at once when the
/// group is empty or the interval is 0), so a busy trail writes one transaction per
/// interval, not one per journal commit. True when `rx` had nothing more to give; false
/// when the group went past [`MAX_WRITE_RECORDS`] first.
///
/// The thread sleeps through the interval and then takes what came, rather than waiting
/// on the channel: a sender only wakes a receiver blocked on it, so a journal commit that
/// feeds the trail does not pay a wake-up of this thread (a futex call, and a context
/// switch on a busy machine) on its way to releasing its waiters.
fn gather(
    rx: &mpsc::Receiver<Vec<Entry>>,
    group: &mut Vec<Entry>,
    flush_interval: Duration,
) -> bool {
    if !group.is_empty() && !flush_interval.is_zero() {
        thread::sleep(flush_interval);
    }
    while group.len() <= MAX_WRITE_RECORDS {
        match rx.try_recv() {
            Ok(more) => group.extend(more),
            Err(_) => return true,
        }
    }
    false
}

impl Audit {
    /// Opens the sink, catches it up from the journal in `journal_dir` (up to `last_lsn`)
    /// and starts its thread, which keeps at most `audit.queue_records` records in memory.
    /// `None` when auditing is off.
    ///
    /// # Errors
    /// [`AuditError`] when the sink cannot be opened or caught up.
    pub fn start(
        config: &ExecutorConfig,
        journal_dir: &Path,
        last_lsn: u64,
    ) -> Result<Option<Self>, AuditError> {
        let Some(sink) = open_sink(config, journal_dir)? else {
            return Ok(None);
        };
        Self::with_sink(
            sink,
            journal_dir,
            last_lsn,
            config.audit.queue_records,
            Duration::from_millis(config.audit.flush_interval_ms),
        )
        .map(Some)
    }

    /// As [`Audit::start`] with a given sink, queue size and flush interval.
    ///
    /// # Errors
    /// [`AuditError`] when the sink cannot be read or caught up.
    pub fn with_sink(
        sink: Box<dyn AuditSink>,
        journal_dir: &Path,
        last_lsn: u64,
        queue_records: usize,
        flush_interval: Duration,
    ) -> Result<Self, AuditError> {
        let mut trail = Trail::open(sink, journal_dir)?;
        let behind = trail.chain.last_lsn;
        if behind < last_lsn {
            trail.read_back(last_lsn)?;
            tracing::info!(
                from = behind,
                to = last_lsn,
                "audit trail caught up from the journal"
            );
        }
        let (tx, rx) = mpsc::channel::<Vec<Entry>>();
        let shared = Arc::new(FeedState {
            capacity: queue_records.max(1),
            queued: AtomicUsize::new(0),
            left_out: AtomicU64::new(0),
            written: Arc::new(AtomicU64::new(trail.chain.last_lsn)),
        });
        let state = shared.clone();
        let thread = thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                lower_priority("audit");
                trail.run(&rx, &state, flush_interval);
            })
            .map_err(|e| AuditError::sink("thread", e))?;
        Ok(Self {
            feed: AuditFeed { tx, shared },
            thread: Some(thread),
        })
    }

    /// The newest LSN the sink holds, as the trail's thread moves it on: the journal keeps
    /// the records after it (see [`crate::snapshot`]).
    pub fn written(&self) -> Arc<AtomicU64> {
        self.feed.shared.written.clone()
    }

    /// A feed for the journal writer.
    pub fn feed(&self) -> AuditFeed {
        self.feed.clone()
    }

    /// Writes what is queued (and what was left out of the queue) and stops. The feed held
    /// by the journal writer must be gone (the journal closed) for this to return.
    pub fn close(mut self) {
        drop(self.feed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Entries checked.
    pub entries: u64,
    /// The LSN the chain starts at (`None` for an empty trail). Above 1 when the sink
    /// began after the journal's older records were deleted behind a snapshot: the chain
    /// is whole from there, and what came before is not in this trail.
    pub first_lsn: Option<u64>,
    /// The first entry that does not fit, and why.
    pub first_bad: Option<(u64, String)>,
}

/// Checks a chain: LSNs without gaps, each `prev_hash` the previous `hash`, each `hash`
/// recomputed. Stops at the first bad entry.
pub fn verify_entries(entries: &[AuditEntry]) -> Verdict {
    let mut prev_hash = GENESIS.to_owned();
    let mut prev_lsn: Option<u64> = None;
    for (i, e) in entries.iter().enumerate() {
        let bad = |why: String| Verdict {
            entries: i as u64,
            first_lsn: entries.first().map(|e| e.lsn),
            first_bad: Some((e.lsn, why)),
        };
        if let Some(p) = prev_lsn
            && e.lsn != p + 1
        {
            return bad(format!("lsn {} follows {p}: entries are missing", e.lsn));
        }
        if e.prev_hash != prev_hash {
            return bad("prev_hash is not the previous entry's hash".into());
        }
        if e.hash != e.expected_hash(&prev_hash) {
            return bad("hash does not match the entry's content".into());
        }
        prev_hash.clone_from(&e.hash);
        prev_lsn = Some(e.lsn);
    }
    Verdict {
        entries: entries.len() as u64,
        first_lsn: entries.first().map(|e| e.lsn),
        first_bad: None,
    }
}

/// Verifies the trail at `target`: an SQLite file path, or a `postgres://` /
/// `postgresql://` / `host=...` connection string.
///
/// # Errors
/// [`AuditError`] when the trail cannot be read.
pub fn verify(target: &str, table: &str) -> Result<Verdict, AuditError> {
    let mut sink: Box<dyn AuditSink> = if target.starts_with("postgres://")
        || target.starts_with("postgresql://")
        || target.starts_with("host=")
    {
        Box::new(PostgresSink::connect(target, table)?)
    } else {
        if !Path::new(target).exists() {
            return Err(AuditError::sink(
                "sqlite",
                format!("{target} does not exist"),
            ));
        }
        Box::new(SqliteSink::open(Path::new(target), table)?)
    };
    Ok(verify_entries(&sink.read_all()?))
}

#[cfg(test)]
mod tests;
