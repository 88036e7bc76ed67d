//! `StreamMarketData` at the gateway: each client stream is one upstream stream to the
//! marketdata service, with requests and events passed through in both directions.

use std::pin::Pin;

use execbridge_api::v1::market_data_service_client::MarketDataServiceClient;
use execbridge_api::v1::market_data_service_server::MarketDataService;
use execbridge_api::v1::{StreamMarketDataRequest, StreamMarketDataResponse};
use execbridge_runtime::Shutdown;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use std::sync::Arc;

use crate::admission::Admission;
use crate::error::{GatewayError, Upstream};
use crate::policy::{Permission, RpcClass};

/// The gateway's `MarketDataService`.
#[derive(Clone)]
pub struct MarketDataProxy {
    admission: Arc<Admission>,
    upstream: MarketDataServiceClient<Channel>,
    shutdown: Shutdown,
}

impl MarketDataProxy {
    /// A proxy to `upstream`.
    pub fn new(
        admission: Arc<Admission>,
        upstream: MarketDataServiceClient<Channel>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            admission,
            upstream,
            shutdown,
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<StreamMarketDataResponse, Status>> + Send>>;

fn upstream_error(status: Status) -> Status {
    GatewayError::Upstream {
        upstream: Upstream::Marketdata,
        status,
    }
    .into()
}

#[tonic::async_trait]
impl MarketDataService for MarketDataProxy {
    type StreamMarketDataStream = EventStream;

    async fn stream_market_data(
        &self,
        request: Request<Streaming<StreamMarketDataRequest>>,
    ) -> Result<Response<Self::StreamMarketDataStream>, Status> {
        let admitted = execbridge_runtime::otel_span!("admission").in_scope(|| {
            let admitted = self
                .admission
                .admit("StreamMarketData", &request, RpcClass::Stream)?;
            self.admission.require(
                "StreamMarketData",
                &admitted,
                Permission::MarketdataRead,
                None,
            )?;
            Ok::<_, GatewayError>(admitted)
        })?;
        let mut inbound = request.into_inner();
        let (up_tx, up_rx) = mpsc::channel::<StreamMarketDataRequest>(16);
        let mut events = self
            .upstream
            .clone()
            .stream_market_data(ReceiverStream::new(up_rx))
            .await
            .map_err(upstream_error)?
            .into_inner();
        let (tx, rx) = mpsc::channel(64);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // The stream holds its admission slot for as long as it is open.
            let _admitted = admitted;
            // Kept open after the client stops sending, so the upstream subscriptions stay.
            let up_tx = up_tx;
            let mut inbound_open = true;
            loop {
                let item = tokio::select! {
                    message = inbound.message(), if inbound_open => {
                        match message {
                            Ok(Some(m)) => {
                                if up_tx.send(m).await.is_err() {
                                    return;
                                }
                            }
                            // The client closed its side; its subscriptions stay.
                            Ok(None) => inbound_open = false,
                            Err(_) => return,
                        }
                        continue;
                    }
                    event = events.message() => match event {
                        Ok(Some(e)) => Ok(e),
                        Ok(None) => return,
                        Err(status) => Err(upstream_error(status)),
                    },
                    // The client went away: drop the upstream stream now, not at the next event.
                    () = tx.closed() => return,
                    () = shutdown.wait() => Err(GatewayError::ShuttingDown.into()),
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
