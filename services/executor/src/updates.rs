//! The sequenced stream of order updates, as subscribers see it: only durable updates, in
//! sequence order, the newest `retain` kept in memory and older ones read back from the
//! journal, so a subscriber resumes from any sequence the journal still holds.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use execbridge_api::v1;
use tokio::sync::broadcast;

use crate::engine::EngineError;
use crate::journal;

/// Live updates buffered per subscriber before it must catch up from the retained log.
const LIVE_CAPACITY: usize = 4096;

/// A replay of updates and a receiver for everything after them.
pub struct Subscription {
    /// Updates after the requested sequence, in order.
    pub replay: Vec<Arc<v1::OrderUpdate>>,
    /// The newest sequence at the moment of subscribing.
    pub last_sequence: u64,
    /// Live updates after `last_sequence`.
    pub live: broadcast::Receiver<Arc<v1::OrderUpdate>>,
}

struct Inner {
    retained: VecDeque<Arc<v1::OrderUpdate>>,
    last: u64,
}

/// The published side of the shard's updates.
pub struct Updates {
    inner: Mutex<Inner>,
    retain: usize,
    tx: broadcast::Sender<Arc<v1::OrderUpdate>>,
    journal_dir: Option<PathBuf>,
}

impl Updates {
    /// An empty stream keeping `retain` updates in memory; older ones are read from the
    /// journal in `journal_dir` (when there is one).
    pub fn new(retain: usize, journal_dir: Option<PathBuf>) -> Self {
        let (tx, _) = broadcast::channel(LIVE_CAPACITY);
        Self {
            inner: Mutex::new(Inner {
                retained: VecDeque::new(),
                last: 0,
            }),
            retain: retain.max(1),
            tx,
            journal_dir,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes a durable update (sequences must come in order).
    pub fn publish(&self, update: Arc<v1::OrderUpdate>) {
        let mut inner = self.lock();
        inner.last = update.sequence;
        if inner.retained.len() == self.retain {
            inner.retained.pop_front();
        }
        inner.retained.push_back(update.clone());
        // No subscriber is fine: the update is retained and journaled for later replay.
        let _ = self.tx.send(update);
    }

    /// Starts the stream after `sequence`, the last one a start replayed: the updates up to
    /// it are in the journal (or gone with segments deleted behind a snapshot).
    pub fn resume_at(&self, sequence: u64) {
        let mut inner = self.lock();
        inner.last = inner.last.max(sequence);
    }

    /// The newest published sequence.
    pub fn last_sequence(&self) -> u64 {
        self.lock().last
    }

    /// Updates after `after` (none when `None`: live only) and a receiver for everything
    /// newer, with no gap and no duplicate between them.
    ///
    /// # Errors
    /// [`EngineError::CursorAhead`] for a sequence never published;
    /// [`EngineError::CursorTooOld`] when neither memory nor the journal holds it.
    pub fn subscribe(&self, after: Option<u64>) -> Result<Subscription, EngineError> {
        let (live, memory, last, oldest) = {
            let inner = self.lock();
            let oldest = inner
                .retained
                .front()
                .map_or(inner.last + 1, |u| u.sequence);
            let memory: Vec<_> = match after {
                None => Vec::new(),
                Some(after) => inner
                    .retained
                    .iter()
                    .filter(|u| u.sequence > after)
                    .cloned()
                    .collect(),
            };
            (self.tx.subscribe(), memory, inner.last, oldest)
        };
        let Some(after) = after else {
            return Ok(Subscription {
                replay: Vec::new(),
                last_sequence: last,
                live,
            });
        };
        if after > last {
            return Err(EngineError::CursorAhead {
                requested: after,
                last,
            });
        }
        let mut replay = Vec::new();
        if after + 1 < oldest {
            // Older than memory: everything below `oldest` is durable, so the journal has it.
            let too_old = EngineError::CursorTooOld {
                requested: after,
                oldest,
            };
            let Some(dir) = &self.journal_dir else {
                return Err(too_old);
            };
            let from_disk = journal::read_updates(dir, after + 1, oldest - 1)
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            let first = from_disk.first().map(|u| u.sequence);
            if first != Some(after + 1) || from_disk.len() as u64 != oldest - 1 - after {
                return Err(EngineError::CursorTooOld {
                    requested: after,
                    oldest: first.unwrap_or(oldest),
                });
            }
            replay = from_disk;
        }
        replay.extend(memory);
        Ok(Subscription {
            replay,
            last_sequence: last,
            live,
        })
    }

    /// Updates after `after`, for a subscriber that fell behind the live channel.
    ///
    /// # Errors
    /// As [`Updates::subscribe`].
    pub fn catch_up(&self, after: u64) -> Result<Vec<Arc<v1::OrderUpdate>>, EngineError> {
        self.subscribe(Some(after)).map(|s| s.replay)
    }
}
