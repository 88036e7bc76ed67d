//! One upstream, many subscribers: one book per instrument built from the feed's normalised
//! updates, per-symbol sequence numbers, status, and the fanout of every event, encoded
//! once, into each interested subscriber's bounded queue.
//!
//! Lock order: an instrument's lock, then a subscriber's queue lock; never the other way.
//! Publishing holds the instrument lock while it fans out, so a late joiner's snapshot
//! (taken under the same lock) and the updates that follow it can never interleave wrongly:
//! a subscriber sees the snapshot at sequence N and then exactly the updates after N.

mod subscriber;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use execbridge_api::convert::timestamp;
use execbridge_api::v1::{self, FeedStatus, market_data_event::Payload};
use prost::Message as _;

use crate::metrics::Metrics;
use crate::model::{Book, Depth, InstrumentSpec, Top, Update};

pub use subscriber::{Batch, Next, Policy, Subscriber};

/// Channel bit: top of book.
pub const TOP_OF_BOOK: u8 = 1;
/// Channel bit: trades.
pub const TRADES: u8 = 2;
/// Channel bit: L2 depth (snapshots and deltas).
pub const DEPTH: u8 = 4;
/// Every channel: status frames go to any subscription of their instrument.
pub const ALL_CHANNELS: u8 = TOP_OF_BOOK | TRADES | DEPTH;

/// An instrument's index in the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstrumentId(pub u32);

impl InstrumentId {
    /// Not an instrument: frames about the whole stream (gap notices).
    pub const STREAM: InstrumentId = InstrumentId(u32::MAX);
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Top of book.
    TopOfBook,
    /// A trade.
    Trade,
    /// A full L2 book.
    Snapshot,
    /// Changed L2 levels.
    Delta,
    /// A status frame.
    Status,
    /// A gap notice.
    Gap,
}

impl Kind {
    /// The channel bits a subscription needs to receive it.
    pub fn channels(self) -> u8 {
        match self {
            Kind::TopOfBook => TOP_OF_BOOK,
            Kind::Trade => TRADES,
            Kind::Snapshot | Kind::Delta => DEPTH,
            Kind::Status | Kind::Gap => ALL_CHANNELS,
        }
    }

    /// Whether losing it leaves the subscriber's view of the instrument untrustworthy
    /// until a resync (a missed delta corrupts the book; a missed status hides a change).
    pub fn needs_resync_when_dropped(self) -> bool {
        matches!(self, Kind::Snapshot | Kind::Delta | Kind::Status)
    }
}

/// One event, encoded once and shared by every subscriber that gets it.
#[derive(Debug)]
pub struct Frame {
    /// Which instrument ([`InstrumentId::STREAM`] for the whole stream).
    pub instrument: InstrumentId,
    /// What it carries.
    pub kind: Kind,
    /// Its per-symbol sequence number (0 for status and gap frames).
    pub sequence: u64,
    /// When the hub received it, for the feed-to-send latency.
    pub received: Instant,
    /// The event as field 1 of `StreamMarketDataResponse` (tag, length, message), so a
    /// batch is these bytes one after another.
    pub bytes: Bytes,
}

impl Frame {
    /// Encodes `event` once.
    pub fn encode(
        instrument: InstrumentId,
        kind: Kind,
        event: &v1::MarketDataEvent,
        received: Instant,
    ) -> Arc<Frame> {
        let len = event.encoded_len();
        let mut buf = BytesMut::with_capacity(len + 1 + prost::length_delimiter_len(len));
        prost::encoding::message::encode(1, event, &mut buf);
        Arc::new(Frame {
            instrument,
            kind,
            sequence: event.sequence,
            received,
            bytes: buf.freeze(),
        })
    }

    /// The event back (tests and tools); `None` only for bytes not built by
    /// [`Frame::encode`].
    pub fn decode(&self) -> Option<v1::MarketDataEvent> {
        v1::StreamMarketDataResponse::decode(self.bytes.as_ref())
            .ok()?
            .events
            .into_iter()
            .next()
    }
}

/// A subscriber's interest in one instrument.
struct Entry {
    subscriber: Arc<Subscriber>,
    channels: u8,
}

/// One instrument's state.
struct Instrument {
    spec: InstrumentSpec,
    book: Book,
    has_book: bool,
    top: Top,
    sequence: u64,
    status: FeedStatus,
    status_frame: Arc<Frame>,
    top_frame: Option<Arc<Frame>>,
    /// The book at `sequence`, encoded for late joiners; cleared by every depth change.
    snapshot_frame: Option<Arc<Frame>>,
    subscribers: Vec<Entry>,
}

impl Instrument {
    fn event(
        &self,
        sequence: u64,
        exchange_time: SystemTime,
        payload: Payload,
    ) -> v1::MarketDataEvent {
        v1::MarketDataEvent {
            venue: self.spec.venue.clone(),
            symbol: self.spec.symbol.clone(),
            sequence,
            exchange_time: Some(timestamp(exchange_time)),
            receive_time: Some(timestamp(SystemTime::now())),
            payload: Some(payload),
        }
    }

    fn levels(&self, depth: &Depth) -> (Vec<v1::PriceLevel>, Vec<v1::PriceLevel>) {
        let convert = |levels: &[crate::model::Level]| {
            levels
                .iter()
                .map(|l| v1::PriceLevel {
                    price: self.spec.price(l.price),
                    quantity: self.spec.quantity(l.quantity),
                })
                .collect()
        };
        (convert(&depth.bids), convert(&depth.asks))
    }

    fn top_payload(&self) -> Payload {
        let price = |l: Option<crate::model::Level>| {
            l.map(|l| self.spec.price(l.price)).unwrap_or_default()
        };
        let qty = |l: Option<crate::model::Level>| {
            l.map(|l| self.spec.quantity(l.quantity))
                .unwrap_or_default()
        };
        Payload::TopOfBook(v1::TopOfBook {
            bid_price: price(self.top.bid),
            bid_quantity: qty(self.top.bid),
            ask_price: price(self.top.ask),
            ask_quantity: qty(self.top.ask),
            last_price: self
                .top
                .last
                .map(|t| self.spec.price(t))
                .unwrap_or_default(),
            volume: self.spec.quantity(self.top.volume),
        })
    }

    fn status_frame(&self, id: InstrumentId, status: FeedStatus, reason: &str) -> Arc<Frame> {
        let mut event = self.event(
            0,
            SystemTime::now(),
            Payload::Status(v1::StatusFrame {
                status: status as i32,
                reason: reason.to_owned(),
            }),
        );
        event.exchange_time = event.receive_time;
        Frame::encode(id, Kind::Status, &event, Instant::now())
    }

    /// The current book as a snapshot event at the current sequence, encoded once per
    /// book state however many late joiners ask.
    fn snapshot_frame(&mut self, id: InstrumentId) -> Option<Arc<Frame>> {
        if !self.has_book {
            return None;
        }
        if self.snapshot_frame.is_none() {
            let (bids, asks) = self.levels(&self.book.depth());
            let event = self.event(
                self.sequence,
                SystemTime::now(),
                Payload::BookSnapshot(v1::BookSnapshot { bids, asks }),
            );
            self.snapshot_frame = Some(Frame::encode(id, Kind::Snapshot, &event, Instant::now()));
        }
        self.snapshot_frame.clone()
    }

    /// Hands `frame` to every subscriber that wants it.
    fn fanout(&mut self, frame: &Arc<Frame>, metrics: &Metrics) {
        let wanted = frame.kind.channels();
        let mut queued = 0i64;
        let mut closed = false;
        for entry in &self.subscribers {
            if entry.channels & wanted == 0 {
                continue;
            }
            match entry.subscriber.push(frame, false, metrics) {
                Some(delta) => queued += delta,
                None => closed = true,
            }
        }
        if closed {
            let before = self.subscribers.len();
            self.subscribers.retain(|e| !e.subscriber.is_closed());
            metrics
                .subscriptions
                .sub((before - self.subscribers.len()) as i64);
        }
        metrics.queued.add(queued);
        metrics.published(frame.kind).inc();
    }

    fn set_status(
        &mut self,
        id: InstrumentId,
        status: FeedStatus,
        reason: &str,
        metrics: &Metrics,
    ) {
        if self.status == status {
            return;
        }
        metrics
            .instrument_status
            .with_label_values(&[self.spec.venue.as_str(), status_name(self.status)])
            .dec();
        metrics
            .instrument_status
            .with_label_values(&[self.spec.venue.as_str(), status_name(status)])
            .inc();
        self.status = status;
        self.status_frame = self.status_frame(id, status, reason);
        let frame = self.status_frame.clone();
        self.fanout(&frame, metrics);
    }
}

fn status_name(status: FeedStatus) -> &'static str {
    match status {
        FeedStatus::Live => "LIVE",
        FeedStatus::Stale => "STALE",
        FeedStatus::Resyncing => "RESYNCING",
        FeedStatus::Reconnecting => "RECONNECTING",
        FeedStatus::Unspecified => "UNSPECIFIED",
    }
}

/// The shared state between the feeds and the subscriber streams.
pub struct Hub {
    instruments: RwLock<Vec<Arc<Mutex<Instrument>>>>,
    index: RwLock<HashMap<(String, String), InstrumentId>>,
    next_subscriber: std::sync::atomic::AtomicU64,
    /// The metrics.
    pub metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    /// An empty hub.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            instruments: RwLock::default(),
            index: RwLock::default(),
            next_subscriber: 1.into(),
            metrics,
        }
    }

    fn slot(&self, id: InstrumentId) -> Option<Arc<Mutex<Instrument>>> {
        self.instruments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id.0 as usize)
            .cloned()
    }

    /// Declares an instrument a feed produces, in `status` until the feed says otherwise.
    /// Registering the same (venue, symbol) again returns the same id.
    pub fn register(&self, spec: InstrumentSpec, status: FeedStatus, reason: &str) -> InstrumentId {
        let key = (spec.venue.clone(), spec.symbol.clone());
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = index.get(&key) {
            return *id;
        }
        let mut instruments = self
            .instruments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let id = InstrumentId(u32::try_from(instruments.len()).unwrap_or(u32::MAX - 1));
        self.metrics
            .instrument_status
            .with_label_values(&[spec.venue.as_str(), status_name(status)])
            .inc();
        let placeholder = Frame::encode(
            id,
            Kind::Status,
            &v1::MarketDataEvent::default(),
            Instant::now(),
        );
        let mut instrument = Instrument {
            spec,
            book: Book::default(),
            has_book: false,
            top: Top::default(),
            sequence: 0,
            status,
            status_frame: placeholder,
            top_frame: None,
            snapshot_frame: None,
            subscribers: Vec::new(),
        };
        instrument.status_frame = instrument.status_frame(id, status, reason);
        instruments.push(Arc::new(Mutex::new(instrument)));
        index.insert(key, id);
        id
    }

    /// The id of `symbol` on `venue`.
    pub fn lookup(&self, venue: &str, symbol: &str) -> Option<InstrumentId> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(venue.to_owned(), symbol.to_owned()))
            .copied()
    }

    /// Every symbol of `venue`, sorted.
    pub fn symbols(&self, venue: &str) -> Vec<String> {
        let mut symbols: Vec<String> = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .filter(|(v, _)| v == venue)
            .map(|(_, s)| s.clone())
            .collect();
        symbols.sort();
        symbols
    }

    /// Every instrument id.
    pub fn instrument_ids(&self) -> Vec<InstrumentId> {
        let n = self
            .instruments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        (0..n)
            .map(|i| InstrumentId(u32::try_from(i).unwrap_or(u32::MAX - 1)))
            .collect()
    }

    /// Applies a feed's updates for one instrument, in order: each gets the next sequence
    /// number, is encoded once and goes to every subscriber that wants it; then, if the
    /// best levels, last price or volume changed, one top-of-book event follows.
    pub fn publish(&self, id: InstrumentId, updates: &[Update], exchange_time: SystemTime) {
        let Some(slot) = self.slot(id) else {
            return;
        };
        let received = Instant::now();
        let mut inst = lock(&slot);
        let before = inst.top;
        for update in updates {
            if let Update::LastPrice(price) = update {
                inst.top.last = Some(*price);
                continue;
            }
            inst.sequence += 1;
            let sequence = inst.sequence;
            let (kind, payload) = match update {
                Update::Snapshot(depth) => {
                    inst.book.replace(depth);
                    inst.has_book = true;
                    inst.snapshot_frame = None;
                    let (bids, asks) = inst.levels(depth);
                    (
                        Kind::Snapshot,
                        Payload::BookSnapshot(v1::BookSnapshot { bids, asks }),
                    )
                }
                Update::Delta(depth) => {
                    inst.book.apply(depth);
                    inst.snapshot_frame = None;
                    let (bids, asks) = inst.levels(depth);
                    (
                        Kind::Delta,
                        Payload::BookDelta(v1::BookDelta { bids, asks }),
                    )
                }
                Update::Trade(t) => {
                    inst.top.last = Some(t.price);
                    inst.top.volume += t.quantity;
                    (
                        Kind::Trade,
                        Payload::Trade(v1::Trade {
                            trade_id: t.id.clone(),
                            price: inst.spec.price(t.price),
                            quantity: inst.spec.quantity(t.quantity),
                            buyer_is_maker: t.buyer_is_maker,
                        }),
                    )
                }
                Update::LastPrice(_) => continue,
            };
            let event = inst.event(sequence, exchange_time, payload);
            let frame = Frame::encode(id, kind, &event, received);
            inst.fanout(&frame, &self.metrics);
        }
        inst.top.bid = inst.book.best_bid();
        inst.top.ask = inst.book.best_ask();
        if inst.top != before {
            inst.sequence += 1;
            let event = inst.event(inst.sequence, exchange_time, inst.top_payload());
            let frame = Frame::encode(id, Kind::TopOfBook, &event, received);
            inst.top_frame = Some(frame.clone());
            inst.fanout(&frame, &self.metrics);
        }
    }

    /// Changes an instrument's status and tells its subscribers (no frame when unchanged).
    pub fn set_status(&self, id: InstrumentId, status: FeedStatus, reason: &str) {
        if let Some(slot) = self.slot(id) {
            lock(&slot).set_status(id, status, reason, &self.metrics);
        }
    }

    /// An instrument's status.
    pub fn status(&self, id: InstrumentId) -> Option<FeedStatus> {
        self.slot(id).map(|s| lock(&s).status)
    }

    /// An instrument's spec.
    pub fn spec(&self, id: InstrumentId) -> Option<InstrumentSpec> {
        self.slot(id).map(|s| lock(&s).spec.clone())
    }

    /// A copy of an instrument's book and the sequence it is at.
    pub fn book(&self, id: InstrumentId) -> Option<(Book, u64)> {
        self.slot(id).map(|s| {
            let inst = lock(&s);
            (inst.book.clone(), inst.sequence)
        })
    }

    /// An instrument's top of book.
    pub fn top(&self, id: InstrumentId) -> Option<Top> {
        self.slot(id).map(|s| lock(&s).top)
    }

    /// A new subscriber with a queue bounded to `capacity` events and `max_bytes`.
    pub fn subscriber(&self, capacity: usize, max_bytes: usize, policy: Policy) -> Arc<Subscriber> {
        let id = self
            .next_subscriber
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(Subscriber::new(
            id,
            capacity.max(1),
            max_bytes.max(1),
            policy,
        ))
    }

    /// Sets which channels of `id` a subscriber wants (0: none, unsubscribed). Channels it
    /// did not have before get their snapshot first: the current status for a new
    /// instrument, the latest top of book, the L2 book at the current sequence.
    pub fn set_channels(&self, subscriber: &Arc<Subscriber>, id: InstrumentId, channels: u8) {
        let Some(slot) = self.slot(id) else {
            return;
        };
        let mut inst = lock(&slot);
        let position = inst
            .subscribers
            .iter()
            .position(|e| e.subscriber.id() == subscriber.id());
        let old = position.map_or(0, |p| inst.subscribers[p].channels);
        let added = channels & !old;
        let mut owed: Vec<Arc<Frame>> = Vec::new();
        if old == 0 && channels != 0 {
            owed.push(inst.status_frame.clone());
        }
        if added & TOP_OF_BOOK != 0 {
            owed.extend(inst.top_frame.clone());
        }
        if added & DEPTH != 0 {
            owed.extend(inst.snapshot_frame(id));
        }
        let mut queued = 0;
        for frame in &owed {
            queued += subscriber.push(frame, true, &self.metrics).unwrap_or(0);
        }
        self.metrics.queued.add(queued);
        match (position, channels) {
            (Some(p), 0) => {
                inst.subscribers.swap_remove(p);
                self.metrics.subscriptions.dec();
            }
            (Some(p), c) => inst.subscribers[p].channels = c,
            (None, 0) => {}
            (None, c) => {
                inst.subscribers.push(Entry {
                    subscriber: subscriber.clone(),
                    channels: c,
                });
                self.metrics.subscriptions.inc();
            }
        }
    }

    /// Removes a subscriber from every instrument (its stream ended).
    pub fn remove(&self, subscriber: &Subscriber) {
        let slots = self
            .instruments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut removed = 0;
        for slot in slots {
            let mut inst = lock(&slot);
            let before = inst.subscribers.len();
            inst.subscribers
                .retain(|e| e.subscriber.id() != subscriber.id());
            removed += before - inst.subscribers.len();
        }
        self.metrics.subscriptions.sub(removed as i64);
        let left = subscriber.clear();
        self.metrics.queued.sub(left as i64);
    }

    /// Resyncs one subscriber's view of `id` after its queue dropped depth or status:
    /// every queued frame of `id` goes (superseded), then RESYNCING, the snapshots of its
    /// channels at the current sequence, and the current status.
    pub fn resync(&self, subscriber: &Arc<Subscriber>, id: InstrumentId) {
        let Some(slot) = self.slot(id) else {
            return;
        };
        let mut inst = lock(&slot);
        let Some(channels) = inst
            .subscribers
            .iter()
            .find(|e| e.subscriber.id() == subscriber.id())
            .map(|e| e.channels)
        else {
            return;
        };
        let mut frames = vec![inst.status_frame(
            id,
            FeedStatus::Resyncing,
            "this stream fell behind and dropped updates; a snapshot follows",
        )];
        if channels & TOP_OF_BOOK != 0 {
            frames.extend(inst.top_frame.clone());
        }
        if channels & DEPTH != 0 {
            frames.extend(inst.snapshot_frame(id));
        }
        frames.push(inst.status_frame.clone());
        let delta = subscriber.replace_instrument(id, &frames, &self.metrics);
        self.metrics.queued.add(delta);
        self.metrics.subscriber_resyncs.inc();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
