//! Native mTLS on the shared accept path and client connector: certificates replaced under
//! continuous load without a failed call (leaf, then CA with an overlap window), and each
//! kind of bad peer refused.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use execbridge_devcerts::{Ca, Issued, Leaf, spiffe_id, write_identity};
use execbridge_runtime::config::{TlsConfig, TlsMode};
use execbridge_runtime::grpc::{self, Acceptor, PeerLayer};
use execbridge_runtime::tls::{TlsContext, TlsFiles};
use execbridge_runtime::{Health, ServerConfig, Shutdown};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt as _;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const DAY: Duration = Duration::from_secs(86_400);
const RELOAD: Duration = Duration::from_millis(50);

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, issued: &Issued, bundle: &str) {
        write_identity(&self.path(name), issued, bundle).unwrap();
    }
    fn files(&self, name: &str) -> TlsFiles {
        TlsFiles::in_dir(&self.path(name))
    }
}

fn leaf(ca: &Ca, name: &str) -> Issued {
    ca.issue(&Leaf::dev(name, DAY)).unwrap()
}

fn server_config(max_age_secs: u64) -> ServerConfig {
    ServerConfig {
        tls: TlsConfig {
            mode: TlsMode::Native,
            handshake_timeout_ms: 300,
            ..TlsConfig::default()
        },
        max_connection_age_secs: max_age_secs,
        ..ServerConfig::default()
    }
}

struct Server {
    addr: std::net::SocketAddr,
    tls: TlsContext,
    identities: Arc<Mutex<Vec<String>>>,
    shutdown: Shutdown,
}

async fn start_server(files: TlsFiles, config: ServerConfig) -> Server {
    let tls = TlsContext::load(files, true).unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(tls.clone().watch(RELOAD, shutdown.clone()));
    let listener = grpc::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (health, service) = Health::new(&[]).await;
    health.set_ready().await;
    let identities = Arc::new(Mutex::new(Vec::new()));
    let seen = identities.clone();
    let router = grpc::server_with(
        &config,
        PeerLayer::identity(move |id, _| seen.lock().unwrap().push(id.to_owned())),
    )
    .add_service(service);
    let acceptor = Acceptor::new(listener, Some(tls.clone()), &config);
    let stop = shutdown.clone();
    tokio::spawn(async move { grpc::serve_on(router, acceptor, health, stop).await });
    Server {
        addr,
        tls,
        identities,
        shutdown,
    }
}

fn endpoint(addr: std::net::SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
}

async fn check(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

/// A channel over a hand-built rustls client configuration, for peers the runtime's own
/// loader would refuse to be (expired certificate, no certificate).
fn raw_channel(addr: std::net::SocketAddr, config: rustls::ClientConfig) -> Channel {
    let config = Arc::new(config);
    endpoint(addr).connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    }))
}

fn client_builder(
    trusted: &str,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trusted.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let _ = &mut config;
    config
}

fn with_cert(trusted: &str, issued: &Issued) -> rustls::ClientConfig {
    let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let mut config = client_builder(trusted)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// The issuer CN of the certificate a fresh connection to `addr` is served.
async fn served_issuer(addr: std::net::SocketAddr, client: &TlsContext) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client.client_config())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    parsed
        .issuer()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

async fn wait_reloaded(ctx: &TlsContext, before: SystemTime) {
    for _ in 0..100 {
        if ctx.not_after() != before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the new certificate was not loaded");
}

/// Load: several tasks calling in a loop over shared channels, plus a fresh channel per
/// call in one task so new handshakes happen throughout.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_load(addr: std::net::SocketAddr, client: &TlsContext) -> Load {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let (ok, failed, stop, client) = (ok.clone(), failed.clone(), stop.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let shared = grpc::channel_lazy(endpoint(addr), Some(&client), "").unwrap();
            while !stop.load(Ordering::Relaxed) {
                let channel = if worker == 0 {
                    grpc::channel_lazy(endpoint(addr), Some(&client), "").unwrap()
                } else {
                    shared.clone()
                };
                match check(channel).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failed.lock().unwrap().push(format!("worker {worker}: {e}")),
                }
            }
        }));
    }
    Load {
        ok,
        failed,
        stop,
        tasks,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_leaf_then_ca_with_overlap_without_a_failed_call() {
    let pki = Pki::new();
    let old_ca = Ca::new("old CA", DAY * 30).unwrap();
    let old = old_ca.cert_pem();
    pki.write("server", &leaf(&old_ca, "server"), &old);
    pki.write("client", &leaf(&old_ca, "client"), &old);
    // No maximum age here: a GOAWAY racing a new call fails that call in tonic's client
    // (no transparent retry), which is a property of connection recycling, not of
    // rotation. Worker 0 makes a new connection per call, so new handshakes run
    // throughout; the others keep their connections across the whole rotation.
    let server = start_server(pki.files("server"), server_config(0)).await;
    let client = TlsContext::load(pki.files("client"), true).unwrap();
    tokio::spawn(client.clone().watch(RELOAD, server.shutdown.clone()));
    let load = start_load(server.addr, &client);
    let settle = || tokio::time::sleep(Duration::from_millis(400));
    settle().await;

    // 1. New leaves from the same CA.
    let (s0, c0) = (server.tls.not_after(), client.not_after());
    tokio::time::sleep(Duration::from_millis(1100)).await; // a different not_after second
    pki.write("server", &leaf(&old_ca, "server"), &old);
    pki.write("client", &leaf(&old_ca, "client"), &old);
    wait_reloaded(&server.tls, s0).await;
    wait_reloaded(&client, c0).await;
    settle().await;

    // 2. CA rotation: trust both, move the leaves to the new CA, then drop the old CA.
    let new_ca = Ca::new("new CA", DAY * 30).unwrap();
    let both = format!("{old}{}", new_ca.cert_pem());
    let server_leaf = leaf(&old_ca, "server");
    let client_leaf = leaf(&old_ca, "client");
    pki.write("server", &server_leaf, &both);
    pki.write("client", &client_leaf, &both);
    settle().await;
    pki.write("server", &leaf(&new_ca, "server"), &both);
    settle().await;
    assert_eq!(served_issuer(server.addr, &client).await, "new CA");
    pki.write("client", &leaf(&new_ca, "client"), &both);
    settle().await;
    let new_only = new_ca.cert_pem();
    let (s1, c1) = (server.tls.server_config(), client.client_config());
    pki.write("server", &leaf(&new_ca, "server"), &new_only);
    pki.write("client", &leaf(&new_ca, "client"), &new_only);
    for _ in 0..100 {
        if !Arc::ptr_eq(&s1, &server.tls.server_config())
            && !Arc::ptr_eq(&c1, &client.client_config())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    settle().await;

    load.stop.store(true, Ordering::Relaxed);
    for task in load.tasks {
        task.await.unwrap();
    }
    let failed = load.failed.lock().unwrap().clone();
    let ok = load.ok.load(Ordering::Relaxed);
    assert!(
        failed.is_empty(),
        "{} failed calls of {}: {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} calls ran");
    // A peer holding only the old CA is now refused.
    let stale = with_cert(&old, &leaf(&old_ca, "client"));
    assert!(check(raw_channel(server.addr, stale)).await.is_err());
    server.shutdown.trigger();
}

#[tokio::test]
async fn the_client_certificate_identity_reaches_the_request() {
    let pki = Pki::new();
    let ca = Ca::new("CA", DAY).unwrap();
    pki.write("server", &leaf(&ca, "server"), &ca.cert_pem());
    pki.write("client", &leaf(&ca, "orchestrator"), &ca.cert_pem());
    let server = start_server(pki.files("server"), server_config(0)).await;
    let client = TlsContext::load(pki.files("client"), true).unwrap();
    check(grpc::channel_lazy(endpoint(server.addr), Some(&client), "").unwrap())
        .await
        .unwrap();
    assert_eq!(
        server.identities.lock().unwrap().as_slice(),
        [spiffe_id("orchestrator")]
    );
    server.shutdown.trigger();
}

#[tokio::test]
async fn wrong_ca_expired_or_missing_client_certificates_and_plaintext_are_refused() {
    let pki = Pki::new();
    let ca = Ca::new("CA", DAY).unwrap();
    let trusted = ca.cert_pem();
    pki.write("server", &leaf(&ca, "server"), &trusted);
    let server = start_server(pki.files("server"), server_config(0)).await;

    // Control: a good client gets through.
    let good = with_cert(&trusted, &leaf(&ca, "client"));
    check(raw_channel(server.addr, good)).await.unwrap();

    // A client certificate from another CA.
    let other = Ca::new("other CA", DAY).unwrap();
    let foreign = with_cert(&trusted, &leaf(&other, "client"));
    assert!(
        check(raw_channel(server.addr, foreign)).await.is_err(),
        "wrong CA accepted"
    );

    // A server the client does not trust (the client trusts only the other CA).
    let distrustful = with_cert(&other.cert_pem(), &leaf(&ca, "client"));
    assert!(
        check(raw_channel(server.addr, distrustful)).await.is_err(),
        "untrusted server accepted"
    );

    // An expired client certificate.
    let now = SystemTime::now();
    let expired = ca
        .issue(&Leaf {
            not_before: now - DAY * 2,
            not_after: now - DAY,
            ..Leaf::dev("client", DAY)
        })
        .unwrap();
    let expired = with_cert(&trusted, &expired);
    assert!(
        check(raw_channel(server.addr, expired)).await.is_err(),
        "expired certificate accepted"
    );

    // No client certificate.
    let mut anonymous = client_builder(&trusted).with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];
    assert!(
        check(raw_channel(server.addr, anonymous)).await.is_err(),
        "missing client certificate accepted"
    );

    // Plaintext gRPC to the TLS port.
    let plain = endpoint(server.addr).connect_lazy();
    assert!(check(plain).await.is_err(), "plaintext accepted");
    assert!(
        server.identities.lock().unwrap().len() == 1,
        "only the good client was served"
    );
    server.shutdown.trigger();
}

#[tokio::test]
async fn a_stalled_handshake_is_dropped_after_the_timeout() {
    let pki = Pki::new();
    let ca = Ca::new("CA", DAY).unwrap();
    pki.write("server", &leaf(&ca, "server"), &ca.cert_pem());
    let server = start_server(pki.files("server"), server_config(0)).await;
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf))
        .await
        .expect("the server kept a silent connection past the handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)));
    server.shutdown.trigger();
}

#[tokio::test]
async fn bad_new_files_are_refused_and_the_previous_certificates_keep_serving() {
    let pki = Pki::new();
    let ca = Ca::new("CA", DAY).unwrap();
    let trusted = ca.cert_pem();
    pki.write("server", &leaf(&ca, "server"), &trusted);
    let files = pki.files("server");
    let ctx = TlsContext::load(files.clone(), true).unwrap();
    let before = ctx.server_config();
    let good = leaf(&ca, "server");
    let check_refused = |what: &str| {
        assert!(ctx.reload().is_err(), "{what} accepted");
        assert!(
            Arc::ptr_eq(&before, &ctx.server_config()),
            "{what} replaced the config"
        );
    };

    std::fs::write(&files.cert, "not a certificate").unwrap();
    check_refused("garbage certificate");
    // A key that does not match the certificate (a half-finished two-file update).
    std::fs::write(&files.cert, &good.cert_pem).unwrap();
    check_refused("mismatched key");
    let now = SystemTime::now();
    let expired = ca
        .issue(&Leaf {
            not_before: now - DAY * 2,
            not_after: now - DAY,
            ..Leaf::dev("server", DAY)
        })
        .unwrap();
    write_identity(&pki.path("server"), &expired, &trusted).unwrap();
    check_refused("expired certificate");
    write_identity(&pki.path("server"), &good, "").unwrap();
    check_refused("empty CA bundle");
    // A good version after the bad ones is applied.
    write_identity(&pki.path("server"), &good, &trusted).unwrap();
    assert!(ctx.reload().unwrap());
    assert!(!Arc::ptr_eq(&before, &ctx.server_config()));
}
