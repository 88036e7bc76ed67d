use std::time::{Duration, SystemTime};

use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::*;

fn text(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encodes");
    String::from_utf8(out).expect("utf-8")
}

/// The count of the histogram series with these labels, from the text format.
fn count(text: &str, method: &str, code: &str) -> u64 {
    let prefix = format!(
        "{RPC_HISTOGRAM}_count{{grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"grpc.health.v1.Health\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().expect("a count"))
}

async fn eventually(registry: &Registry, method: &str, code: &str) -> String {
    for _ in 0..200 {
        let text = text(registry);
        if count(&text, method, code) > 0 {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no {method} {code} observation in:\n{}", text(registry));
}

#[tokio::test]
async fn unary_and_streaming_calls_are_recorded_by_method_and_final_code() {
    let registry = Registry::new();
    let rpc = register(&registry);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("known", tonic_health::ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(rpc.wrap(health))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a URI")
        .connect()
        .await
        .expect("connects");
    let mut client = HealthClient::new(channel);

    let mut request = tonic::Request::new(HealthCheckRequest {
        service: "known".into(),
    });
    request
        .metadata_mut()
        .insert(CORRELATION_HEADER, "corr-42".parse().expect("ascii"));
    let response = client.check(request).await.expect("known service");
    assert_eq!(
        response
            .metadata()
            .get(CORRELATION_HEADER)
            .map(|v| v.to_str().ok()),
        Some(Some("corr-42")),
        "the correlation id comes back"
    );
    let status = client
        .check(HealthCheckRequest {
            service: "unknown".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(status.code(), tonic::Code::NotFound);
    eventually(&registry, "Check", "OK").await;
    eventually(&registry, "Check", "NOT_FOUND").await;

    // A stream is recorded when it ends: here the client drops it.
    let mut watch = client
        .watch(HealthCheckRequest {
            service: "known".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    watch.next().await.expect("a first status").expect("ok");
    let before = text(&registry);
    assert_eq!(
        count(&before, "Watch", "CANCELLED"),
        0,
        "recorded before the end"
    );
    assert!(before.contains(&format!(
        "{RPC_STARTED}{{grpc_method=\"Watch\",grpc_service=\"grpc.health.v1.Health\"}} 1"
    )));
    drop(watch);
    eventually(&registry, "Watch", "CANCELLED").await;
}

#[test]
fn implausible_method_names_share_one_label() {
    assert_eq!(method_of("/grpc.health.v1.Health/Check"), "Check");
    assert_eq!(method_of("/grpc.health.v1.Health/"), "other");
    assert_eq!(method_of("/grpc.health.v1.Health/a b"), "other");
    assert_eq!(method_of(&format!("/x/{}", "a".repeat(65))), "other");
}

#[test]
fn certificate_expiry_is_the_seconds_left_when_scraped() {
    let registry = Registry::new();
    let _ = register(&registry);
    set_certificate_expiry("test-leaf", SystemTime::now() + Duration::from_secs(3600));
    set_certificate_expiry("test-expired", SystemTime::now() - Duration::from_secs(60));
    let text = text(&registry);
    let value = |name: &str| -> f64 {
        let prefix = format!("{CERTIFICATE_EXPIRY}{{certificate=\"{name}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .expect("series present")
            .parse()
            .expect("a number")
    };
    assert!((3590.0..=3600.0).contains(&value("test-leaf")), "{text}");
    assert!(value("test-expired") < -59.0, "{text}");
    clear_certificate_expiry("test-leaf");
    clear_certificate_expiry("test-expired");
    assert!(!self::text(&registry).contains("test-leaf"));
}

#[test]
fn the_trace_id_comes_from_a_valid_traceparent_only() {
    let headers = |v: &str| {
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", v.parse().expect("ascii"));
        h
    };
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(
        trace_id_of(&headers(valid)),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    for invalid in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "garbage",
    ] {
        assert_eq!(trace_id_of(&headers(invalid)), None, "{invalid}");
    }
    assert_eq!(trace_id_of(&http::HeaderMap::new()), None);
}
