use std::time::{Duration, Instant};

use super::{Schedule, pace};

#[test]
fn the_total_is_the_rate_times_the_duration() {
    let schedule = Schedule::new(2_000, Duration::from_secs(10)).expect("a non-zero rate");
    assert_eq!(schedule.total(), 20_000);
    let short = Schedule::new(3, Duration::from_millis(500)).expect("a non-zero rate");
    assert_eq!(short.total(), 1);
}

#[test]
fn a_zero_rate_has_no_schedule() {
    assert_eq!(Schedule::new(0, Duration::from_secs(1)), None);
}

#[test]
fn offsets_do_not_accumulate_rounding() {
    // 3 per second does not divide a second into whole nanoseconds.
    let schedule = Schedule::new(3, Duration::from_secs(100)).expect("a non-zero rate");
    assert_eq!(schedule.offset(0), Duration::ZERO);
    assert_eq!(schedule.offset(1), Duration::from_nanos(333_333_333));
    assert_eq!(schedule.offset(3), Duration::from_secs(1));
    assert_eq!(schedule.offset(300), Duration::from_secs(100));
}

#[test]
fn due_by_counts_exactly_the_requests_whose_offset_has_passed() {
    for rate in [1, 3, 7, 2_000, 999_999] {
        let schedule = Schedule::new(rate, Duration::from_millis(2_500)).expect("a non-zero rate");
        let elapsed = [
            0,
            1,
            499_999,
            500_000,
            333_333_333,
            1_000_000_000,
            2_499_999_999,
        ]
        .map(Duration::from_nanos);
        for e in elapsed {
            let brute = (0..schedule.total())
                .filter(|&i| schedule.offset(i) <= e)
                .count() as u64;
            assert_eq!(schedule.due_by(e), brute, "rate {rate}, elapsed {e:?}");
        }
    }
}

#[test]
fn due_by_never_exceeds_the_total() {
    let schedule = Schedule::new(10, Duration::from_secs(1)).expect("a non-zero rate");
    assert_eq!(schedule.due_by(Duration::from_secs(60)), 10);
}

#[test]
fn the_pacer_issues_every_request_once_in_order_and_never_early() {
    let schedule = Schedule::new(1_000, Duration::from_millis(50)).expect("a non-zero rate");
    let start = Instant::now() + Duration::from_millis(5);
    let mut issued = Vec::new();
    pace(schedule, start, |i, intended| {
        assert_eq!(intended, start + schedule.offset(i));
        assert!(Instant::now() >= intended, "request {i} left early");
        issued.push(i);
    });
    assert_eq!(issued, (0..50).collect::<Vec<_>>());
}

#[test]
fn a_late_pacer_catches_up_in_a_burst_with_the_original_times() {
    // Starting 20 ms in the past: the first 20 requests are already due.
    let schedule = Schedule::new(1_000, Duration::from_millis(30)).expect("a non-zero rate");
    let start = Instant::now()
        .checked_sub(Duration::from_millis(20))
        .expect("the clock is past 20 ms");
    let mut intended = Vec::new();
    pace(schedule, start, |_, at| intended.push(at));
    assert_eq!(intended.len(), 30);
    assert_eq!(intended[0], start);
    assert_eq!(intended[29], start + Duration::from_millis(29));
}
