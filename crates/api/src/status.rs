//! Rich gRPC statuses: every error carries `google.rpc.ErrorInfo` (a reason a client can
//! switch on) and, for bad requests, `google.rpc.BadRequest` field violations.
//!
//! The gateway decides which code an error gets; this module only builds and reads the
//! wire form, so the executor and the gateway encode details the same way.

use std::collections::HashMap;
use std::time::Duration;

use execbridge_domain::FieldViolation;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::ERROR_DOMAIN;
use crate::v1;

/// Machine-readable error reasons (`ErrorInfo.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // The name says it; `as_str` is what goes on the wire.
pub enum Reason {
    InvalidField,
    OrderNotFound,
    IdempotencyMismatch,
    ClientOrderIdUsed,
    NotCancelable,
    ExecutorUnavailable,
    MarketDataUnavailable,
    ShuttingDown,
    DeadlineExceeded,
    Internal,
    InvalidCursor,
    SlowConsumer,
}

impl Reason {
    /// The UPPER_SNAKE_CASE form.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidField => "INVALID_FIELD",
            Reason::OrderNotFound => "ORDER_NOT_FOUND",
            Reason::IdempotencyMismatch => "IDEMPOTENCY_MISMATCH",
            Reason::ClientOrderIdUsed => "CLIENT_ORDER_ID_USED",
            Reason::NotCancelable => "NOT_CANCELABLE",
            Reason::ExecutorUnavailable => "EXECUTOR_UNAVAILABLE",
            Reason::MarketDataUnavailable => "MARKET_DATA_UNAVAILABLE",
            Reason::ShuttingDown => "SHUTTING_DOWN",
            Reason::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Reason::Internal => "INTERNAL",
            Reason::InvalidCursor => "INVALID_CURSOR",
            Reason::SlowConsumer => "SLOW_CONSUMER",
        }
    }
}

/// A status with `ErrorInfo { reason, domain, metadata }`.
pub fn error(
    code: Code,
    reason: Reason,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (&'static str, String)>,
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, metadata),
    )
}

/// INVALID_ARGUMENT with every field violation and `ErrorInfo` reason `INVALID_FIELD`.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let message = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::with_bad_request(
        violations
            .iter()
            .map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone()))
            .collect::<Vec<_>>(),
    );
    let first = violations
        .first()
        .map(|v| v.field.clone())
        .unwrap_or_default();
    details.set_error_info(
        Reason::InvalidField.as_str(),
        ERROR_DOMAIN,
        HashMap::from([("field".to_owned(), first)]),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// UNAVAILABLE with a retry hint.
pub fn unavailable(reason: Reason, message: impl Into<String>, retry_after: Duration) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(retry_after));
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(Code::Unavailable, message, details)
}

/// The batch form of a status, for one failed order inside `SubmitOrders`.
pub fn to_order_error(status: &Status) -> v1::OrderError {
    let details = status.get_error_details();
    let (reason, metadata) = details
        .error_info()
        .map(|info| (info.reason.clone(), info.metadata.clone()))
        .unwrap_or_default();
    let field_violations = details
        .bad_request()
        .map(|br| {
            br.field_violations
                .iter()
                .map(|v| v1::FieldViolation {
                    field: v.field.clone(),
                    description: v.description.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    v1::OrderError {
        code: status.code() as i32,
        reason,
        message: status.message().to_owned(),
        metadata,
        field_violations,
    }
}

/// The `ErrorInfo.reason` of `status`, if it has one.
pub fn reason_of(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_violations_survive_the_round_trip_to_a_batch_error() {
        let status = invalid_argument(&[
            FieldViolation::new("order.price", "is required"),
            FieldViolation::new("order.quantity", "must be positive"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let e = to_order_error(&status);
        assert_eq!(e.code, Code::InvalidArgument as i32);
        assert_eq!(e.reason, "INVALID_FIELD");
        assert_eq!(
            e.metadata.get("field").map(String::as_str),
            Some("order.price")
        );
        let fields: Vec<_> = e
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["order.price", "order.quantity"]);
        assert!(e.message.contains("order.price: is required"));
    }

    #[test]
    fn error_info_carries_reason_domain_and_metadata() {
        let status = error(
            Code::NotFound,
            Reason::OrderNotFound,
            "no such order",
            [("order_id", "s0-9".to_owned())],
        );
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "ORDER_NOT_FOUND");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["order_id"], "s0-9");
    }
}
