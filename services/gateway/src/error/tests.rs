use execbridge_api::status::{Reason, error};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::*;

fn reason(status: &Status) -> String {
    status.get_details_error_info().unwrap().reason
}

#[test]
fn a_refused_connection_is_unavailable_with_a_retry_hint() {
    let status: Status = GatewayError::Upstream {
        upstream: Upstream::Executor,
        status: Status::unavailable("tcp connect error"),
    }
    .into();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status), "EXECUTOR_UNAVAILABLE");
    assert!(
        status
            .get_details_retry_info()
            .unwrap()
            .retry_delay
            .is_some()
    );
}

#[test]
fn an_upstream_timeout_is_deadline_exceeded() {
    let status: Status = GatewayError::Upstream {
        upstream: Upstream::Executor,
        status: Status::cancelled("Timeout expired"),
    }
    .into();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&status), "DEADLINE_EXCEEDED");
}

#[test]
fn an_upstream_error_with_details_passes_through_unchanged() {
    let original = error(Code::NotFound, Reason::OrderNotFound, "no such order", []);
    let status: Status = GatewayError::Upstream {
        upstream: Upstream::Executor,
        status: original.clone(),
    }
    .into();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), original.message());
    assert_eq!(reason(&status), "ORDER_NOT_FOUND");
}

#[test]
fn shutting_down_is_unavailable() {
    let status: Status = GatewayError::ShuttingDown.into();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status), "SHUTTING_DOWN");
}

#[test]
fn a_rate_limit_carries_the_retry_delay() {
    let status: Status = GatewayError::RateLimited {
        class: crate::policy::RpcClass::Cancel,
        retry_after: std::time::Duration::from_millis(250),
    }
    .into();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "RATE_LIMITED");
    assert_eq!(
        status.get_details_retry_info().unwrap().retry_delay,
        Some(std::time::Duration::from_millis(250))
    );
    assert_eq!(
        status.get_details_error_info().unwrap().metadata["class"],
        "cancel"
    );
}

#[test]
fn each_field_violation_keeps_its_own_reason() {
    let status: Status = GatewayError::Invalid(vec![
        crate::validate::Violation::new("order.price", "PRICE_OFF_TICK", "off tick"),
        crate::validate::Violation::new("order.quantity", "QUANTITY_OFF_LOT", "off lot"),
    ])
    .into();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "PRICE_OFF_TICK");
    let reasons: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.reason)
        .collect();
    assert_eq!(reasons, ["PRICE_OFF_TICK", "QUANTITY_OFF_LOT"]);
}
