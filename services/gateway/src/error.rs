//! The one place where gateway errors become gRPC statuses, and where an upstream failure
//! is translated into what the caller may see. Every status carries `ErrorInfo` (reason,
//! domain `execbridge.dev`, metadata); INVALID_ARGUMENT also carries `BadRequest` with one
//! violation per field, each with its own reason.

use std::collections::HashMap;
use std::time::Duration;

use execbridge_api::ERROR_DOMAIN;
use execbridge_api::status::{Reason, error, reason_of, unavailable};
use execbridge_domain::FieldViolation;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::AuthError;
use crate::policy::{Permission, RpcClass};
use crate::validate::Violation;

/// Which upstream a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// The executor shard.
    Executor,
    /// The marketdata service.
    Marketdata,
}

/// Why a gateway call failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed.
    #[error("invalid request")]
    Invalid(Vec<Violation>),
    /// The caller could not be identified.
    #[error("{0}")]
    Unauthenticated(AuthError),
    /// The caller lacks a permission.
    #[error("permission {} is required", .0.as_str())]
    MissingPermission(Permission),
    /// The caller may not use the account.
    #[error("account {0:?} is not allowed for this principal")]
    AccountNotAllowed(String),
    /// The caller's budget for this class of call is spent.
    #[error("rate limit for {} calls exceeded; retry in {} ms", class.as_str(), retry_after.as_millis())]
    RateLimited {
        /// Which budget.
        class: RpcClass,
        /// When it allows the call again.
        retry_after: Duration,
    },
    /// The gateway is at its concurrency limit and sheds load.
    #[error("the gateway is at capacity; retry shortly")]
    Overloaded,
    /// An upstream answered with an error or could not be reached.
    #[error("{upstream:?}: {status}")]
    Upstream {
        /// Which one.
        upstream: Upstream,
        /// What it said (or what tonic said for it).
        status: Status,
    },
    /// The shard's circuit breaker is open after repeated failures to reach it.
    #[error("executor shard {shard} is unavailable (circuit open); retry in {} ms", retry_after.as_millis())]
    CircuitOpen {
        /// Which shard.
        shard: String,
        /// When the breaker lets a probe through.
        retry_after: Duration,
    },
    /// The gateway is draining.
    #[error("the gateway is shutting down; retry on another connection")]
    ShuttingDown,
    /// The call's connection is being closed after repeated authentication failures on it.
    #[error("this connection is closing after repeated authentication failures; reconnect")]
    ConnectionClosing,
}

impl GatewayError {
    /// A single invalid field.
    pub fn field(field: impl Into<String>, description: impl std::fmt::Display) -> Self {
        Self::Invalid(vec![Violation::from(FieldViolation::new(
            field,
            description,
        ))])
    }

    /// Violations found by the domain conversion.
    pub fn violations(v: Vec<FieldViolation>) -> Self {
        Self::Invalid(v.into_iter().map(Violation::from).collect())
    }

    /// The `ErrorInfo.reason` this error goes out with.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::Invalid(v) => v.first().map_or("INVALID_FIELD", |v| v.reason),
            GatewayError::Unauthenticated(e) => e.reason(),
            GatewayError::MissingPermission(_) => "MISSING_PERMISSION",
            GatewayError::AccountNotAllowed(_) => "ACCOUNT_NOT_ALLOWED",
            GatewayError::RateLimited { .. } => "RATE_LIMITED",
            GatewayError::Overloaded => "OVERLOADED",
            GatewayError::Upstream { .. } => "UPSTREAM",
            GatewayError::CircuitOpen { .. } => "CIRCUIT_OPEN",
            GatewayError::ShuttingDown => Reason::ShuttingDown.as_str(),
            GatewayError::ConnectionClosing => "CONNECTION_CLOSING",
        }
    }
}

/// How long a client should wait before retrying an unavailable upstream.
const RETRY_AFTER: Duration = Duration::from_millis(200);

fn with_info(
    code: Code,
    message: String,
    reason: &str,
    metadata: HashMap<String, String>,
    mut details: ErrorDetails,
) -> Status {
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Self {
        let message = e.to_string();
        let reason = e.reason();
        match e {
            GatewayError::Invalid(violations) => {
                let message = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                let field = violations
                    .first()
                    .map(|v| v.field.clone())
                    .unwrap_or_default();
                let details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| tonic_types::FieldViolation {
                            field: v.field,
                            description: v.description,
                            reason: v.reason.to_owned(),
                            localized_message: None,
                        })
                        .collect::<Vec<_>>(),
                );
                with_info(
                    Code::InvalidArgument,
                    message,
                    reason,
                    HashMap::from([("field".to_owned(), field)]),
                    details,
                )
            }
            GatewayError::Unauthenticated(_) => with_info(
                Code::Unauthenticated,
                message,
                reason,
                HashMap::new(),
                ErrorDetails::new(),
            ),
            GatewayError::MissingPermission(p) => with_info(
                Code::PermissionDenied,
                message,
                reason,
                HashMap::from([("permission".to_owned(), p.as_str().to_owned())]),
                ErrorDetails::new(),
            ),
            GatewayError::AccountNotAllowed(account) => with_info(
                Code::PermissionDenied,
                message,
                reason,
                HashMap::from([("account".to_owned(), account)]),
                ErrorDetails::new(),
            ),
            GatewayError::RateLimited { class, retry_after } => with_info(
                Code::ResourceExhausted,
                message,
                reason,
                HashMap::from([
                    ("class".to_owned(), class.as_str().to_owned()),
                    (
                        "retry_after_ms".to_owned(),
                        retry_after.as_millis().to_string(),
                    ),
                ]),
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            GatewayError::Overloaded => with_info(
                Code::ResourceExhausted,
                message,
                reason,
                HashMap::new(),
                ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
            ),
            GatewayError::CircuitOpen { shard, retry_after } => with_info(
                Code::Unavailable,
                message,
                reason,
                HashMap::from([("shard".to_owned(), shard)]),
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            GatewayError::ShuttingDown => unavailable(Reason::ShuttingDown, message, RETRY_AFTER),
            // No retry delay: the call may be retried at once, on a new connection.
            GatewayError::ConnectionClosing => with_info(
                Code::Unavailable,
                message,
                reason,
                HashMap::new(),
                ErrorDetails::new(),
            ),
            GatewayError::Upstream { upstream, status } => from_upstream(upstream, status),
        }
    }
}

fn from_upstream(upstream: Upstream, status: Status) -> Status {
    // An upstream execbridge service already chose the code and details: pass them on.
    if reason_of(&status).is_some() {
        return status;
    }
    let reason = match upstream {
        Upstream::Executor => Reason::ExecutorUnavailable,
        Upstream::Marketdata => Reason::MarketDataUnavailable,
    };
    match status.code() {
        // tonic reports its own client-side timeout as CANCELLED.
        Code::Cancelled | Code::DeadlineExceeded => error(
            Code::DeadlineExceeded,
            Reason::DeadlineExceeded,
            format!("{upstream:?} did not answer within the deadline"),
            [],
        ),
        // Connection refused, reset, GOAWAY, or an h2 error: the call may not have arrived.
        Code::Unavailable | Code::Unknown | Code::Internal => unavailable(
            reason,
            format!("{upstream:?} is unavailable: {}", status.message()),
            RETRY_AFTER,
        ),
        code => error(code, Reason::Internal, status.message().to_owned(), []),
    }
}

#[cfg(test)]
mod tests;
