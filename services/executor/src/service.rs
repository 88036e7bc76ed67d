//! The internal `ExecutorService`: requests from the gateway, answered from the engine.
//! [`into_status`] is the one place where executor errors become gRPC statuses.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use execbridge_api::convert::{
    account_risk_to_proto, order_request_from_proto, risk_limits_from_proto, status_from_proto,
    system_time, trading_mode_from_proto, trading_state_from_proto,
};
use execbridge_api::internal::v1 as internal;
use execbridge_api::internal::v1::executor_service_server::ExecutorService;
use execbridge_api::status::{Reason, error, invalid_argument, to_order_error, unavailable};
use execbridge_api::v1;
use execbridge_domain::{AccountId, FieldViolation};
use execbridge_runtime::Shutdown;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::engine::{Actor, Engine, EngineError, OrderFilter, OrderRef, PageQuery};
use crate::journal::JournalError;
use crate::shard::{Shard, ShardError};

/// Most orders in one [`internal::SubmitOrderBatchRequest`].
pub const MAX_BATCH_ORDERS: usize = 10_000;

/// `violations` of the order at `index` of a batch, with their field paths under it.
fn in_batch(index: usize, mut violations: Vec<FieldViolation>) -> Vec<FieldViolation> {
    for violation in &mut violations {
        violation.field = format!("orders[{index}].{}", violation.field);
    }
    violations
}

/// Default and largest page sizes.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// The one mapping of executor errors to gRPC statuses.
pub fn into_status(e: impl Into<ShardError>) -> Status {
    let e = match e.into() {
        ShardError::Engine(e) => e,
        ShardError::Journal(JournalError::Failed(reason)) => {
            tracing::error!(%reason, "refusing: the journal has failed");
            return error(
                Code::Unavailable,
                Reason::ExecutorUnavailable,
                format!(
                    "the executor stopped acknowledging: its journal failed ({reason}); orders are safe up to the last acknowledgement"
                ),
                [("cause", "JOURNAL_FAILED".to_owned())],
            );
        }
        ShardError::Journal(other) => {
            tracing::error!(error = %other, "journal error");
            return error(
                Code::Internal,
                Reason::Internal,
                other.to_string(),
                [("cause", "JOURNAL".to_owned())],
            );
        }
        ShardError::ShuttingDown => {
            return unavailable(
                Reason::ShuttingDown,
                "the executor is shutting down",
                Duration::from_millis(500),
            );
        }
    };
    let message = e.to_string();
    match e {
        EngineError::NotFound(id) => error(
            Code::NotFound,
            Reason::OrderNotFound,
            message,
            [("order", id)],
        ),
        EngineError::NotCancelable { order_id, status } => error(
            Code::FailedPrecondition,
            Reason::NotCancelable,
            message,
            [("order_id", order_id), ("status", format!("{status:?}"))],
        ),
        EngineError::IdempotencyMismatch {
            client_order_id,
            fields,
            order_id,
        } => error(
            Code::AlreadyExists,
            Reason::IdempotencyMismatch,
            message,
            [
                ("client_order_id", client_order_id),
                ("order_id", order_id),
                ("differing_fields", fields.join(",")),
            ],
        ),
        EngineError::ClientOrderIdUsed {
            client_order_id,
            order_id,
        } => error(
            Code::AlreadyExists,
            Reason::ClientOrderIdUsed,
            message,
            [("client_order_id", client_order_id), ("order_id", order_id)],
        ),
        EngineError::CursorTooOld { oldest, .. } => error(
            Code::OutOfRange,
            Reason::InvalidCursor,
            message,
            [("oldest_sequence", oldest.to_string())],
        ),
        EngineError::CursorAhead { last, .. } => error(
            Code::OutOfRange,
            Reason::InvalidCursor,
            message,
            [("last_sequence", last.to_string())],
        ),
        EngineError::BadPageToken(_) => {
            invalid_argument(&[FieldViolation::new("page_token", message)])
        }
        EngineError::Internal(_) | EngineError::Transition { .. } | EngineError::Replay { .. } => {
            tracing::error!(error = %message, "executor invariant failed");
            error(Code::Internal, Reason::Internal, message, [])
        }
    }
}

/// The executor's gRPC face.
#[derive(Clone)]
pub struct Executor {
    shard: Arc<Shard>,
    shutdown: Shutdown,
}

impl Executor {
    /// A service over `shard`; streams end on `shutdown`.
    pub fn new(shard: Arc<Shard>, shutdown: Shutdown) -> Self {
        Self { shard, shutdown }
    }

    /// Answers a query from the engine once everything it saw is durable; a journal
    /// failure and the engine's own refusal both become statuses.
    async fn query<R>(
        &self,
        f: impl FnOnce(&Engine) -> Result<R, EngineError>,
    ) -> Result<R, Status> {
        self.shard
            .read(f)
            .await
            .map_err(into_status)?
            .map_err(into_status)
    }
}

fn actor(caller: Option<&internal::Caller>, reason: &str) -> Actor {
    Actor {
        principal: caller.map(|c| c.principal.clone()).unwrap_or_default(),
        correlation_id: caller.map(|c| c.correlation_id.clone()).unwrap_or_default(),
        reason: reason.to_owned(),
    }
}

fn inner<T>(request: Option<T>) -> Result<T, Status> {
    request.ok_or_else(|| invalid_argument(&[FieldViolation::new("request", "is required")]))
}

fn check_account(account: &str) -> Result<(), Status> {
    AccountId::new_checked(account)
        .map(|_| ())
        .map_err(|e| invalid_argument(&[FieldViolation::new("account", e)]))
}

fn order_ref(
    client_order_id: Option<String>,
    order_id: Option<String>,
) -> Result<OrderRef, Status> {
    match (client_order_id, order_id) {
        (Some(id), _) if !id.is_empty() => Ok(OrderRef::ClientOrderId(id)),
        (_, Some(id)) if !id.is_empty() => Ok(OrderRef::OrderId(id)),
        _ => Err(invalid_argument(&[FieldViolation::new(
            "id",
            "one of client_order_id or order_id is required",
        )])),
    }
}

fn page_query(
    account: String,
    symbol: String,
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
    page_size: u32,
    page_token: String,
) -> Result<PageQuery, Status> {
    check_account(&account)?;
    let time = |field: &str, ts: Option<&prost_types::Timestamp>| match ts {
        None => Ok(None),
        Some(ts) => system_time(ts)
            .map(Some)
            .ok_or_else(|| invalid_argument(&[FieldViolation::new(field, "is not a valid time")])),
    };
    let page_size = match page_size as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    Ok(PageQuery {
        account,
        symbol,
        start: time("start_time", start)?,
        end: time("end_time", end)?,
        page_size,
        page_token,
    })
}

type UpdateStream =
    Pin<Box<dyn Stream<Item = Result<internal::SubscribeOrderUpdatesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExecutorService for Executor {
    #[tracing::instrument(skip_all, fields(correlation_id))]
    async fn submit_order(
        &self,
        request: Request<internal::SubmitOrderRequest>,
    ) -> Result<Response<internal::SubmitOrderResponse>, Status> {
        let req = request.into_inner();
        if let Some(caller) = &req.caller {
            tracing::Span::current().record("correlation_id", caller.correlation_id.as_str());
        }
        let order = inner(inner(req.request)?.order)
            .map_err(|_| invalid_argument(&[FieldViolation::new("order", "is required")]))?;
        let order = order_request_from_proto(&order, "order.").map_err(|v| invalid_argument(&v))?;
        let submitted = self.shard.submit(order).await.map_err(into_status)?;
        Ok(Response::new(internal::SubmitOrderResponse {
            response: Some(v1::SubmitOrderResponse {
                order: Some(submitted.order),
                duplicate: submitted.duplicate,
            }),
        }))
    }

    #[tracing::instrument(skip_all, fields(correlation_id, orders))]
    async fn submit_order_batch(
        &self,
        request: Request<internal::SubmitOrderBatchRequest>,
    ) -> Result<Response<internal::SubmitOrderBatchResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::Span::current();
        if let Some(caller) = &req.caller {
            span.record("correlation_id", caller.correlation_id.as_str());
        }
        span.record("orders", req.orders.len());
        if req.orders.len() > MAX_BATCH_ORDERS {
            return Err(invalid_argument(&[FieldViolation::new(
                "orders",
                format!(
                    "at most {MAX_BATCH_ORDERS} orders per batch, got {}",
                    req.orders.len()
                ),
            )]));
        }
        // Orders that do not parse fail alone; the rest go to the shard together.
        let mut results: Vec<Option<v1::OrderResult>> = Vec::with_capacity(req.orders.len());
        let mut parsed = Vec::with_capacity(req.orders.len());
        let mut positions = Vec::with_capacity(req.orders.len());
        for (i, order) in req.orders.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            // Parsed without a prefix: the field paths get theirs only when there is a
            // violation to name, not for every order of the batch.
            match order_request_from_proto(order, "") {
                Ok(request) => {
                    parsed.push(request);
                    positions.push(i);
                    results.push(None);
                }
                Err(v) => results.push(Some(v1::OrderResult {
                    index,
                    client_order_id: order.client_order_id.clone(),
                    outcome: Some(v1::order_result::Outcome::Error(to_order_error(
                        &invalid_argument(&in_batch(i, v)),
                    ))),
                    duplicate: false,
                })),
            }
        }
        let outcomes = self.shard.submit_batch(parsed).await.map_err(into_status)?;
        for (i, outcome) in positions.into_iter().zip(outcomes) {
            let (outcome, duplicate) = match outcome {
                Ok(s) => (v1::order_result::Outcome::Order(s.order), s.duplicate),
                Err(e) => (
                    v1::order_result::Outcome::Error(to_order_error(&into_status(e))),
                    false,
                ),
            };
            results[i] = Some(v1::OrderResult {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                client_order_id: req.orders[i].client_order_id.clone(),
                outcome: Some(outcome),
                duplicate,
            });
        }
        Ok(Response::new(internal::SubmitOrderBatchResponse {
            results: results.into_iter().flatten().collect(),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<internal::CancelOrderRequest>,
    ) -> Result<Response<internal::CancelOrderResponse>, Status> {
        let req = inner(request.into_inner().request)?;
        check_account(&req.account)?;
        let by = match req.id {
            Some(v1::cancel_order_request::Id::ClientOrderId(id)) => order_ref(Some(id), None),
            Some(v1::cancel_order_request::Id::OrderId(id)) => order_ref(None, Some(id)),
            None => order_ref(None, None),
        }?;
        let order = self
            .shard
            .cancel(&req.account, &by)
            .await
            .map_err(into_status)?;
        Ok(Response::new(internal::CancelOrderResponse {
            response: Some(v1::CancelOrderResponse { order: Some(order) }),
        }))
    }

    async fn cancel_all(
        &self,
        request: Request<internal::CancelAllRequest>,
    ) -> Result<Response<internal::CancelAllResponse>, Status> {
        let req = inner(request.into_inner().request)?;
        check_account(&req.account)?;
        let orders = self
            .shard
            .cancel_all(&req.account, &req.symbol, &req.venue)
            .await
            .map_err(into_status)?;
        Ok(Response::new(internal::CancelAllResponse {
            response: Some(v1::CancelAllResponse { orders }),
        }))
    }

    async fn get_order(
        &self,
        request: Request<internal::GetOrderRequest>,
    ) -> Result<Response<internal::GetOrderResponse>, Status> {
        let req = inner(request.into_inner().request)?;
        check_account(&req.account)?;
        let by = match req.id {
            Some(v1::get_order_request::Id::ClientOrderId(id)) => order_ref(Some(id), None),
            Some(v1::get_order_request::Id::OrderId(id)) => order_ref(None, Some(id)),
            None => order_ref(None, None),
        }?;
        let order = self.query(|e| e.get(&req.account, &by)).await?;
        Ok(Response::new(internal::GetOrderResponse {
            response: Some(v1::GetOrderResponse { order: Some(order) }),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<internal::ListOrdersRequest>,
    ) -> Result<Response<internal::ListOrdersResponse>, Status> {
        let req = inner(request.into_inner().request)?;
        let mut statuses = Vec::new();
        for (i, raw) in req.statuses.iter().enumerate() {
            match v1::OrderStatus::try_from(*raw)
                .ok()
                .and_then(status_from_proto)
            {
                Some(s) => statuses.push(s),
                None => {
                    return Err(invalid_argument(&[FieldViolation::new(
                        format!("statuses[{i}]"),
                        format!("unknown status {raw}"),
                    )]));
                }
            }
        }
        let q = page_query(
            req.account,
            req.symbol,
            req.start_time.as_ref(),
            req.end_time.as_ref(),
            req.page_size,
            req.page_token,
        )?;
        let filter = OrderFilter {
            open_only: req.open_only,
            statuses,
        };
        let (orders, next_page_token) = self.query(|e| e.list(&q, &filter)).await?;
        Ok(Response::new(internal::ListOrdersResponse {
            response: Some(v1::ListOrdersResponse {
                orders,
                next_page_token,
            }),
        }))
    }

    async fn get_trade_history(
        &self,
        request: Request<internal::GetTradeHistoryRequest>,
    ) -> Result<Response<internal::GetTradeHistoryResponse>, Status> {
        let req = inner(request.into_inner().request)?;
        let q = page_query(
            req.account,
            req.symbol,
            req.start_time.as_ref(),
            req.end_time.as_ref(),
            req.page_size,
            req.page_token,
        )?;
        let (fills, next_page_token) = self.query(|e| e.trades(&q)).await?;
        Ok(Response::new(internal::GetTradeHistoryResponse {
            response: Some(v1::GetTradeHistoryResponse {
                fills,
                next_page_token,
            }),
        }))
    }

    async fn get_positions(
        &self,
        request: Request<internal::GetPositionsRequest>,
    ) -> Result<Response<internal::GetPositionsResponse>, Status> {
        let req = inner(request.into_inner().request)?;
        check_account(&req.account)?;
        let (positions, balances) = self
            .shard
            .read(|e| e.positions(&req.account, &req.venue))
            .await
            .map_err(into_status)?;
        Ok(Response::new(internal::GetPositionsResponse {
            response: Some(v1::GetPositionsResponse {
                positions,
                balances,
            }),
        }))
    }

    type SubscribeOrderUpdatesStream = UpdateStream;

    async fn subscribe_order_updates(
        &self,
        request: Request<internal::SubscribeOrderUpdatesRequest>,
    ) -> Result<Response<Self::SubscribeOrderUpdatesStream>, Status> {
        let req = request.into_inner();
        for (i, account) in req.accounts.iter().enumerate() {
            check_account(account).map_err(|_| {
                invalid_argument(&[FieldViolation::new(
                    format!("accounts[{i}]"),
                    "is not a valid account",
                )])
            })?;
        }
        let accounts: HashSet<String> = req.accounts.into_iter().collect();
        let subscription = self
            .shard
            .subscribe(req.after_sequence)
            .map_err(into_status)?;
        let shard = self.shard.id().to_owned();
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        tokio::spawn(async move {
            let _subscriber = crate::metrics::Subscriber::open();
            let wanted = |u: &v1::OrderUpdate| {
                accounts.is_empty()
                    || u.order
                        .as_ref()
                        .and_then(|o| o.request.as_ref())
                        .is_some_and(|r| accounts.contains(&r.account))
            };
            let send = |event| internal::SubscribeOrderUpdatesResponse {
                response: Some(v1::SubscribeOrderUpdatesResponse { event: Some(event) }),
            };
            use v1::subscribe_order_updates_response::Event;
            let mut seen = subscription.last_sequence;
            for update in subscription.replay.iter().filter(|u| wanted(u)) {
                if tx
                    .send(Ok(send(Event::Update((**update).clone()))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let live = Event::Live(v1::ShardCursor {
                shard,
                sequence: seen,
            });
            if tx.send(Ok(send(live))).await.is_err() {
                return;
            }
            let mut receiver = subscription.live;
            loop {
                let batch = tokio::select! {
                    received = receiver.recv() => match received {
                        Ok(update) => vec![update],
                        // Fell behind the live channel: catch up from the retained log.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let caught_up = this.shard.catch_up(seen);
                            match caught_up {
                                Ok(updates) => updates,
                                Err(e) => { let _ = tx.send(Err(into_status(e))).await; return; }
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = this.shutdown.wait() => {
                        let _ = tx.send(Err(Status::unavailable("executor is shutting down; resume from the last sequence"))).await;
                        return;
                    }
                };
                for update in batch {
                    if update.sequence <= seen {
                        continue;
                    }
                    seen = update.sequence;
                    if wanted(&update)
                        && tx
                            .send(Ok(send(Event::Update((*update).clone()))))
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
    async fn set_trading_state(
        &self,
        request: Request<internal::SetTradingStateRequest>,
    ) -> Result<Response<internal::SetTradingStateResponse>, Status> {
        let outer = request.into_inner();
        let req = inner(outer.request)?;
        check_account(&req.account)?;
        let state = v1::TradingState::try_from(req.state)
            .ok()
            .and_then(trading_state_from_proto)
            .ok_or_else(|| invalid_argument(&[FieldViolation::new("state", "is required")]))?;
        let risk = self
            .shard
            .set_trading_state(
                &req.account,
                &req.symbol,
                state,
                &actor(outer.caller.as_ref(), &req.reason),
            )
            .await
            .map_err(into_status)?;
        tracing::info!(account = %req.account, symbol = %req.symbol, ?state, "trading state set");
        Ok(Response::new(internal::SetTradingStateResponse {
            response: Some(v1::SetTradingStateResponse {
                risk: Some(account_risk_to_proto(&req.account, &risk)),
            }),
        }))
    }

    async fn get_risk_limits(
        &self,
        request: Request<internal::GetRiskLimitsRequest>,
    ) -> Result<Response<internal::GetRiskLimitsResponse>, Status> {
        let req = inner(request.into_inner().request)?;
        check_account(&req.account)?;
        let risk = self
            .shard
            .read(|e| e.risk_of(&req.account))
            .await
            .map_err(into_status)?;
        Ok(Response::new(internal::GetRiskLimitsResponse {
            response: Some(v1::GetRiskLimitsResponse {
                risk: Some(account_risk_to_proto(&req.account, &risk)),
            }),
        }))
    }

    async fn set_risk_limits(
        &self,
        request: Request<internal::SetRiskLimitsRequest>,
    ) -> Result<Response<internal::SetRiskLimitsResponse>, Status> {
        let outer = request.into_inner();
        let req = inner(outer.request)?;
        check_account(&req.account)?;
        let mode = v1::TradingMode::try_from(req.mode)
            .ok()
            .and_then(trading_mode_from_proto)
            .ok_or_else(|| invalid_argument(&[FieldViolation::new("mode", "is required")]))?;
        let limits = risk_limits_from_proto(&req.limits.unwrap_or_default(), "limits.")
            .map_err(|v| invalid_argument(&v))?;
        let risk = self
            .shard
            .set_risk_limits(
                &req.account,
                mode,
                limits,
                &actor(outer.caller.as_ref(), &req.reason),
            )
            .await
            .map_err(into_status)?;
        tracing::info!(account = %req.account, ?mode, "risk limits set");
        Ok(Response::new(internal::SetRiskLimitsResponse {
            response: Some(v1::SetRiskLimitsResponse {
                risk: Some(account_risk_to_proto(&req.account, &risk)),
            }),
        }))
    }

    async fn cancel_all_orders(
        &self,
        request: Request<internal::CancelAllOrdersRequest>,
    ) -> Result<Response<internal::CancelAllOrdersResponse>, Status> {
        let req = inner(request.into_inner().request)?;
        check_account(&req.account)?;
        let orders = self
            .shard
            .cancel_all(&req.account, &req.symbol, &req.venue)
            .await
            .map_err(into_status)?;
        tracing::info!(account = %req.account, canceled = orders.len(), reason = %req.reason, "admin cancel-all");
        Ok(Response::new(internal::CancelAllOrdersResponse {
            response: Some(v1::CancelAllOrdersResponse { orders }),
        }))
    }

    async fn flatten(
        &self,
        request: Request<internal::FlattenRequest>,
    ) -> Result<Response<internal::FlattenResponse>, Status> {
        let req = inner(request.into_inner().request)?;
        check_account(&req.account)?;
        let (canceled, submitted) = self
            .shard
            .flatten(&req.account, &req.symbol, &req.venue)
            .await
            .map_err(into_status)?;
        tracing::info!(account = %req.account, canceled = canceled.len(), submitted = submitted.len(), reason = %req.reason, "admin flatten");
        Ok(Response::new(internal::FlattenResponse {
            response: Some(v1::FlattenResponse {
                canceled,
                submitted,
            }),
        }))
    }
}
