//! Leader election through a Lease, against kube's mocked API server.

#[path = "common/fake_api.rs"]
mod fake_api;

use std::sync::Arc;

use execbridge_operator::leader::{Leadership, LeaseLock};
use fake_api::{FakeApi, NS, serve};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/trading/leases/execbridge-operator";

fn lock(fake: &Arc<FakeApi>, holder: &str) -> LeaseLock {
    LeaseLock::new(serve(fake.clone()), NS, "execbridge-operator", holder, 15)
}

fn stored(fake: &FakeApi) -> Lease {
    serde_json::from_value(fake.object(PATH).expect("lease")).expect("lease")
}

fn held_by(fake: &FakeApi, holder: &str, renewed: Timestamp) {
    fake.put(
        PATH,
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "execbridge-operator", "namespace": NS},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                        "renewTime": renewed.to_string(), "acquireTime": renewed.to_string(),
                        "leaseTransitions": 2}}),
    );
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_leads() {
    let fake = Arc::new(FakeApi::default());
    let result = lock(&fake, "pod-a")
        .try_acquire(Timestamp::now())
        .await
        .expect("acquire");
    assert_eq!(result, Leadership::Leader);
    let spec = stored(&fake).spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
    assert_eq!(spec.lease_transitions, Some(0));
}

#[tokio::test]
async fn a_live_lease_held_by_another_replica_makes_a_follower() {
    let fake = Arc::new(FakeApi::default());
    held_by(&fake, "pod-a", Timestamp::now());
    let result = lock(&fake, "pod-b")
        .try_acquire(Timestamp::now())
        .await
        .expect("acquire");
    assert_eq!(result, Leadership::Follower);
    assert_eq!(
        stored(&fake).spec.expect("spec").holder_identity.as_deref(),
        Some("pod-a")
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_counts_a_transition() {
    let fake = Arc::new(FakeApi::default());
    let now = Timestamp::now();
    held_by(&fake, "pod-a", now - SignedDuration::from_secs(60));
    let result = lock(&fake, "pod-b")
        .try_acquire(now)
        .await
        .expect("acquire");
    assert_eq!(result, Leadership::Leader);
    let spec = stored(&fake).spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));
    assert_eq!(spec.lease_transitions, Some(3));
}

#[tokio::test]
async fn the_holder_renews_and_keeps_its_acquire_time() {
    let fake = Arc::new(FakeApi::default());
    let then = Timestamp::now() - SignedDuration::from_secs(5);
    held_by(&fake, "pod-a", then);
    let now = Timestamp::now();
    let result = lock(&fake, "pod-a").try_acquire(now).await.expect("renew");
    assert_eq!(result, Leadership::Leader);
    let spec = stored(&fake).spec.expect("spec");
    // MicroTime: microsecond precision on the wire.
    assert_eq!(
        spec.renew_time.expect("renew").0.as_microsecond(),
        now.as_microsecond()
    );
    assert_eq!(
        spec.acquire_time.expect("acquire").0.as_second(),
        then.as_second()
    );
    assert_eq!(spec.lease_transitions, Some(2));
}

#[tokio::test]
async fn losing_the_write_race_for_an_expired_lease_makes_a_follower_not_an_error() {
    let fake = Arc::new(FakeApi::default());
    let now = Timestamp::now();
    held_by(&fake, "pod-a", now - SignedDuration::from_secs(60));
    // Another replica writes between our read and our replace: the API server says 409.
    fake.conflict_writes
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let result = lock(&fake, "pod-b")
        .try_acquire(now)
        .await
        .expect("no error");
    assert_eq!(result, Leadership::Follower);
}
