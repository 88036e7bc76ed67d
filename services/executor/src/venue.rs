//! The paper venue's own state: what it received, what it did, its latency and its faults.
//!
//! A real venue remembers orders independently of us; reconciliation asks it what happened
//! to an order whose outcome we did not record. The paper venue keeps that memory in a
//! ledger file (one JSON line per fact, written with a plain `write` so a `kill -9` of the
//! executor keeps it, as an exchange would) and answers [`PaperVenue::lookup`] from it.
//!
//! Like some real venues (Binance reuses `newClientOrderId` once an order is done), the
//! paper venue does not deduplicate client order ids: sending the same order twice makes
//! two venue orders. Exactly-once is the executor's job, and the crash test counts the
//! ledger's venue orders per client order id to prove it.
//!
//! The ledger grows with every order, and a start reads it whole; memory does not, as the
//! venue forgets the orders the executor forgets. So once the ledger has grown by
//! `paper.ledger_compact_bytes`, it is rewritten to the facts of the orders the executor
//! holds open ([`PaperVenue::compact_ledger`]), at start or while running, and the old
//! file is kept beside it as `<ledger>.<n>`, the venue's history, which only
//! [`count_venue_orders`] reads; a compaction deletes the history files older than the
//! newest `paper.ledger_history_files` (default 8; 0 keeps every one).
//!
//! All randomness (latency jitter, faults) comes from one ChaCha generator seeded from
//! configuration, so a run is reproducible under the same seed and the same order flow.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use execbridge_domain::{Fill, Liquidity, Price, Quantity, RejectReason};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config::PaperConfig;
use crate::engine::keys::{Pair, update_hashed};

/// The venue's maps: keyed by ids we make or the caller sends, hashed with foldhash as the
/// engine's are (std's SipHash was a visible share of an order's cost).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One fact in the venue's ledger. Its text borrows what the venue is told (a fact is
/// written as it is recorded) and owns what a ledger file is read into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum LedgerEntry<'a> {
    /// An order arrived and became venue order `venue_order_id`.
    Accepted {
        /// Account.
        account: Cow<'a, str>,
        /// Client order id.
        client_order_id: Cow<'a, str>,
        /// The venue's id.
        venue_order_id: Cow<'a, str>,
    },
    /// An order arrived and was refused.
    Rejected {
        /// Account.
        account: Cow<'a, str>,
        /// Client order id.
        client_order_id: Cow<'a, str>,
        /// Why.
        message: Cow<'a, str>,
    },
    /// A venue order traded.
    Fill {
        /// The venue order.
        venue_order_id: Cow<'a, str>,
        /// Trade id.
        trade_id: Cow<'a, str>,
        /// Price.
        price: Decimal,
        /// Quantity.
        quantity: Decimal,
        /// Fee.
        fee: Decimal,
        /// Fee asset.
        fee_asset: Cow<'a, str>,
        /// Maker or taker.
        maker: bool,
        /// Unix nanoseconds.
        at_nanos: u64,
    },
    /// A venue order ended (canceled or expired).
    Done {
        /// The venue order.
        venue_order_id: Cow<'a, str>,
        /// True for a cancel, false for an expiry.
        canceled: bool,
    },
    /// The id counters, last in a compacted ledger (see [`PaperVenue::compact_ledger`]):
    /// the ids of orders it no longer holds are not made again.
    Counters {
        /// Venue orders made.
        next_order: u64,
        /// Trades made.
        next_trade: u64,
    },
}

/// What the venue knows of one (account, client order id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VenueRecord {
    /// Every venue order made for it (more than one is a duplicate submission).
    pub venue_order_ids: Vec<String>,
    /// Set when the venue refused it.
    pub rejected: Option<String>,
    /// Fills of its venue orders.
    pub fills: Vec<Fill>,
    /// Set when it was canceled (`true`) or expired (`false`) at the venue.
    pub done: Option<bool>,
}

/// What happened when an order was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// The connection was down: the venue never saw it.
    Unreachable,
    /// Refused by injected fault.
    Rejected(RejectReason, String),
    /// Accepted as `venue_order_id`; `ack_lost` when the acknowledgement never came back.
    Accepted {
        /// The venue's id.
        venue_order_id: String,
        /// The acknowledgement was lost (fault).
        ack_lost: bool,
    },
}

/// Why the ledger could not be used.
#[derive(Debug, thiserror::Error)]
#[error("paper venue ledger {path}: {source}")]
pub struct LedgerError {
    path: PathBuf,
    source: std::io::Error,
}

/// The paper venue's state.
pub struct PaperVenue {
    config: PaperConfig,
    rng: ChaCha8Rng,
    ledger: Option<(PathBuf, File)>,
    /// Ledger lines not yet written: see [`PaperVenue::flush`].
    pending: Vec<u8>,
    /// Bytes in the ledger file.
    ledger_len: u64,
    /// Its bytes after the last compaction (0 before any): the next is due once the file
    /// has grown by the threshold since.
    compacted_len: u64,
    records: Map<(String, String), VenueRecord>,
    by_venue_id: Map<String, (String, String)>,
    next_order: u64,
    next_trade: u64,
    down_until: Option<Instant>,
    shard: String,
}

impl PaperVenue {
    /// A venue with `config`, remembering what `ledger` (if any) says it did before.
    ///
    /// # Errors
    /// [`LedgerError`] when the ledger cannot be read or opened for appending.
    pub fn open(
        shard: &str,
        config: PaperConfig,
        ledger: Option<&Path>,
    ) -> Result<Self, LedgerError> {
        let mut venue = Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            ledger: None,
            pending: Vec::new(),
            ledger_len: 0,
            compacted_len: 0,
            records: Map::default(),
            by_venue_id: Map::default(),
            next_order: 0,
            next_trade: 0,
            down_until: None,
            shard: shard.to_owned(),
        };
        if let Some(path) = ledger {
            let err = |source| LedgerError {
                path: path.to_owned(),
                source,
            };
            if path.exists() {
                let reader = BufReader::new(File::open(path).map_err(err)?);
                for line in reader.lines() {
                    let line = line.map_err(err)?;
                    // A torn last line (killed mid-write) is skipped: it was never acted on.
                    if let Ok(entry) = serde_json::from_str::<LedgerEntry>(&line) {
                        venue.remember(&entry);
                    }
                }
            }
            let mut file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(path)
                .map_err(err)?;
            venue.ledger_len = file.metadata().map_err(err)?.len();
            if venue.ledger_len > 0 {
                // After a torn last line, the next fact starts a line of its own.
                let mut last = [0];
                file.read_exact_at(&mut last, venue.ledger_len - 1)
                    .map_err(err)?;
                if last != *b"\n" {
                    file.write_all(b"\n").map_err(err)?;
                    venue.ledger_len += 1;
                }
            }
            venue.ledger = Some((path.to_owned(), file));
        }
        Ok(venue)
    }

    fn remember(&mut self, entry: &LedgerEntry<'_>) {
        match entry {
            LedgerEntry::Accepted {
                account,
                client_order_id,
                venue_order_id,
            } => {
                let owned = || (account.to_string(), client_order_id.to_string());
                update_hashed(
                    &mut self.records,
                    &(account.as_ref(), client_order_id.as_ref()) as &dyn Pair,
                    owned,
                    |record| record.venue_order_ids.push(venue_order_id.to_string()),
                );
                self.by_venue_id.insert(venue_order_id.to_string(), owned());
                self.next_order += 1;
            }
            LedgerEntry::Rejected {
                account,
                client_order_id,
                message,
            } => update_hashed(
                &mut self.records,
                &(account.as_ref(), client_order_id.as_ref()) as &dyn Pair,
                || (account.to_string(), client_order_id.to_string()),
                |record| record.rejected = Some(message.to_string()),
            ),
            LedgerEntry::Fill {
                venue_order_id,
                trade_id,
                price,
                quantity,
                fee,
                fee_asset,
                maker,
                at_nanos,
            } => {
                self.next_trade += 1;
                let (Some(key), Ok(price), Ok(quantity)) = (
                    self.by_venue_id.get(venue_order_id.as_ref()),
                    Price::new_checked(*price),
                    Quantity::new_checked(*quantity),
                ) else {
                    return;
                };
                if let Some(record) = self.records.get_mut(key) {
                    record.fills.push(Fill {
                        trade_id: trade_id.to_string(),
                        price,
                        quantity,
                        fee: *fee,
                        fee_asset: fee_asset.to_string(),
                        liquidity: if *maker {
                            Liquidity::Maker
                        } else {
                            Liquidity::Taker
                        },
                        executed_at: std::time::UNIX_EPOCH + Duration::from_nanos(*at_nanos),
                    });
                }
            }
            LedgerEntry::Done {
                venue_order_id,
                canceled,
            } => {
                if let Some(key) = self.by_venue_id.get(venue_order_id.as_ref())
                    && let Some(record) = self.records.get_mut(key)
                {
                    record.done = Some(*canceled);
                }
            }
            LedgerEntry::Counters {
                next_order,
                next_trade,
            } => {
                self.next_order = self.next_order.max(*next_order);
                self.next_trade = self.next_trade.max(*next_trade);
            }
        }
    }

    fn record(&mut self, entry: LedgerEntry<'_>) {
        if self.ledger.is_some() {
            if serde_json::to_writer(&mut self.pending, &entry).is_ok() {
                self.pending.push(b'\n');
            }
            if self.pending.len() >= 1 << 16 {
                self.flush();
            }
        }
        self.remember(&entry);
    }

    /// Writes the facts recorded since the last flush with one `write`: they reach the
    /// page cache, which a process crash keeps. The engine flushes at the end of every
    /// change, before the lock is released and before any of it is journaled, so the venue
    /// holds its side of an order before the executor records or reports the answer.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Some((path, file)) = &mut self.ledger {
            match file.write_all(&self.pending) {
                Ok(()) => self.ledger_len += self.pending.len() as u64,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "paper venue ledger write failed");
                }
            }
        }
        self.pending.clear();
    }

    /// Whether the ledger has grown by `threshold` bytes (0: never) since it was last
    /// compacted (or since it began).
    pub fn ledger_due(&self, threshold: u64) -> bool {
        self.ledger.is_some()
            && threshold > 0
            && self.ledger_len >= self.compacted_len.saturating_add(threshold)
    }

    /// `paper.ledger_compact_bytes`.
    pub fn compact_threshold(&self) -> u64 {
        self.config.ledger_compact_bytes
    }

    /// Rewrites the ledger to the facts of the orders `keep` names, once it is due (see
    /// [`PaperVenue::ledger_due`]); the old file stays beside it as
    /// `<name>.<n>`, the venue's history, which nothing reads at start. The compacted file
    /// ends with the id counters, so ids are never reused.
    ///
    /// The executor calls it with the orders it holds open, at start (once the engine has
    /// been rebuilt from the journal) and while it runs (at a moment when everything the
    /// engine holds is durable): reconciliation asks the venue about open orders only, and
    /// what the journal says of every other order is durable. A start then reads their
    /// facts and what was written since, not every order the venue ever took. What the
    /// venue remembers in memory is not changed.
    ///
    /// Crash safe: the compacted file is written and synced under a temporary name, the
    /// old one is linked to its history name, and only then renamed over; a crash leaves
    /// the old ledger in place, and a history name that is already a link to it is not
    /// made twice.
    ///
    /// # Errors
    /// [`LedgerError`] when a file cannot be written or renamed; the ledger is then left
    /// as it was.
    pub fn compact_ledger(
        &mut self,
        threshold: u64,
        mut keep: impl FnMut(&str, &str) -> bool,
    ) -> Result<Option<Compacted>, LedgerError> {
        self.flush();
        let Some((path, _)) = &self.ledger else {
            return Ok(None);
        };
        let path = path.clone();
        let err = |source| LedgerError {
            path: path.clone(),
            source,
        };
        if !self.ledger_due(threshold) {
            return Ok(None);
        }
        let started = Instant::now();
        let before = fs::metadata(&path).map_err(err)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };

        let compacting = dir.join(format!("{name}.compacting"));
        let mut out = std::io::BufWriter::new(File::create(&compacting).map_err(err)?);
        let mut write = |fact: &LedgerEntry<'_>| -> std::io::Result<()> {
            serde_json::to_writer(&mut out, fact)?;
            out.write_all(b"\n")
        };
        let mut orders = 0;
        for ((account, client_order_id), record) in &self.records {
            if keep(account, client_order_id) {
                orders += 1;
                for fact in facts(account, client_order_id, record) {
                    write(&fact).map_err(err)?;
                }
            }
        }
        write(&LedgerEntry::Counters {
            next_order: self.next_order,
            next_trade: self.next_trade,
        })
        .map_err(err)?;
        let file = out.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(err)?;
        let after = file.metadata().map_err(err)?.len();
        drop(file);

        let mut history = ledger_history(&path).map_err(err)?;
        let archive = match history.iter().find(|(_, p)| same_file(p, &before)) {
            // A compaction that crashed after the link kept the history already.
            Some((_, kept)) => kept.clone(),
            None => {
                let n = history.iter().map(|(n, _)| *n).max().unwrap_or(0) + 1;
                let archive = dir.join(format!("{name}.{n}"));
                fs::hard_link(&path, &archive).map_err(err)?;
                fsync_dir(&dir).map_err(err)?;
                history.push((n, archive.clone()));
                archive
            }
        };
        fs::rename(&compacting, &path).map_err(err)?;
        fsync_dir(&dir).map_err(err)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let pruned = prune_history(&history, self.config.ledger_history_files);
        self.ledger = Some((path, file));
        (self.ledger_len, self.compacted_len) = (after, after);
        Ok(Some(Compacted {
            before: before.len(),
            after,
            orders,
            archive,
            pruned,
            took: started.elapsed(),
        }))
    }

    /// An order arrives at the venue.
    ///
    /// With trace export on, the arrival is a `venue` CLIENT span in the trace of the call
    /// that sent the order, with its `outcome`; work outside a traced call makes none.
    pub fn receive(&mut self, account: &str, client_order_id: &str, now: Instant) -> Received {
        let span = execbridge_runtime::otel_child_span!(
            "venue",
            otel.kind = "client",
            venue = "paper",
            client_order_id,
            outcome = tracing::field::Empty,
        );
        let received = span.in_scope(|| self.arrive(account, client_order_id, now));
        if !span.is_disabled() {
            span.record(
                "outcome",
                match &received {
                    Received::Unreachable => "unreachable",
                    Received::Rejected(..) => "rejected",
                    Received::Accepted { ack_lost: true, .. } => "accepted_ack_lost",
                    Received::Accepted { .. } => "accepted",
                },
            );
        }
        received
    }

    fn arrive(&mut self, account: &str, client_order_id: &str, now: Instant) -> Received {
        if self.down_until.is_some_and(|t| now < t) {
            return Received::Unreachable;
        }
        let faults = self.config.faults.clone();
        if self.chance(faults.disconnect_probability) {
            self.down_until = Some(now + Duration::from_micros(faults.disconnect_us));
            return Received::Unreachable;
        }
        if self.chance(faults.reject_probability) {
            let message = "injected fault: the venue rejected the order".to_owned();
            self.record(LedgerEntry::Rejected {
                account: account.into(),
                client_order_id: client_order_id.into(),
                message: message.as_str().into(),
            });
            return Received::Rejected(RejectReason::VenueRejected, message);
        }
        let venue_order_id = format!("paper-{}-{}", self.shard, self.next_order + 1);
        self.record(LedgerEntry::Accepted {
            account: account.into(),
            client_order_id: client_order_id.into(),
            venue_order_id: venue_order_id.as_str().into(),
        });
        let ack_lost = self.chance(faults.lost_ack_probability);
        Received::Accepted {
            venue_order_id,
            ack_lost,
        }
    }

    /// The venue executes part of `venue_order_id`; returns the fill with a fresh trade id.
    #[allow(clippy::too_many_arguments)]
    pub fn execute(
        &mut self,
        venue_order_id: &str,
        price: Price,
        quantity: Quantity,
        liquidity: Liquidity,
        fee_asset: &str,
        executed_at: std::time::SystemTime,
    ) -> Fill {
        let bps = match liquidity {
            Liquidity::Maker => self.config.maker_fee_bps,
            Liquidity::Taker => self.config.taker_fee_bps,
        };
        let notional = price.get() * quantity.get();
        let fill = Fill {
            trade_id: format!("{}-t{}", self.shard, self.next_trade + 1),
            price,
            quantity,
            fee: (notional * Decimal::from(bps) / Decimal::from(10_000))
                .round_dp(8)
                .normalize(),
            fee_asset: fee_asset.to_owned(),
            liquidity,
            executed_at,
        };
        self.record(LedgerEntry::Fill {
            venue_order_id: venue_order_id.into(),
            trade_id: fill.trade_id.as_str().into(),
            price: price.get(),
            quantity: quantity.get(),
            fee: fill.fee,
            fee_asset: fee_asset.into(),
            maker: liquidity == Liquidity::Maker,
            at_nanos: unix_nanos(executed_at),
        });
        fill
    }

    /// The venue ends `venue_order_id` (cancel or expiry).
    pub fn finish(&mut self, venue_order_id: &str, canceled: bool) {
        if venue_order_id.is_empty() {
            return;
        }
        self.record(LedgerEntry::Done {
            venue_order_id: venue_order_id.into(),
            canceled,
        });
    }

    /// What the venue knows of an order: the reconciliation query.
    pub fn lookup(&self, account: &str, client_order_id: &str) -> Option<&VenueRecord> {
        self.records.get(&(account, client_order_id) as &dyn Pair)
    }

    /// Drops what the venue remembers of a finished order the executor has forgotten
    /// (reconciliation never asks about it again). The ledger file keeps it.
    pub fn forget(&mut self, account: &str, client_order_id: &str) {
        if let Some(record) = self
            .records
            .remove(&(account, client_order_id) as &dyn Pair)
        {
            for id in &record.venue_order_ids {
                self.by_venue_id.remove(id);
            }
        }
    }

    /// Keeps only the records of the orders `keep` names (an engine restored from a
    /// snapshot holds only those; the ledger file keeps everything).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let by_venue_id = &mut self.by_venue_id;
        self.records.retain(|(account, client_order_id), record| {
            let kept = keep(account, client_order_id);
            if !kept {
                for id in &record.venue_order_ids {
                    by_venue_id.remove(id);
                }
            }
            kept
        });
    }

    /// Orders the venue remembers.
    pub fn remembered(&self) -> usize {
        self.records.len()
    }

    /// Makes sure later trade ids do not collide with `trade_id` (seen in the journal).
    pub fn observe_trade_id(&mut self, trade_id: &str) {
        let n = trade_id
            .rsplit_once("-t")
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .unwrap_or(0);
        self.next_trade = self.next_trade.max(n);
    }

    /// Makes sure later venue order ids do not collide with `venue_order_id`.
    pub fn observe_venue_order_id(&mut self, venue_order_id: &str) {
        let n = venue_order_id
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .unwrap_or(0);
        self.next_order = self.next_order.max(n);
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    fn jittered(&mut self, base_us: u64) -> Duration {
        let jitter = self.config.latency.jitter_us;
        let extra = if jitter > 0 {
            self.rng.random_range(0..=jitter)
        } else {
            0
        };
        Duration::from_micros(base_us + extra)
    }

    /// Latency until the acknowledgement.
    pub fn ack_latency(&mut self) -> Duration {
        self.jittered(self.config.latency.ack_us)
    }

    /// Latency from the acknowledgement to the arrival match, with the delayed-fill fault.
    pub fn fill_latency(&mut self) -> Duration {
        let base = self.jittered(self.config.latency.fill_us);
        let faults = &self.config.faults;
        let (p, extra) = (faults.delayed_fill_probability, faults.delayed_fill_us);
        if self.chance(p) {
            base + Duration::from_micros(extra)
        } else {
            base
        }
    }

    /// Latency of a cancel confirmation.
    pub fn cancel_latency(&mut self) -> Duration {
        self.jittered(self.config.latency.cancel_us)
    }

    /// Number of venue orders per (account, client order id), for checks.
    pub fn venue_orders(&self) -> impl Iterator<Item = (&(String, String), usize)> {
        self.records
            .iter()
            .map(|(k, r)| (k, r.venue_order_ids.len()))
    }
}

/// Reads a ledger file, and the history its compactions kept, and counts venue orders per
/// (account, client order id): how tests prove no order reached the venue twice. A venue
/// order found in both (a compaction keeps the orders the venue still remembers) counts
/// once.
///
/// # Errors
/// When a file cannot be read.
pub fn count_venue_orders(path: &Path) -> std::io::Result<HashMap<(String, String), usize>> {
    let mut orders: HashMap<(String, String), HashSet<String>> = HashMap::new();
    let files = ledger_history(path)?
        .into_iter()
        .map(|(_, file)| file)
        .chain([path.to_owned()]);
    for file in files {
        for line in BufReader::new(File::open(&file)?).lines() {
            if let Ok(LedgerEntry::Accepted {
                account,
                client_order_id,
                venue_order_id,
            }) = serde_json::from_str(&line?)
            {
                orders
                    .entry((account.into_owned(), client_order_id.into_owned()))
                    .or_default()
                    .insert(venue_order_id.into_owned());
            }
        }
    }
    Ok(orders
        .into_iter()
        .map(|(key, ids)| (key, ids.len()))
        .collect())
}

/// What [`PaperVenue::compact_ledger`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// The ledger's bytes before.
    pub before: u64,
    /// And after.
    pub after: u64,
    /// Orders whose facts it kept.
    pub orders: usize,
    /// Where the old ledger is kept.
    pub archive: PathBuf,
    /// Older history files deleted (`paper.ledger_history_files`).
    pub pruned: usize,
    /// How long it took (the engine waits for it).
    pub took: Duration,
}

/// The facts that rebuild `record` when a ledger is read: its venue orders, its
/// rejection, its fills (on its first venue order: a record keeps the fills of all of
/// them together) and how it ended (on its last).
fn facts<'r>(
    account: &'r str,
    client_order_id: &'r str,
    record: &'r VenueRecord,
) -> impl Iterator<Item = LedgerEntry<'r>> {
    let accepted = record
        .venue_order_ids
        .iter()
        .map(move |id| LedgerEntry::Accepted {
            account: account.into(),
            client_order_id: client_order_id.into(),
            venue_order_id: id.as_str().into(),
        });
    let rejected = record
        .rejected
        .iter()
        .map(move |message| LedgerEntry::Rejected {
            account: account.into(),
            client_order_id: client_order_id.into(),
            message: message.as_str().into(),
        });
    let fills = record.venue_order_ids.first().into_iter().flat_map(|id| {
        record.fills.iter().map(move |fill| LedgerEntry::Fill {
            venue_order_id: id.as_str().into(),
            trade_id: fill.trade_id.as_str().into(),
            price: fill.price.get(),
            quantity: fill.quantity.get(),
            fee: fill.fee,
            fee_asset: fill.fee_asset.as_str().into(),
            maker: fill.liquidity == Liquidity::Maker,
            at_nanos: unix_nanos(fill.executed_at),
        })
    });
    let done = record
        .venue_order_ids
        .last()
        .zip(record.done)
        .map(|(id, canceled)| LedgerEntry::Done {
            venue_order_id: id.as_str().into(),
            canceled,
        });
    accepted.chain(rejected).chain(fills).chain(done)
}

fn unix_nanos(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The files a ledger's compactions kept (`<name>.<n>`), with their numbers.
fn ledger_history(path: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let name = path
        .file_name()
        .map(|n| format!("{}.", n.to_string_lossy()))
        .unwrap_or_default();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        if let Some(n) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&name))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((n, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Deletes the files of `history` (oldest first, as [`ledger_history`] lists them) older
/// than the newest `keep` (0: deletes none) and returns how many went. One that cannot be
/// deleted is logged and left to the next compaction; a crash before the deletions are on
/// disk leaves files that the next compaction deletes again.
fn prune_history(history: &[(u64, PathBuf)], keep: usize) -> usize {
    if keep == 0 {
        return 0;
    }
    let excess = history.len().saturating_sub(keep);
    history[..excess]
        .iter()
        .filter(|(_, old)| match fs::remove_file(old) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %old.display(), error = %e, "paper venue history file not deleted");
                false
            }
        })
        .count()
}

/// Whether `path` is the file `meta` describes (another name for it).
fn same_file(path: &Path, meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(path).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Drop for PaperVenue {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests;
