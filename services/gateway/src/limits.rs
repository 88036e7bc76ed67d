//! Rate limits per principal and RPC class (GCRA, the `governor` crate), keyed on the
//! authenticated principal: in a mesh every peer address is the sidecar.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::policy::{Limits, Policy, Principal, RpcClass};

/// The limiters of one principal, one per class, so cancels keep their own budget.
struct Budgets([DefaultDirectRateLimiter; 4]);

fn limiter(per_second: u32, burst: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

impl Budgets {
    fn new(limits: &Limits) -> Self {
        Self(RpcClass::ALL.map(|c| {
            let r = limits.get(c);
            limiter(r.per_second, r.burst)
        }))
    }
}

fn index(class: RpcClass) -> usize {
    match class {
        RpcClass::Submit => 0,
        RpcClass::Cancel => 1,
        RpcClass::Read => 2,
        RpcClass::Stream => 3,
    }
}

/// Every principal's budgets, built from a policy. Principals are known in advance, so the
/// table is fixed and lookups take no lock.
pub struct RateLimits {
    budgets: HashMap<String, Budgets>,
    clock: DefaultClock,
}

impl RateLimits {
    /// Budgets for every principal of `policy`.
    pub fn new(policy: &Policy) -> Self {
        let mut budgets: HashMap<String, Budgets> = policy
            .principals
            .values()
            .map(|p| (p.name.clone(), Budgets::new(&p.limits)))
            .collect();
        if let Some(anonymous) = &policy.anonymous {
            budgets.insert(anonymous.name.clone(), Budgets::new(&anonymous.limits));
        }
        Self {
            budgets,
            clock: DefaultClock::default(),
        }
    }

    /// Takes `n` units of `principal`'s `class` budget, or says how long to wait.
    ///
    /// # Errors
    /// The time until the budget allows it again.
    pub fn check(&self, principal: &Principal, class: RpcClass, n: u32) -> Result<(), Duration> {
        let Some(budgets) = self.budgets.get(&principal.name) else {
            // A principal outside the table cannot be authenticated; refuse defensively.
            return Err(Duration::from_secs(1));
        };
        let limiter = &budgets.0[index(class)];
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        match limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // More than the burst at once can never pass: a batch larger than the budget.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }
}
