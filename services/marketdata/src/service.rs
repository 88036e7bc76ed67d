//! `StreamMarketData`: per client stream, a bounded queue in the hub, a task that applies
//! the client's subscribe and unsubscribe requests while streaming, and a response stream
//! that sends everything queued as one message.
//!
//! Encode once, send many: the hub encodes each event once as field 1 of
//! `StreamMarketDataResponse`, so a response message is those bytes concatenated; the
//! codec here copies them into the HTTP/2 buffer instead of re-encoding a message per
//! subscriber. That is why this service is a hand-written tower service around
//! `tonic::server::Grpc` with its own codec rather than the generated server (whose codec
//! is fixed to prost messages). Requests are decoded with prost as usual.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BufMut;
use execbridge_api::v1::market_data_service_server::SERVICE_NAME;
use execbridge_api::v1::stream_market_data_request::Action;
use execbridge_api::v1::{self, Channel};
use execbridge_domain::FieldViolation;
use execbridge_runtime::Shutdown;
use futures::Stream;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::{Status, Streaming};

use crate::config::FanoutConfig;
use crate::hub::{self, Batch, Hub, InstrumentId, Next, Policy, Subscriber};

const PATH: &str = "/execbridge.v1.MarketDataService/StreamMarketData";

/// What a stream uses when no Subscribe names a policy: the right one for top of book.
pub const DEFAULT_POLICY: Policy = Policy::Conflate;

/// The gRPC `MarketDataService`.
#[derive(Clone)]
pub struct MarketDataServer {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Arc<Hub>,
    default_venue: String,
    fanout: FanoutConfig,
    shutdown: Shutdown,
    /// Largest request and response message, bytes.
    limits: (usize, usize),
}

impl MarketDataServer {
    /// A service over `hub`; subscriptions without a venue use `default_venue`.
    pub fn new(
        hub: Arc<Hub>,
        default_venue: String,
        fanout: FanoutConfig,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                hub,
                default_venue,
                fanout,
                shutdown,
                limits: (
                    execbridge_runtime::config::DEFAULT_MAX_MESSAGE_BYTES,
                    execbridge_runtime::config::DEFAULT_MAX_MESSAGE_BYTES,
                ),
            }),
        }
    }

    /// The same service with other message size limits (`server.max_decoding_message_bytes`
    /// and `server.max_encoding_message_bytes`), what the generated servers'
    /// `max_decoding_message_size` and `max_encoding_message_size` do. Call before the
    /// service is cloned.
    #[must_use]
    pub fn with_message_limits(mut self, decoding: usize, encoding: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.limits = (decoding, encoding);
        }
        self
    }
}

impl tonic::server::NamedService for MarketDataServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tonic::codegen::Service<http::Request<B>> for MarketDataServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != PATH {
            return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            let (decoding, encoding) = inner.limits;
            let mut grpc = tonic::server::Grpc::new(FrameCodec)
                .max_decoding_message_size(decoding)
                .max_encoding_message_size(encoding);
            Ok(grpc.streaming(StreamMethod(inner), req).await)
        })
    }
}

struct StreamMethod(Arc<Inner>);

impl tonic::server::StreamingService<v1::StreamMarketDataRequest> for StreamMethod {
    type Response = Batch;
    type ResponseStream = Outbound;
    type Future = BoxFuture<tonic::Response<Outbound>, Status>;

    fn call(
        &mut self,
        request: tonic::Request<Streaming<v1::StreamMarketDataRequest>>,
    ) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let subscriber = inner.hub.subscriber(
                inner.fanout.queue_capacity,
                inner.fanout.queue_max_bytes,
                DEFAULT_POLICY,
            );
            inner.hub.metrics.subscribers.inc();
            tokio::spawn(control(
                inner.clone(),
                subscriber.clone(),
                request.into_inner(),
            ));
            Ok(tonic::Response::new(Outbound {
                inner,
                subscriber,
                done: false,
            }))
        })
    }
}

/// The response stream: everything queued, as one message, whenever something is.
pub struct Outbound {
    inner: Arc<Inner>,
    subscriber: Arc<Subscriber>,
    done: bool,
}

impl Stream for Outbound {
    type Item = Result<Batch, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let hub = &this.inner.hub;
        let fanout = &this.inner.fanout;
        loop {
            match this.subscriber.next(
                cx.waker(),
                fanout.max_batch_events,
                fanout.max_batch_bytes,
                &hub.metrics,
            ) {
                Next::Batch(batch) => {
                    if let Some(oldest) = batch.frames.iter().find(|f| f.kind != hub::Kind::Gap) {
                        hub.metrics
                            .feed_to_send
                            .observe(oldest.received.elapsed().as_secs_f64());
                    }
                    hub.metrics.queue_depth.observe(batch.depth as f64);
                    hub.metrics.batch_events.observe(batch.frames.len() as f64);
                    return Poll::Ready(Some(Ok(batch)));
                }
                Next::Resync(ids) => {
                    for id in ids {
                        hub.resync(&this.subscriber, id);
                    }
                }
                Next::End(status) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                Next::Done => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Next::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.inner.hub.remove(&self.subscriber);
        self.inner.hub.metrics.subscribers.dec();
    }
}

/// Reads the client's requests until the stream ends. On a bad request the stream ends
/// with its error; when the client only closes its side, the subscriptions stay.
async fn control(
    inner: Arc<Inner>,
    subscriber: Arc<Subscriber>,
    mut inbound: Streaming<v1::StreamMarketDataRequest>,
) {
    let mut subscriptions: HashMap<InstrumentId, u8> = HashMap::new();
    let mut open = true;
    loop {
        tokio::select! {
            message = inbound.message(), if open => match message {
                Ok(Some(request)) => {
                    if let Err(status) = apply(&inner, &subscriber, &mut subscriptions, request.action) {
                        subscriber.close(status);
                        return;
                    }
                }
                Ok(None) => open = false,
                // The client went away; the response side notices on its own.
                Err(_) => return,
            },
            () = subscriber.gone().cancelled() => return,
            () = inner.shutdown.wait() => {
                subscriber.close(execbridge_api::status::unavailable(
                    execbridge_api::status::Reason::ShuttingDown,
                    "marketdata is shutting down",
                    std::time::Duration::from_secs(1),
                ));
                return;
            }
        }
    }
}

fn parse_channels(raw: &[i32], field: &str) -> Result<u8, Status> {
    if raw.is_empty() {
        return Ok(hub::TOP_OF_BOOK);
    }
    let mut channels = 0;
    for (i, ch) in raw.iter().enumerate() {
        channels |= match Channel::try_from(*ch) {
            Ok(Channel::TopOfBook) => hub::TOP_OF_BOOK,
            Ok(Channel::Trades) => hub::TRADES,
            Ok(Channel::Depth) => hub::DEPTH,
            Ok(Channel::Unspecified) | Err(_) => {
                return Err(execbridge_api::status::invalid_argument(&[
                    FieldViolation::new(format!("{field}[{i}]"), format!("unknown channel {ch}")),
                ]));
            }
        };
    }
    Ok(channels)
}

/// Applies one request: validates all of it first, then changes the subscriptions (each
/// new one gets its snapshot through the hub).
fn apply(
    inner: &Inner,
    subscriber: &Arc<Subscriber>,
    subscriptions: &mut HashMap<InstrumentId, u8>,
    action: Option<Action>,
) -> Result<(), Status> {
    let hub = &inner.hub;
    let venue_or_default = |venue: String| {
        if venue.is_empty() {
            inner.default_venue.clone()
        } else {
            venue
        }
    };
    match action {
        Some(Action::Subscribe(s)) => {
            let venue = venue_or_default(s.venue);
            let channels = parse_channels(&s.channels, "subscribe.channels")?;
            let policy = match s.policy {
                0 => None,
                p => Some(Policy::from_proto(p).ok_or_else(|| {
                    execbridge_api::status::invalid_argument(&[FieldViolation::new(
                        "subscribe.policy",
                        format!("unknown policy {p}"),
                    )])
                })?),
            };
            let symbols = if s.symbols.is_empty() {
                hub.symbols(&venue)
            } else {
                s.symbols
            };
            let mut ids = Vec::with_capacity(symbols.len());
            let mut unknown = Vec::new();
            for (i, symbol) in symbols.iter().enumerate() {
                match hub.lookup(&venue, symbol) {
                    Some(id) => ids.push(id),
                    None => unknown.push(FieldViolation::new(
                        format!("subscribe.symbols[{i}]"),
                        format!("{symbol:?} is not available on venue {venue:?}"),
                    )),
                }
            }
            if ids.is_empty() && unknown.is_empty() {
                unknown.push(FieldViolation::new(
                    "subscribe.venue",
                    format!("venue {venue:?} has no symbols here"),
                ));
            }
            if !unknown.is_empty() {
                return Err(execbridge_api::status::invalid_argument(&unknown));
            }
            if let Some(policy) = policy {
                subscriber.set_policy(policy);
            }
            for id in ids {
                let entry = subscriptions.entry(id).or_insert(0);
                *entry |= channels;
                hub.set_channels(subscriber, id, *entry);
            }
        }
        Some(Action::Unsubscribe(u)) => {
            let venue = venue_or_default(u.venue);
            let channels = if u.channels.is_empty() {
                hub::ALL_CHANNELS
            } else {
                parse_channels(&u.channels, "unsubscribe.channels")?
            };
            let ids: Vec<InstrumentId> = if u.symbols.is_empty() {
                subscriptions
                    .keys()
                    .copied()
                    .filter(|id| hub.spec(*id).is_some_and(|s| s.venue == venue))
                    .collect()
            } else {
                u.symbols
                    .iter()
                    .filter_map(|s| hub.lookup(&venue, s))
                    .collect()
            };
            for id in ids {
                if let Some(entry) = subscriptions.get_mut(&id) {
                    *entry &= !channels;
                    hub.set_channels(subscriber, id, *entry);
                    if *entry == 0 {
                        subscriptions.remove(&id);
                    }
                }
            }
        }
        None => {
            return Err(execbridge_api::status::invalid_argument(&[
                FieldViolation::new("action", "is required (subscribe or unsubscribe)"),
            ]));
        }
    }
    Ok(())
}

/// Pre-encoded batches out, prost-decoded requests in.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec;

/// Writes a batch's pre-encoded frames one after another: together they are one
/// `StreamMarketDataResponse`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchEncoder;

impl Encoder for BatchEncoder {
    type Item = Batch;
    type Error = Status;

    fn encode(&mut self, item: Batch, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        for frame in &item.frames {
            dst.put_slice(&frame.bytes);
        }
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        // Small initial buffers keep an idle stream cheap; busy ones grow as they need.
        BufferSettings::new(1024, 32 * 1024)
    }
}

/// Decodes requests with prost.
#[derive(Debug, Default)]
pub struct RequestDecoder(tonic_prost::ProstDecoder<v1::StreamMarketDataRequest>);

impl Decoder for RequestDecoder {
    type Item = v1::StreamMarketDataRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        self.0.decode(src)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

impl Codec for FrameCodec {
    type Encode = Batch;
    type Decode = v1::StreamMarketDataRequest;
    type Encoder = BatchEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> BatchEncoder {
        BatchEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder(tonic_prost::ProstDecoder::new(BufferSettings::new(
            512,
            32 * 1024,
        )))
    }
}
