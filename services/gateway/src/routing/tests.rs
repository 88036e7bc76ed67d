use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;

#[test]
fn the_breaker_opens_after_the_threshold_and_a_probe_closes_it() {
    let b = Breaker::new(3, Duration::from_secs(1));
    let t0 = Instant::now();
    for _ in 0..2 {
        assert!(b.allow(t0).is_ok());
        b.record(true, t0);
    }
    assert!(b.allow(t0).is_ok(), "still closed below the threshold");
    b.record(true, t0);
    let wait = b.allow(t0).unwrap_err();
    assert_eq!(wait, Duration::from_secs(1));
    let later = t0 + Duration::from_millis(1500);
    assert!(b.allow(later).is_ok(), "one probe after the cooldown");
    assert!(b.allow(later).is_err(), "only one probe at a time");
    b.record(false, later);
    assert!(b.allow(later).is_ok(), "closed again after a good probe");
}

#[test]
fn a_failed_probe_opens_the_breaker_again() {
    let b = Breaker::new(1, Duration::from_secs(1));
    let t0 = Instant::now();
    b.record(true, t0);
    let t1 = t0 + Duration::from_secs(2);
    assert!(b.allow(t1).is_ok());
    b.record(true, t1);
    assert!(b.is_open(t1));
}

#[test]
fn a_success_resets_the_failure_count() {
    let b = Breaker::new(2, Duration::from_secs(1));
    let t0 = Instant::now();
    b.record(true, t0);
    b.record(false, t0);
    b.record(true, t0);
    assert!(!b.is_open(t0));
}

#[test]
fn rendezvous_hashing_spreads_accounts_and_moves_few_when_a_shard_is_added() {
    let ids3 = ["s0", "s1", "s2"];
    let ids4 = ["s0", "s1", "s2", "s3"];
    fn pick(ids: &[&'static str], account: &str) -> &'static str {
        ids.iter()
            .copied()
            .max_by_key(|s| weight(s, account))
            .unwrap()
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut moved = 0;
    for i in 0..3000 {
        let account = format!("acct-{i}");
        let before = pick(&ids3, &account);
        *counts.entry(before).or_default() += 1;
        let after = pick(&ids4, &account);
        if after != before {
            assert_eq!(after, "s3", "an account only moves to the new shard");
            moved += 1;
        }
    }
    for (_, n) in counts {
        assert!((800..1200).contains(&n), "uneven spread: {n}");
    }
    assert!(
        (500..1000).contains(&moved),
        "about a quarter moves: {moved}"
    );
}
