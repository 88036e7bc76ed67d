//! The certificates the operator issues, laid out as their Secret is mounted (`tls.crt`,
//! `tls.key`, `ca.crt` in one directory), are accepted by the services' own TLS loader
//! (`execbridge_runtime::tls`) and complete a mutual TLS handshake, also across a CA
//! rotation while the old CA is still in the bundle.

use std::path::Path;

use execbridge_operator::certs::{self, CaPlan, KeyedCert};
use execbridge_runtime::tls::{TlsContext, TlsFiles};
use time::{Duration, OffsetDateTime};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const MARKETDATA: &str = "execbridge-marketdata.trading.svc.cluster.local";

/// Writes one service's Secret as the kubelet mounts it and loads it like the service.
fn mount(dir: &Path, leaf: &KeyedCert, bundle: &str) -> TlsContext {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).expect("write");
    std::fs::write(dir.join("tls.key"), &leaf.key_pem).expect("write");
    std::fs::write(dir.join("ca.crt"), bundle).expect("write");
    TlsContext::load(TlsFiles::in_dir(dir), true).expect("the runtime accepts the files")
}

fn leaf(ca: &KeyedCert, service: &str, dns: &str) -> KeyedCert {
    certs::issue_leaf(
        ca,
        "trading",
        service,
        &[dns.to_string()],
        OffsetDateTime::now_utc(),
        Duration::hours(24),
    )
    .expect("leaf")
}

/// The executor (client) calls marketdata (server), both presenting certificates.
async fn handshake(client: &TlsContext, server: &TlsContext) -> std::io::Result<()> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server.server_config());
    let connector = TlsConnector::from(client.client_config());
    let name = ServerName::try_from(MARKETDATA).expect("name");
    let (accepted, connected) = tokio::join!(
        acceptor.accept(server_io),
        connector.connect(name, client_io)
    );
    let accepted = accepted?;
    connected?;
    // mTLS: the server saw the client's certificate.
    assert!(accepted.get_ref().1.peer_certificates().is_some());
    Ok(())
}

#[tokio::test]
async fn two_services_with_operator_issued_certificates_complete_mutual_tls() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = certs::issue_ca(OffsetDateTime::now_utc(), Duration::hours(240)).expect("ca");
    let server = mount(
        &dir.path().join("marketdata"),
        &leaf(&ca, "marketdata", MARKETDATA),
        &ca.cert_pem,
    );
    let client = mount(
        &dir.path().join("executor"),
        &leaf(
            &ca,
            "executor",
            "*.execbridge-executor-headless.trading.svc.cluster.local",
        ),
        &ca.cert_pem,
    );
    handshake(&client, &server).await.expect("handshake");
}

#[tokio::test]
async fn during_a_ca_rotation_old_and_new_certificates_trust_each_other() {
    let dir = tempfile::tempdir().expect("tmp");
    let now = OffsetDateTime::now_utc();
    let old = certs::issue_ca(now, Duration::hours(24)).expect("ca");
    let found = certs::CaState {
        trusted: vec![old.cert_pem.clone()],
        current: old.clone(),
    };
    let CaPlan::Rotated(state) =
        certs::plan_ca(Some(found), Duration::hours(240), Duration::hours(48), now).expect("plan")
    else {
        panic!("expected a rotation")
    };
    let bundle = state.bundle();
    // marketdata already has its new certificate; the executor still has the old one.
    let server = mount(
        &dir.path().join("marketdata"),
        &leaf(&state.current, "marketdata", MARKETDATA),
        &bundle,
    );
    let client = mount(
        &dir.path().join("executor"),
        &leaf(&old, "executor", "executor"),
        &bundle,
    );
    handshake(&client, &server)
        .await
        .expect("new server, old client");
    let client_new = mount(
        &dir.path().join("executor-new"),
        &leaf(&state.current, "executor", MARKETDATA),
        &bundle,
    );
    let server_old = mount(
        &dir.path().join("marketdata-old"),
        &leaf(&old, "marketdata", MARKETDATA),
        &bundle,
    );
    handshake(&client_new, &server_old)
        .await
        .expect("old server, new client");
}
