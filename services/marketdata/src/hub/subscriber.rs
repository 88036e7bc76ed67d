//! One subscriber stream's bounded queue of shared frames and what happens when it is full.
//! The bound is in events and in encoded bytes, whichever is reached first: a few large
//! snapshots must not hold as much memory as thousands of small updates.
//!
//! The feed side pushes (under the instrument lock, then this queue's lock); the stream
//! side takes everything ready as one batch. When the queue holds `capacity` events and
//! another arrives, the policy decides:
//! - CONFLATE: older top-of-book events of a symbol that has a newer one queued go; if
//!   that frees nothing (the queue is trades and depth), it behaves as DROP_OLDEST.
//! - DROP_OLDEST: the oldest event goes and the next batch starts with a gap notice
//!   counting what was lost. A lost delta or status marks its symbol for a resync
//!   (RESYNCING, snapshot, status) before the stream sends anything else of it.
//! - DISCONNECT: the queue is emptied and the stream ends with RESOURCE_EXHAUSTED.
//!
//! Snapshots and status frames owed to a subscriber (`forced`) go in even when it is full:
//! they are a few per symbol, and refusing them would leave the subscriber unsure.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Instant;

use execbridge_api::v1::{self, market_data_event::Payload};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{Frame, InstrumentId, Kind};
use crate::metrics::{DropReason, Metrics};

/// What a subscriber's full queue does with one more event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Keep only the latest top of book per symbol.
    Conflate,
    /// Drop the oldest and send a gap notice.
    DropOldest,
    /// End the stream with RESOURCE_EXHAUSTED.
    Disconnect,
}

impl Policy {
    /// The policy of a request value; `None` for UNSPECIFIED or unknown values.
    pub fn from_proto(value: i32) -> Option<Policy> {
        match v1::SlowConsumerPolicy::try_from(value) {
            Ok(v1::SlowConsumerPolicy::Conflate) => Some(Policy::Conflate),
            Ok(v1::SlowConsumerPolicy::DropOldest) => Some(Policy::DropOldest),
            Ok(v1::SlowConsumerPolicy::Disconnect) => Some(Policy::Disconnect),
            Ok(v1::SlowConsumerPolicy::Unspecified) | Err(_) => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Policy::Conflate => "CONFLATE",
            Policy::DropOldest => "DROP_OLDEST",
            Policy::Disconnect => "DISCONNECT",
        }
    }
}

struct Queue {
    policy: Policy,
    frames: VecDeque<Arc<Frame>>,
    /// Encoded bytes of `frames`.
    bytes: usize,
    waker: Option<Waker>,
    /// Events dropped since the last batch, for the next gap notice.
    gap: u64,
    /// Instruments whose view must be resynced before more of them is sent.
    dirty: Vec<InstrumentId>,
    /// The status that ends the stream, once.
    end: Option<Status>,
    ended: bool,
}

/// One stream's queue.
pub struct Subscriber {
    id: u64,
    capacity: usize,
    max_bytes: usize,
    queue: Mutex<Queue>,
    closed: AtomicBool,
    gone: CancellationToken,
}

/// What the stream side gets from [`Subscriber::next`].
pub enum Next {
    /// Events to send, oldest first (a gap notice first if events were dropped).
    Batch(Batch),
    /// These instruments need [`super::Hub::resync`] first.
    Resync(Vec<InstrumentId>),
    /// Send this status and end.
    End(Status),
    /// The stream is over.
    Done,
    /// Nothing yet; the waker is registered.
    Pending,
}

/// Events for one response message.
pub struct Batch {
    /// The frames, in order.
    pub frames: Vec<Arc<Frame>>,
    /// How many events were queued before this batch was taken.
    pub depth: usize,
}

impl Batch {
    /// Encoded size of the response message.
    pub fn encoded_len(&self) -> usize {
        self.frames.iter().map(|f| f.bytes.len()).sum()
    }
}

fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Subscriber {
    pub(super) fn new(id: u64, capacity: usize, max_bytes: usize, policy: Policy) -> Self {
        Self {
            id,
            capacity,
            max_bytes,
            queue: Mutex::new(Queue {
                policy,
                frames: VecDeque::with_capacity(capacity.min(16)),
                bytes: 0,
                waker: None,
                gap: 0,
                dirty: Vec::new(),
                end: None,
                ended: false,
            }),
            closed: AtomicBool::new(false),
            gone: CancellationToken::new(),
        }
    }

    /// Its id, unique within the hub.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its queue capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the policy for what arrives from now on.
    pub fn set_policy(&self, policy: Policy) {
        lock(&self.queue).policy = policy;
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        lock(&self.queue).policy
    }

    /// Whether the stream has ended or is ending: pushes are refused.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Fires when the stream ends (for the task that reads the client's requests).
    pub fn gone(&self) -> &CancellationToken {
        &self.gone
    }

    /// Events queued now.
    pub fn len(&self) -> usize {
        lock(&self.queue).frames.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `frame`; `forced` ignores the capacity. Returns the change in queue length,
    /// or `None` when the subscriber is closed (now or before).
    pub(super) fn push(&self, frame: &Arc<Frame>, forced: bool, metrics: &Metrics) -> Option<i64> {
        if self.is_closed() {
            return None;
        }
        let mut q = lock(&self.queue);
        let before = q.frames.len();
        let incoming = frame.bytes.len();
        let full = |q: &Queue| {
            !q.frames.is_empty()
                && (q.frames.len() >= self.capacity || q.bytes + incoming > self.max_bytes)
        };
        if !forced && full(&q) {
            match q.policy {
                Policy::Disconnect => {
                    q.frames.clear();
                    q.bytes = 0;
                    q.end = Some(slow_consumer(self.capacity, self.max_bytes));
                    self.closed.store(true, Ordering::Release);
                    let waker = q.waker.take();
                    drop(q);
                    metrics.slow_disconnects.inc();
                    metrics.dropped(DropReason::Disconnected, before as u64);
                    metrics.queued.sub(before as i64);
                    self.gone.cancel();
                    if let Some(w) = waker {
                        w.wake();
                    }
                    return None;
                }
                Policy::Conflate => {
                    let conflated = conflate(&mut q);
                    metrics.conflated.inc_by(conflated);
                    while full(&q) {
                        drop_oldest(&mut q, metrics);
                    }
                }
                Policy::DropOldest => {
                    while full(&q) {
                        drop_oldest(&mut q, metrics);
                    }
                }
            }
        }
        q.bytes += incoming;
        q.frames.push_back(frame.clone());
        let delta = q.frames.len() as i64 - before as i64;
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
        Some(delta)
    }

    /// Replaces every queued frame of `id` with `frames` (a resync). Returns the change
    /// in queue length.
    pub(super) fn replace_instrument(
        &self,
        id: InstrumentId,
        frames: &[Arc<Frame>],
        metrics: &Metrics,
    ) -> i64 {
        let mut q = lock(&self.queue);
        if q.ended || self.is_closed() {
            return 0;
        }
        let before = q.frames.len();
        let mut trades = 0u64;
        let mut removed_bytes = 0;
        q.frames.retain(|f| {
            let keep = f.instrument != id;
            if !keep {
                removed_bytes += f.bytes.len();
                if f.kind == Kind::Trade {
                    trades += 1;
                }
            }
            keep
        });
        q.bytes -= removed_bytes;
        // Lost trades cannot be recovered by a snapshot: the gap notice counts them.
        q.gap += trades;
        metrics.dropped(DropReason::Resync, (before - q.frames.len()) as u64);
        q.dirty.retain(|d| *d != id);
        q.bytes += frames.iter().map(|f| f.bytes.len()).sum::<usize>();
        q.frames.extend(frames.iter().cloned());
        let delta = q.frames.len() as i64 - before as i64;
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
        delta
    }

    /// Ends the stream with `status` (shutdown, a bad request).
    pub fn close(&self, status: Status) {
        let mut q = lock(&self.queue);
        if q.end.is_none() && !q.ended {
            q.end = Some(status);
        }
        self.closed.store(true, Ordering::Release);
        let waker = q.waker.take();
        drop(q);
        self.gone.cancel();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Empties the queue for good (the stream is gone); returns how many were queued.
    pub(super) fn clear(&self) -> usize {
        self.closed.store(true, Ordering::Release);
        self.gone.cancel();
        let mut q = lock(&self.queue);
        q.ended = true;
        let n = q.frames.len();
        q.frames.clear();
        q.bytes = 0;
        q.waker = None;
        n
    }

    /// Takes what is ready: at most `max_events` events and about `max_bytes` bytes.
    /// Registers `waker` when nothing is.
    pub fn next(
        &self,
        waker: &Waker,
        max_events: usize,
        max_bytes: usize,
        metrics: &Metrics,
    ) -> Next {
        let mut q = lock(&self.queue);
        if let Some(status) = q.end.take() {
            q.ended = true;
            metrics.queued.sub(q.frames.len() as i64);
            q.frames.clear();
            q.bytes = 0;
            return Next::End(status);
        }
        if q.ended {
            return Next::Done;
        }
        if !q.dirty.is_empty() {
            return Next::Resync(q.dirty.clone());
        }
        if q.frames.is_empty() && q.gap == 0 {
            match &q.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => q.waker = Some(waker.clone()),
            }
            return Next::Pending;
        }
        let depth = q.frames.len();
        let n = depth.min(max_events);
        let mut frames = Vec::with_capacity(n + 1);
        if q.gap > 0 {
            frames.push(gap_frame(q.gap));
            q.gap = 0;
        }
        let mut taken = 0;
        let mut bytes = 0;
        while taken < n {
            let Some(front) = q.frames.pop_front() else {
                break;
            };
            bytes += front.bytes.len();
            q.bytes -= front.bytes.len();
            frames.push(front);
            taken += 1;
            if bytes >= max_bytes {
                break;
            }
        }
        drop(q);
        metrics.queued.sub(taken as i64);
        Next::Batch(Batch { frames, depth })
    }
}

/// Removes every top of book that has a newer one of the same symbol queued; returns how
/// many went. Order of what stays is kept.
fn conflate(q: &mut Queue) -> u64 {
    let mut last: HashMap<InstrumentId, usize> = HashMap::new();
    for (i, f) in q.frames.iter().enumerate() {
        if f.kind == Kind::TopOfBook {
            last.insert(f.instrument, i);
        }
    }
    let before = q.frames.len();
    let mut i = 0;
    let mut removed_bytes = 0;
    q.frames.retain(|f| {
        let keep = f.kind != Kind::TopOfBook || last.get(&f.instrument) == Some(&i);
        i += 1;
        if !keep {
            removed_bytes += f.bytes.len();
        }
        keep
    });
    q.bytes -= removed_bytes;
    (before - q.frames.len()) as u64
}

fn drop_oldest(q: &mut Queue, metrics: &Metrics) {
    if let Some(oldest) = q.frames.pop_front() {
        q.bytes -= oldest.bytes.len();
        q.gap += 1;
        metrics.dropped(DropReason::QueueFull, 1);
        if oldest.kind.needs_resync_when_dropped()
            && oldest.instrument != InstrumentId::STREAM
            && !q.dirty.contains(&oldest.instrument)
        {
            q.dirty.push(oldest.instrument);
        }
    }
}

fn gap_frame(dropped: u64) -> Arc<Frame> {
    let now = Some(execbridge_api::convert::timestamp(
        std::time::SystemTime::now(),
    ));
    let event = v1::MarketDataEvent {
        venue: String::new(),
        symbol: String::new(),
        sequence: 0,
        exchange_time: now,
        receive_time: now,
        payload: Some(Payload::Gap(v1::Gap { dropped })),
    };
    Frame::encode(InstrumentId::STREAM, Kind::Gap, &event, Instant::now())
}

/// RESOURCE_EXHAUSTED with `ErrorInfo { reason: SLOW_CONSUMER }`.
pub fn slow_consumer(capacity: usize, max_bytes: usize) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    Status::with_error_details(
        tonic::Code::ResourceExhausted,
        format!(
            "the stream fell {capacity} events or {max_bytes} bytes behind and its policy is \
             DISCONNECT; read faster, subscribe to less, or use CONFLATE or DROP_OLDEST"
        ),
        ErrorDetails::with_error_info(
            "SLOW_CONSUMER",
            execbridge_api::ERROR_DOMAIN,
            HashMap::from([
                ("queue_capacity".to_owned(), capacity.to_string()),
                ("queue_max_bytes".to_owned(), max_bytes.to_string()),
                ("policy".to_owned(), Policy::Disconnect.name().to_owned()),
            ]),
        ),
    )
}
