//! Routing to executor shards: every account belongs to exactly one shard, chosen by
//! rendezvous (highest-random-weight) hashing so that adding a shard moves only the
//! accounts the new shard wins; each shard has a circuit breaker.
//!
//! The shard list is static configuration; in Kubernetes it names the StatefulSet's pods
//! through the headless Service (`executor-0.executor-headless:50052`, ...), whose DNS
//! names are stable for the life of the shard.
//!
//! The breaker is written here rather than taken from a crate because it must answer
//! "open for how much longer", which goes back to the caller as a retry delay.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use execbridge_api::internal::v1::executor_service_client::ExecutorServiceClient;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// One executor shard.
pub struct Shard {
    /// The id it names itself with in order updates and order ids.
    pub id: String,
    /// Its client (a lazily connecting channel).
    pub client: ExecutorServiceClient<Channel>,
    /// Its breaker.
    pub breaker: Breaker,
}

/// Every shard.
pub struct Shards {
    shards: Vec<Shard>,
}

fn weight(shard: &str, account: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(shard.as_bytes());
    h.update([0]);
    h.update(account.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

impl Shards {
    /// The shards, in configuration order. Must not be empty.
    pub fn new(shards: Vec<Shard>) -> Self {
        Self { shards }
    }

    /// The shard that owns `account`.
    ///
    /// # Panics
    /// Never for a validated configuration (at least one shard).
    pub fn for_account(&self, account: &str) -> &Shard {
        #[allow(clippy::expect_used)]
        self.shards
            .iter()
            .max_by_key(|s| weight(&s.id, account))
            .expect("configuration has at least one shard")
    }

    /// The shard with `id`.
    pub fn by_id(&self, id: &str) -> Option<&Shard> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// All shards.
    pub fn all(&self) -> &[Shard] {
        &self.shards
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// A circuit breaker: after `threshold` consecutive transport failures it opens for
/// `cooldown`, failing calls at once; then one probe call decides whether it closes.
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Whether a call may go through now; `Err` holds how long until it may.
    ///
    /// # Errors
    /// The remaining open time.
    pub fn allow(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(())
            }
            // One probe at a time; the others wait for its verdict.
            State::HalfOpen { probing: true } => Err(Duration::from_millis(50)),
        }
    }

    /// Records the outcome of a call that was allowed. `failed` means the shard could not
    /// be reached or did not answer (not a business error).
    pub fn record(&self, failed: bool, now: Instant) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *state = match (*state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (_, true) => State::Open {
                until: now + self.cooldown,
            },
        };
    }

    /// Whether the breaker currently refuses calls.
    pub fn is_open(&self, now: Instant) -> bool {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        matches!(*state, State::Open { until } if now < until)
    }
}

#[cfg(test)]
mod tests;
