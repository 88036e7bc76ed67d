//! Native mTLS with rustls: the certificate, key and CA bundle are read from files, re-read
//! on a timer and swapped atomically, so new handshakes (server and client side) use the
//! new material while established connections carry on.
//!
//! Why polling the file contents rather than inotify on the files: a Kubernetes Secret
//! volume updates by swapping the `..data` symlink of the directory, which a watch on the
//! file never sees; re-reading the paths every `reload_interval_ms` follows the symlink,
//! costs three small reads, and also catches editors and `cp` over the file.
//!
//! A refused update (unreadable, unparsable, key not matching the certificate, certificate
//! expired) is logged once and the previous configuration keeps serving; the next change
//! to any of the files is tried again.
//!
//! The seconds left on the certificate in use are exported as
//! `execbridge_certificate_expiry_seconds{certificate="server"}` from the first load and
//! after every applied reload, and as `{certificate="client"}` as soon as a [`Connector`]
//! presents the same certificate as a client. Writing a certificate and its key is two steps, so
//! the half-written state is refused and the complete one applied on a later tick.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

use crate::config::{TlsConfig, TlsMode};
use crate::{Shutdown, metrics};

/// The `certificate` label of the certificate a service presents as a server.
pub const SERVER_CERTIFICATE: &str = "server";
/// The `certificate` label of the certificate a service presents as a client.
pub const CLIENT_CERTIFICATE: &str = "client";

/// Why TLS material was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        source: io::Error,
    },
    /// A file held no usable PEM item of the expected kind.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The own certificate is outside its validity period.
    #[error("{path}: certificate is not valid now (expired or not yet valid)")]
    NotValidNow {
        /// The file.
        path: String,
    },
    /// rustls refused the material (for example, the key does not match the certificate).
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA bundle could not build a verifier.
    #[error("CA bundle: {0}")]
    Verifier(String),
}

/// The three files of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle (old and new CA during a rotation).
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files named in `config`.
    pub fn from_config(config: &TlsConfig) -> Self {
        Self {
            cert: config.cert_file.clone().into(),
            key: config.key_file.clone().into(),
            ca: config.ca_file.clone().into(),
        }
    }

    /// `tls.crt`, `tls.key` and `ca.crt` in `dir`: a mounted Kubernetes TLS Secret.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: dir.join("ca.crt"),
        }
    }
}

/// The server and client configurations built from one version of the files.
struct Built {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    not_after: SystemTime,
}

struct Inner {
    files: TlsFiles,
    require_client_cert: bool,
    /// Whether a [`Connector`] presents the certificate as a client (then its expiry is
    /// exported as the "client" certificate too).
    client_in_use: AtomicBool,
    current: ArcSwap<Built>,
    /// Fingerprint of the contents last tried, applied or refused: a refused version is
    /// logged once, not on every tick.
    last_seen: Mutex<u64>,
}

/// The current TLS configuration of a service, shared by its server and its clients and
/// swapped by [`TlsContext::reload`]. Cheap to clone.
#[derive(Clone)]
pub struct TlsContext {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl TlsContext {
    /// The context `config` asks for: `None` in mesh mode (plaintext).
    ///
    /// # Errors
    /// [`TlsError`] when the files do not load: a service must not start without them.
    pub fn from_config(config: &TlsConfig) -> Result<Option<Self>, TlsError> {
        match config.mode {
            TlsMode::Mesh => Ok(None),
            TlsMode::Native => {
                Self::load(TlsFiles::from_config(config), config.require_client_cert).map(Some)
            }
        }
    }

    /// Loads `files`.
    ///
    /// # Errors
    /// [`TlsError`] when the files do not load.
    pub fn load(files: TlsFiles, require_client_cert: bool) -> Result<Self, TlsError> {
        let (contents, fingerprint) = read_all(&files)?;
        let built = build(&files, &contents, require_client_cert)?;
        let context = Self {
            inner: Arc::new(Inner {
                files,
                require_client_cert,
                client_in_use: AtomicBool::new(false),
                current: ArcSwap::from_pointee(built),
                last_seen: Mutex::new(fingerprint),
            }),
        };
        context.export_expiry();
        Ok(context)
    }

    /// Publishes the seconds left on the certificate in use (see the module docs).
    fn export_expiry(&self) {
        let not_after = self.not_after();
        metrics::set_certificate_expiry(SERVER_CERTIFICATE, not_after);
        if self.inner.client_in_use.load(Ordering::Acquire) {
            metrics::set_certificate_expiry(CLIENT_CERTIFICATE, not_after);
        }
    }

    /// Records that the certificate is presented as a client certificate from now on.
    fn use_as_client(&self) {
        if !self.inner.client_in_use.swap(true, Ordering::AcqRel) {
            self.export_expiry();
        }
    }

    /// The server configuration new handshakes use.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.current.load().server.clone()
    }

    /// The client configuration new connections use.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.inner.current.load().client.clone()
    }

    /// When the certificate in use expires (for a "seconds to expiry" gauge).
    pub fn not_after(&self) -> SystemTime {
        self.inner.current.load().not_after
    }

    /// Re-reads the files; applies them if they changed and are good.
    ///
    /// # Errors
    /// [`TlsError`] when the files changed but were refused; the previous configuration
    /// stays in use. A refused version is reported once.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (contents, fingerprint) = read_all(&self.inner.files)?;
        {
            let mut last = self
                .inner
                .last_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *last == fingerprint {
                return Ok(false);
            }
            *last = fingerprint;
        }
        let built = build(&self.inner.files, &contents, self.inner.require_client_cert)?;
        self.inner.current.store(Arc::new(built));
        self.export_expiry();
        Ok(true)
    }

    /// Re-reads the files every `interval` until `shutdown`, logging what it applies and
    /// what it refuses.
    pub async fn watch(self, interval: Duration, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unreadable = false;
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                _ = tick.tick() => {}
            }
            match self.reload() {
                Ok(true) => {
                    unreadable = false;
                    tracing::info!(cert = %self.inner.files.cert.display(), "TLS certificates reloaded; new handshakes use them");
                }
                Ok(false) => unreadable = false,
                // A missing file mid-swap is retried silently after the first report.
                Err(e @ TlsError::Read { .. }) => {
                    if !unreadable {
                        tracing::warn!(error = %e, "TLS files unreadable; still using the previous certificates");
                    }
                    unreadable = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "new TLS files refused; still using the previous certificates");
                }
            }
        }
    }
}

struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn read_all(files: &TlsFiles) -> Result<(Contents, u64), TlsError> {
    let contents = Contents {
        cert: read(&files.cert)?,
        key: read(&files.key)?,
        ca: read(&files.ca)?,
    };
    let mut hasher = DefaultHasher::new();
    contents.cert.hash(&mut hasher);
    contents.key.hash(&mut hasher);
    contents.ca.hash(&mut hasher);
    Ok((contents, hasher.finish()))
}

fn pem_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn certs(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate found"));
    }
    Ok(certs)
}

fn build(
    files: &TlsFiles,
    contents: &Contents,
    require_client_cert: bool,
) -> Result<Built, TlsError> {
    let chain = certs(&files.cert, &contents.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| pem_error(&files.key, e))?;
    let not_after = validity(&files.cert, &chain[0])?;
    let mut roots = RootCertStore::empty();
    for ca in certs(&files.ca, &contents.ca)? {
        roots
            .add(ca)
            .map_err(|e| pem_error(&files.ca, format!("not a usable CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);
    // One provider chosen here, not a process-wide default another crate could change.
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    let client_verifier = if require_client_cert {
        client_verifier.build()
    } else {
        client_verifier.allow_unauthenticated().build()
    }
    .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    server.alpn_protocols = vec![b"h2".to_vec()];

    let server_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_webpki_verifier(server_verifier)
        .with_client_auth_cert(chain, key)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Built {
        server: Arc::new(server),
        client: Arc::new(client),
        not_after,
    })
}

/// The end of validity of `cert`, refusing one that is not valid now: serving an expired
/// certificate would fail every handshake, so the previous one is better.
fn validity(path: &Path, cert: &CertificateDer<'_>) -> Result<SystemTime, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| pem_error(path, format!("certificate does not parse: {e}")))?;
    let validity = parsed.validity();
    if !validity.is_valid() {
        return Err(TlsError::NotValidNow {
            path: path.display().to_string(),
        });
    }
    let secs = validity.not_after.timestamp().max(0).unsigned_abs();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The identity a verified client certificate proves: its first URI SAN (SPIFFE-style),
/// else its subject CN.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                return Some((*uri).to_owned());
            }
        }
    }
    parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// A tonic channel connector doing mTLS with the context's current client configuration:
/// every new connection (including reconnects) picks up reloaded material.
#[derive(Clone, Debug)]
pub struct Connector {
    tls: TlsContext,
    server_name: Option<ServerName<'static>>,
}

impl Connector {
    /// A connector for `tls`; `server_name` overrides the name checked in the server's
    /// certificate (empty: the endpoint's host).
    ///
    /// # Errors
    /// [`TlsError::Pem`] when `server_name` is not a DNS name or IP address.
    pub fn new(tls: TlsContext, server_name: &str) -> Result<Self, TlsError> {
        tls.use_as_client();
        let server_name = if server_name.is_empty() {
            None
        } else {
            Some(
                ServerName::try_from(server_name.to_owned())
                    .map_err(|e| pem_error(Path::new("server.tls.server_name"), e))?,
            )
        };
        Ok(Self { tls, server_name })
    }

    /// A connector checking the endpoint's host in the server's certificate.
    pub fn host_checked(tls: TlsContext) -> Self {
        tls.use_as_client();
        Self {
            tls,
            server_name: None,
        }
    }
}

type Connecting = Pin<
    Box<
        dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send,
    >,
>;

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.tls.client_config();
        let fixed_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "endpoint has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = match fixed_name {
                Some(name) => name,
                None => ServerName::try_from(host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            };
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
