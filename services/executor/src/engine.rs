//! The state of one shard: orders, the idempotency index, risk, positions, balances, fills,
//! the paper venue and the sequence of order updates.
//!
//! The engine is synchronous and owned behind one mutex: every operation is short, does no
//! IO except the paper venue's ledger append, and never awaits, so each submit, cancel or
//! market move is atomic. That makes idempotency exact (two concurrent submits with the
//! same `client_order_id` are ordered by the lock; the second sees the first).
//!
//! Every change becomes a journal [`Entry`] in the engine's outbox, with the next LSN; the
//! caller hands the outbox to the journal before releasing the lock, so the journal order
//! is the sequence order. Nothing is published from here: subscribers get an update only
//! once the journal has made it durable. On start the same entries are replayed through
//! [`Engine::replay`], which applies them with the same code as the live path.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;

/// Hash maps of the engine: foldhash (seeded per process) instead of SipHash, which showed
/// in the profile of every order and of replay; the keys are account, order and client
/// ids of authenticated callers.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use execbridge_api::convert::{
    account_risk_to_proto, decimal, fill_to_proto, order_to_proto, timestamp,
};
use execbridge_api::internal::v1::AdminChange;
use execbridge_api::v1;
use execbridge_domain::risk::{self, AccountRisk, Exposure, RiskLimits, TradingState};
use execbridge_domain::{
    AccountId, ClientOrderId, Fill, Order, OrderEvent, OrderId, OrderRequest, OrderStatus,
    Position, Price, Quantity, RejectReason, TradingMode, TransitionError,
};
use rust_decimal::Decimal;
use tokio::sync::watch;

use crate::config::{PaperConfig, RiskConfig};
use crate::journal::{Entry, Payload};
use crate::paper::{self, Book, Quote, Step};
use crate::venue::{PaperVenue, Received};

mod history;
pub(crate) mod keys;
mod replayed;

pub use history::Retention;
use history::{Forgotten, ForgottenState, Slots};
use keys::{AccountDay, Pair, Triple};
pub use replayed::{Change, Replayed};

/// The books the paper venue matches against, by venue then symbol: looked up by `&str`
/// without building a key, and shared (`Arc`) so an order takes its book without copying
/// the levels while the engine changes.
#[derive(Default)]
struct Books(Map<String, Map<String, Arc<Book>>>);

impl Books {
    fn get(&self, venue: &str, symbol: &str) -> Option<&Arc<Book>> {
        self.0.get(venue)?.get(symbol)
    }

    fn insert(&mut self, venue: &str, symbol: &str, book: Book) {
        let symbols = match self.0.get_mut(venue) {
            Some(symbols) => symbols,
            None => self.0.entry(venue.to_owned()).or_default(),
        };
        match symbols.get_mut(symbol) {
            Some(held) => *held = Arc::new(book),
            None => {
                symbols.insert(symbol.to_owned(), Arc::new(book));
            }
        }
    }
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No order matches.
    #[error("order {0} not found")]
    NotFound(String),
    /// The `client_order_id` was used by an order that finished and is no longer held;
    /// within the idempotency window it is refused rather than sent to the venue again.
    #[error(
        "client_order_id {client_order_id} was used by order {order_id}, which has finished and is no longer held (shard.retain_finished_orders); a new order needs a new client_order_id"
    )]
    ClientOrderIdUsed {
        /// The reused id.
        client_order_id: String,
        /// The order that used it.
        order_id: String,
    },
    /// The order is already finished.
    #[error("order {order_id} is {status:?} and cannot be canceled")]
    NotCancelable {
        /// The order.
        order_id: String,
        /// Its terminal status.
        status: OrderStatus,
    },
    /// Same `client_order_id`, different payload.
    #[error("client_order_id {client_order_id} was used for another order; differing fields: {}", fields.join(", "))]
    IdempotencyMismatch {
        /// The reused id.
        client_order_id: String,
        /// Names of the differing fields.
        fields: Vec<&'static str>,
        /// The existing order.
        order_id: String,
    },
    /// A resume point older than what the shard still holds.
    #[error("sequence {requested} is no longer held; the oldest held is {oldest}")]
    CursorTooOld {
        /// What was asked for.
        requested: u64,
        /// The oldest sequence that can be replayed.
        oldest: u64,
    },
    /// A resume point beyond the newest sequence.
    #[error("sequence {requested} is ahead of the shard (last {last})")]
    CursorAhead {
        /// What was asked for.
        requested: u64,
        /// The newest sequence.
        last: u64,
    },
    /// A page token this engine did not issue.
    #[error("page_token {0:?} is not valid")]
    BadPageToken(String),
    /// An invariant did not hold (a bug); nothing was changed.
    #[error("internal: {0}")]
    Internal(String),
    /// A state-machine violation: a bug or a venue inconsistency; the event was not applied.
    #[error("order {order_id}: {source}")]
    Transition {
        /// The order.
        order_id: String,
        /// What was refused.
        source: TransitionError,
    },
    /// A journal record that does not fit the state rebuilt so far.
    #[error("journal record {lsn} cannot be replayed: {reason}")]
    Replay {
        /// The record.
        lsn: u64,
        /// Why.
        reason: String,
    },
}

/// How a caller names an order.
#[derive(Debug, Clone)]
pub enum OrderRef {
    /// execbridge's id.
    OrderId(String),
    /// The caller's id.
    ClientOrderId(String),
}

/// The outcome of a submit.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The order after the venue's answer.
    pub order: v1::Order,
    /// True when an earlier order with the same id was returned.
    pub duplicate: bool,
}

/// What [`Engine::begin_submit`] decided.
#[derive(Debug)]
pub enum Begin {
    /// The id was seen before: the same order; `in_flight` resolves when its venue outcome
    /// is known.
    Duplicate {
        /// The order.
        idx: usize,
        /// The order as it was found (a finished order may be forgotten before it is read
        /// again).
        order: v1::Order,
        /// Present while the original submit is still with the venue.
        in_flight: Option<watch::Receiver<bool>>,
    },
    /// Rejected by risk (journaled as accepted then rejected); no venue involved.
    Rejected {
        /// The rejected order, final.
        order: v1::Order,
    },
    /// Accepted and journaled; send it to the venue after `ack_latency` once durable.
    New {
        /// The order.
        idx: usize,
        /// Simulated venue latency until the answer.
        ack_latency: Duration,
    },
}

/// What the venue did with a sent order.
#[derive(Debug)]
pub struct VenueOutcome {
    /// The order after the venue's answer.
    pub order: v1::Order,
    /// When set, run the arrival match after this delay ([`Engine::arrive`]).
    pub arrival: Option<Duration>,
}

/// Filters of a page query.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Owning account.
    pub account: String,
    /// Empty: any.
    pub symbol: String,
    /// Inclusive lower bound.
    pub start: Option<SystemTime>,
    /// Exclusive upper bound.
    pub end: Option<SystemTime>,
    /// Page length, already clamped.
    pub page_size: usize,
    /// Token from a previous page.
    pub page_token: String,
}

/// Which orders to list.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// Only working orders.
    pub open_only: bool,
    /// Empty: any status.
    pub statuses: Vec<OrderStatus>,
}

/// Who asked for an admin change, for the journal and the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The authenticated principal.
    pub principal: String,
    /// The client call.
    pub correlation_id: String,
    /// Why.
    pub reason: String,
}

/// One held order and the indices of its fills.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Held {
    order: Order,
    fills: Vec<usize>,
}

impl std::ops::Index<usize> for Slots<Box<Held>> {
    type Output = Order;

    /// The held order at `idx`. Callers index only orders they know are held: working
    /// orders, and finished ones within the same engine call that found them.
    fn index(&self, idx: usize) -> &Order {
        match self.get(idx) {
            Some(held) => &held.order,
            None => panic!("order index {idx} is not held"),
        }
    }
}

impl std::ops::IndexMut<usize> for Slots<Box<Held>> {
    fn index_mut(&mut self, idx: usize) -> &mut Order {
        match self.get_mut(idx) {
            Some(held) => &mut held.order,
            None => panic!("order index {idx} is not held"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct FillRecord {
    order: usize,
    fill: Fill,
}

/// The engine's durable state after the journal record `lsn`, as a snapshot keeps it (see
/// [`crate::snapshot`]). Everything that replaying the journal up to `lsn` builds is here;
/// what is derived (indexes by id, per-account counts) is rebuilt by [`Engine::restore`],
/// and what lives only while running (market books, orders with the venue) is not state a
/// replay builds either. Maps are written as pairs sorted by key, so two engines in the
/// same state give equal checkpoints.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The last journal record applied.
    pub lsn: u64,
    /// The last order update's sequence.
    pub sequence: u64,
    flatten_count: u64,
    risk: Vec<(String, AccountRisk)>,
    orders: Slots<Box<Held>>,
    open: Vec<usize>,
    fills: Slots<FillRecord>,
    positions: Vec<((String, String, String), Position)>,
    balances: Vec<((String, String), Decimal)>,
    funded: Vec<String>,
    finished: VecDeque<(usize, SystemTime)>,
    forgotten: ForgottenState,
    daily_pnl: Vec<((String, u64), Decimal)>,
    rate: Vec<(String, VecDeque<SystemTime>)>,
}

impl Checkpoint {
    /// Orders held (working and retained finished ones).
    pub fn orders_held(&self) -> usize {
        self.orders.iter().count()
    }
}

fn sorted<K: Ord + Clone, V: Clone>(map: impl IntoIterator<Item = (K, V)>) -> Vec<(K, V)> {
    let mut pairs: Vec<_> = map.into_iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

/// One shard's state.
pub struct Engine {
    shard: String,
    venue: PaperVenue,
    depth: paper::DepthConfig,
    initial_balances: BTreeMap<String, Decimal>,
    risk_defaults: AccountRisk,
    risk: Map<String, AccountRisk>,
    /// The orders held, by index; boxed so that growing the list moves pointers, not whole
    /// orders (measured: regrowth copies were a fifth of a million-event replay). Finished
    /// orders are forgotten by [`Retention`] (see [`history`]).
    orders: Slots<Box<Held>>,
    /// Held orders by the key of their `(account, client_order_id)` ([`Forgotten::key`]):
    /// 16 bytes instead of two strings, and the same key an order keeps once forgotten.
    /// No map by order id is kept: an order id names its slot (see [`Engine::index_of`]).
    by_client: Map<u128, usize>,
    open: BTreeSet<usize>,
    open_per_account: Map<String, usize>,
    books: Books,
    positions: BTreeMap<(String, String, String), Position>,
    balances: BTreeMap<(String, String), Decimal>,
    /// Accounts whose balances exist: answers [`Engine::ensure_account`] without building
    /// a range key per order.
    funded: Set<String>,
    fills: Slots<FillRecord>,
    /// Held finished orders in the order they finished, with when.
    finished: VecDeque<(usize, SystemTime)>,
    forgotten: Forgotten,
    retention: Retention,
    daily_pnl: Map<(String, u64), Decimal>,
    rate: Map<String, VecDeque<SystemTime>>,
    sequence: u64,
    lsn: u64,
    outbox: Vec<Entry>,
    /// Orders sent to the venue whose answer is not applied yet, with the channel a
    /// duplicate submission waits on; made only when one does (most orders never meet a
    /// duplicate, and a channel per order was a visible share of a batch's cost).
    in_flight: Map<usize, Option<watch::Sender<bool>>>,
    arriving: Set<usize>,
    flatten_count: u64,
}

/// The slot an order id names: `{shard}-{n}` is the order at index `n - 1`.
fn order_index(order_id: &str) -> Option<usize> {
    order_id
        .rsplit_once('-')?
        .1
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

fn split_symbol(symbol: &str) -> (&str, &str) {
    symbol.rsplit_once(['-', '/']).unwrap_or((symbol, "QUOTE"))
}

fn page_start(token: &str, len: usize) -> Result<usize, EngineError> {
    if token.is_empty() {
        return Ok(len);
    }
    token
        .parse::<usize>()
        .ok()
        .filter(|i| *i <= len)
        .ok_or_else(|| EngineError::BadPageToken(token.to_owned()))
}

fn in_range(t: SystemTime, q: &PageQuery) -> bool {
    q.start.is_none_or(|s| t >= s) && q.end.is_none_or(|e| t < e)
}

fn day_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400
}

/// Newest-first page over indices `0..start` of the matching items.
fn page<T>(
    start: usize,
    page_size: usize,
    mut matching: impl FnMut(usize) -> Option<T>,
) -> (Vec<T>, String) {
    let mut out = Vec::new();
    let mut i = start;
    while i > 0 {
        i -= 1;
        if let Some(item) = matching(i) {
            if out.len() == page_size {
                // One more match exists: the next page starts after the last one returned.
                return (out, (i + 1).to_string());
            }
            out.push(item);
        }
    }
    (out, String::new())
}

impl Engine {
    /// An empty shard trading on `venue`.
    pub fn new(shard: String, paper: &PaperConfig, risk: &RiskConfig, venue: PaperVenue) -> Self {
        Self {
            shard,
            venue,
            depth: paper.depth.clone(),
            initial_balances: paper.initial_balances.clone(),
            risk_defaults: AccountRisk {
                state: TradingState::Active,
                symbol_states: BTreeMap::new(),
                paper: risk.paper.clone(),
                live: risk.live.0.clone(),
            },
            risk: Map::default(),
            orders: Slots::default(),
            by_client: Map::default(),
            open: BTreeSet::new(),
            open_per_account: Map::default(),
            books: Books::default(),
            positions: BTreeMap::new(),
            balances: BTreeMap::new(),
            funded: Set::default(),
            fills: Slots::default(),
            finished: VecDeque::new(),
            forgotten: Forgotten::default(),
            retention: Retention::default(),
            daily_pnl: Map::default(),
            rate: Map::default(),
            sequence: 0,
            lsn: 0,
            outbox: Vec::new(),
            in_flight: Map::default(),
            arriving: Set::default(),
            flatten_count: 0,
        }
    }

    /// The same engine keeping `retention` of its finished orders.
    #[must_use]
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The state a snapshot keeps. Call it on an engine that only replays (no order with
    /// the venue, nothing in the outbox): a live engine holds more than its journal says.
    pub fn checkpoint(&self) -> Checkpoint {
        let mut funded: Vec<String> = self.funded.iter().cloned().collect();
        funded.sort();
        Checkpoint {
            lsn: self.lsn,
            sequence: self.sequence,
            flatten_count: self.flatten_count,
            risk: sorted(self.risk.iter().map(|(k, v)| (k.clone(), v.clone()))),
            orders: self.orders.clone(),
            open: self.open.iter().copied().collect(),
            fills: self.fills.clone(),
            positions: sorted(self.positions.iter().map(|(k, v)| (k.clone(), v.clone()))),
            balances: sorted(self.balances.iter().map(|(k, v)| (k.clone(), *v))),
            funded,
            finished: self.finished.clone(),
            forgotten: self.forgotten.state(),
            daily_pnl: sorted(self.daily_pnl.iter().map(|(k, v)| (k.clone(), *v))),
            rate: sorted(self.rate.iter().map(|(k, v)| (k.clone(), v.clone()))),
        }
    }

    /// [`Engine::checkpoint`] of an engine that is done: the history moves into the
    /// checkpoint instead of being copied (the snapshot thread's, to hold it once).
    pub fn into_checkpoint(mut self) -> Checkpoint {
        let orders = std::mem::take(&mut self.orders);
        let fills = std::mem::take(&mut self.fills);
        let finished = std::mem::take(&mut self.finished);
        Checkpoint {
            orders,
            fills,
            finished,
            ..self.checkpoint()
        }
    }

    /// Takes the state of `checkpoint`, as if the journal had been replayed up to its LSN;
    /// replay goes on from the next record. The venue keeps every record it read from its
    /// ledger until [`Engine::drop_venue_records_of_forgotten_orders`].
    ///
    /// # Errors
    /// [`EngineError::Replay`] when this engine has already applied records, or the
    /// checkpoint's orders do not fit together.
    pub fn restore(&mut self, checkpoint: Checkpoint) -> Result<(), EngineError> {
        let bad = |reason: String| EngineError::Replay {
            lsn: checkpoint.lsn,
            reason,
        };
        if self.lsn != 0 {
            return Err(bad(format!(
                "a snapshot restores an empty engine; this one is at lsn {}",
                self.lsn
            )));
        }
        let Checkpoint {
            lsn,
            sequence,
            flatten_count,
            risk,
            orders,
            open,
            fills,
            positions,
            balances,
            funded,
            finished,
            forgotten,
            daily_pnl,
            rate,
        } = checkpoint;
        for idx in open.iter().chain(finished.iter().map(|(idx, _)| idx)) {
            if orders.get(*idx).is_none() {
                return Err(EngineError::Replay {
                    lsn,
                    reason: format!("order index {idx} is listed but not held"),
                });
            }
        }
        self.orders = orders;
        // The keys come from the snapshot's seeds: restored before the held orders' keys.
        self.forgotten = Forgotten::from_state(forgotten);
        self.by_client.clear();
        for idx in 0..self.orders.len() {
            if let Some(h) = self.orders.get(idx) {
                let order = &h.order;
                if self.index_of(order.order_id.as_str()) != Some(idx) {
                    return Err(EngineError::Replay {
                        lsn,
                        reason: format!("order {} is held at index {idx}", order.order_id),
                    });
                }
                let request = &order.request;
                let key = self
                    .forgotten
                    .key(request.account.as_str(), request.client_order_id.as_str());
                self.by_client.insert(key, idx);
            }
        }
        self.open.clear();
        self.open_per_account.clear();
        for idx in open {
            self.set_open(idx, true);
        }
        self.fills = fills;
        self.risk = risk.into_iter().collect();
        self.positions = positions.into_iter().collect();
        self.balances = balances.into_iter().collect();
        self.funded = funded.into_iter().collect();
        self.finished = finished;
        self.daily_pnl = daily_pnl.into_iter().collect();
        self.rate = rate.into_iter().collect();
        self.sequence = sequence;
        self.lsn = lsn;
        self.flatten_count = flatten_count;
        Ok(())
    }

    /// Drops the venue's records of orders this engine does not hold: after a start from a
    /// snapshot and the journal after it, those are the orders forgotten before the
    /// snapshot (a replay from the beginning drops them as it forgets them). Not before
    /// the journal after the snapshot is replayed: an order it holds may be with the venue
    /// without an answer, and reconciliation must find the venue's record of it.
    pub fn drop_venue_records_of_forgotten_orders(&mut self) {
        let (held, forgotten) = (&self.by_client, &self.forgotten);
        self.venue.retain(|account, client_order_id| {
            held.contains_key(&forgotten.key(account, client_order_id))
        });
    }

    /// Whether the paper venue's ledger is due for a compaction.
    pub fn venue_ledger_due(&self) -> bool {
        self.venue.ledger_due(self.venue.compact_threshold())
    }

    /// Compacts the paper venue's ledger, when due, to the facts of the open orders, the
    /// only ones reconciliation asks the venue about: see [`PaperVenue::compact_ledger`].
    /// Only where everything the engine holds is durable (at start after the replay, or
    /// with the journal caught up): an order finished in memory but not yet in the
    /// journal is open again after a crash, and the venue must still know it.
    ///
    /// # Errors
    /// [`crate::venue::LedgerError`] when a file cannot be written; the ledger is unchanged.
    pub fn compact_venue_ledger(
        &mut self,
    ) -> Result<Option<crate::venue::Compacted>, crate::venue::LedgerError> {
        let threshold = self.venue.compact_threshold();
        let (held, forgotten, open, in_flight) = (
            &self.by_client,
            &self.forgotten,
            &self.open,
            &self.in_flight,
        );
        self.venue
            .compact_ledger(threshold, |account, client_order_id| {
                held.get(&forgotten.key(account, client_order_id))
                    .is_some_and(|idx| open.contains(idx) || in_flight.contains_key(idx))
            })
    }

    /// Finished orders held whole, and keys of forgotten ones still refused.
    pub fn history_held(&self) -> (usize, usize) {
        (self.finished.len(), self.forgotten.len())
    }

    /// An engine that only replays the journal of the shard `config` describes (the
    /// snapshot thread's): its paper venue has no ledger, so it never writes the running
    /// venue's file.
    pub fn for_replay(config: &crate::config::ExecutorConfig) -> Self {
        #[allow(clippy::expect_used)]
        let venue = PaperVenue::open(&config.shard.id, config.paper.clone(), None)
            .expect("no ledger, no IO");
        Self::new(config.shard.id.clone(), &config.paper, &config.risk, venue)
            .with_retention(config.shard.retention())
    }

    /// An engine with an in-memory paper venue and default risk: for tests.
    pub fn in_memory(shard: &str, paper: PaperConfig) -> Self {
        #[allow(clippy::expect_used)]
        let venue = PaperVenue::open(shard, paper.clone(), None).expect("no ledger, no IO");
        Self::new(shard.to_owned(), &paper, &RiskConfig::default(), venue)
    }

    /// The shard's id.
    pub fn shard(&self) -> &str {
        &self.shard
    }

    /// The newest sequence.
    pub fn last_sequence(&self) -> u64 {
        self.sequence
    }

    /// The newest LSN handed out.
    pub fn last_lsn(&self) -> u64 {
        self.lsn
    }

    /// The index of the held order `order_id`. An order id is `{shard}-{index + 1}` (made
    /// in [`Engine::begin_submit`], checked in replay and restore), so the id names its
    /// slot: no map from ids is kept, and an id the engine did not make, or of an order
    /// forgotten since, finds nothing.
    fn index_of(&self, order_id: &str) -> Option<usize> {
        let idx = order_index(order_id)?;
        (self.orders.get(idx)?.order.order_id.as_str() == order_id).then_some(idx)
    }

    /// Number of working orders.
    pub fn open_orders(&self) -> usize {
        self.open.len()
    }

    /// Takes the journal entries produced since the last call, in LSN order.
    pub fn take_outbox(&mut self) -> Vec<Entry> {
        // The venue's side of whatever these records report is written first.
        self.venue.flush();
        std::mem::take(&mut self.outbox)
    }

    fn push(&mut self, payload: Payload, now: SystemTime) {
        self.lsn += 1;
        self.outbox.push(Entry {
            lsn: self.lsn,
            time: timestamp(now),
            payload,
        });
    }

    fn set_open(&mut self, idx: usize, open: bool) {
        let changed = if open {
            self.open.insert(idx)
        } else {
            self.open.remove(&idx)
        };
        if !changed {
            return;
        }
        let account = self.orders[idx].request.account.as_str();
        match self.open_per_account.get_mut(account) {
            Some(n) if open => *n += 1,
            Some(n) => *n = n.saturating_sub(1),
            None => {
                self.open_per_account
                    .insert(account.to_owned(), usize::from(open));
            }
        }
    }

    /// The risk settings of `account` (the defaults until changed).
    pub fn risk_of(&self, account: &str) -> AccountRisk {
        self.risk
            .get(account)
            .cloned()
            .unwrap_or_else(|| self.risk_defaults.clone())
    }

    fn exposure(&self, req: &OrderRequest, now: SystemTime) -> Exposure {
        let account = req.account.as_str();
        let last_price = self
            .books
            .get(req.venue.as_str(), req.symbol.as_str())
            .map(|b| b.last);
        let gross = self
            .positions
            .range::<dyn Triple, _>((
                Bound::Included(&(account, "", "") as &dyn Triple),
                Bound::Unbounded,
            ))
            .take_while(|((a, _, _), _)| a == account)
            .map(|((_, v, s), p)| {
                let mark = self
                    .books
                    .get(v, s)
                    .map_or(p.average_entry_price, |b| b.last);
                p.quantity.abs() * mark
            })
            .sum();
        Exposure {
            last_price,
            position: self
                .positions
                .get(&(account, req.venue.as_str(), req.symbol.as_str()) as &dyn Triple)
                .map_or(Decimal::ZERO, |p| p.quantity),
            open_orders: self.open_per_account.get(account).copied().unwrap_or(0),
            gross_exposure: gross,
            orders_last_second: self
                .rate
                .get(account)
                .map_or(0, |w| u32::try_from(w.len()).unwrap_or(u32::MAX)),
            daily_pnl: self
                .daily_pnl
                .get(&(account, day_of(now)) as &dyn AccountDay)
                .copied()
                .unwrap_or_default(),
        }
    }

    /// Accepts `request`, or finds the earlier order with the same `client_order_id`; runs
    /// the pre-trade risk check. Journal entries for the new order are in the outbox.
    ///
    /// # Errors
    /// [`EngineError::IdempotencyMismatch`] when the id was used for a different payload.
    pub fn begin_submit(
        &mut self,
        request: OrderRequest,
        now: SystemTime,
    ) -> Result<Begin, EngineError> {
        self.begin_submit_with(request, now, false)
    }

    fn begin_submit_with(
        &mut self,
        request: OrderRequest,
        now: SystemTime,
        bypass_state: bool,
    ) -> Result<Begin, EngineError> {
        let key = self
            .forgotten
            .key(request.account.as_str(), request.client_order_id.as_str());
        if let Some(&idx) = self.by_client.get(&key) {
            let existing = &self.orders[idx];
            // A different pair under the same 128-bit key (about 10^-21, see
            // [`Forgotten`]) is refused like a used id: never sent, never answered with
            // another order.
            let fields = if existing.request.account == request.account
                && existing.request.client_order_id == request.client_order_id
            {
                existing.request.differing_fields(&request)
            } else {
                vec!["client_order_id"]
            };
            if !fields.is_empty() {
                return Err(EngineError::IdempotencyMismatch {
                    client_order_id: request.client_order_id.as_str().to_owned(),
                    fields,
                    order_id: existing.order_id.as_str().to_owned(),
                });
            }
            return Ok(Begin::Duplicate {
                idx,
                order: order_to_proto(existing),
                in_flight: self.in_flight.get_mut(&idx).map(|waiters| {
                    waiters
                        .get_or_insert_with(|| watch::channel(false).0)
                        .subscribe()
                }),
            });
        }
        self.forgotten
            .expire(now, self.retention.idempotency_window);
        if let Some(idx) = self.forgotten.get(key) {
            return Err(EngineError::ClientOrderIdUsed {
                client_order_id: request.client_order_id.as_str().to_owned(),
                order_id: format!("{}-{}", self.shard, idx + 1),
            });
        }
        self.ensure_account(request.account.as_str());
        let mut risk = self.risk_of(request.account.as_str());
        if bypass_state {
            risk.state = TradingState::Active;
            risk.symbol_states.clear();
        }
        // The order-rate window holds the account's submits of the last second: pruned
        // here, so the risk check reads its length instead of scanning it.
        // Looked up by `&str`: the key is built once per account, not per order.
        let window = match self.rate.get_mut(request.account.as_str()) {
            Some(window) => window,
            None => self
                .rate
                .entry(request.account.as_str().to_owned())
                .or_default(),
        };
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t).unwrap_or_default() >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        let verdict = execbridge_runtime::otel_child_span!("risk").in_scope(|| {
            let exposure = self.exposure(&request, now);
            risk::check(&risk, &request, &exposure)
        });
        if let Some(window) = self.rate.get_mut(request.account.as_str()) {
            window.push_back(now);
        }
        let idx = self.orders.len();
        let order_id = OrderId::new_checked(format!("{}-{}", self.shard, idx + 1))
            .map_err(|e| EngineError::Internal(format!("order id: {e}")))?;
        self.forget_finished();
        self.sequence += 1;
        let order = Order::new(order_id, request, now, self.sequence);
        self.by_client.insert(key, idx);
        self.orders.push(Box::new(Held {
            order,
            fills: Vec::new(),
        }));
        self.set_open(idx, true);
        self.publish(idx, v1::OrderEventType::Accepted, None, now);
        if let Err(denial) = verdict {
            crate::metrics::risk_denial(denial.reason);
            let event = OrderEvent::Rejected {
                reason: denial.reason,
                message: denial.message,
            };
            self.apply(idx, event, v1::OrderEventType::Rejected, now)?;
            return Ok(Begin::Rejected {
                order: order_to_proto(&self.orders[idx]),
            });
        }
        self.in_flight.insert(idx, None);
        Ok(Begin::New {
            idx,
            ack_latency: self.venue.ack_latency(),
        })
    }

    /// Sends order `idx` to the venue (its intent is durable) and applies the answer.
    ///
    /// # Errors
    /// [`EngineError::Transition`] if the state machine refuses (a bug).
    pub fn venue_submit(
        &mut self,
        idx: usize,
        now: SystemTime,
        clock: Instant,
    ) -> Result<VenueOutcome, EngineError> {
        let result = self.venue_submit_inner(idx, now, clock);
        if let Some(Some(done)) = self.in_flight.remove(&idx) {
            // Duplicates waiting on this order may go once the outcome is durable; the
            // caller waits for that before it answers, and so do they (see Shard::submit).
            let _ = done.send(true);
        }
        result
    }

    fn venue_submit_inner(
        &mut self,
        idx: usize,
        now: SystemTime,
        clock: Instant,
    ) -> Result<VenueOutcome, EngineError> {
        let book = {
            let r = &self.orders[idx].request;
            self.books.get(r.venue.as_str(), r.symbol.as_str()).cloned()
        };
        if let Err(step) = paper::admit(&self.orders[idx], book.as_deref()) {
            // Refused before reaching the venue's matching: nothing was created there.
            self.run_steps(idx, vec![step], now)?;
            return Ok(self.outcome(idx, None));
        }
        // Two fields borrowed apart: the venue reads the ids where the order holds them.
        let r = &self.orders[idx].request;
        match self
            .venue
            .receive(r.account.as_str(), r.client_order_id.as_str(), clock)
        {
            Received::Unreachable => {
                let event = OrderEvent::Rejected {
                    reason: RejectReason::VenueUnavailable,
                    message: "the venue connection is down; the order was not sent".into(),
                };
                self.apply(idx, event, v1::OrderEventType::Rejected, now)?;
                Ok(self.outcome(idx, None))
            }
            Received::Rejected(reason, message) => {
                let event = OrderEvent::Rejected { reason, message };
                self.apply(idx, event, v1::OrderEventType::Rejected, now)?;
                Ok(self.outcome(idx, None))
            }
            Received::Accepted {
                venue_order_id,
                ack_lost: true,
            } => {
                // The venue has the order and matches it, but we never hear back: the
                // order is UNKNOWN until reconciliation asks the venue.
                if let Some(book) = &book {
                    let steps = paper::on_arrival(&self.orders[idx], book);
                    self.venue_only(idx, &venue_order_id, steps, now);
                }
                let event = OrderEvent::Unknown {
                    message: "the venue acknowledgement was lost; reconciliation will resolve it"
                        .into(),
                };
                self.apply(idx, event, v1::OrderEventType::Unknown, now)?;
                Ok(self.outcome(idx, None))
            }
            Received::Accepted {
                venue_order_id,
                ack_lost: false,
            } => {
                let event = OrderEvent::Acknowledged { venue_order_id };
                self.apply(idx, event, v1::OrderEventType::Acknowledged, now)?;
                let delay = self.venue.fill_latency();
                if delay.is_zero() {
                    if let Some(book) = &book {
                        let steps = paper::on_arrival(&self.orders[idx], book);
                        self.run_steps(idx, steps, now)?;
                    }
                    Ok(self.outcome(idx, None))
                } else {
                    self.arriving.insert(idx);
                    Ok(self.outcome(idx, Some(delay)))
                }
            }
        }
    }

    fn outcome(&self, idx: usize, arrival: Option<Duration>) -> VenueOutcome {
        VenueOutcome {
            order: order_to_proto(&self.orders[idx]),
            arrival,
        }
    }

    /// What the venue does on its own when the acknowledgement is lost: its fills and
    /// expiries reach its ledger, not us.
    fn venue_only(&mut self, idx: usize, venue_order_id: &str, steps: Vec<Step>, now: SystemTime) {
        let fee_asset = split_symbol(self.orders[idx].request.symbol.as_str())
            .1
            .to_owned();
        let mut left = self.orders[idx].remaining_quantity();
        for step in steps {
            match step {
                Step::Fill {
                    price,
                    quantity,
                    liquidity,
                } => {
                    let q = quantity.min(left);
                    if let (Ok(price), Ok(q)) =
                        (Price::new_checked(price), Quantity::new_checked(q))
                    {
                        self.venue
                            .execute(venue_order_id, price, q, liquidity, &fee_asset, now);
                        left -= q.get();
                    }
                }
                Step::Expire => self.venue.finish(venue_order_id, false),
                Step::Ack | Step::Reject(..) | Step::Trigger => {}
            }
        }
    }

    /// The deferred arrival match of an acknowledged order (fill latency).
    pub fn arrive(&mut self, idx: usize, now: SystemTime) {
        if !self.arriving.remove(&idx) {
            return;
        }
        let order = &self.orders[idx];
        if !matches!(
            order.status,
            OrderStatus::New | OrderStatus::PartiallyFilled
        ) {
            return;
        }
        let book = self
            .books
            .get(order.request.venue.as_str(), order.request.symbol.as_str())
            .cloned();
        if let Some(book) = book {
            let steps = paper::on_arrival(&self.orders[idx], &book);
            if let Err(e) = self.run_steps(idx, steps, now) {
                tracing::error!(error = %e, "paper venue arrival refused");
            }
        }
    }

    /// Accepts and sends in one step, without durability or latency: for tests and
    /// benchmarks of the engine alone.
    ///
    /// # Errors
    /// As [`Engine::begin_submit`].
    pub fn submit(
        &mut self,
        request: OrderRequest,
        now: SystemTime,
    ) -> Result<Submitted, EngineError> {
        match self.begin_submit(request, now)? {
            Begin::Duplicate { order, .. } => Ok(Submitted {
                order,
                duplicate: true,
            }),
            Begin::Rejected { order, .. } => Ok(Submitted {
                order,
                duplicate: false,
            }),
            Begin::New { idx, .. } => {
                let outcome = self.venue_submit(idx, now, Instant::now())?;
                if outcome.arrival.is_some() {
                    self.arrive(idx, now);
                }
                Ok(Submitted {
                    order: order_to_proto(&self.orders[idx]),
                    duplicate: false,
                })
            }
        }
    }

    fn run_steps(
        &mut self,
        idx: usize,
        steps: Vec<Step>,
        now: SystemTime,
    ) -> Result<(), EngineError> {
        for step in steps {
            let (event, kind) = match step {
                Step::Ack => continue,
                Step::Reject(reason, message) => (
                    OrderEvent::Rejected { reason, message },
                    v1::OrderEventType::Rejected,
                ),
                Step::Trigger => (OrderEvent::Triggered, v1::OrderEventType::Triggered),
                Step::Expire => {
                    let vid = self.orders[idx].venue_order_id.clone();
                    self.venue.finish(&vid, false);
                    (OrderEvent::Expired, v1::OrderEventType::Expired)
                }
                Step::Fill {
                    price,
                    quantity,
                    liquidity,
                } => {
                    let order = &self.orders[idx];
                    let (Ok(price), Ok(quantity)) = (
                        Price::new_checked(price),
                        Quantity::new_checked(quantity.min(order.remaining_quantity())),
                    ) else {
                        continue;
                    };
                    let fee_asset = split_symbol(order.request.symbol.as_str()).1.to_owned();
                    let vid = order.venue_order_id.clone();
                    let fill = self
                        .venue
                        .execute(&vid, price, quantity, liquidity, &fee_asset, now);
                    (OrderEvent::Fill(fill), v1::OrderEventType::Filled)
                }
            };
            self.apply(idx, event, kind, now)?;
        }
        Ok(())
    }

    /// Applies one event, books a fill, and queues the update for the journal.
    fn apply(
        &mut self,
        idx: usize,
        event: OrderEvent,
        kind: v1::OrderEventType,
        now: SystemTime,
    ) -> Result<(), EngineError> {
        let sequence = self.sequence + 1;
        let is_fill = matches!(event, OrderEvent::Fill(_));
        if !self.apply_state(idx, event, now, sequence)? {
            return Ok(());
        }
        // The fill was just booked: it is the order's last.
        let fill = is_fill
            .then(|| self.orders.get(idx).and_then(|held| held.fills.last()))
            .flatten()
            .copied();
        self.publish(idx, kind, fill, now);
        Ok(())
    }

    /// The state change of one event, shared by the live path and replay. Returns false
    /// for a repeated fill (nothing changed).
    fn apply_state(
        &mut self,
        idx: usize,
        event: OrderEvent,
        now: SystemTime,
        sequence: u64,
    ) -> Result<bool, EngineError> {
        let order = &mut self.orders[idx];
        match order.apply(&event, now, sequence) {
            Ok(_) => {}
            // Venues repeat fills; a repeat is harmless and changes nothing.
            Err(TransitionError::DuplicateFill { .. }) => return Ok(false),
            Err(source) => {
                if matches!(source, TransitionError::Overfill { .. }) {
                    tracing::error!(order_id = %order.order_id, %source, "overfill detected; fill not applied");
                }
                return Err(EngineError::Transition {
                    order_id: order.order_id.as_str().to_owned(),
                    source,
                });
            }
        }
        self.sequence = sequence;
        if self.orders[idx].status.is_terminal() {
            self.set_open(idx, false);
            self.arriving.remove(&idx);
            self.finished.push_back((idx, now));
        }
        if let OrderEvent::Fill(fill) = event {
            self.book_fill(idx, fill);
        }
        Ok(true)
    }

    fn ensure_account(&mut self, account: &str) {
        if self.funded.contains(account) {
            return;
        }
        self.funded.insert(account.to_owned());
        if self
            .balances
            .range((account.to_owned(), String::new())..)
            .next()
            .is_some_and(|((a, _), _)| a == account)
        {
            return;
        }
        for (asset, amount) in &self.initial_balances {
            self.balances
                .insert((account.to_owned(), asset.clone()), *amount);
        }
    }

    /// Books `fill` of order `idx` into the position, the balances and the day's P&L.
    /// The maps are searched with borrowed keys ([`keys`]): a key is built only for an
    /// entry the fill adds.
    fn book_fill(&mut self, idx: usize, fill: Fill) {
        let req = &self.orders[idx].request;
        let (account, venue, symbol) = (
            req.account.as_str(),
            req.venue.as_str(),
            req.symbol.as_str(),
        );
        let (base, quote) = split_symbol(symbol);
        let qty = fill.quantity.get();
        let notional = fill.price.get() * qty;
        let side = req.side.sign();
        let mut pnl = Decimal::ZERO;
        keys::update_sorted(
            &mut self.positions,
            &(account, venue, symbol) as &dyn Triple,
            || (account.to_owned(), venue.to_owned(), symbol.to_owned()),
            |position| {
                let realized_before = position.realized_pnl;
                position.apply_fill(req.side, qty, fill.price.get());
                pnl = position.realized_pnl - realized_before;
            },
        );
        if fill.fee_asset == quote {
            pnl -= fill.fee;
        }
        let day = day_of(fill.executed_at);
        keys::update_hashed(
            &mut self.daily_pnl,
            &(account, day) as &dyn AccountDay,
            || (account.to_owned(), day),
            |total| *total += pnl,
        );
        // (asset, amount, whether it is paid out): subtracted, not added negated, so that
        // a zero fee leaves a zero balance positive.
        for (asset, amount, paid) in [
            (base, side * qty, false),
            (quote, side * notional, true),
            (fill.fee_asset.as_str(), fill.fee, true),
        ] {
            keys::update_sorted(
                &mut self.balances,
                &(account, asset) as &dyn Pair,
                || (account.to_owned(), asset.to_owned()),
                |balance| {
                    if paid {
                        *balance -= amount;
                    } else {
                        *balance += amount;
                    }
                },
            );
        }
        let at = self.fills.push(FillRecord { order: idx, fill });
        if let Some(held) = self.orders.get_mut(idx) {
            held.fills.push(at);
        }
    }

    /// Forgets the finished orders beyond [`Retention::finished_orders`], oldest finished
    /// first, keeping only the key of each `(account, client_order_id)` (see [`history`]).
    /// Runs when an order is accepted, live and in replay, after the keys whose window
    /// passed by that order's time were dropped.
    fn forget_finished(&mut self) {
        while self.finished.len() > self.retention.finished_orders {
            let Some(&(idx, finished)) = self.finished.front() else {
                break;
            };
            if self.in_flight.contains_key(&idx) {
                // Canceled before the venue answered: the answer still needs the order;
                // it is forgotten at a later accept.
                break;
            }
            self.finished.pop_front();
            let Some(held) = self.orders.take(idx) else {
                continue;
            };
            // Read in its box and dropped there: moving the order out would copy it.
            for &at in &held.fills {
                self.fills.take(at);
            }
            let request = &held.order.request;
            let (account, client_order_id) = (&request.account, &request.client_order_id);
            self.venue
                .forget(account.as_str(), client_order_id.as_str());
            let key = self
                .forgotten
                .key(account.as_str(), client_order_id.as_str());
            self.forgotten.insert(key, idx, finished);
            self.by_client.remove(&key);
        }
    }

    fn publish(
        &mut self,
        idx: usize,
        kind: v1::OrderEventType,
        fill: Option<usize>,
        now: SystemTime,
    ) {
        let order = &self.orders[idx];
        let fill = fill.and_then(|at| self.fills.get(at)).map(|r| &r.fill);
        let update = Arc::new(v1::OrderUpdate {
            shard: self.shard.clone(),
            sequence: self.sequence,
            event: kind as i32,
            order: Some(order_to_proto(order)),
            fill: fill.map(|f| fill_to_proto(order, f)),
            progress: decimal(order.progress()),
            timestamp: Some(timestamp(now)),
        });
        self.push(Payload::Update(update), now);
    }

    fn find(&self, account: &str, by: &OrderRef) -> Result<usize, EngineError> {
        let idx = match by {
            OrderRef::OrderId(id) => self.index_of(id),
            OrderRef::ClientOrderId(id) => self
                .by_client
                .get(&self.forgotten.key(account, id))
                .copied()
                .filter(|i| self.orders[*i].request.client_order_id.as_str() == id),
        };
        let name = || match by {
            OrderRef::OrderId(id) | OrderRef::ClientOrderId(id) => id.clone(),
        };
        // An order of another account is "not found": its existence is not the caller's.
        idx.filter(|i| self.orders[*i].request.account.as_str() == account)
            .ok_or_else(|| EngineError::NotFound(name()))
    }

    /// One order.
    ///
    /// # Errors
    /// [`EngineError::NotFound`].
    pub fn get(&self, account: &str, by: &OrderRef) -> Result<v1::Order, EngineError> {
        Ok(order_to_proto(&self.orders[self.find(account, by)?]))
    }

    /// The order at `idx` (from a [`Begin`]), unless it has finished and been forgotten.
    pub fn order_at(&self, idx: usize) -> Option<v1::Order> {
        self.orders.get(idx).map(|held| order_to_proto(&held.order))
    }

    /// Requests the cancel of one working order. Returns the order and, when the venue
    /// confirms later, the delay after which to call [`Engine::confirm_cancel`].
    ///
    /// # Errors
    /// [`EngineError::NotFound`], or [`EngineError::NotCancelable`] for a finished order.
    pub fn cancel(
        &mut self,
        account: &str,
        by: &OrderRef,
        now: SystemTime,
    ) -> Result<(v1::Order, Option<(usize, Duration)>), EngineError> {
        let idx = self.find(account, by)?;
        let status = self.orders[idx].status;
        if status.is_terminal() {
            return Err(EngineError::NotCancelable {
                order_id: self.orders[idx].order_id.as_str().to_owned(),
                status,
            });
        }
        let pending = self.request_cancel(idx, now)?;
        Ok((order_to_proto(&self.orders[idx]), pending))
    }

    fn request_cancel(
        &mut self,
        idx: usize,
        now: SystemTime,
    ) -> Result<Option<(usize, Duration)>, EngineError> {
        if self.orders[idx].status != OrderStatus::PendingCancel {
            self.apply(
                idx,
                OrderEvent::CancelRequested,
                v1::OrderEventType::CancelRequested,
                now,
            )?;
        }
        let delay = self.venue.cancel_latency();
        if delay.is_zero() {
            self.confirm_cancel(idx, now)?;
            Ok(None)
        } else {
            Ok(Some((idx, delay)))
        }
    }

    /// The venue confirms a requested cancel (unless the order finished meanwhile).
    ///
    /// # Errors
    /// [`EngineError::Transition`] if the state machine refuses (a bug).
    pub fn confirm_cancel(&mut self, idx: usize, now: SystemTime) -> Result<(), EngineError> {
        // A forgotten order finished long ago: nothing to confirm.
        let Some(held) = self.orders.get(idx) else {
            return Ok(());
        };
        if held.order.status != OrderStatus::PendingCancel {
            return Ok(());
        }
        let vid = held.order.venue_order_id.clone();
        self.venue.finish(&vid, true);
        self.apply(idx, OrderEvent::Canceled, v1::OrderEventType::Canceled, now)
    }

    /// Requests the cancel of every working order of `account`, optionally of one symbol
    /// or venue.
    ///
    /// # Errors
    /// [`EngineError::Transition`] if the state machine refuses (a bug).
    #[allow(clippy::type_complexity)]
    pub fn cancel_all(
        &mut self,
        account: &str,
        symbol: &str,
        venue: &str,
        now: SystemTime,
    ) -> Result<(Vec<v1::Order>, Vec<(usize, Duration)>), EngineError> {
        let targets: Vec<usize> = self
            .open
            .iter()
            .copied()
            .filter(|i| {
                let r = &self.orders[*i].request;
                r.account.as_str() == account
                    && (symbol.is_empty() || r.symbol.as_str() == symbol)
                    && (venue.is_empty() || r.venue.as_str() == venue)
                    && !self.in_flight.contains_key(i)
            })
            .collect();
        let mut out = Vec::with_capacity(targets.len());
        let mut pending = Vec::new();
        for idx in targets {
            pending.extend(self.request_cancel(idx, now)?);
            out.push(order_to_proto(&self.orders[idx]));
        }
        Ok((out, pending))
    }

    /// The market orders that close `account`'s positions (optionally one symbol or
    /// venue); the caller submits them (they pass risk as reducing orders, and the
    /// trading state does not stop them: flattening is what a halted account needs).
    pub fn flatten_orders(
        &mut self,
        account: &str,
        symbol: &str,
        venue: &str,
    ) -> Vec<OrderRequest> {
        let mut out = Vec::new();
        let positions: Vec<_> = self
            .positions
            .iter()
            .filter(|((a, v, s), p)| {
                a == account
                    && (symbol.is_empty() || s == symbol)
                    && (venue.is_empty() || v == venue)
                    && !p.quantity.is_zero()
            })
            .map(|((a, v, s), p)| (a.clone(), v.clone(), s.clone(), p.quantity))
            .collect();
        for (a, v, s, qty) in positions {
            self.flatten_count += 1;
            let side = if qty > Decimal::ZERO {
                execbridge_domain::Side::Sell
            } else {
                execbridge_domain::Side::Buy
            };
            let built = (|| {
                Some(OrderRequest {
                    client_order_id: ClientOrderId::new_checked(format!(
                        "flatten-{}-{}",
                        self.lsn + 1,
                        self.flatten_count
                    ))
                    .ok()?,
                    account: AccountId::new_checked(a).ok()?,
                    venue: execbridge_domain::VenueId::new_checked(v).ok()?,
                    mode: TradingMode::Paper,
                    symbol: execbridge_domain::Symbol::new_checked(s).ok()?,
                    side,
                    order_type: execbridge_domain::OrderType::Market,
                    time_in_force: execbridge_domain::TimeInForce::Ioc,
                    post_only: false,
                    quantity: Quantity::new_checked(qty.abs()).ok()?,
                    price: None,
                    stop_price: None,
                    stop_loss: None,
                    take_profit: None,
                    slippage_bps: 0,
                    mev_protection: None,
                    metadata: BTreeMap::from([("execbridge.flatten".into(), "true".into())]),
                })
            })();
            out.extend(built);
        }
        out
    }

    /// [`Engine::begin_submit`] for the flatten orders: the trading state is not checked.
    ///
    /// # Errors
    /// As [`Engine::begin_submit`].
    pub fn begin_flatten(
        &mut self,
        request: OrderRequest,
        now: SystemTime,
    ) -> Result<Begin, EngineError> {
        self.begin_submit_with(request, now, true)
    }

    fn admin_change(&mut self, account: &str, action: &str, actor: &Actor, now: SystemTime) {
        let risk = self.risk_of(account);
        let change = AdminChange {
            principal: actor.principal.clone(),
            correlation_id: actor.correlation_id.clone(),
            action: action.to_owned(),
            reason: actor.reason.clone(),
            risk: Some(account_risk_to_proto(account, &risk)),
        };
        self.push(Payload::Admin(Arc::new(change)), now);
    }

    /// Sets the trading state of `account` (or of one `symbol` of it); journaled and
    /// audited.
    pub fn set_trading_state(
        &mut self,
        account: &str,
        symbol: &str,
        state: TradingState,
        actor: &Actor,
        now: SystemTime,
    ) -> AccountRisk {
        let mut risk = self.risk_of(account);
        if symbol.is_empty() {
            risk.state = state;
        } else if state == TradingState::Active {
            risk.symbol_states.remove(symbol);
        } else {
            risk.symbol_states.insert(symbol.to_owned(), state);
        }
        self.risk.insert(account.to_owned(), risk.clone());
        self.admin_change(account, "SET_TRADING_STATE", actor, now);
        risk
    }

    /// Replaces the limits of `account` for `mode`; journaled and audited.
    pub fn set_risk_limits(
        &mut self,
        account: &str,
        mode: TradingMode,
        limits: RiskLimits,
        actor: &Actor,
        now: SystemTime,
    ) -> AccountRisk {
        let mut risk = self.risk_of(account);
        match mode {
            TradingMode::Paper => risk.paper = limits,
            TradingMode::Live => risk.live = limits,
        }
        self.risk.insert(account.to_owned(), risk.clone());
        self.admin_change(account, "SET_RISK_LIMITS", actor, now);
        risk
    }

    /// A newest-first page of orders.
    ///
    /// # Errors
    /// [`EngineError::BadPageToken`].
    pub fn list(
        &self,
        q: &PageQuery,
        filter: &OrderFilter,
    ) -> Result<(Vec<v1::Order>, String), EngineError> {
        let start = page_start(&q.page_token, self.orders.len())?;
        Ok(page(start, q.page_size, |i| {
            let o = &self.orders.get(i)?.order;
            let keep = o.request.account.as_str() == q.account
                && (q.symbol.is_empty() || o.request.symbol.as_str() == q.symbol)
                && (!filter.open_only || o.status.is_open())
                && (filter.statuses.is_empty() || filter.statuses.contains(&o.status))
                && in_range(o.created_at, q);
            keep.then(|| order_to_proto(o))
        }))
    }

    /// A newest-first page of fills.
    ///
    /// # Errors
    /// [`EngineError::BadPageToken`].
    pub fn trades(&self, q: &PageQuery) -> Result<(Vec<v1::Fill>, String), EngineError> {
        let start = page_start(&q.page_token, self.fills.len())?;
        Ok(page(start, q.page_size, |i| {
            let FillRecord { order, fill } = self.fills.get(i)?;
            let o = &self.orders.get(*order)?.order;
            let keep = o.request.account.as_str() == q.account
                && (q.symbol.is_empty() || o.request.symbol.as_str() == q.symbol)
                && in_range(fill.executed_at, q);
            keep.then(|| fill_to_proto(o, fill))
        }))
    }

    /// Positions (marked at the last price) and balances of `account`.
    pub fn positions(&self, account: &str, venue: &str) -> (Vec<v1::Position>, Vec<v1::Balance>) {
        let positions = self
            .positions
            .iter()
            .filter(|((a, v, _), _)| a == account && (venue.is_empty() || v == venue))
            .map(|((a, v, s), p)| {
                let mark = self.books.get(v, s).map(|b| b.last);
                v1::Position {
                    account: a.clone(),
                    venue: v.clone(),
                    symbol: s.clone(),
                    quantity: decimal(p.quantity),
                    average_entry_price: if p.quantity.is_zero() {
                        String::new()
                    } else {
                        decimal(p.average_entry_price)
                    },
                    realized_pnl: decimal(p.realized_pnl),
                    mark_price: mark.map(decimal).unwrap_or_default(),
                    unrealized_pnl: decimal(mark.map(|m| p.unrealized_pnl(m)).unwrap_or_default()),
                    updated_at: None,
                }
            })
            .collect();
        let mut locked: HashMap<String, Decimal> = HashMap::new();
        for o in self.open.iter().map(|i| &self.orders[*i]) {
            if o.request.account.as_str() != account {
                continue;
            }
            let (base, quote) = split_symbol(o.request.symbol.as_str());
            let remaining = o.remaining_quantity();
            match (o.request.side, o.request.price) {
                (execbridge_domain::Side::Buy, Some(price)) => {
                    *locked.entry(quote.to_owned()).or_default() += remaining * price.get();
                }
                (execbridge_domain::Side::Sell, _) => {
                    *locked.entry(base.to_owned()).or_default() += remaining
                }
                (execbridge_domain::Side::Buy, None) => {}
            }
        }
        let balances = self
            .balances
            .iter()
            .filter(|((a, _), _)| a == account)
            .map(|((a, asset), total)| v1::Balance {
                account: a.clone(),
                asset: asset.clone(),
                total: decimal(*total),
                locked: decimal(locked.get(asset).copied().unwrap_or_default()),
            })
            .collect();
        (positions, balances)
    }

    /// Records a new top of book (unlimited size at the touch) and runs the working orders.
    pub fn on_quote(&mut self, venue: &str, symbol: &str, quote: Quote, now: SystemTime) {
        self.on_book(venue, symbol, Book::top(&quote), now);
    }

    /// Records a top of book with its sizes, shaped by the configured depth.
    pub fn on_top_of_book(
        &mut self,
        venue: &str,
        symbol: &str,
        quote: Quote,
        sizes: (Option<Decimal>, Option<Decimal>),
        now: SystemTime,
    ) {
        let book = Book::from_top(&quote, sizes.0, sizes.1, &self.depth);
        self.on_book(venue, symbol, book, now);
    }

    /// Records a new book and runs the working orders of that instrument against it.
    pub fn on_book(&mut self, venue: &str, symbol: &str, book: Book, now: SystemTime) {
        let working: Vec<usize> = self
            .open
            .iter()
            .copied()
            .filter(|i| {
                let r = &self.orders[*i].request;
                r.venue.as_str() == venue
                    && r.symbol.as_str() == symbol
                    && !self.arriving.contains(i)
                    && matches!(
                        self.orders[*i].status,
                        OrderStatus::New | OrderStatus::PartiallyFilled
                    )
            })
            .collect();
        for idx in working {
            let steps = paper::on_quote(&self.orders[idx], &book);
            if let Err(e) = self.run_steps(idx, steps, now) {
                tracing::error!(error = %e, "paper venue step refused");
            }
        }
        self.books.insert(venue, symbol, book);
    }

    /// Accounts with working orders.
    pub fn open_accounts(&self) -> Vec<String> {
        self.open_per_account
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Whether a price is known for the instrument.
    pub fn has_quote(&self, venue: &str, symbol: &str) -> bool {
        self.books.get(venue, symbol).is_some()
    }

    /// Orders whose venue outcome is not confirmed (UNKNOWN, or at start any open order)
    /// are compared with what the venue says it did, and the difference is applied: a
    /// missing acknowledgement or rejection, missing fills (deduplicated by trade id), a
    /// cancel or expiry. An order the venue never received is sent now, once: its intent
    /// is durable and the venue has no trace of it, so this cannot make a second order.
    ///
    /// Returns how many orders changed.
    pub fn reconcile(&mut self, now: SystemTime, startup: bool) -> usize {
        let candidates: Vec<usize> = self
            .open
            .iter()
            .copied()
            .filter(|i| {
                // A PENDING_NEW order that is not in flight is an intent from before a
                // restart whose sending waits for market data.
                !self.in_flight.contains_key(i)
                    && (startup
                        || matches!(
                            self.orders[*i].status,
                            OrderStatus::Unknown | OrderStatus::PendingNew
                        ))
            })
            .collect();
        let mut changed = 0;
        for idx in candidates {
            let before = self.sequence;
            if let Err(e) = self.reconcile_one(idx, now) {
                tracing::error!(error = %e, "reconciliation step refused");
            }
            changed += usize::from(self.sequence != before);
        }
        changed
    }

    fn reconcile_one(&mut self, idx: usize, now: SystemTime) -> Result<(), EngineError> {
        let (account, coid) = {
            let r = &self.orders[idx].request;
            (
                r.account.as_str().to_owned(),
                r.client_order_id.as_str().to_owned(),
            )
        };
        let status = self.orders[idx].status;
        let Some(record) = self.venue.lookup(&account, &coid).cloned() else {
            if matches!(status, OrderStatus::PendingNew | OrderStatus::Unknown) {
                let r = &self.orders[idx].request;
                if !self.has_quote(r.venue.as_str(), r.symbol.as_str()) {
                    // Sent once prices are back (the periodic reconciliation), rather than
                    // rejected for want of market data right after a restart.
                    return Ok(());
                }
                tracing::info!(order_id = %self.orders[idx].order_id, "the venue never received the order; sending it now");
                self.venue_submit(idx, now, Instant::now())?;
            } else if status == OrderStatus::PendingCancel {
                self.confirm_cancel(idx, now)?;
            }
            return Ok(());
        };
        if let Some(message) = &record.rejected
            && record.venue_order_ids.is_empty()
        {
            if matches!(status, OrderStatus::PendingNew | OrderStatus::Unknown) {
                let event = OrderEvent::Rejected {
                    reason: RejectReason::VenueRejected,
                    message: message.clone(),
                };
                self.apply(idx, event, v1::OrderEventType::Rejected, now)?;
            }
            return Ok(());
        }
        if matches!(status, OrderStatus::PendingNew | OrderStatus::Unknown)
            && let Some(vid) = record.venue_order_ids.last()
        {
            let event = OrderEvent::Acknowledged {
                venue_order_id: vid.clone(),
            };
            self.apply(idx, event, v1::OrderEventType::Acknowledged, now)?;
        }
        for fill in record.fills {
            if self.orders[idx].status.is_terminal() {
                break;
            }
            self.apply(idx, OrderEvent::Fill(fill), v1::OrderEventType::Filled, now)?;
        }
        if self.orders[idx].status.is_open() {
            match record.done {
                Some(true) => {
                    self.apply(idx, OrderEvent::Canceled, v1::OrderEventType::Canceled, now)?
                }
                Some(false) => {
                    self.apply(idx, OrderEvent::Expired, v1::OrderEventType::Expired, now)?
                }
                None if self.orders[idx].status == OrderStatus::PendingCancel => {
                    self.confirm_cancel(idx, now)?
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Rebuilds state from one journal record, with the same code as the live path.
    ///
    /// # Errors
    /// [`EngineError::Replay`] when the record does not fit the state so far.
    pub fn replay(&mut self, record: Replayed) -> Result<(), EngineError> {
        let lsn = record.lsn;
        let bad = |reason: String| EngineError::Replay { lsn, reason };
        if lsn != self.lsn + 1 {
            return Err(bad(format!("expected lsn {}", self.lsn + 1)));
        }
        if let Some(sequence) = record.change.sequence()
            && sequence != self.sequence + 1
        {
            return Err(bad(format!("sequence {sequence} after {}", self.sequence)));
        }
        match record.change {
            Change::Accepted {
                sequence,
                order_id,
                request,
                created_at,
            } => self
                .replay_accepted(sequence, order_id, *request, created_at, record.time)
                .map_err(bad)?,
            Change::Event {
                sequence,
                order_id,
                event,
            } => self
                .replay_event(sequence, &order_id, event, record.time)
                .map_err(bad)?,
            Change::Risk { account, settings } => {
                self.risk.insert(account, settings);
            }
        }
        self.lsn = lsn;
        Ok(())
    }

    fn replay_accepted(
        &mut self,
        sequence: u64,
        order_id: OrderId,
        request: OrderRequest,
        created_at: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<(), String> {
        let idx = self.orders.len();
        if order_index(order_id.as_str()) != Some(idx) {
            return Err(format!(
                "order id {order_id} does not name the shard's order {}",
                idx + 1
            ));
        }
        let key = self
            .forgotten
            .key(request.account.as_str(), request.client_order_id.as_str());
        self.ensure_account(request.account.as_str());
        // The live path dropped expired keys before checking the id (same time).
        self.forgotten
            .expire(now, self.retention.idempotency_window);
        self.forget_finished();
        self.sequence = sequence;
        self.orders.push(Box::new(Held {
            order: Order::new(order_id, request, created_at.unwrap_or(now), sequence),
            fills: Vec::new(),
        }));
        self.by_client.insert(key, idx);
        self.set_open(idx, true);
        Ok(())
    }

    fn replay_event(
        &mut self,
        sequence: u64,
        order_id: &str,
        event: OrderEvent,
        now: SystemTime,
    ) -> Result<(), String> {
        let idx = self
            .index_of(order_id)
            .ok_or_else(|| format!("unknown order {order_id}"))?;
        match &event {
            OrderEvent::Acknowledged { venue_order_id } => {
                self.venue.observe_venue_order_id(venue_order_id);
            }
            OrderEvent::Fill(fill) => self.venue.observe_trade_id(&fill.trade_id),
            _ => {}
        }
        match self.apply_state(idx, event, now, sequence) {
            Ok(true) => Ok(()),
            Ok(false) => Err("a repeated fill was journaled".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A digest of the whole state, for tests comparing a live run with its replay.
    pub fn digest(&self) -> String {
        let orders: Vec<String> = self
            .orders
            .iter()
            .map(|held| {
                let o = &held.order;
                format!(
                    "{}|{:?}|{}|{}|{}|{}|{}|{}",
                    o.order_id,
                    o.status,
                    o.filled_quantity,
                    o.filled_notional,
                    o.fees,
                    o.venue_order_id,
                    o.sequence,
                    o.reject_message
                )
            })
            .collect();
        let mut risk: Vec<_> = self
            .risk
            .iter()
            .map(|(a, r)| format!("{a}:{r:?}"))
            .collect();
        risk.sort();
        format!(
            "seq={} lsn={}\norders={orders:?}\npositions={:?}\nbalances={:?}\nfills={} held {}\nopen={:?}\nfinished={:?}\nrisk={risk:?}",
            self.sequence,
            self.lsn,
            self.positions,
            self.balances,
            self.fills.len(),
            self.fills.iter().count(),
            self.open,
            self.finished,
        )
    }
}

#[cfg(test)]
mod tests;
