//! The reconcile loop against kube's mocked API server (see `common/fake_api.rs`).

#[path = "common/fake_api.rs"]
mod fake_api;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use execbridge_operator::certs::{self, KeyedCert};
use execbridge_operator::crd::{
    CertificatePolicy, ExecbridgeConfig, ExecbridgeConfigSpec, ExecbridgeConfigStatus, RateLimit,
    ServiceCertificate,
};
use execbridge_operator::metrics::Metrics;
use execbridge_operator::reconcile::{self, Context, Error};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use time::{Duration, OffsetDateTime};

use fake_api::{FakeApi, NS, serve};

fn spec() -> ExecbridgeConfigSpec {
    ExecbridgeConfigSpec {
        certificates: CertificatePolicy {
            lifetime_hours: 24,
            renew_before_hours: 8,
            ca_lifetime_hours: 240,
            ca_renew_before_hours: 48,
            services: ["gateway", "executor"]
                .into_iter()
                .map(|s| ServiceCertificate {
                    name: s.into(),
                    secret_name: format!("demo-{s}-tls"),
                    dns_names: vec![format!("demo-{s}.{NS}.svc.cluster.local")],
                })
                .collect(),
        },
        config_map_name: None,
        rate_limits: BTreeMap::from([(
            "submit".to_string(),
            RateLimit {
                per_second: 100,
                burst: 200,
            },
        )]),
        risk_limits: Default::default(),
        instruments: vec![],
        venues: vec![],
    }
}

fn resource(
    spec: ExecbridgeConfigSpec,
    status: Option<ExecbridgeConfigStatus>,
) -> ExecbridgeConfig {
    let mut object = ExecbridgeConfig::new("demo", spec);
    object.metadata.namespace = Some(NS.into());
    object.metadata.uid = Some("5d3c-uid".into());
    object.metadata.generation = Some(3);
    object.status = status;
    object
}

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context {
        client,
        metrics: Arc::new(Metrics::default()),
        reporter: Reporter {
            controller: "execbridge-operator".into(),
            instance: None,
        },
        now: OffsetDateTime::now_utc,
    })
}

/// Stores `object` in the fake API server, then runs one reconcile pass over it.
async fn pass(
    fake: &FakeApi,
    ctx: &Arc<Context>,
    object: ExecbridgeConfig,
) -> Result<Action, Error> {
    fake.put_resource(&object);
    reconcile::reconcile(Arc::new(object), ctx.clone()).await
}

fn events(calls: &[String]) -> usize {
    calls.iter().filter(|c| c.contains("/events")).count()
}

fn secret_writes(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.starts_with("PATCH") && c.contains("/secrets/"))
        .map(|c| c.rsplit('/').next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_new_resource_gets_a_ca_certificates_signed_by_it_a_config_map_and_a_ready_status() {
    let fake = Arc::new(FakeApi::default());
    let ctx = context(serve(fake.clone()));
    let action = pass(&fake, &ctx, resource(spec(), None))
        .await
        .expect("reconcile");

    let ca = fake.secret("demo-ca").expect("ca secret");
    let ca_info = certs::inspect(&ca["ca.crt"]).expect("ca");
    assert_eq!(ca["trust.crt"], ca["ca.crt"]);
    for service in ["gateway", "executor"] {
        let tls = fake
            .secret(&format!("demo-{service}-tls"))
            .expect("tls secret");
        let leaf = certs::inspect(&tls["tls.crt"]).expect("leaf");
        assert_eq!(
            leaf.issuer, ca_info.subject,
            "{service} is signed by the CA"
        );
        assert!(leaf.subject.contains(service));
        assert_eq!(tls["ca.crt"], ca["ca.crt"]);
        assert!(tls["tls.key"].contains("PRIVATE KEY"));
    }
    // Everything written is owned by the resource, so deleting it garbage-collects them.
    let cm = fake
        .object(&format!("/api/v1/namespaces/{NS}/configmaps/demo-runtime"))
        .expect("config map");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["uid"], "5d3c-uid");
    assert_eq!(
        cm["data"]["limits.toml"],
        "[limits.submit]\nper_second = 100\nburst = 200\n"
    );
    let secret = fake
        .object(&format!("/api/v1/namespaces/{NS}/secrets/demo-gateway-tls"))
        .expect("secret");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(secret["type"], "kubernetes.io/tls");

    let status = fake.stored_status();
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(status.trusted_cas, 1);
    assert_eq!(status.certificates.len(), 2);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    // CA issued, two certificates issued, configuration written.
    assert_eq!(events(&fake.take_calls()), 4);
    // Requeued before the first certificate is due (24 h - 8 h), capped at an hour.
    assert_eq!(action, Action::requeue(StdDuration::from_secs(3600)));
}

#[tokio::test]
async fn a_second_pass_over_an_unchanged_resource_writes_no_secret_and_raises_no_event() {
    let fake = Arc::new(FakeApi::default());
    let ctx = context(serve(fake.clone()));
    pass(&fake, &ctx, resource(spec(), None))
        .await
        .expect("first");
    let before = fake.secret("demo-gateway-tls");
    fake.take_calls();

    let status = fake.stored_status();
    pass(&fake, &ctx, resource(spec(), Some(status)))
        .await
        .expect("second");
    let calls = fake.take_calls();
    assert_eq!(secret_writes(&calls), Vec::<String>::new(), "{calls:?}");
    assert_eq!(events(&calls), 0, "{calls:?}");
    assert_eq!(fake.secret("demo-gateway-tls"), before);
}

#[tokio::test]
async fn a_certificate_inside_its_renewal_window_is_renewed_and_the_ca_is_kept() {
    let fake = Arc::new(FakeApi::default());
    let now = OffsetDateTime::now_utc();
    let ca = certs::issue_ca(now, Duration::hours(240)).expect("ca");
    let expiring =
        certs::issue_leaf(&ca, NS, "gateway", &[], now, Duration::hours(2)).expect("leaf");
    let fresh =
        certs::issue_leaf(&ca, NS, "executor", &[], now, Duration::hours(24)).expect("leaf");
    fake.put_secret(
        "demo-ca",
        &[
            ("ca.crt", &ca.cert_pem),
            ("ca.key", &ca.key_pem),
            ("trust.crt", &ca.cert_pem),
        ],
    );
    for (name, leaf) in [
        ("demo-gateway-tls", &expiring),
        ("demo-executor-tls", &fresh),
    ] {
        fake.put_secret(
            name,
            &[
                ("tls.crt", &leaf.cert_pem),
                ("tls.key", &leaf.key_pem),
                ("ca.crt", &ca.cert_pem),
            ],
        );
    }

    pass(&fake, &context(serve(fake.clone())), resource(spec(), None))
        .await
        .expect("reconcile");

    let calls = fake.take_calls();
    assert_eq!(secret_writes(&calls), vec!["demo-gateway-tls".to_string()]);
    let renewed = fake.secret("demo-gateway-tls").expect("secret");
    assert_ne!(renewed["tls.crt"], expiring.cert_pem);
    let info = certs::inspect(&renewed["tls.crt"]).expect("leaf");
    assert!(info.not_after > now + Duration::hours(23));
    assert_eq!(fake.secret("demo-ca").expect("ca")["ca.crt"], ca.cert_pem);
}

#[tokio::test]
async fn a_ca_near_expiry_rotates_with_both_cas_trusted_and_every_certificate_reissued() {
    let fake = Arc::new(FakeApi::default());
    let now = OffsetDateTime::now_utc();
    // Expires in 24 h; rotation is due 48 h before expiry.
    let old: KeyedCert =
        certs::issue_ca(now - Duration::hours(1), Duration::hours(25)).expect("ca");
    fake.put_secret(
        "demo-ca",
        &[
            ("ca.crt", &old.cert_pem),
            ("ca.key", &old.key_pem),
            ("trust.crt", &old.cert_pem),
        ],
    );
    for service in ["gateway", "executor"] {
        let leaf =
            certs::issue_leaf(&old, NS, service, &[], now, Duration::hours(20)).expect("leaf");
        fake.put_secret(
            &format!("demo-{service}-tls"),
            &[
                ("tls.crt", &leaf.cert_pem),
                ("tls.key", &leaf.key_pem),
                ("ca.crt", &old.cert_pem),
            ],
        );
    }

    pass(&fake, &context(serve(fake.clone())), resource(spec(), None))
        .await
        .expect("reconcile");

    let ca = fake.secret("demo-ca").expect("ca");
    assert_ne!(ca["ca.crt"], old.cert_pem, "a new CA signs");
    let trusted = certs::split_bundle(&ca["trust.crt"]);
    assert_eq!(
        trusted,
        vec![ca["ca.crt"].clone(), old.cert_pem.clone()],
        "old CA still trusted"
    );
    let new_subject = certs::inspect(&ca["ca.crt"]).expect("ca").subject;
    for service in ["gateway", "executor"] {
        let tls = fake.secret(&format!("demo-{service}-tls")).expect("tls");
        assert_eq!(
            certs::inspect(&tls["tls.crt"]).expect("leaf").issuer,
            new_subject
        );
        assert_eq!(
            certs::split_bundle(&tls["ca.crt"]).len(),
            2,
            "{service} trusts both CAs"
        );
    }
    assert_eq!(fake.stored_status().trusted_cas, 2);
}

#[tokio::test]
async fn a_changed_spec_rewrites_the_config_map_and_records_the_new_hash() {
    let fake = Arc::new(FakeApi::default());
    let ctx = context(serve(fake.clone()));
    pass(&fake, &ctx, resource(spec(), None))
        .await
        .expect("first");
    let first = fake.stored_status();
    fake.take_calls();

    let mut changed = spec();
    changed.rate_limits.insert(
        "cancel".into(),
        RateLimit {
            per_second: 50,
            burst: 50,
        },
    );
    pass(&fake, &ctx, resource(changed, Some(first.clone())))
        .await
        .expect("second");

    let cm = fake
        .object(&format!("/api/v1/namespaces/{NS}/configmaps/demo-runtime"))
        .expect("config map");
    assert!(
        cm["data"]["limits.toml"]
            .as_str()
            .expect("limits")
            .contains("[limits.cancel]")
    );
    let second = fake.stored_status();
    assert_ne!(second.config_hash, first.config_hash);
    assert_eq!(
        cm["metadata"]["annotations"]["execbridge.io/config-hash"],
        second.config_hash.expect("hash").as_str()
    );
    assert_eq!(events(&fake.take_calls()), 1, "one ConfigUpdated event");
}

#[tokio::test]
async fn a_resource_being_deleted_is_left_to_the_garbage_collector() {
    let fake = Arc::new(FakeApi::default());
    let mut object = resource(spec(), None);
    object.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    let action = reconcile::reconcile(Arc::new(object), context(serve(fake.clone())))
        .await
        .expect("reconcile");
    assert_eq!(action, Action::await_change());
    assert_eq!(fake.take_calls(), Vec::<String>::new());
}

#[tokio::test]
async fn an_api_error_fails_the_pass_and_the_error_policy_requeues_it() {
    let fake = Arc::new(FakeApi::default());
    fake.fail_next.store(1, Ordering::SeqCst);
    let ctx = context(serve(fake.clone()));
    let object = Arc::new(resource(spec(), None));
    fake.put_resource(&object);
    let error = reconcile::reconcile(object.clone(), ctx.clone())
        .await
        .expect_err("the API failed");
    assert!(matches!(error, Error::Kube(_)), "{error:?}");
    assert_eq!(
        reconcile::error_policy(object.clone(), &error, ctx.clone()),
        Action::requeue(StdDuration::from_secs(15))
    );
    assert!(
        ctx.metrics
            .render()
            .contains("execbridge_operator_reconcile_failures_total 1")
    );
    // The retry starts over and completes.
    reconcile::reconcile(object, ctx).await.expect("retry");
    assert!(fake.secret("demo-ca").is_some());
}
