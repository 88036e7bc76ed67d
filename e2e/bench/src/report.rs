//! What a run found: per-scenario percentiles, the gateway/echo ratios, the printed table
//! and the JSON file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::Run;
use crate::scrape::SyncTimes;

/// The target the gateway is compared with.
pub const ECHO: &str = "echo";
/// The path under test.
pub const GATEWAY: &str = "gateway";

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest.
    pub max_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

fn micros(nanos: u64) -> f64 {
    // Nanoseconds to microseconds, kept to 0.1 us: the histogram has three significant
    // digits, so more decimals would be noise.
    (nanos as f64 / 100.0).round() / 10.0
}

impl Percentiles {
    /// Of `histogram`, which holds nanoseconds; all zero when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let at = |q: f64| micros(histogram.value_at_quantile(q));
        Self {
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: micros(histogram.max()),
            mean_us: (histogram.mean() / 100.0).round() / 10.0,
        }
    }
}

/// One scenario on one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// `closed_loop` or `open_loop`.
    pub scenario: String,
    /// [`ECHO`] or [`GATEWAY`].
    pub target: String,
    /// Successful calls recorded.
    pub count: u64,
    /// Failed calls, warm-up included.
    pub errors: u64,
    /// Failed calls by kind (gRPC code, or order status and reject reason).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Why the first failed call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Latency of the successful calls.
    #[serde(flatten)]
    pub latency: Percentiles,
    /// Successful calls per second of the measured period.
    pub throughput_per_sec: f64,
    /// Open loop only: how late calls left after their intended time (already part of the
    /// latency); large values mean the load generator, not the target, fell behind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag: Option<Percentiles>,
}

impl Summary {
    /// The figures of `run`.
    pub fn of(scenario: &str, target: &str, run: &Run) -> Self {
        let count = run.latency.len();
        let secs = run.elapsed.as_secs_f64();
        Self {
            scenario: scenario.to_owned(),
            target: target.to_owned(),
            count,
            errors: run.errors.count,
            errors_by_kind: run.errors.by_kind.clone(),
            first_error: run.errors.first.clone(),
            latency: Percentiles::of(&run.latency),
            throughput_per_sec: if secs > 0.0 {
                (count as f64 / secs).round()
            } else {
                0.0
            },
            send_lag: run.send_lag.as_ref().map(Percentiles::of),
        }
    }
}

/// How many times slower the gateway is than the echo server in one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// The scenario.
    pub scenario: String,
    /// gateway p50 / echo p50; `None` when either is missing or the echo's is zero.
    pub p50: Option<f64>,
    /// gateway p99 / echo p99.
    pub p99: Option<f64>,
}

fn ratio(gateway: f64, echo: f64) -> Option<f64> {
    (echo > 0.0).then(|| (gateway / echo * 100.0).round() / 100.0)
}

/// gateway/echo for every scenario that has both, in the order scenarios first appear.
pub fn ratios(summaries: &[Summary]) -> Vec<Ratio> {
    let mut scenarios: Vec<&str> = Vec::new();
    for s in summaries {
        if !scenarios.contains(&s.scenario.as_str()) {
            scenarios.push(&s.scenario);
        }
    }
    scenarios
        .into_iter()
        .map(|scenario| {
            let find = |target: &str| {
                summaries
                    .iter()
                    .find(|s| s.scenario == scenario && s.target == target)
            };
            let (p50, p99) = match (find(GATEWAY), find(ECHO)) {
                (Some(g), Some(e)) => (
                    ratio(g.latency.p50_us, e.latency.p50_us),
                    ratio(g.latency.p99_us, e.latency.p99_us),
                ),
                _ => (None, None),
            };
            Ratio {
                scenario: scenario.to_owned(),
                p50,
                p99,
            }
        })
        .collect()
}

/// The settings a run used, recorded next to its figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Closed loop: recorded calls per target.
    pub closed_loop_calls: u64,
    /// Closed loop: unrecorded calls first.
    pub closed_loop_warmup: u64,
    /// Open loop: requests per second.
    pub open_loop_rate_per_sec: u64,
    /// Open loop: seconds.
    pub open_loop_duration_secs: u64,
    /// Open loop: connections.
    pub open_loop_connections: u64,
    /// Deadline of each call.
    pub timeout_ms: u64,
    /// What the gateway's policy was changed to (e2e/bench/gateway-policy.toml).
    pub gateway_policy: &'static str,
    /// Extra environment given to the services (`--service-env`).
    pub service_env: Vec<String>,
}

/// Everything a run found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What was measured.
    pub benchmark: &'static str,
    /// Seconds since the epoch at the end of the run.
    pub finished_unix_secs: u64,
    /// `std::thread::available_parallelism`: every process of the run shares these.
    pub cores: usize,
    /// How it was measured.
    pub settings: Settings,
    /// One entry per scenario and target.
    pub results: Vec<Summary>,
    /// gateway/echo per scenario.
    pub ratios: Vec<Ratio>,
    /// The executor's journal fdatasync times over the whole run, from its metrics.
    pub journal_fsync: Option<SyncTimes>,
}

impl Report {
    /// Total failed calls.
    pub fn errors(&self) -> u64 {
        self.results.iter().map(|s| s.errors).sum()
    }
}

fn times(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "n/a".to_owned(), |r| format!("x{r:.2}"))
}

/// The report as a table for people.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "SubmitOrder acknowledgement latency (microseconds), {} core(s)",
        report.cores
    );
    let _ = writeln!(
        out,
        "{:<12} {:<8} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "scenario", "target", "count", "errors", "p50", "p90", "p99", "p99.9", "max", "req/s"
    );
    for s in &report.results {
        let l = &s.latency;
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:>7} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.0}",
            s.scenario,
            s.target,
            s.count,
            s.errors,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            s.throughput_per_sec
        );
    }
    for r in &report.ratios {
        let _ = writeln!(
            out,
            "gateway/echo {:<12} p50 {:>7}   p99 {:>7}",
            r.scenario,
            times(r.p50),
            times(r.p99)
        );
    }
    for s in &report.results {
        if let Some(lag) = &s.send_lag {
            let _ = writeln!(
                out,
                "send lag {:<12} {:<8} p50 {:.1}  p99 {:.1}  max {:.1} (part of the latency above)",
                s.scenario, s.target, lag.p50_us, lag.p99_us, lag.max_us
            );
        }
    }
    if let Some(sync) = &report.journal_fsync {
        let _ = writeln!(
            out,
            "executor journal fdatasync over the run: {} syncs, mean {:.1}, p50 ~{:.1}, p99 ~{:.1} (within histogram buckets; part of the gateway latency)",
            sync.count, sync.mean_us, sync.p50_us, sync.p99_us
        );
    }
    for s in report.results.iter().filter(|s| s.errors > 0) {
        let kinds: Vec<String> = s
            .errors_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind} x{n}"))
            .collect();
        let _ = writeln!(
            out,
            "errors   {:<12} {:<8} {} failed ({}); first: {}",
            s.scenario,
            s.target,
            s.errors,
            kinds.join(", "),
            s.first_error.as_deref().unwrap_or("?")
        );
    }
    out
}

/// Writes `report` as pretty JSON to `path`, creating its directory.
///
/// # Errors
/// When the directory or the file cannot be written.
pub fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut json = serde_json::to_string_pretty(report).context("cannot encode the results")?;
    json.push('\n');
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))
}

/// Seconds since the epoch, for the report.
pub fn unix_secs_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests;
