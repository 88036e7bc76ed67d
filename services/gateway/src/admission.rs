//! Admission: every RPC passes here first. In order: a global concurrency slot (shed at
//! once when full, never queued), authentication, the principal's rate budget for the
//! RPC's class; then each handler asks for the permission and account it needs.
//!
//! The compiled policy sits behind an `ArcSwap`: a reload swaps it atomically, calls in
//! flight finish with the policy they started with, and the hot path takes no lock.
//!
//! Failed authentications are charged to the HTTP/2 connection they arrive on: at
//! `auth.max_failures_per_connection` the connection is closed (shortly after the failing
//! call's answer went out), so a client cannot guess credentials at full speed over one
//! connection, and `gateway_connections_closed_total{reason="auth_failures"}` counts it.
//! Calls arriving on such a connection meanwhile are refused without authenticating. The
//! count is per connection and never reset by a success: a caller holding one valid
//! credential could otherwise interleave it with guesses forever.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use execbridge_runtime::grpc::Connection;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Request;

use crate::audit;
use crate::auth::{self, AuthError, TokenCache};
use crate::error::GatewayError;
use crate::limits::RateLimits;
use crate::policy::{Permission, Policy, Principal, RpcClass};

/// The identity a TLS acceptor proved for the connection (certificate URI SAN or CN), put
/// into request extensions by the TLS accept path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub String);

/// A policy with its rate limiters.
pub struct Compiled {
    /// The policy.
    pub policy: Policy,
    /// Budgets built from it.
    pub limits: RateLimits,
    /// Tokens verified under this policy's keys.
    pub tokens: TokenCache,
}

impl Compiled {
    /// Builds the limiters for `policy`.
    pub fn new(policy: Policy) -> Self {
        let limits = RateLimits::new(&policy);
        Self {
            policy,
            limits,
            tokens: TokenCache::default(),
        }
    }
}

/// Admission counters, registered once.
#[derive(Clone)]
pub struct Metrics {
    /// Failed authentications by reason.
    pub auth_failures: IntCounterVec,
    /// Refusals by reason (permission, rate limit, shedding).
    pub refusals: IntCounterVec,
    /// Rate-limit rejections by RPC class.
    pub rate_limited: IntCounterVec,
    /// Connections the gateway closed, by reason.
    pub connections_closed: IntCounterVec,
}

impl Metrics {
    /// Creates and registers the counters.
    pub fn register(registry: &Registry) -> Self {
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "gateway_authentication_failures_total",
                "Failed authentications by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let refusals = IntCounterVec::new(
            Opts::new(
                "gateway_admission_refusals_total",
                "Calls refused at admission by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "gateway_rate_limit_rejections_total",
                "Calls and batch orders refused because the principal's budget was spent, by RPC class",
            ),
            &["class"],
        )
        .expect("static metric definition");
        let connections_closed = IntCounterVec::new(
            Opts::new(
                CONNECTIONS_CLOSED,
                "Connections the gateway closed, by reason (auth_failures: too many failed \
                 authentications on one connection)",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        // Exported at 0 from the start: an alert's increase() needs the series before the
        // first close.
        connections_closed.with_label_values(&["auth_failures"]);
        // Only a duplicate name fails, which a fresh registry never has.
        let _ = registry.register(Box::new(auth_failures.clone()));
        let _ = registry.register(Box::new(refusals.clone()));
        let _ = registry.register(Box::new(rate_limited.clone()));
        let _ = registry.register(Box::new(connections_closed.clone()));
        Self {
            auth_failures,
            refusals,
            rate_limited,
            connections_closed,
        }
    }
}

/// The name of the closed-connections counter.
pub const CONNECTIONS_CLOSED: &str = "gateway_connections_closed_total";

/// Failed authentications on one connection that close it, unless configured otherwise.
pub const DEFAULT_MAX_AUTH_FAILURES_PER_CONNECTION: u32 = 5;

/// How long a connection stays open after its last allowed failure: enough for that
/// call's UNAUTHENTICATED answer to be written before the socket closes.
const CLOSE_LINGER: Duration = Duration::from_millis(100);

/// A caller let in, holding its concurrency slot until dropped.
pub struct Admitted {
    /// Who.
    pub principal: Arc<Principal>,
    /// The policy in force when the call started.
    pub compiled: Arc<Compiled>,
    _slot: OwnedSemaphorePermit,
}

/// The admission gate.
pub struct Admission {
    current: ArcSwap<Compiled>,
    calls: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    capacity: Mutex<(u32, u32)>,
    metrics: Metrics,
    /// Failed authentications that close a connection; 0 = never.
    max_auth_failures_per_connection: u32,
}

fn resize(semaphore: &Semaphore, from: u32, to: u32) {
    if to > from {
        semaphore.add_permits((to - from) as usize);
    } else {
        // Permits in use are removed as they come back.
        semaphore.forget_permits((from - to) as usize);
    }
}

impl Admission {
    /// A gate enforcing `compiled`.
    pub fn new(compiled: Compiled, metrics: Metrics) -> Self {
        let calls = compiled.policy.max_concurrent_calls;
        let streams = compiled.policy.max_concurrent_streams;
        Self {
            current: ArcSwap::from_pointee(compiled),
            calls: Arc::new(Semaphore::new(calls as usize)),
            streams: Arc::new(Semaphore::new(streams as usize)),
            capacity: Mutex::new((calls, streams)),
            metrics,
            max_auth_failures_per_connection: DEFAULT_MAX_AUTH_FAILURES_PER_CONNECTION,
        }
    }

    /// The same gate closing a connection after `limit` failed authentications on it
    /// (`auth.max_failures_per_connection`); 0 never closes one.
    #[must_use]
    pub fn with_max_auth_failures_per_connection(mut self, limit: u32) -> Self {
        self.max_auth_failures_per_connection = limit;
        self
    }

    /// Puts a new policy in force.
    pub fn replace(&self, compiled: Compiled) {
        let (calls, streams) = (
            compiled.policy.max_concurrent_calls,
            compiled.policy.max_concurrent_streams,
        );
        let mut capacity = self
            .capacity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        resize(&self.calls, capacity.0, calls);
        resize(&self.streams, capacity.1, streams);
        *capacity = (calls, streams);
        self.current.store(Arc::new(compiled));
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Compiled> {
        self.current.load_full()
    }

    fn refuse(&self, rpc: &str, principal: &str, error: GatewayError) -> GatewayError {
        let reason = error.reason();
        self.metrics.refusals.with_label_values(&[reason]).inc();
        if let GatewayError::RateLimited { class, .. } = &error {
            self.metrics
                .rate_limited
                .with_label_values(&[class.as_str()])
                .inc();
        }
        audit::refused(rpc, principal, reason);
        error
    }

    /// Charges a failed authentication to `connection`; closes it at the limit.
    fn charge_auth_failure(&self, connection: &Connection, peer: Option<SocketAddr>) {
        let limit = self.max_auth_failures_per_connection;
        if limit == 0 {
            return;
        }
        let failures = connection.strike();
        if failures >= limit && connection.close_after(CLOSE_LINGER) {
            self.metrics
                .connections_closed
                .with_label_values(&["auth_failures"])
                .inc();
            audit::connection_closed(peer, "auth_failures", failures);
        }
    }

    /// Lets a call of `class` in, or says why not.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the gateway is full or the budget is spent, UNAUTHENTICATED
    /// when the caller cannot be identified, UNAVAILABLE when the call's connection is
    /// closing after repeated authentication failures.
    pub fn admit<T>(
        &self,
        rpc: &'static str,
        request: &Request<T>,
        class: RpcClass,
    ) -> Result<Admitted, GatewayError> {
        // Present on every connection the runtime's acceptor served; absent only for
        // requests built in-process.
        let connection = request.extensions().get::<Connection>();
        if connection.is_some_and(Connection::is_closing) {
            return Err(self.refuse(rpc, "", GatewayError::ConnectionClosing));
        }
        let slots = if class == RpcClass::Stream {
            &self.streams
        } else {
            &self.calls
        };
        let slot = slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.refuse(rpc, "", GatewayError::Overloaded))?;
        let compiled = self.current();
        let identity = request
            .extensions()
            .get::<PeerIdentity>()
            .map(|p| p.0.as_str());
        let peer = request.remote_addr();
        let (principal, method) = match auth::authenticate(
            &compiled.policy,
            &compiled.tokens,
            request.metadata(),
            identity,
        ) {
            Ok(ok) => ok,
            Err(e) => {
                self.metrics
                    .auth_failures
                    .with_label_values(&[e.reason()])
                    .inc();
                audit::authentication(rpc, peer, method_tried(request), None, Some(e.reason()));
                if let Some(connection) = connection {
                    self.charge_auth_failure(connection, peer);
                }
                return Err(GatewayError::Unauthenticated(e));
            }
        };
        audit::authentication(rpc, peer, method.as_str(), Some(&principal.name), None);
        compiled
            .limits
            .check(&principal, class, 1)
            .map_err(|retry_after| {
                self.refuse(
                    rpc,
                    &principal.name,
                    GatewayError::RateLimited { class, retry_after },
                )
            })?;
        Ok(Admitted {
            principal,
            compiled,
            _slot: slot,
        })
    }

    /// Takes one more unit of `class` budget (each order of a batch).
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED with the retry delay.
    pub fn spend(
        &self,
        rpc: &str,
        admitted: &Admitted,
        class: RpcClass,
    ) -> Result<(), GatewayError> {
        admitted
            .compiled
            .limits
            .check(&admitted.principal, class, 1)
            .map_err(|retry_after: Duration| {
                self.refuse(
                    rpc,
                    &admitted.principal.name,
                    GatewayError::RateLimited { class, retry_after },
                )
            })
    }

    /// Checks that the caller holds `permission` and, when given, may use `account`.
    ///
    /// # Errors
    /// PERMISSION_DENIED naming what is missing.
    pub fn require(
        &self,
        rpc: &str,
        admitted: &Admitted,
        permission: Permission,
        account: Option<&str>,
    ) -> Result<(), GatewayError> {
        let p = &admitted.principal;
        if !p.may(permission) {
            return Err(self.refuse(rpc, &p.name, GatewayError::MissingPermission(permission)));
        }
        if let Some(account) = account.filter(|a| !p.may_use(a)) {
            return Err(self.refuse(
                rpc,
                &p.name,
                GatewayError::AccountNotAllowed(account.to_owned()),
            ));
        }
        Ok(())
    }
}

impl Admission {
    /// Checks that the caller may trade (paper or live) on `account`: what a cancel needs.
    ///
    /// # Errors
    /// PERMISSION_DENIED naming what is missing.
    pub fn require_trade(
        &self,
        rpc: &str,
        admitted: &Admitted,
        account: &str,
    ) -> Result<(), GatewayError> {
        let permission = if admitted.principal.may(Permission::TradeLive) {
            Permission::TradeLive
        } else {
            Permission::TradePaper
        };
        self.require(rpc, admitted, permission, Some(account))
    }
}

fn method_tried<T>(request: &Request<T>) -> &'static str {
    let m = request.metadata();
    if m.contains_key("x-api-key") {
        "api_key"
    } else if m.contains_key("authorization") {
        "jwt"
    } else {
        "none"
    }
}

impl From<AuthError> for GatewayError {
    fn from(e: AuthError) -> Self {
        GatewayError::Unauthenticated(e)
    }
}
