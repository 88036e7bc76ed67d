//! What the engine keeps of finished orders, and for how long.
//!
//! Working orders are always held whole. A finished order stays whole (`GetOrder`,
//! `ListOrders`, its fills in `GetTradeHistory`, the full answer to a repeated submit)
//! until [`Retention::finished_orders`] newer orders have finished. Then it is forgotten:
//! the order, its fills and its venue record leave memory, and only a 16-byte key of its
//! `(account, client_order_id)` stays, so a repeated submit is still refused instead of
//! reaching the venue a second time, until [`Retention::idempotency_window`] has passed
//! since the order finished. The audit trail keeps everything, and the journal keeps what
//! its snapshots do not cover (see [`crate::snapshot`]).
//!
//! Memory is therefore bounded by configuration instead of by uptime: about
//! `finished_orders` whole orders (2.3 KB each with their fills and venue record) plus,
//! per order finished within the window, one key (about 90 bytes with its place in the
//! map and the expiry queue; `make bench` measures both).
//!
//! Forgetting happens only when a new order is accepted, with that order's time, in the
//! live path and in replay alike, so a replay rebuilds the same state as the live run.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime};

/// How much history the engine keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished orders kept whole; older ones are forgotten.
    pub finished_orders: usize,
    /// How long after an order finished its `client_order_id` is still refused.
    pub idempotency_window: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            finished_orders: 100_000,
            idempotency_window: Duration::from_secs(3600),
        }
    }
}

/// Items by a stable index that only grows: index `i` keeps naming the same item after
/// items before it are taken. Taken items leave a hole (one word) until every item before
/// them is taken too; then the front is dropped.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Slots<T> {
    base: usize,
    slots: VecDeque<Option<T>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            base: 0,
            slots: VecDeque::new(),
        }
    }
}

impl<T> Slots<T> {
    /// The index the next item gets (every index handed out so far is below it).
    pub(super) fn len(&self) -> usize {
        self.base + self.slots.len()
    }

    /// Adds `item`; returns its index.
    pub(super) fn push(&mut self, item: T) -> usize {
        self.slots.push_back(Some(item));
        self.len() - 1
    }

    /// The item at `idx`, unless it was taken.
    pub(super) fn get(&self, idx: usize) -> Option<&T> {
        self.slots.get(idx.checked_sub(self.base)?)?.as_ref()
    }

    /// The item at `idx`, unless it was taken.
    pub(super) fn get_mut(&mut self, idx: usize) -> Option<&mut T> {
        self.slots.get_mut(idx.checked_sub(self.base)?)?.as_mut()
    }

    /// Takes the item at `idx` out.
    pub(super) fn take(&mut self, idx: usize) -> Option<T> {
        let item = self.slots.get_mut(idx.checked_sub(self.base)?)?.take();
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        item
    }

    /// The items still held, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }
}

/// The `(account, client_order_id)` keys of forgotten orders, until their window passes.
///
/// A key is 128 bits from two independently seeded hashes of the pair: 16 bytes instead of
/// the two strings, and a false match among even a billion keys has a probability near
/// 10^-21. A false match would refuse a new order, never send one twice.
///
/// The seeds are drawn when the engine is made and kept in its snapshots, so an engine
/// restored from a snapshot computes the same keys as the one that wrote it.
pub(super) struct Forgotten {
    seeds: [u64; 2],
    /// Two hashers, each seeded on its own.
    hashers: [foldhash::fast::FixedState; 2],
    /// Key to the forgotten order's index.
    keys: std::collections::HashMap<u128, usize, foldhash::fast::RandomState>,
    /// Keys in the order they finished, with when.
    expiry: VecDeque<(SystemTime, u128)>,
}

impl Default for Forgotten {
    fn default() -> Self {
        Self::with_seeds([rand::random(), rand::random()])
    }
}

/// What a snapshot keeps of [`Forgotten`]: the seeds and the keys in expiry order (the
/// map is rebuilt from them). A key is written as two halves: JSON numbers above 2^64
/// are not portable.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct ForgottenState {
    seeds: [u64; 2],
    /// `(finished, key high half, key low half, order index)`, oldest first.
    keys: Vec<(SystemTime, u64, u64, usize)>,
}

impl Forgotten {
    fn with_seeds(seeds: [u64; 2]) -> Self {
        Self {
            seeds,
            hashers: seeds.map(foldhash::fast::FixedState::with_seed),
            keys: std::collections::HashMap::default(),
            expiry: VecDeque::new(),
        }
    }

    /// The state a snapshot keeps.
    pub(super) fn state(&self) -> ForgottenState {
        let keys = self
            .expiry
            .iter()
            .map(|&(finished, key)| {
                // Every key in the expiry queue is in the map (both change together).
                let idx = self.keys.get(&key).copied().unwrap_or(usize::MAX);
                #[allow(clippy::cast_possible_truncation)]
                (finished, (key >> 64) as u64, key as u64, idx)
            })
            .collect();
        ForgottenState {
            seeds: self.seeds,
            keys,
        }
    }

    /// The keys a snapshot kept, with its seeds.
    pub(super) fn from_state(state: ForgottenState) -> Self {
        let mut f = Self::with_seeds(state.seeds);
        for (finished, high, low, idx) in state.keys {
            f.insert((u128::from(high) << 64) | u128::from(low), idx, finished);
        }
        f
    }

    pub(super) fn key(&self, account: &str, client_order_id: &str) -> u128 {
        let pair = (account, client_order_id);
        let [a, b] = &self.hashers;
        (u128::from(a.hash_one(pair)) << 64) | u128::from(b.hash_one(pair))
    }

    /// Remembers that order `idx`, finished at `finished`, used `key`.
    pub(super) fn insert(&mut self, key: u128, idx: usize, finished: SystemTime) {
        self.keys.insert(key, idx);
        self.expiry.push_back((finished, key));
    }

    /// The forgotten order that used `key`, if its window has not passed.
    pub(super) fn get(&self, key: u128) -> Option<usize> {
        self.keys.get(&key).copied()
    }

    /// Drops the keys of orders finished more than `window` before `now`.
    pub(super) fn expire(&mut self, now: SystemTime, window: Duration) {
        while let Some(&(finished, key)) = self.expiry.front() {
            if now.duration_since(finished).unwrap_or_default() < window {
                break;
            }
            self.expiry.pop_front();
            self.keys.remove(&key);
        }
    }

    /// Keys held.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_their_indices_as_items_before_them_are_taken() {
        let mut s = Slots::default();
        let a = s.push("a");
        let b = s.push("b");
        let c = s.push("c");
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(s.take(b), Some("b"));
        assert_eq!(s.get(b), None);
        assert_eq!(s.get(c), Some(&"c"));
        assert_eq!(s.take(a), Some("a"));
        // Both holes at the front are gone; indices still name the same items.
        assert_eq!(s.slots.len(), 1);
        assert_eq!(s.get(c), Some(&"c"));
        assert_eq!(s.get(a), None);
        assert_eq!(s.push("d"), 3);
        assert_eq!(s.len(), 4);
        assert_eq!(s.take(a), None, "taking twice takes nothing");
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), ["c", "d"]);
    }

    #[test]
    fn forgotten_keys_survive_their_snapshot_state_with_the_same_seeds() {
        let mut f = Forgotten::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let k = f.key("acct", "c1");
        assert!(k >> 64 != 0, "a key uses both halves");
        f.insert(k, 7, t0);
        let back = Forgotten::from_state(f.state());
        assert_eq!(back.key("acct", "c1"), k, "same seeds, same keys");
        assert_eq!(back.get(k), Some(7));
        assert_eq!(back.state(), f.state());
        assert_ne!(
            Forgotten::default().key("acct", "c1"),
            k,
            "a new engine draws new seeds"
        );
    }

    #[test]
    fn forgotten_keys_expire_after_their_window_in_the_order_they_finished() {
        let mut f = Forgotten::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let k1 = f.key("acct", "c1");
        let k2 = f.key("acct", "c2");
        assert_ne!(k1, k2);
        assert_ne!(k1, f.key("acc", "tc1"), "the pair, not its concatenation");
        let [a, b] = &f.hashers;
        assert_ne!(
            a.hash_one(1),
            b.hash_one(1),
            "the two halves are independent"
        );
        f.insert(k1, 0, t0);
        f.insert(k2, 1, t0 + Duration::from_secs(10));
        f.expire(t0 + Duration::from_secs(59), Duration::from_secs(60));
        assert_eq!((f.get(k1), f.get(k2)), (Some(0), Some(1)));
        f.expire(t0 + Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!((f.get(k1), f.get(k2)), (None, Some(1)));
        f.expire(t0 + Duration::from_secs(70), Duration::from_secs(60));
        assert_eq!(f.len(), 0);
    }
}
