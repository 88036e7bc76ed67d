//! A bare `ExecutionService` that fills every order at once, served with the same tonic
//! setup as the services (`grpc::server` + `grpc::incoming`, so `TCP_NODELAY` too): the
//! floor that the gateway -> executor path is compared with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use anyhow::Context as _;
use execbridge_api::convert::timestamp;
use execbridge_api::v1::execution_service_server::{ExecutionService, ExecutionServiceServer};
use execbridge_api::v1::{
    self, CancelAllRequest, CancelAllResponse, CancelOrderRequest, CancelOrderResponse,
    GetOrderRequest, GetOrderResponse, GetPositionsRequest, GetPositionsResponse,
    GetTradeHistoryRequest, GetTradeHistoryResponse, ListOrdersRequest, ListOrdersResponse,
    SubmitOrderRequest, SubmitOrderResponse, SubmitOrdersRequest, SubmitOrdersResponse,
    SubscribeOrderUpdatesRequest, SubscribeOrderUpdatesResponse,
};
use execbridge_runtime::{ServerConfig, Shutdown, grpc, shutdown};
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

/// The price every echo fill is at; the figure is irrelevant, its presence keeps the
/// response the size of a real one.
const FILL_PRICE: &str = "60000.00";

/// Answers `SubmitOrder` with the order FILLED; everything else is UNIMPLEMENTED.
#[derive(Debug, Default)]
pub struct Echo {
    sequence: AtomicU64,
}

/// The order `request` becomes when it fills completely at once, with the same fields set
/// as the executor's answer so both responses cost the same to encode and decode.
pub fn filled(request: v1::OrderRequest, sequence: u64, now: SystemTime) -> v1::Order {
    let at = timestamp(now);
    v1::Order {
        order_id: format!("echo-{sequence}"),
        status: v1::OrderStatus::Filled as i32,
        filled_quantity: request.quantity.clone(),
        remaining_quantity: "0".into(),
        average_fill_price: FILL_PRICE.into(),
        venue_order_id: format!("echo-{sequence}"),
        created_at: Some(at),
        updated_at: Some(at),
        sequence,
        fees: "0".into(),
        fee_asset: "USDT".into(),
        request: Some(request),
        ..v1::Order::default()
    }
}

type Unimplemented<T> = BoxStream<'static, Result<T, Status>>;

fn unimplemented<T>(method: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "the echo server only answers SubmitOrder, not {method}"
    )))
}

#[tonic::async_trait]
impl ExecutionService for Echo {
    async fn submit_order(
        &self,
        request: Request<SubmitOrderRequest>,
    ) -> Result<Response<SubmitOrderResponse>, Status> {
        let order = request
            .into_inner()
            .order
            .ok_or_else(|| Status::invalid_argument("order is required"))?;
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Response::new(SubmitOrderResponse {
            order: Some(filled(order, sequence, SystemTime::now())),
            duplicate: false,
        }))
    }

    type SubmitOrdersStream = Unimplemented<SubmitOrdersResponse>;

    async fn submit_orders(
        &self,
        _: Request<Streaming<SubmitOrdersRequest>>,
    ) -> Result<Response<Self::SubmitOrdersStream>, Status> {
        unimplemented("SubmitOrders")
    }

    async fn cancel_order(
        &self,
        _: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        unimplemented("CancelOrder")
    }

    async fn cancel_all(
        &self,
        _: Request<CancelAllRequest>,
    ) -> Result<Response<CancelAllResponse>, Status> {
        unimplemented("CancelAll")
    }

    async fn get_order(
        &self,
        _: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        unimplemented("GetOrder")
    }

    async fn list_orders(
        &self,
        _: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        unimplemented("ListOrders")
    }

    async fn get_trade_history(
        &self,
        _: Request<GetTradeHistoryRequest>,
    ) -> Result<Response<GetTradeHistoryResponse>, Status> {
        unimplemented("GetTradeHistory")
    }

    async fn get_positions(
        &self,
        _: Request<GetPositionsRequest>,
    ) -> Result<Response<GetPositionsResponse>, Status> {
        unimplemented("GetPositions")
    }

    type SubscribeOrderUpdatesStream = Unimplemented<SubscribeOrderUpdatesResponse>;

    async fn subscribe_order_updates(
        &self,
        _: Request<SubscribeOrderUpdatesRequest>,
    ) -> Result<Response<Self::SubscribeOrderUpdatesStream>, Status> {
        unimplemented("SubscribeOrderUpdates")
    }
}

/// Serves [`Echo`] on `listen` until SIGTERM or SIGINT.
///
/// # Errors
/// When the address cannot be bound or the server fails.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    // The services' own server limits (streams, keepalive), so the floor differs from the
    // gateway only by the work behind the handler.
    let config = ServerConfig {
        listen,
        ..ServerConfig::default()
    };
    let listener = grpc::bind(listen).await?;
    let stop = Shutdown::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        match shutdown::os_signal().await {
            Ok(_) => trigger.trigger(),
            // Without handlers SIGTERM keeps its default action and still ends the process.
            Err(e) => eprintln!("execbridge-bench serve-echo: cannot watch signals: {e}"),
        }
    });
    grpc::server(&config)
        .add_service(ExecutionServiceServer::new(Echo::default()))
        .serve_with_incoming_shutdown(grpc::incoming(listener), stop.wait_owned())
        .await
        .context("echo server failed")
}

#[cfg(test)]
mod tests;
