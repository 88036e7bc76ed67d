//! Metrics every service shares: gRPC server calls by method and code, and the seconds
//! left on each TLS certificate.
//!
//! gRPC calls are observed by [`Observed`], a wrapper put around each tonic service where
//! it is added to the router (`.add_service(rpc.wrap(FooServer::new(..)))`). It keeps the
//! service's name ([`NamedService`]) so the router still routes to it, and it reads the
//! final `grpc-status` from the response headers (trailers-only errors) or the trailers,
//! so a streaming call is observed once, when its stream ends, with its stream duration.
//! A call whose response or stream is dropped before a status (the client went away) is
//! recorded as `CANCELLED`.
//!
//! The wrapper also opens the call's `grpc` span with its `correlation_id` (the caller's
//! `x-correlation-id`, else a new one; see [`crate::telemetry::correlation_id`]), so every
//! log line the handler writes carries it; the id is put into the request extensions as
//! [`CorrelationId`] for handlers that pass it on, and returned in the response header.
//! A W3C `traceparent` from the caller puts its trace id on the span (`trace_id`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tonic::server::NamedService;
use tracing::Instrument as _;

/// The correlation id of a call, in its request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

/// The metadata key carrying the correlation id, in requests and responses.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// The name of the gRPC call-duration histogram.
pub const RPC_HISTOGRAM: &str = "execbridge_grpc_server_handling_seconds";
/// The name of the started-calls counter.
pub const RPC_STARTED: &str = "execbridge_grpc_server_started_total";
/// The name of the certificate-expiry gauge.
pub const CERTIFICATE_EXPIRY: &str = "execbridge_certificate_expiry_seconds";

/// Call-duration buckets, seconds: sub-millisecond unary calls up to half-hour streams.
const BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// The gRPC server metrics of one process, registered once and shared by every wrapped
/// service.
#[derive(Clone)]
pub struct RpcMetrics {
    handled: HistogramVec,
    started: IntCounterVec,
}

/// Registers the shared metrics in `registry`: the gRPC call metrics (returned, to wrap
/// services with) and the certificate-expiry gauge.
pub fn register(registry: &Registry) -> RpcMetrics {
    let rpc = RpcMetrics::new();
    for collector in [
        Box::new(rpc.handled.clone()) as Box<dyn Collector>,
        Box::new(rpc.started.clone()),
        Box::new(CertificateExpiry::new()),
    ] {
        // Only a duplicate name fails, which a fresh registry never has.
        let _ = registry.register(collector);
    }
    rpc
}

impl RpcMetrics {
    /// The metrics, registered nowhere (tests; [`register`] for services).
    ///
    /// # Panics
    /// Never: the definitions are static and valid.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let handled = HistogramVec::new(
            HistogramOpts::new(
                RPC_HISTOGRAM,
                "gRPC calls by service, method and final status code: time from the request \
                 to the final status (the whole stream for streaming calls)",
            )
            .buckets(BUCKETS.to_vec()),
            &["grpc_service", "grpc_method", "grpc_code"],
        )
        .expect("static metric");
        let started = IntCounterVec::new(
            Opts::new(RPC_STARTED, "gRPC calls started, by service and method"),
            &["grpc_service", "grpc_method"],
        )
        .expect("static metric");
        Self { handled, started }
    }

    /// `service`, observed.
    pub fn wrap<S: NamedService>(&self, service: S) -> Observed<S> {
        Observed {
            inner: service,
            metrics: self.clone(),
        }
    }
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A tonic service whose calls are counted and timed. See the module docs.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S: NamedService> NamedService for Observed<S> {
    const NAME: &'static str = S::NAME;
}

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), for the
/// log lines of the call; the OpenTelemetry layer, when installed, continues the same trace.
fn trace_id_of(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (version, trace_id, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2);
    valid.then_some(trace_id)
}

/// The method of `path` (`/pkg.Service/Method`), or `other` for anything that is not a
/// plausible method name: a client can send any path, and labels must stay bounded.
fn method_of(path: &str) -> &str {
    let method = path.rsplit('/').next().unwrap_or_default();
    let plausible = !method.is_empty()
        && method.len() <= 64
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plausible { method } else { "other" }
}

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for Observed<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>> + NamedService,
{
    type Response = http::Response<ObservedBody<ResB>>;
    type Error = S::Error;
    type Future = ObservedFuture<tracing::instrument::Instrumented<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqB>) -> Self::Future {
        let method = method_of(request.uri().path()).to_owned();
        let correlation_id = crate::telemetry::correlation_id(request.headers());
        let span = tracing::info_span!(
            "grpc",
            service = S::NAME,
            method = %method,
            correlation_id = %correlation_id,
            trace_id = tracing::field::Empty,
        );
        if let Some(trace_id) = trace_id_of(request.headers()) {
            span.record("trace_id", trace_id);
        }
        request
            .extensions_mut()
            .insert(CorrelationId(correlation_id.clone()));
        self.metrics
            .started
            .with_label_values(&[S::NAME, &method])
            .inc();
        let call = Call {
            handled: self.metrics.handled.clone(),
            service: S::NAME,
            method,
            start: Instant::now(),
            code: None,
            recorded: false,
            span: span.clone(),
        };
        ObservedFuture {
            inner: self.inner.call(request).instrument(span),
            call: Some(call),
            correlation_id: http::HeaderValue::from_str(&correlation_id).ok(),
        }
    }
}

/// One call in flight; records itself exactly once (at the end of the response body, or
/// when dropped).
struct Call {
    handled: HistogramVec,
    service: &'static str,
    method: String,
    start: Instant,
    code: Option<i32>,
    recorded: bool,
    span: tracing::Span,
}

impl Call {
    fn record(&mut self) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        // No status by the end: the stream was cut (client cancel, connection loss).
        let code = code_name(self.code.unwrap_or(1));
        let elapsed = self.start.elapsed();
        self.handled
            .with_label_values(&[self.service, &self.method, code])
            .observe(elapsed.as_secs_f64());
        // The access line, in the call's span (so with its correlation id).
        tracing::debug!(
            parent: &self.span,
            grpc_code = code,
            elapsed_us = elapsed.as_micros() as u64,
            "gRPC call finished"
        );
    }

    fn status_from(&mut self, headers: &http::HeaderMap) {
        if let Some(code) = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
        {
            self.code = Some(code);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record();
    }
}

pin_project_lite::pin_project! {
    /// The response future of an [`Observed`] service.
    pub struct ObservedFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
        correlation_id: Option<http::HeaderValue>,
    }
}

impl<F, B, E> Future for ObservedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<ObservedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut call) = this.call.take() else {
            // Polled after completion: the inner future decides what that means.
            return Poll::Ready(result.map(|r| {
                r.map(|body| ObservedBody {
                    inner: body,
                    call: None,
                })
            }));
        };
        Poll::Ready(match result {
            Ok(mut response) => {
                if let Some(id) = this.correlation_id.take() {
                    response.headers_mut().insert(CORRELATION_HEADER, id);
                }
                // Trailers-only responses (most errors) carry the status in the headers.
                call.status_from(response.headers());
                Ok(response.map(|body| ObservedBody {
                    inner: body,
                    call: Some(call),
                }))
            }
            Err(e) => {
                call.code = Some(13);
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the trailers arrive, the body ends, or
    /// it is dropped.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: http_body::Body> http_body::Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(call) = this.call.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        call.status_from(trailers);
                        call.record();
                    }
                }
                Some(Err(_)) => {
                    call.code.get_or_insert(13);
                    call.record();
                }
                None => call.record(),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical name of a gRPC status code.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// When each certificate of this process expires, by name ("server", "client", "ca").
static CERTIFICATES: LazyLock<Mutex<HashMap<String, SystemTime>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Records that the certificate `name` (e.g. "server", "client", "ca") expires at
/// `not_after`; every registry of the process then reports the seconds left on it in
/// `execbridge_certificate_expiry_seconds{certificate=name}` (negative once expired).
/// Call it again after each reload.
pub fn set_certificate_expiry(name: &str, not_after: SystemTime) {
    CERTIFICATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(name.to_owned(), not_after);
}

/// Forgets the certificate `name` (it is no longer used).
pub fn clear_certificate_expiry(name: &str) {
    CERTIFICATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(name);
}

/// Seconds left on each certificate, computed when scraped.
struct CertificateExpiry {
    gauge: GaugeVec,
}

impl CertificateExpiry {
    #[allow(clippy::expect_used)]
    fn new() -> Self {
        Self {
            gauge: GaugeVec::new(
                Opts::new(
                    CERTIFICATE_EXPIRY,
                    "Seconds until the certificate expires (negative once expired), by \
                     certificate",
                ),
                &["certificate"],
            )
            .expect("static metric"),
        }
    }
}

impl Collector for CertificateExpiry {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = SystemTime::now();
        self.gauge.reset();
        let certificates = CERTIFICATES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, not_after) in certificates.iter() {
            let left = match not_after.duration_since(now) {
                Ok(left) => left.as_secs_f64(),
                Err(past) => -past.duration().as_secs_f64(),
            };
            self.gauge.with_label_values(&[name]).set(left);
        }
        drop(certificates);
        self.gauge.collect()
    }
}

#[cfg(test)]
mod tests;
