//! Health and readiness, one state for the gRPC health service and the admin port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthService, HealthServer};
use tonic_health::server::HealthReporter;

/// Readiness of one process and the gRPC health statuses of its services.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    ready: Arc<AtomicBool>,
    services: Arc<[&'static str]>,
}

impl Health {
    /// A not-ready state for `services` (their fully qualified gRPC names) and the gRPC
    /// health service that reports it.
    pub async fn new(
        services: &[&'static str],
    ) -> (Self, HealthServer<impl HealthService + use<>>) {
        let (reporter, server) = tonic_health::server::health_reporter();
        let health = Self {
            reporter,
            ready: Arc::new(AtomicBool::new(false)),
            services: services.into(),
        };
        health.report(ServingStatus::NotServing).await;
        (health, server)
    }

    async fn report(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for service in self.services.iter() {
            self.reporter.set_service_status(*service, status).await;
        }
    }

    /// Ready: every service SERVING and `/readyz` 200.
    pub async fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
        self.report(ServingStatus::Serving).await;
    }

    /// Not ready: NOT_SERVING and `/readyz` 503 (on shutdown, or while a dependency is
    /// away).
    pub async fn set_not_ready(&self) {
        self.ready.store(false, Ordering::SeqCst);
        self.report(ServingStatus::NotServing).await;
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}
