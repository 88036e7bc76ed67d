//! The executor's journal sync time over a run, read from its Prometheus histogram
//! `executor_journal_fsync_seconds` on the admin port once the scenarios are done: how
//! much of an acknowledgement the disk takes.
//!
//! Only the lines of one histogram are parsed, which takes a few lines here; a parser of
//! the whole exposition format would be a dependency for that alone.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::stack::status_code;

/// The histogram of the journal's fdatasync times.
pub const FSYNC_METRIC: &str = "executor_journal_fsync_seconds";

/// A histogram as exposed: cumulative counts by upper bound, the count and the sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)`, in the order exposed (ascending; the last is `+Inf`).
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Their sum, in the metric's unit.
    pub sum: f64,
}

impl Histogram {
    /// The `q` quantile as Prometheus' `histogram_quantile` estimates it: linear within
    /// the bucket that holds the rank, from the bound below it (0 for the first); the
    /// highest finite bound when the rank falls in `+Inf`. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = (0.0, 0u64);
        for &(le, cumulative) in &self.buckets {
            if cumulative as f64 >= rank {
                if le.is_infinite() {
                    return Some(below.0);
                }
                let inside = (cumulative - below.1) as f64;
                let share = if inside > 0.0 {
                    (rank - below.1 as f64) / inside
                } else {
                    0.0
                };
                return Some(below.0 + (le - below.0) * share);
            }
            below = (le, cumulative);
        }
        Some(below.0)
    }
}

/// The unlabelled histogram `name` in the text exposition `text`, if it is there.
pub fn parse_histogram(text: &str, name: &str) -> Option<Histogram> {
    let bucket = format!("{name}_bucket{{le=\"");
    let mut buckets = Vec::new();
    let mut count = None;
    let mut sum = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&bucket) {
            let (le, value) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            buckets.push((le, value.trim().parse().ok()?));
        } else if let Some(value) = line
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix("_count "))
        {
            count = value.trim().parse().ok();
        } else if let Some(value) = line
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix("_sum "))
        {
            sum = value.trim().parse().ok();
        }
    }
    if buckets.is_empty() {
        return None;
    }
    Some(Histogram {
        buckets,
        count: count?,
        sum: sum?,
    })
}

/// The journal's fdatasync times over a run, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncTimes {
    /// Syncs over the whole run (warm-up and every scenario on the gateway).
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median, estimated within the histogram's buckets.
    pub p50_us: f64,
    /// 99th percentile, estimated within the histogram's buckets.
    pub p99_us: f64,
}

impl SyncTimes {
    /// The summary of `histogram` (in seconds); `None` without observations.
    pub fn of(histogram: &Histogram) -> Option<Self> {
        if histogram.count == 0 {
            return None;
        }
        Some(Self {
            count: histogram.count,
            mean_us: histogram.sum / histogram.count as f64 * 1e6,
            p50_us: histogram.quantile(0.5)? * 1e6,
            p99_us: histogram.quantile(0.99)? * 1e6,
        })
    }
}

/// `GET http://<admin>/metrics`: the body of a 200 answer.
///
/// # Errors
/// When the port does not answer within `timeout`, or answers otherwise.
pub async fn metrics(admin: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    let fetch = async {
        let mut stream = TcpStream::connect(admin).await?;
        // HTTP/1.0: the answer is the whole body, never chunked.
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(timeout, fetch)
        .await
        .with_context(|| format!("{admin}/metrics did not answer within {timeout:?}"))??;
    let status = status_code(&response);
    if status != Some(200) {
        bail!("{admin}/metrics answered {status:?}");
    }
    let text = String::from_utf8(response).context("/metrics is not UTF-8")?;
    let (_, body) = text
        .split_once("\r\n\r\n")
        .context("/metrics answered without a body")?;
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests;
