use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::*;

fn lines(out: &Arc<Mutex<Vec<u8>>>) -> Vec<Value> {
    let bytes = out.lock().expect("not poisoned").clone();
    String::from_utf8(bytes)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn every_json_line_carries_the_correlation_and_trace_ids() {
    let out = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(test_subscriber("info", out.clone()), || {
        tracing::info!("outside any request");
        let span = tracing::info_span!(
            "SubmitOrder",
            correlation_id = "c-1",
            trace_id = tracing::field::Empty
        );
        let _entered = span.enter();
        tracing::info!(order = "o-1", "accepted");
        span.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
        tracing::warn!("rejected");
    });
    let lines = lines(&out);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["correlation_id"], "");
    assert_eq!(lines[0]["trace_id"], "");
    assert_eq!(lines[1]["correlation_id"], "c-1");
    assert_eq!(lines[1]["order"], "o-1");
    assert_eq!(lines[1]["message"], "accepted");
    assert_eq!(lines[1]["level"], "INFO");
    assert_eq!(lines[1]["spans"][0], "SubmitOrder");
    assert_eq!(lines[2]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(lines[2]["correlation_id"], "c-1");
}

#[test]
fn inner_spans_inherit_the_outer_correlation_id() {
    let out = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(test_subscriber("info", out.clone()), || {
        let outer = tracing::info_span!("rpc", correlation_id = "c-2");
        let _o = outer.enter();
        let inner = tracing::info_span!("journal");
        let _i = inner.enter();
        tracing::info!("synced");
    });
    assert_eq!(lines(&out)[0]["correlation_id"], "c-2");
}

#[test]
fn trace_id_from_span_extensions_is_used() {
    let out = Arc::new(Mutex::new(Vec::new()));
    let subscriber = test_subscriber("info", out.clone());
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("rpc");
        tracing::dispatcher::get_default(|d| {
            let registry = d
                .downcast_ref::<Registry>()
                .expect("the registry is the subscriber root");
            let id = span.id().expect("enabled");
            registry
                .span(&id)
                .expect("exists")
                .extensions_mut()
                .insert(TraceId("abc".into()));
        });
        let _e = span.enter();
        tracing::info!("x");
    });
    assert_eq!(lines(&out)[0]["trace_id"], "abc");
}

#[test]
fn secrets_are_redacted_by_name_by_shape_and_when_registered() {
    register_secret("venue-secret-CANARY-0123456789");
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlLWNhbmFyeQ";
    let out = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(test_subscriber("info", out.clone()), || {
        let span = tracing::info_span!("rpc", api_key = "ak-CANARY-1");
        let _e = span.enter();
        tracing::info!(authorization = "Bearer xyz", "call");
        tracing::info!(header = %format!("Bearer {jwt}"), "bearer in text");
        tracing::info!("token {jwt} in a message");
        tracing::info!(
            config = "secret=venue-secret-CANARY-0123456789;x=1",
            "config"
        );
        tracing::info!(x_api_key = "ak-CANARY-2", "metadata");
    });
    let text = String::from_utf8(out.lock().expect("not poisoned").clone()).expect("utf-8");
    for canary in [
        "ak-CANARY-1",
        "ak-CANARY-2",
        "xyz",
        jwt,
        "eyJzdWIi",
        "venue-secret-CANARY",
    ] {
        assert!(!text.contains(canary), "{canary} leaked:\n{text}");
    }
    assert!(text.contains(REDACTED));
    assert!(text.contains("token [REDACTED] in a message"), "{text}");
}

#[test]
fn redaction_leaves_ordinary_text_alone() {
    assert_eq!(redact("message", "order accepted"), "order accepted");
    assert_eq!(redact("method", "jwt"), "jwt");
    assert_eq!(redact("message", "eyJ alone"), "eyJ alone");
    assert_eq!(redact("message", "bearer"), "bearer");
}

#[test]
fn correlation_ids_come_from_metadata_or_are_made() {
    let mut metadata = http::HeaderMap::new();
    let made = correlation_id(&metadata);
    assert_eq!(made.len(), 16);
    assert_ne!(made, correlation_id(&metadata));
    metadata.insert("x-correlation-id", "from-client".parse().expect("ascii"));
    assert_eq!(correlation_id(&metadata), "from-client");
}

#[test]
fn an_invalid_level_is_refused() {
    assert!(matches!(
        set_level("info,=[bad"),
        Err(LevelError::Invalid(_))
    ));
}
