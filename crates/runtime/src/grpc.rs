//! Listener and tonic server setup with the limits every execbridge server needs.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Server};
use tower::layer::util::{Identity, Stack};

use crate::ServerConfig;
use crate::tls::{self, TlsContext};

/// Binds `addr`, naming it in the error.
///
/// # Errors
/// When the address is taken or not local.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))
}

/// Accepted connections with `TCP_NODELAY` set on each socket: `serve_with_incoming`
/// ignores the builder's `tcp_nodelay`, and Nagle adds 40 ms stalls to small replies.
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> {
    incoming_with(listener, true)
}

/// [`incoming`] with `TCP_NODELAY` as `nodelay` says.
fn incoming_with(
    listener: TcpListener,
    nodelay: bool,
) -> impl Stream<Item = io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(move |conn| {
        let conn = conn?;
        conn.set_nodelay(nodelay)?;
        Ok(conn)
    })
}

/// The server builder every service uses: limits plus the [`PeerLayer`].
pub type ServerBuilder = Server<Stack<PeerLayer, Identity>>;

/// A router built from [`server`].
pub type Router = tonic::transport::server::Router<Stack<PeerLayer, Identity>>;

/// A tonic server builder with every connection limit set explicitly from `config`.
///
/// - `max_concurrent_streams`: tonic leaves it unlimited unless set (grpc-facts).
/// - `max_header_list_bytes`: HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`; a larger header block
///   is refused by h2 before any handler runs.
/// - keepalive pings detect dead peers.
/// - `max_connection_age_secs`: a graceful GOAWAY (calls in flight finish, long streams
///   are not cut: there is no forced close after a grace) makes clients reconnect, spread
///   over new replicas and pick up new certificates.
/// - `tcp_nodelay`: recorded here for completeness, but `serve_with_incoming` ignores it;
///   the [`Acceptor`] sets it on each accepted socket.
///
/// Message size limits belong to each generated service (`FooServer::new(..)
/// .max_decoding_message_size(..)`); the services apply `max_decoding_message_bytes` and
/// `max_encoding_message_bytes` where they build them.
///
/// These settings apply to every connection tonic serves, including the TLS streams of
/// [`Acceptor`] (tonic runs its own HTTP/2 over whatever IO the acceptor yields).
pub fn server(config: &ServerConfig) -> ServerBuilder {
    server_with(config, PeerLayer::default())
}

/// [`server`] with a [`PeerLayer`] that records the TLS peer identity the way a service
/// wants it (the gateway's admission reads its own extension type).
pub fn server_with(config: &ServerConfig, peers: PeerLayer) -> ServerBuilder {
    let keepalive = (config.keepalive_interval_secs > 0)
        .then(|| Duration::from_secs(config.keepalive_interval_secs));
    let mut builder = Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_max_header_list_size(config.max_header_list_bytes)
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(config.tcp_nodelay);
    if config.max_connection_age_secs > 0 {
        builder = builder.max_connection_age(Duration::from_secs(config.max_connection_age_secs));
    }
    builder.layer(peers)
}

/// Control over one accepted connection, shared by its IO and every request on it (in the
/// request extensions): a service can count misbehaviour charged to the connection
/// ([`Connection::strike`]) and close it ([`Connection::close_after`]), for example after
/// repeated authentication failures.
///
/// Closing ends the connection's IO: reads and writes fail, hyper drops the connection,
/// the socket closes and the client's channel must reconnect. Calls still in flight on it
/// fail with UNAVAILABLE on the client side.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    state: Arc<ConnectionState>,
}

#[derive(Debug, Default)]
struct ConnectionState {
    strikes: AtomicU32,
    /// Set once a close is decided; requests arriving after it may be refused at once.
    closing: AtomicBool,
    /// Set when the IO must stop.
    closed: AtomicBool,
    /// The task reading the connection, woken when it is closed.
    reader: AtomicWaker,
}

impl Connection {
    /// Charges one more strike to the connection; returns the total so far.
    pub fn strike(&self) -> u32 {
        self.state
            .strikes
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1)
    }

    /// Strikes charged so far.
    pub fn strikes(&self) -> u32 {
        self.state.strikes.load(Ordering::Acquire)
    }

    /// Whether a close was decided ([`Connection::close_after`]).
    pub fn is_closing(&self) -> bool {
        self.state.closing.load(Ordering::Acquire)
    }

    /// Closes the connection after `linger`: long enough for the response being written
    /// now (the one that explains why) to reach the client. Returns `true` the first time
    /// (the caller counts the close once), `false` when a close was already decided.
    ///
    /// Must be called inside a tokio runtime.
    pub fn close_after(&self, linger: Duration) -> bool {
        if self.state.closing.swap(true, Ordering::AcqRel) {
            return false;
        }
        let state = self.state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            state.closed.store(true, Ordering::Release);
            state.reader.wake();
        });
        true
    }

    fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::Acquire)
    }
}

/// What the accept path knows of a connection: its addresses and, over mTLS, the identity
/// its verified client certificate proves (first URI SAN, else CN).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Local and remote address.
    pub tcp: TcpConnectInfo,
    /// The client certificate's identity; `None` in plaintext.
    pub identity: Option<Arc<str>>,
    /// Control over the connection itself.
    pub connection: Connection,
}

type IdentityHook = Arc<dyn Fn(&str, &mut http::Extensions) + Send + Sync>;

/// A tower layer that copies the connection's [`PeerInfo`] into each request: the
/// `TcpConnectInfo` (so `Request::remote_addr` works on TLS connections too), the
/// [`Connection`] control and, through an optional hook, the peer identity in the type the
/// service reads.
#[derive(Clone, Default)]
pub struct PeerLayer {
    hook: Option<IdentityHook>,
}

impl PeerLayer {
    /// A layer calling `hook` with the peer identity of every request on an mTLS
    /// connection.
    pub fn identity(hook: impl Fn(&str, &mut http::Extensions) + Send + Sync + 'static) -> Self {
        Self {
            hook: Some(Arc::new(hook)),
        }
    }
}

impl<S> tower::Layer<S> for PeerLayer {
    type Service = PeerService<S>;
    fn layer(&self, inner: S) -> PeerService<S> {
        PeerService {
            inner,
            hook: self.hook.clone(),
        }
    }
}

/// The service of [`PeerLayer`].
#[derive(Clone)]
pub struct PeerService<S> {
    inner: S,
    hook: Option<IdentityHook>,
}

impl<S, B> tower::Service<http::Request<B>> for PeerService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(info) = request.extensions().get::<PeerInfo>().cloned() {
            request.extensions_mut().insert(info.tcp);
            request.extensions_mut().insert(info.connection);
            if let (Some(hook), Some(identity)) = (&self.hook, &info.identity) {
                hook(identity, request.extensions_mut());
            }
        }
        // With trace export on, every call gets a SERVER span named for its method
        // ("execbridge.v1.ExecutionService/SubmitOrder", the OpenTelemetry convention)
        // continuing the caller's W3C context; spans the handlers open (also synchronously
        // in `call`) are its children. Off, this is one atomic load.
        let span = if crate::tracing_otel::enabled() {
            let path = request.uri().path();
            let span = tracing::info_span!(
                "grpc.request",
                otel.name = path.strip_prefix('/').unwrap_or(path),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc = %path,
            );
            crate::tracing_otel::set_parent_from_headers(&span, request.headers());
            span
        } else {
            tracing::Span::none()
        };
        let future = span.in_scope(|| self.inner.call(request));
        tracing::Instrument::instrument(future, span)
    }
}

/// An accepted connection: plaintext, or TLS after a completed handshake.
pub struct Conn {
    io: Io,
    info: PeerInfo,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    fn plain(tcp: TcpStream) -> Self {
        let info = PeerInfo {
            tcp: tcp.connect_info(),
            identity: None,
            connection: Connection::default(),
        };
        Self {
            io: Io::Plain(tcp),
            info,
        }
    }

    fn tls(tls: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        let (tcp, session) = tls.get_ref();
        let info = PeerInfo {
            tcp: tcp.connect_info(),
            identity: session
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(tls::peer_identity)
                .map(Arc::from),
            connection: Connection::default(),
        };
        Self {
            io: Io::Tls(Box::new(tls)),
            info,
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by the server",
    )
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let connection = &self.info.connection;
        if connection.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        let polled = match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if polled.is_pending() {
            // Only an idle reader needs waking by a close; registering after the read and
            // checking again leaves no window where a close is missed.
            let connection = &self.info.connection;
            connection.state.reader.register(cx.waker());
            if connection.is_closed() {
                return Poll::Ready(Err(closed_error()));
            }
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.info.connection.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.info.connection.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Handshakes in progress at once; beyond this new connections are dropped, so a flood
/// of slow handshakes cannot take all memory.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// The accept side of a server port: plaintext, or TLS with the current configuration of
/// a [`TlsContext`] and a handshake timeout.
pub struct Acceptor {
    listener: TcpListener,
    tls: Option<(TlsContext, Duration)>,
    nodelay: bool,
}

impl Acceptor {
    /// Plaintext connections from `listener`, with `TCP_NODELAY`.
    pub fn plain(listener: TcpListener) -> Self {
        Self {
            listener,
            tls: None,
            nodelay: true,
        }
    }

    /// Connections from `listener`, over TLS when `tls` is set (native mode), with
    /// `TCP_NODELAY` as `server.tcp_nodelay` says.
    pub fn new(listener: TcpListener, tls: Option<TlsContext>, config: &ServerConfig) -> Self {
        Self {
            listener,
            tls: tls.map(|t| (t, Duration::from_millis(config.tls.handshake_timeout_ms))),
            nodelay: config.tcp_nodelay,
        }
    }

    /// The bound address.
    ///
    /// # Errors
    /// When the socket has none.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The stream of ready connections tonic serves. With TLS, handshakes run in their own
    /// tasks (one slow client does not hold up the others) under the handshake timeout;
    /// a refused handshake (wrong CA, expired or missing client certificate, plaintext)
    /// is logged and never reaches tonic. The accept task ends when the stream is dropped.
    pub fn incoming(self) -> impl Stream<Item = io::Result<Conn>> {
        match self.tls {
            None => incoming_with(self.listener, self.nodelay)
                .map(|c| c.map(Conn::plain))
                .left_stream(),
            Some((tls, timeout)) => {
                let (tx, rx) = mpsc::channel(64);
                tokio::spawn(accept_tls(self.listener, tls, timeout, self.nodelay, tx));
                ReceiverStream::new(rx).map(Ok).right_stream()
            }
        }
    }
}

async fn accept_tls(
    listener: TcpListener,
    tls: TlsContext,
    timeout: Duration,
    nodelay: bool,
    tx: mpsc::Sender<Conn>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "too many TLS handshakes in progress; connection dropped");
            continue;
        };
        if let Err(e) = tcp.set_nodelay(nodelay) {
            tracing::debug!(%remote, error = %e, "cannot set TCP_NODELAY");
        }
        // The configuration current at accept time: a reload affects new handshakes only.
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send(Conn::tls(stream)).await;
                }
                Ok(Err(e)) => tracing::info!(%remote, error = %e, "TLS handshake refused"),
                Err(_) => {
                    tracing::info!(%remote, timeout_ms = timeout.as_millis() as u64, "TLS handshake timed out")
                }
            }
        });
    }
}

/// A lazily connecting channel to `endpoint`, over mTLS when `tls` is set (each new
/// connection uses the context's current client configuration).
///
/// # Errors
/// [`tls::TlsError`] when `server_name` is not a valid name.
pub fn channel_lazy(
    endpoint: Endpoint,
    tls: Option<&TlsContext>,
    server_name: &str,
) -> Result<Channel, tls::TlsError> {
    Ok(match tls {
        None => endpoint.connect_lazy(),
        Some(tls) => {
            endpoint.connect_with_connector_lazy(tls::Connector::new(tls.clone(), server_name)?)
        }
    })
}

/// Connects to `endpoint` now, over mTLS when `tls` is set.
///
/// # Errors
/// When the connection or the handshake fails, or `server_name` is invalid.
pub async fn channel_connect(
    endpoint: Endpoint,
    tls: Option<&TlsContext>,
    server_name: &str,
) -> Result<Channel, tonic::transport::Error> {
    match tls {
        None => endpoint.connect().await,
        Some(tls) => {
            // The name is checked with the configuration; should it still be bad, check
            // the endpoint's host instead of failing open.
            let connector = tls::Connector::new(tls.clone(), server_name).unwrap_or_else(|e| {
                tracing::error!(error = %e, "invalid server.tls.server_name; checking the endpoint's host");
                tls::Connector::host_checked(tls.clone())
            });
            endpoint.connect_with_connector(connector).await
        }
    }
}

/// Server reflection, v1 and v1alpha (grpcurl 1.8 and the Python reflection client speak
/// only v1alpha), over `descriptors` plus the health service.
///
/// # Errors
/// When a descriptor set does not decode.
#[allow(clippy::type_complexity)]
pub fn reflection(
    descriptors: &prost_types::FileDescriptorSet,
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection + use<>,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection + use<>,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_file_descriptor_set(descriptors.clone())
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

pub use tonic_reflection::server::Error as ReflectionError;

/// Serves `router` on `listener` until `shutdown` fires; then health turns NOT_SERVING,
/// the listener closes, HTTP/2 GOAWAY tells clients to go elsewhere and the calls in
/// flight drain. Streams must end on `shutdown` themselves for the drain to finish.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    health: crate::Health,
    shutdown: crate::Shutdown,
) -> Result<(), tonic::transport::Error> {
    serve_on(router, Acceptor::plain(listener), health, shutdown).await
}

/// [`serve`] on an [`Acceptor`] (plaintext or TLS).
///
/// # Errors
/// When the server fails.
pub async fn serve_on(
    router: Router,
    acceptor: Acceptor,
    health: crate::Health,
    shutdown: crate::Shutdown,
) -> Result<(), tonic::transport::Error> {
    if let Ok(addr) = acceptor.local_addr() {
        tracing::info!(%addr, tls = acceptor.tls.is_some(), "gRPC listening");
    }
    let signal = async move {
        shutdown.wait().await;
        health.set_not_ready().await;
    };
    router
        .serve_with_incoming_shutdown(acceptor.incoming(), signal)
        .await
}
