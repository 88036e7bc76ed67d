//! The controller: one reconcile per `ExecbridgeConfig`, idempotent, driven by the
//! resource, the Secrets and ConfigMaps it owns, and a requeue before the next renewal.
//!
//! Order of work in one pass: the CA Secret, each service's certificate Secret, the
//! runtime ConfigMap, then the status. Everything is written with server-side apply
//! under one field manager, so a pass that finds nothing to change writes nothing but
//! the ConfigMap apply (a no-op on the server) and the status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::certs::{self, CaPlan, CaState, CertError, KeyedCert, LeafReason};
use crate::crd::{Condition, ExecbridgeConfig, ExecbridgeConfigStatus};
use crate::metrics::Metrics;
use crate::render::{self, RenderError};

/// The field manager of every write, and the `managed-by` label value.
pub const MANAGER: &str = "execbridge-operator";
/// Label on every object the operator writes; the controller watches only those.
pub const MANAGED_LABEL: &str = "app.kubernetes.io/managed-by";

/// Why a reconcile failed; each is retried by [`error_policy`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A certificate could not be issued or read.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The runtime configuration could not be rendered.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The resource has no namespace (it is namespaced; this is a malformed object).
    #[error("the resource has no namespace")]
    NoNamespace,
    /// An event could not be published.
    #[error("publishing an event: {0}")]
    Event(#[source] kube::Error),
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Counters served on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Who the events come from.
    pub reporter: Reporter,
    /// The current time (a function so tests could pin it).
    pub now: fn() -> OffsetDateTime,
}

impl Context {
    /// A context with the system clock.
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            metrics,
            reporter: Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
            now: OffsetDateTime::now_utc,
        }
    }
}

/// Runs the controller for the resources in `namespace` until a signal.
pub async fn run(client: Client, namespace: &str, ctx: Arc<Context>) {
    let owned = watcher::Config::default().labels(&format!("{MANAGED_LABEL}={MANAGER}"));
    Controller::new(
        Api::<ExecbridgeConfig>::namespaced(client.clone(), namespace),
        watcher::Config::default(),
    )
    .owns(
        Api::<Secret>::namespaced(client.clone(), namespace),
        owned.clone(),
    )
    .owns(Api::<ConfigMap>::namespaced(client, namespace), owned)
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((object, action)) => tracing::debug!(object = %object.name, ?action, "reconciled"),
            Err(error) => tracing::warn!(%error, "reconcile failed"),
        }
    })
    .await;
}

/// A failed reconcile is retried after a short delay; the error is counted and logged.
pub fn error_policy(object: Arc<ExecbridgeConfig>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure();
    tracing::warn!(object = %object.name_any(), %error, "reconcile failed; retrying in 15s");
    Action::requeue(StdDuration::from_secs(15))
}

fn hours(h: u32) -> Duration {
    Duration::hours(i64::from(h))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn data_str(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The CA a Secret holds, or `None` if it is missing or incomplete (then a new CA is
/// issued: a half-written CA Secret cannot sign anything).
fn read_ca(secret: Option<Secret>) -> Option<CaState> {
    let secret = secret?;
    let current = KeyedCert {
        cert_pem: data_str(&secret, "ca.crt")?,
        key_pem: data_str(&secret, "ca.key")?,
    };
    let trusted = data_str(&secret, "trust.crt")
        .map(|b| certs::split_bundle(&b))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| vec![current.cert_pem.clone()]);
    Some(CaState { current, trusted })
}

fn owned_secret(
    object: &ExecbridgeConfig,
    name: &str,
    type_: &str,
    data: BTreeMap<&str, String>,
) -> Secret {
    let mut secret = Secret {
        type_: Some(type_.into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    };
    secret.metadata.name = Some(name.into());
    secret.metadata.namespace = object.namespace();
    secret.metadata.labels = Some(BTreeMap::from([(MANAGED_LABEL.into(), MANAGER.into())]));
    secret.metadata.owner_references = object.controller_owner_ref(&()).map(|o| vec![o]);
    secret
}

/// Makes the cluster match one `ExecbridgeConfig`.
///
/// # Errors
/// [`Error`] on any failed API call or certificate operation; the pass is retried from
/// the start, which is safe because every step re-reads what it decides on.
pub async fn reconcile(object: Arc<ExecbridgeConfig>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconcile();
    // Everything the operator writes carries an owner reference to the resource, so the
    // garbage collector removes it on deletion; nothing is left to clean up here.
    if object.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    let name = object.name_any();
    let now = (ctx.now)();
    let spec = &object.spec;
    let policy = &spec.certificates;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let apply = PatchParams::apply(MANAGER).force();
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let reference = object.object_ref(&());
    let mut events = Vec::new();

    // 1. The CA.
    let ca_name = format!("{name}-ca");
    let found = read_ca(secrets.get_opt(&ca_name).await?);
    let plan = certs::plan_ca(
        found,
        hours(policy.ca_lifetime_hours),
        hours(policy.ca_renew_before_hours),
        now,
    )?;
    let write_ca = match &plan {
        CaPlan::Created(_) => {
            events.push((
                "IssueCA",
                "CAIssued",
                format!("issued CA in Secret {ca_name}"),
            ));
            true
        }
        CaPlan::Rotated(_) => {
            ctx.metrics.ca_rotated();
            events.push((
                "RotateCA",
                "CARotated",
                format!(
                    "rotated CA in Secret {ca_name}; the previous CA stays trusted until it expires"
                ),
            ));
            true
        }
        CaPlan::Keep { changed, .. } => *changed,
    };
    let ca = plan.state();
    if write_ca {
        let secret = owned_secret(
            &object,
            &ca_name,
            "Opaque",
            BTreeMap::from([
                ("ca.crt", ca.current.cert_pem.clone()),
                ("ca.key", ca.current.key_pem.clone()),
                ("trust.crt", ca.bundle()),
            ]),
        );
        secrets
            .patch(&ca_name, &apply, &Patch::Apply(&secret))
            .await?;
    }
    let ca_info = certs::inspect(&ca.current.cert_pem)?;
    let mut next_due = ca_info.not_after - hours(policy.ca_renew_before_hours);

    // 2. One certificate per service. `ca.crt` is the whole trust bundle, so during a CA
    // rotation a service trusts peers whose certificates chain to either CA.
    let mut expiries = BTreeMap::new();
    for service in &policy.services {
        let found = secrets.get_opt(&service.secret_name).await?;
        let cert = found.as_ref().and_then(|s| data_str(s, "tls.crt"));
        let key = found.as_ref().and_then(|s| data_str(s, "tls.key"));
        let bundle = found.as_ref().and_then(|s| data_str(s, "ca.crt"));
        let reason = match (&cert, &key) {
            (Some(cert), Some(_)) => {
                certs::plan_leaf(Some(cert), ca, hours(policy.renew_before_hours), now)
            }
            _ => Some(LeafReason::Missing),
        };
        let leaf = match (reason, cert, key) {
            (None, Some(cert_pem), Some(key_pem)) => KeyedCert { cert_pem, key_pem },
            (reason, ..) => {
                let leaf = certs::issue_leaf(
                    &ca.current,
                    &namespace,
                    &service.name,
                    &service.dns_names,
                    now,
                    hours(policy.lifetime_hours),
                )?;
                ctx.metrics.certificate_issued();
                events.push((
                    "IssueCertificate",
                    "CertificateIssued",
                    format!(
                        "issued the {} certificate in Secret {} ({reason:?})",
                        service.name, service.secret_name
                    ),
                ));
                leaf
            }
        };
        let changed = reason.is_some() || bundle.as_deref() != Some(ca.bundle().as_str());
        if changed {
            let secret = owned_secret(
                &object,
                &service.secret_name,
                "kubernetes.io/tls",
                BTreeMap::from([
                    ("tls.crt", leaf.cert_pem.clone()),
                    ("tls.key", leaf.key_pem.clone()),
                    ("ca.crt", ca.bundle()),
                ]),
            );
            secrets
                .patch(&service.secret_name, &apply, &Patch::Apply(&secret))
                .await?;
        }
        let not_after = certs::inspect(&leaf.cert_pem)?.not_after;
        next_due = next_due.min(not_after - hours(policy.renew_before_hours));
        expiries.insert(service.name.clone(), rfc3339(not_after));
    }

    // 3. The runtime configuration.
    let files = render::files(spec)?;
    let config_hash = render::hash(&files);
    let cm_name = spec
        .config_map_name
        .clone()
        .unwrap_or_else(|| format!("{name}-runtime"));
    let mut cm = ConfigMap {
        data: Some(files),
        ..ConfigMap::default()
    };
    cm.metadata.name = Some(cm_name.clone());
    cm.metadata.namespace = Some(namespace.clone());
    cm.metadata.labels = Some(BTreeMap::from([(MANAGED_LABEL.into(), MANAGER.into())]));
    cm.metadata.annotations = Some(BTreeMap::from([(
        "execbridge.io/config-hash".into(),
        config_hash.clone(),
    )]));
    cm.metadata.owner_references = object.controller_owner_ref(&()).map(|o| vec![o]);
    let previous_hash = object.status.as_ref().and_then(|s| s.config_hash.clone());
    if previous_hash.as_deref() != Some(config_hash.as_str()) {
        ctx.metrics.config_written();
        events.push((
            "RenderConfig",
            "ConfigUpdated",
            format!("wrote runtime configuration {config_hash} to ConfigMap {cm_name}"),
        ));
    }
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace)
        .patch(&cm_name, &apply, &Patch::Apply(&cm))
        .await?;

    // 4. Events, then the status.
    for (action, reason, note) in events {
        recorder
            .publish(
                &Event {
                    type_: EventType::Normal,
                    reason: reason.into(),
                    note: Some(note),
                    action: action.into(),
                    secondary: None,
                },
                &reference,
            )
            .await
            .map_err(Error::Event)?;
    }
    let status = status(&object, now, ca, &ca_info, expiries, config_hash);
    Api::<ExecbridgeConfig>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;

    // Come back before the next certificate is due (at least every hour, to notice
    // drift nobody told us about; at most every minute).
    let wait = (next_due - now).clamp(Duration::minutes(1), Duration::hours(1));
    Ok(Action::requeue(StdDuration::from_secs(
        u64::try_from(wait.whole_seconds()).unwrap_or(60),
    )))
}

fn status(
    object: &ExecbridgeConfig,
    now: OffsetDateTime,
    ca: &CaState,
    ca_info: &certs::CertInfo,
    certificates: BTreeMap<String, String>,
    config_hash: String,
) -> ExecbridgeConfigStatus {
    let previous = object.status.clone().unwrap_or_default();
    // A condition keeps its transition time while its status does not change.
    let condition = |type_: &str, reason: &str, message: String| {
        let last_transition_time = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
            .map_or_else(|| rfc3339(now), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: reason.into(),
            message,
            last_transition_time,
        }
    };
    ExecbridgeConfigStatus {
        conditions: vec![
            condition(
                "CertificatesReady",
                "Issued",
                format!("{} service certificates valid", certificates.len()),
            ),
            condition(
                "Ready",
                "Reconciled",
                "certificates and configuration are up to date".into(),
            ),
        ],
        observed_generation: object.metadata.generation,
        ca_not_after: Some(rfc3339(ca_info.not_after)),
        trusted_cas: u32::try_from(ca.trusted.len()).unwrap_or(u32::MAX),
        certificates,
        config_hash: Some(config_hash),
    }
}
