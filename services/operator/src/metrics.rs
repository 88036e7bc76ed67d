//! The operator's counters, registered once and served as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what the controller did since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    failures: AtomicU64,
    certificates_issued: AtomicU64,
    ca_rotations: AtomicU64,
    config_writes: AtomicU64,
}

impl Metrics {
    /// A reconcile started.
    pub fn reconcile(&self) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
    }
    /// A reconcile failed.
    pub fn failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
    /// A service certificate was issued.
    pub fn certificate_issued(&self) {
        self.certificates_issued.fetch_add(1, Ordering::Relaxed);
    }
    /// The CA was rotated.
    pub fn ca_rotated(&self) {
        self.ca_rotations.fetch_add(1, Ordering::Relaxed);
    }
    /// A new runtime configuration was written.
    pub fn config_written(&self) {
        self.config_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in [
            (
                "execbridge_operator_reconciles_total",
                "Reconciles started.",
                &self.reconciles,
            ),
            (
                "execbridge_operator_reconcile_failures_total",
                "Reconciles that failed.",
                &self.failures,
            ),
            (
                "execbridge_operator_certificates_issued_total",
                "Service certificates issued.",
                &self.certificates_issued,
            ),
            (
                "execbridge_operator_ca_rotations_total",
                "CA rotations.",
                &self.ca_rotations,
            ),
            (
                "execbridge_operator_config_writes_total",
                "Runtime configurations written.",
                &self.config_writes,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}
