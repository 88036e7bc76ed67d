//! When each open-loop request is meant to leave, and the pacer that sends them then.
//!
//! Open-loop latency is measured from these intended times, not from the moment a request
//! actually left: a stall anywhere (server, network, this process's pacer or runtime) is
//! then charged to every request it held back, instead of silently thinning the load while
//! it lasts (the coordinated-omission correction).

use std::thread;
use std::time::{Duration, Instant};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// `total` requests at a fixed `rate` per second, the first at offset zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    rate: u64,
    total: u64,
}

impl Schedule {
    /// `rate` requests a second for `duration` (rounded down to whole requests); `None`
    /// for a zero rate.
    pub fn new(rate: u64, duration: Duration) -> Option<Self> {
        if rate == 0 {
            return None;
        }
        let total = duration.as_nanos() * u128::from(rate) / NANOS_PER_SEC;
        Some(Self {
            rate,
            total: u64::try_from(total).unwrap_or(u64::MAX),
        })
    }

    /// Number of requests.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Requests per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// When request `i` is meant to leave, after the start. Computed from `i` rather than
    /// by adding up an interval, so rounding never accumulates: request `rate` is exactly
    /// one second in.
    pub fn offset(&self, i: u64) -> Duration {
        let nanos = u128::from(i) * NANOS_PER_SEC / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many requests are due `elapsed` after the start: those with
    /// `offset(i) <= elapsed`, at most [`Self::total`].
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        // offset(i) = floor(i * 1e9 / rate) <= e  <=>  i * 1e9 < (e + 1) * rate, so the
        // count is ceil((e + 1) * rate / 1e9).
        let bound = (elapsed.as_nanos() + 1) * u128::from(self.rate);
        let due = bound.div_ceil(NANOS_PER_SEC);
        u64::try_from(due).unwrap_or(u64::MAX).min(self.total)
    }
}

/// Calls `issue(i, intended)` for every request of `schedule`, in order, each no earlier
/// than `intended = start + offset(i)`. Blocks the calling thread until the last one.
///
/// `issue` must return at once (spawn the call): time spent in it delays later requests.
/// When the pacer falls behind (the thread was not scheduled in time) it sends everything
/// already due in a burst, with its original intended time, rather than shifting the
/// schedule.
pub fn pace(schedule: Schedule, start: Instant, mut issue: impl FnMut(u64, Instant)) {
    let mut next = 0;
    while next < schedule.total() {
        let at = start + schedule.offset(next);
        let now = Instant::now();
        if at > now {
            // A thread sleep, not the async runtime's timer: tokio's timer wheel has a
            // millisecond resolution, too coarse for a 500 us interval, while a
            // nanosleep overshoots by tens of microseconds.
            thread::sleep(at - now);
        }
        let due = schedule
            .due_by(Instant::now().saturating_duration_since(start))
            .max(next + 1);
        for i in next..due {
            issue(i, start + schedule.offset(i));
        }
        next = due;
    }
}

#[cfg(test)]
mod tests;
