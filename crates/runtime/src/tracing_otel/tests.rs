use tracing_subscriber::layer::SubscriberExt as _;

/// A subscriber that is interested in every span: the one a running service has without
/// an OTLP endpoint (the log formatter), which must never see the trace-only spans.
fn logging() -> impl tracing::Subscriber {
    tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
}

#[test]
fn without_an_exporter_trace_only_spans_are_not_made() {
    assert!(
        !super::enabled(),
        "no test of this binary builds an exporter"
    );
    tracing::subscriber::with_default(logging(), || {
        let request = tracing::info_span!("request");
        assert!(
            !request.is_disabled(),
            "the subscriber records ordinary spans"
        );
        let _request = request.enter();
        assert!(crate::otel_span!("admission", account = "acct-1").is_none());
        assert!(crate::otel_child_span!("venue").is_none());
    });
}
