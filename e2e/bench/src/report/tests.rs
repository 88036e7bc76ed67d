use std::time::Duration;

use super::{ECHO, GATEWAY, Percentiles, Report, Settings, Summary, ratios, table, write_json};
use crate::load::{Errors, Run, histogram};
use crate::scrape::SyncTimes;

/// A run whose latencies are 1, 2, ..., `n` microseconds over `secs` seconds.
fn run(n: u64, scale_us: u64, secs: u64) -> Run {
    let mut latency = histogram().expect("bounds");
    for us in 1..=n {
        latency.record(us * scale_us * 1_000).expect("in range");
    }
    Run {
        latency,
        send_lag: None,
        errors: Errors::default(),
        elapsed: Duration::from_secs(secs),
    }
}

fn close(actual: f64, expected: f64) -> bool {
    // Three significant digits: within 0.1 % plus the 0.1 us rounding.
    (actual - expected).abs() <= expected * 0.001 + 0.1
}

#[test]
fn percentiles_are_read_in_microseconds_from_nanoseconds() {
    let p = Percentiles::of(&run(1_000, 1, 1).latency);
    for (actual, expected) in [
        (p.p50_us, 500.0),
        (p.p90_us, 900.0),
        (p.p99_us, 990.0),
        (p.p999_us, 999.0),
        (p.max_us, 1_000.0),
        (p.mean_us, 500.5),
    ] {
        assert!(close(actual, expected), "{actual} is not about {expected}");
    }
}

#[test]
fn an_empty_histogram_reads_as_zeros() {
    let p = Percentiles::of(&histogram().expect("bounds"));
    assert_eq!((p.p50_us, p.max_us, p.mean_us), (0.0, 0.0, 0.0));
}

#[test]
fn throughput_is_successful_calls_per_second_of_the_run() {
    let summary = Summary::of("closed_loop", ECHO, &run(1_000, 1, 4));
    assert_eq!(summary.count, 1_000);
    assert_eq!(summary.throughput_per_sec, 250.0);
}

#[test]
fn ratios_divide_the_gateway_by_the_echo_per_scenario() {
    let summaries = [
        Summary::of("closed_loop", ECHO, &run(1_000, 1, 1)),
        Summary::of("closed_loop", GATEWAY, &run(1_000, 3, 1)),
        Summary::of("open_loop", GATEWAY, &run(1_000, 1, 1)),
    ];
    let ratios = ratios(&summaries);
    assert_eq!(ratios.len(), 2);
    assert_eq!(ratios[0].scenario, "closed_loop");
    assert!(close(ratios[0].p50.expect("both targets ran"), 3.0));
    assert!(close(ratios[0].p99.expect("both targets ran"), 3.0));
    // No echo figures for the open loop: no ratio rather than a made-up one.
    assert_eq!((ratios[1].p50, ratios[1].p99), (None, None));
}

#[test]
fn an_echo_latency_of_zero_gives_no_ratio() {
    let empty = Run {
        latency: histogram().expect("bounds"),
        send_lag: None,
        errors: Errors::default(),
        elapsed: Duration::ZERO,
    };
    let summaries = [
        Summary::of("closed_loop", ECHO, &empty),
        Summary::of("closed_loop", GATEWAY, &run(10, 1, 1)),
    ];
    assert_eq!(ratios(&summaries)[0].p50, None);
}

fn report() -> Report {
    let mut failing = run(10, 2, 1);
    failing.errors = Errors {
        count: 2,
        by_kind: [("Unavailable".to_owned(), 2)].into(),
        first: Some("Unavailable: connection refused".into()),
    };
    failing.send_lag = Some(run(10, 1, 1).latency);
    let results = vec![
        Summary::of("open_loop", ECHO, &run(10, 1, 1)),
        Summary::of("open_loop", GATEWAY, &failing),
    ];
    Report {
        benchmark: "test",
        finished_unix_secs: 0,
        cores: 2,
        settings: Settings {
            closed_loop_calls: 1,
            closed_loop_warmup: 0,
            open_loop_rate_per_sec: 1,
            open_loop_duration_secs: 1,
            open_loop_connections: 1,
            timeout_ms: 1,
            gateway_policy: "",
            service_env: Vec::new(),
        },
        ratios: ratios(&results),
        results,
        journal_fsync: Some(SyncTimes {
            count: 3,
            mean_us: 150.0,
            p50_us: 140.0,
            p99_us: 480.5,
        }),
    }
}

#[test]
fn the_table_shows_every_row_the_ratios_the_send_lag_and_the_first_error() {
    let text = table(&report());
    assert!(text.contains("2 core(s)"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("open_loop")).count(),
        2,
        "{text}"
    );
    assert!(text.contains("p50   x2.00"), "{text}");
    assert!(text.contains("send lag open_loop"), "{text}");
    assert!(text.contains("2 failed (Unavailable x2)"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    assert!(
        text.contains("fdatasync over the run: 3 syncs, mean 150.0, p50 ~140.0, p99 ~480.5"),
        "{text}"
    );
}

#[test]
fn the_error_count_adds_up_every_target() {
    assert_eq!(report().errors(), 2);
}

#[test]
fn the_json_file_is_written_with_its_directory() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("nested/results.json");
    write_json(&report(), &path).expect("written");
    let text = std::fs::read_to_string(&path).expect("readable");
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(json["cores"], 2);
    assert_eq!(json["results"][1]["errors"], 2);
    assert_eq!(json["results"][1]["errors_by_kind"]["Unavailable"], 2);
    assert!(json["results"][0]["p99_us"].is_f64());
    assert_eq!(json["ratios"][0]["scenario"], "open_loop");
    assert_eq!(json["journal_fsync"]["count"], 3);
}
