//! The seconds left on the certificates a service presents are exported from the moment
//! its TLS material loads, follow every applied reload, and cover the client side once the
//! certificate is used for outgoing connections.
//!
//! The gauge is process-wide, so this file holds one test (its own process).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, SystemTime};

use execbridge_devcerts::{Ca, Leaf, write_identity};
use execbridge_runtime::metrics::{self, CERTIFICATE_EXPIRY};
use execbridge_runtime::tls::{self, TlsContext, TlsFiles};
use prometheus::{Encoder as _, TextEncoder};

const DAY: Duration = Duration::from_secs(86_400);

/// `execbridge_certificate_expiry_seconds{certificate=label}` as scraped now.
fn expiry(registry: &prometheus::Registry, label: &str) -> Option<f64> {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    let prefix = format!("{CERTIFICATE_EXPIRY}{{certificate=\"{label}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.parse().unwrap())
}

/// Seconds from now to `not_after` as the certificate states it (X.509 keeps whole
/// seconds, so the issued time is truncated).
fn seconds_left(not_after: SystemTime) -> f64 {
    let whole = not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    whole as f64 - now
}

fn assert_near(actual: Option<f64>, expected: f64, what: &str) {
    let actual = actual.unwrap_or_else(|| panic!("no {what} series"));
    assert!(
        (actual - expected).abs() < 5.0,
        "{what}: gauge {actual}, expected about {expected}"
    );
}

#[test]
fn the_expiry_gauge_follows_the_loaded_certificate_through_reloads() {
    let registry = prometheus::Registry::new();
    let _ = metrics::register(&registry);
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("expiry-test-ca", 30 * DAY).unwrap();
    let first = Leaf::dev("gateway", DAY);
    write_identity(dir.path(), &ca.issue(&first).unwrap(), &ca.cert_pem()).unwrap();
    assert_eq!(expiry(&registry, "server"), None, "nothing loaded yet");

    let context = TlsContext::load(TlsFiles::in_dir(dir.path()), true).unwrap();
    assert_near(
        expiry(&registry, tls::SERVER_CERTIFICATE),
        seconds_left(first.not_after),
        "server after load",
    );
    assert_eq!(
        expiry(&registry, tls::CLIENT_CERTIFICATE),
        None,
        "no client connection uses the certificate yet"
    );

    // Dialing out presents the same certificate as a client certificate.
    let _connector = tls::Connector::new(context.clone(), "localhost").unwrap();
    assert_near(
        expiry(&registry, tls::CLIENT_CERTIFICATE),
        seconds_left(first.not_after),
        "client once a connector exists",
    );

    // Rotation: a certificate valid for ten days replaces the one-day one.
    let second = Leaf::dev("gateway", 10 * DAY);
    write_identity(dir.path(), &ca.issue(&second).unwrap(), &ca.cert_pem()).unwrap();
    assert!(context.reload().unwrap(), "the new files are applied");
    for label in [tls::SERVER_CERTIFICATE, tls::CLIENT_CERTIFICATE] {
        assert_near(
            expiry(&registry, label),
            seconds_left(second.not_after),
            &format!("{label} after reload"),
        );
    }

    // A refused reload (an expired certificate) leaves the gauge on the one still served.
    let mut expired = Leaf::dev("gateway", DAY);
    expired.not_before = SystemTime::now() - 3 * DAY;
    expired.not_after = SystemTime::now() - DAY;
    write_identity(dir.path(), &ca.issue(&expired).unwrap(), &ca.cert_pem()).unwrap();
    assert!(context.reload().is_err());
    assert_near(
        expiry(&registry, tls::SERVER_CERTIFICATE),
        seconds_left(second.not_after),
        "server after a refused reload",
    );
}
