//! execbridge operator: issues and rotates the services' TLS certificates and rolls
//! configuration from an `ExecbridgeConfig` custom resource into ConfigMaps.
//!
//! # Layout
//! - [`crd`]: the custom resource types (the CRD in `k8s/crds/` is generated from them).
//! - [`certs`]: issuing certificates and deciding renewals, with no Kubernetes in it.
//! - [`render`]: the runtime configuration files, with no Kubernetes in it.
//! - [`reconcile`]: the controller that applies both to the cluster.
//! - [`leader`]: one active replica, through a Lease.
//! - [`metrics`], [`admin`]: counters and the admin HTTP port.

pub mod admin;
pub mod certs;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod render;

use kube::CustomResourceExt;

/// The CRD as YAML, as `crdgen` prints it and `k8s/crds/` stores it.
///
/// # Errors
/// If serialisation fails (it does not for a well-formed CRD).
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&crd::ExecbridgeConfig::crd())
}
