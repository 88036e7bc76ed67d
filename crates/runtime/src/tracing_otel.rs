//! OpenTelemetry traces exported over OTLP/gRPC, and W3C trace context carried across
//! gRPC hops: taken from incoming `traceparent` headers, injected into outgoing metadata.
//!
//! Nothing here runs unless `[server.tracing] otlp_endpoint` is set: [`layer`] returns
//! `None`, no exporter exists, no propagator is installed and [`inject_current`] finds no
//! OpenTelemetry context to write.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::config::TracingConfig;

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// The OTLP exporter refused its configuration.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether [`layer`] built an exporter in this process (request spans are made only then).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// An INFO span made only for trace export: with an OTLP endpoint configured it is
/// `tracing::info_span!(..)` with the same arguments; without one it is
/// `tracing::Span::none()`, so it costs one atomic load and never reaches the log
/// formatter. For the stages of a request a trace should show and a log need not
/// (admission, risk, journal, venue):
///
/// ```
/// # use execbridge_runtime::otel_span;
/// let span = otel_span!("risk", account = "acct-1");
/// let verdict = span.in_scope(|| "checked");
/// # assert_eq!(verdict, "checked");
/// ```
///
/// The calling crate needs `tracing` among its dependencies.
#[macro_export]
macro_rules! otel_span {
    ($($args:tt)+) => {
        if $crate::tracing_otel::enabled() {
            ::tracing::info_span!($($args)+)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// [`otel_span!`] that only continues a trace: `Span::none()` also when no span is
/// current (work started outside any request, such as a timer or a task spawned without
/// its caller's span), so such work never starts a trace of its own.
#[macro_export]
macro_rules! otel_child_span {
    ($($args:tt)+) => {
        if $crate::tracing_otel::enabled() && !::tracing::Span::current().is_disabled() {
            ::tracing::info_span!($($args)+)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// The running exporter; [`Tracing::shutdown`] flushes the spans still queued.
#[derive(Debug, Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports what is queued now (blocks until done or the exporter's timeout).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "trace flush failed");
        }
    }

    /// Flushes and stops the exporter; call at the end of the drain.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "trace exporter shutdown failed");
        }
    }
}

/// The layer [`layer`] builds, and the exporter behind it.
pub type Exporting<S> = (OpenTelemetryLayer<S, SdkTracer>, Tracing);

/// The tracing-subscriber layer exporting spans of `service` to the configured collector,
/// or `None` when no endpoint is set. Installs the W3C trace-context propagator.
///
/// Must be called inside a tokio runtime: the gRPC exporter's channel lives on it.
///
/// # Errors
/// [`TracingError`] when the exporter cannot be built.
pub fn layer<S>(
    service: &'static str,
    config: &TracingConfig,
) -> Result<Option<Exporting<S>>, TracingError>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    if config.otlp_endpoint.is_empty() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(config.otlp_endpoint.clone())
        .build()
        .map_err(|e| TracingError::Exporter(e.to_string()))?;
    // Parent-based: a sampled caller's trace is always continued; new traces are sampled
    // at the configured ratio.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio)));
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(format!("execbridge-{service}"))
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Relaxed);
    let tracer = provider.tracer(service);
    Ok(Some((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Tracing { provider },
    )))
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Makes `span` a child of the caller's trace named in `headers` (`traceparent`,
/// `tracestate`). Without a caller context or without [`layer`], nothing changes.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.get("traceparent").is_none() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    let _ = span.set_parent(parent);
}

/// Writes the current span's trace context into outgoing `metadata` (W3C
/// `traceparent`), so the next service continues the trace.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut Metadata(metadata));
}

/// A tonic client interceptor doing [`inject_current`]:
/// `ExecutorServiceClient::with_interceptor(channel, tracing_otel::interceptor)`.
///
/// # Errors
/// Never; the signature is tonic's.
#[allow(clippy::result_large_err)]
pub fn interceptor(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    inject_current(request.metadata_mut());
    Ok(request)
}

#[cfg(test)]
mod tests;
