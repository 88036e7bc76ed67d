//! Unit tests of the renewal decisions.

use super::*;

fn hours(h: i64) -> Duration {
    Duration::hours(h)
}

fn ca_at(now: OffsetDateTime, lifetime: Duration) -> CaState {
    let ca = issue_ca(now, lifetime).expect("ca");
    CaState {
        trusted: vec![ca.cert_pem.clone()],
        current: ca,
    }
}

#[test]
fn a_missing_ca_is_created_and_trusted_alone() {
    let now = OffsetDateTime::now_utc();
    let plan = plan_ca(None, hours(100), hours(10), now).expect("plan");
    let CaPlan::Created(state) = plan else {
        panic!("expected Created, got {plan:?}")
    };
    assert_eq!(state.trusted, vec![state.current.cert_pem.clone()]);
    let info = inspect(&state.current.cert_pem).expect("inspect");
    assert_eq!(info.subject, info.issuer, "self-signed");
}

#[test]
fn a_ca_outside_its_renewal_window_is_kept_unchanged() {
    let now = OffsetDateTime::now_utc();
    let found = ca_at(now, hours(100));
    let plan = plan_ca(Some(found.clone()), hours(100), hours(10), now).expect("plan");
    assert_eq!(
        plan,
        CaPlan::Keep {
            state: found,
            changed: false
        }
    );
}

#[test]
fn a_ca_inside_its_renewal_window_rotates_and_the_old_one_stays_trusted() {
    let now = OffsetDateTime::now_utc();
    let old = ca_at(now, hours(5));
    let plan = plan_ca(Some(old.clone()), hours(100), hours(10), now).expect("plan");
    let CaPlan::Rotated(state) = plan else {
        panic!("expected Rotated, got {plan:?}")
    };
    assert_ne!(state.current, old.current);
    assert_eq!(
        state.trusted,
        vec![state.current.cert_pem.clone(), old.current.cert_pem.clone()]
    );
}

#[test]
fn an_expired_previous_ca_leaves_the_trust_bundle() {
    let now = OffsetDateTime::now_utc();
    let current = ca_at(now, hours(100));
    let expired = issue_ca(now - hours(10), hours(1)).expect("ca");
    let found = CaState {
        trusted: vec![current.current.cert_pem.clone(), expired.cert_pem],
        current: current.current.clone(),
    };
    let plan = plan_ca(Some(found), hours(100), hours(10), now).expect("plan");
    assert_eq!(
        plan,
        CaPlan::Keep {
            state: current,
            changed: true
        }
    );
}

#[test]
fn a_leaf_is_issued_when_missing_renewed_when_expiring_and_reissued_after_a_ca_rotation() {
    let now = OffsetDateTime::now_utc();
    let ca = ca_at(now, hours(100));
    let dns = vec!["gateway".to_string()];
    let fresh = issue_leaf(&ca.current, "ns", "gateway", &dns, now, hours(50)).expect("leaf");
    let expiring = issue_leaf(&ca.current, "ns", "gateway", &dns, now, hours(2)).expect("leaf");
    let other_ca = ca_at(now + hours(1), hours(100));

    assert_eq!(
        plan_leaf(None, &ca, hours(10), now),
        Some(LeafReason::Missing)
    );
    assert_eq!(plan_leaf(Some(&fresh.cert_pem), &ca, hours(10), now), None);
    assert_eq!(
        plan_leaf(Some(&expiring.cert_pem), &ca, hours(10), now),
        Some(LeafReason::Expiring)
    );
    assert_eq!(
        plan_leaf(Some(&fresh.cert_pem), &other_ca, hours(10), now),
        Some(LeafReason::NewCa)
    );
    assert_eq!(
        plan_leaf(Some("garbage"), &ca, hours(10), now),
        Some(LeafReason::Unreadable)
    );
}

#[test]
fn a_bundle_splits_into_its_certificates() {
    let now = OffsetDateTime::now_utc();
    let a = issue_ca(now, hours(1)).expect("ca").cert_pem;
    let b = issue_ca(now, hours(2)).expect("ca").cert_pem;
    assert_eq!(split_bundle(&format!("{a}{b}")), vec![a, b]);
}
