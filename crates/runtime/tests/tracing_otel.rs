//! OTLP export and W3C propagation: a span continuing a caller's `traceparent`, its
//! children (trace-only ones included), and the context injected into an outgoing call all
//! share the caller's trace id, and the spans reach a small OTLP/gRPC receiver. Without an
//! endpoint nothing is built.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use execbridge_runtime::config::TracingConfig;
use execbridge_runtime::tracing_otel;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt as _;

/// A received span: its name and trace id.
type Received = (String, Vec<u8>);

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((span.name, span.trace_id));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_is_continued_propagated_and_exported() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let config = TracingConfig {
        otlp_endpoint: format!("http://{addr}"),
        sampling_ratio: 0.0, // the caller's sampled flag must win
    };
    let (layer, exporter) = tracing_otel::layer::<Registry>("gateway", &config)
        .unwrap()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    let mut outgoing = tonic::metadata::MetadataMap::new();
    tracing::subscriber::with_default(subscriber, || {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            format!("00-{TRACE}-00f067aa0ba902b7-01").parse().unwrap(),
        );
        // Outside any span, a child-only span is not made: it would start a trace.
        assert!(execbridge_runtime::otel_child_span!("orphan").is_disabled());
        let rpc = tracing::info_span!("SubmitOrder");
        tracing_otel::set_parent_from_headers(&rpc, &headers);
        let _rpc = rpc.enter();
        let admission = execbridge_runtime::otel_span!("admission");
        assert!(
            !admission.is_disabled(),
            "trace-only spans are made with an exporter"
        );
        let _admission = admission.enter();
        tracing_otel::inject_current(&mut outgoing);
        let venue = execbridge_runtime::otel_child_span!("venue");
        assert!(
            !venue.is_disabled(),
            "inside a request a child-only span is made"
        );
        venue.in_scope(|| {});
    });
    let traceparent = outgoing
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE}-")),
        "{traceparent}"
    );
    assert!(traceparent.ends_with("-01"), "{traceparent}");

    let flushing = exporter.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap();
    let want = hex(TRACE);
    for _ in 0..50 {
        let spans = receiver.spans.lock().unwrap().clone();
        let names: Vec<&str> = spans
            .iter()
            .filter(|(_, trace)| *trace == want)
            .map(|(name, _)| name.as_str())
            .collect();
        if names.contains(&"SubmitOrder")
            && names.contains(&"admission")
            && names.contains(&"venue")
        {
            tokio::task::spawn_blocking(move || exporter.shutdown())
                .await
                .unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "spans of the caller's trace not received: {:?}",
        receiver.spans.lock().unwrap()
    );
}

#[test]
fn without_an_endpoint_there_is_no_exporter_and_nothing_is_injected() {
    let layer = tracing_otel::layer::<Registry>("gateway", &TracingConfig::default()).unwrap();
    assert!(layer.is_none());
    let mut outgoing = tonic::metadata::MetadataMap::new();
    tracing_otel::inject_current(&mut outgoing);
    assert!(outgoing.is_empty());
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
