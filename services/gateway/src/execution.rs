//! The public `ExecutionService`: validates, attaches the caller's context and deadline,
//! and forwards to the executor over the internal API.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use execbridge_api::convert::order_request_from_proto;
use execbridge_api::internal::v1 as internal;
use execbridge_api::internal::v1::executor_service_client::ExecutorServiceClient;
use execbridge_api::status::to_order_error;
use execbridge_api::v1::execution_service_server::ExecutionService;
use execbridge_api::v1::{self, subscribe_order_updates_response::Event};
use execbridge_domain::{AccountId, TradingMode};
use execbridge_runtime::{Shutdown, otel_span};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::admission::{Admission, Admitted};
use crate::deadline;
use crate::error::{GatewayError, Upstream};
use crate::policy::{Permission, RpcClass};
use crate::routing::Shards;
use crate::validate;

/// Most orders in one `SubmitOrders` message.
pub const MAX_BATCH_ORDERS: usize = 1000;
/// Batches of one stream in flight at once; results still go out in request order.
const BATCHES_IN_FLIGHT: usize = 4;

/// The gateway's `ExecutionService`.
#[derive(Clone)]
pub struct Execution {
    pub(crate) admission: Arc<Admission>,
    shards: Arc<Shards>,
    default_timeout: Duration,
    shutdown: Shutdown,
}

/// Who is calling and how to correlate the call.
#[derive(Debug, Clone)]
pub(crate) struct CallContext {
    pub(crate) caller: internal::Caller,
    timeout: Duration,
}

fn correlation_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| format!("{:016x}", rand::random::<u64>()), str::to_owned)
}

pub(crate) fn check_account(field: &str, account: &str) -> Result<(), GatewayError> {
    AccountId::new_checked(account)
        .map(|_| ())
        .map_err(|e| GatewayError::field(field, e))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// An order admission let through, ready to forward.
struct CheckedOrder {
    /// The account, which picks the shard.
    account: String,
    /// The order as the caller sent it.
    order: v1::OrderRequest,
}

impl Execution {
    /// A service forwarding to the executor `shards`; a unary call with no client
    /// deadline gets `default_timeout`.
    pub fn new(
        admission: Arc<Admission>,
        shards: Arc<Shards>,
        default_timeout: Duration,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            admission,
            shards,
            default_timeout,
            shutdown,
        }
    }

    /// Admits a read of one account's orders (GetOrder, ListOrders, GetTradeHistory,
    /// GetPositions): authenticated, within its rate, for a valid account the caller may
    /// read. The admission slot is held as long as the returned [`Admitted`] lives.
    fn admit_read<T>(
        &self,
        rpc: &'static str,
        request: Request<T>,
        account: impl Fn(&T) -> &str,
    ) -> Result<(Admitted, CallContext, T), GatewayError> {
        let _admission = otel_span!("admission").entered();
        let admitted = self.admission.admit(rpc, &request, RpcClass::Read)?;
        let ctx = self.context(&request, &admitted);
        let request = request.into_inner();
        check_account("account", account(&request))?;
        self.admission.require(
            rpc,
            &admitted,
            Permission::OrdersRead,
            Some(account(&request)),
        )?;
        Ok((admitted, ctx, request))
    }

    pub(crate) fn context<T>(&self, request: &Request<T>, admitted: &Admitted) -> CallContext {
        let metadata = request.metadata();
        CallContext {
            caller: internal::Caller {
                principal: admitted.principal.name.clone(),
                correlation_id: correlation_id(metadata),
            },
            timeout: deadline::from_metadata(metadata).unwrap_or(self.default_timeout),
        }
    }

    /// Calls the shard that owns `account`, with the caller's deadline, through the
    /// shard's circuit breaker.
    pub(crate) async fn forward<Req, Resp, F, Fut>(
        &self,
        ctx: &CallContext,
        account: &str,
        body: Req,
        call: F,
    ) -> Result<Resp, GatewayError>
    where
        F: FnOnce(ExecutorServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let shard = self.shards.for_account(account);
        shard
            .breaker
            .allow(Instant::now())
            .map_err(|retry_after| GatewayError::CircuitOpen {
                shard: shard.id.clone(),
                retry_after,
            })?;
        let mut request = Request::new(body);
        request.set_timeout(ctx.timeout);
        // The executor's log lines and spans carry the same correlation id as the gateway's.
        if let Ok(id) = ctx.caller.correlation_id.parse() {
            request.metadata_mut().insert("x-correlation-id", id);
        }
        // A CLIENT span for the hop, and its W3C trace context in the request, so the
        // executor's spans join the caller's trace (both nothing when no exporter is
        // configured).
        let hop = otel_span!(
            "forward",
            otel.kind = "client",
            peer.service = "executor",
            shard = %shard.id,
        );
        hop.in_scope(|| execbridge_runtime::tracing_otel::inject_current(request.metadata_mut()));
        let result = call(shard.client.clone(), request).instrument(hop).await;
        let unreachable = result.as_ref().err().is_some_and(is_unreachable);
        shard.breaker.record(unreachable, Instant::now());
        result
            .map(Response::into_inner)
            .map_err(|status| GatewayError::Upstream {
                upstream: Upstream::Executor,
                status,
            })
    }

    /// Validates and authorises one order: what to send and to which account's shard.
    /// Nothing refused here reaches the executor.
    fn check_order(
        &self,
        admitted: &Admitted,
        order: v1::OrderRequest,
        prefix: &str,
    ) -> Result<CheckedOrder, GatewayError> {
        let parsed = order_request_from_proto(&order, prefix).map_err(GatewayError::violations)?;
        let permission = match parsed.mode {
            TradingMode::Paper => Permission::TradePaper,
            TradingMode::Live => Permission::TradeLive,
        };
        self.admission.require(
            "SubmitOrder",
            admitted,
            permission,
            Some(parsed.account.as_str()),
        )?;
        let violations = validate::order(&admitted.compiled.policy, &parsed, prefix);
        if !violations.is_empty() {
            return Err(GatewayError::Invalid(violations));
        }
        Ok(CheckedOrder {
            account: parsed.account.to_string(),
            order,
        })
    }

    /// Forwards an order [`Execution::check_order`] let through.
    async fn submit_checked(
        &self,
        ctx: &CallContext,
        checked: CheckedOrder,
    ) -> Result<v1::SubmitOrderResponse, GatewayError> {
        let body = internal::SubmitOrderRequest {
            caller: Some(ctx.caller.clone()),
            request: Some(v1::SubmitOrderRequest {
                order: Some(checked.order),
            }),
        };
        let response = self
            .forward(ctx, &checked.account, body, |mut c, r| async move {
                c.submit_order(r).await
            })
            .await?;
        response.response.ok_or_else(|| GatewayError::Upstream {
            upstream: Upstream::Executor,
            status: Status::internal("executor sent an empty response"),
        })
    }

    /// One message of a `SubmitOrders` stream: each order is admitted, validated and
    /// authorised on its own; the accepted ones go to their shards as one
    /// `SubmitOrderBatch` per shard, so a batch shares the executor's journal commits.
    async fn run_batch(
        &self,
        ctx: CallContext,
        admitted: &Admitted,
        batch: v1::SubmitOrdersRequest,
    ) -> v1::SubmitOrdersResponse {
        let index = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
        let failed = |i: usize, client_order_id: String, status: &Status| v1::OrderResult {
            index: index(i),
            client_order_id,
            outcome: Some(v1::order_result::Outcome::Error(to_order_error(status))),
            duplicate: false,
        };
        let mut results: Vec<Option<v1::OrderResult>> = vec![None; batch.orders.len()];
        // Shard id -> (an account it owns, (position in the batch, order)).
        let mut groups: HashMap<String, (String, Vec<(usize, v1::OrderRequest)>)> = HashMap::new();
        for (i, order) in batch.orders.into_iter().enumerate() {
            let client_order_id = order.client_order_id.clone();
            let checked = {
                let _admission = otel_span!("admission", index = i).entered();
                self.admission
                    .spend("SubmitOrders", admitted, RpcClass::Submit)
                    .and_then(|()| self.check_order(admitted, order, "order."))
            };
            match checked {
                Ok(CheckedOrder { account, order }) => {
                    let shard = self.shards.for_account(&account).id.clone();
                    groups
                        .entry(shard)
                        .or_insert_with(|| (account, Vec::new()))
                        .1
                        .push((i, order));
                }
                Err(e) => results[i] = Some(failed(i, client_order_id, &Status::from(e))),
            }
        }
        let calls = groups.into_values().map(|(account, orders)| {
            let ctx = &ctx;
            async move {
                let (positions, orders): (Vec<usize>, Vec<v1::OrderRequest>) =
                    orders.into_iter().unzip();
                let ids: Vec<String> = orders.iter().map(|o| o.client_order_id.clone()).collect();
                let body = internal::SubmitOrderBatchRequest {
                    caller: Some(ctx.caller.clone()),
                    orders,
                };
                let outcome = self
                    .forward(ctx, &account, body, |mut c, r| async move {
                        c.submit_order_batch(r).await
                    })
                    .await;
                (positions, ids, outcome)
            }
        });
        for (positions, ids, outcome) in futures::future::join_all(calls).await {
            match outcome {
                Ok(response) => {
                    for mut result in response.results {
                        let Some(&i) = usize::try_from(result.index)
                            .ok()
                            .and_then(|k| positions.get(k))
                        else {
                            continue;
                        };
                        result.index = index(i);
                        results[i] = Some(result);
                    }
                }
                Err(e) => {
                    let status = Status::from(e);
                    for (i, id) in positions.iter().zip(&ids) {
                        results[*i] = Some(failed(*i, id.clone(), &status));
                    }
                }
            }
        }
        // An executor that answered fewer results than it was sent orders is a bug; the
        // caller still gets one result per order.
        let missing = Status::internal("the executor sent no result for this order");
        v1::SubmitOrdersResponse {
            results: results
                .into_iter()
                .enumerate()
                .map(|(i, r)| r.unwrap_or_else(|| failed(i, String::new(), &missing)))
                .collect(),
            batch_id: batch.batch_id,
        }
    }
}

/// Whether a failed call says the shard could not be reached or did not answer in time,
/// as opposed to a business error: only the former trips the breaker.
fn is_unreachable(status: &Status) -> bool {
    execbridge_api::status::reason_of(status).is_none()
        && matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        )
}

fn unwrap_response<T>(response: Option<T>) -> Result<T, Status> {
    response.ok_or_else(|| Status::internal("executor sent an empty response"))
}

#[tonic::async_trait]
impl ExecutionService for Execution {
    #[tracing::instrument(skip_all, fields(correlation_id))]
    async fn submit_order(
        &self,
        request: Request<v1::SubmitOrderRequest>,
    ) -> Result<Response<v1::SubmitOrderResponse>, Status> {
        let rpc = tracing::Span::current();
        // Authentication, rate limit, permission and validation; the slot in `_admitted`
        // is held until the executor answered.
        let (ctx, _admitted, checked) = {
            let _admission = otel_span!("admission").entered();
            let admitted = self
                .admission
                .admit("SubmitOrder", &request, RpcClass::Submit)?;
            let ctx = self.context(&request, &admitted);
            rpc.record("correlation_id", ctx.caller.correlation_id.as_str());
            let order = request
                .into_inner()
                .order
                .ok_or_else(|| GatewayError::field("order", "is required"))?;
            let checked = self.check_order(&admitted, order, "order.")?;
            (ctx, admitted, checked)
        };
        Ok(Response::new(self.submit_checked(&ctx, checked).await?))
    }

    type SubmitOrdersStream = BoxStream<v1::SubmitOrdersResponse>;

    async fn submit_orders(
        &self,
        request: Request<Streaming<v1::SubmitOrdersRequest>>,
    ) -> Result<Response<Self::SubmitOrdersStream>, Status> {
        let admitted = Arc::new(otel_span!("admission").in_scope(|| {
            self.admission
                .admit("SubmitOrders", &request, RpcClass::Stream)
        })?);
        let ctx = self.context(&request, &admitted);
        let this = self.clone();
        let (tx, rx) = mpsc::channel(BATCHES_IN_FLIGHT);
        // After the shutdown signal no new batch is read; batches already read complete and
        // their results are sent, then the stream ends with UNAVAILABLE so the client
        // resubmits the rest (safely: client_order_id makes a resubmission idempotent).
        let inbound = request.into_inner().take_until(self.shutdown.wait_owned());
        tokio::spawn(
            async move {
                let results = inbound
                    .map(|batch| {
                        let this = this.clone();
                        let ctx = ctx.clone();
                        let admitted = admitted.clone();
                        async move {
                            let batch = batch?;
                            if batch.orders.len() > MAX_BATCH_ORDERS {
                                return Err(Status::from(GatewayError::field(
                                    "orders",
                                    format!(
                                        "at most {MAX_BATCH_ORDERS} orders per message, got {}",
                                        batch.orders.len()
                                    ),
                                )));
                            }
                            Ok(this.run_batch(ctx, &admitted, batch).await)
                        }
                    })
                    .buffered(BATCHES_IN_FLIGHT);
                tokio::pin!(results);
                while let Some(result) = results.next().await {
                    let failed = result.is_err();
                    if tx.send(result).await.is_err() || failed {
                        return;
                    }
                }
                if this.shutdown.is_triggered() {
                    let _ = tx.send(Err(GatewayError::ShuttingDown.into())).await;
                }
            }
            // The batches' spans (and the trace context forwarded with each order) belong to
            // the stream's call.
            .in_current_span(),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_order(
        &self,
        request: Request<v1::CancelOrderRequest>,
    ) -> Result<Response<v1::CancelOrderResponse>, Status> {
        let (_admitted, ctx, request) = {
            let _admission = otel_span!("admission").entered();
            let admitted = self
                .admission
                .admit("CancelOrder", &request, RpcClass::Cancel)?;
            let ctx = self.context(&request, &admitted);
            let request = request.into_inner();
            check_account("account", &request.account)?;
            self.admission
                .require_trade("CancelOrder", &admitted, &request.account)?;
            (admitted, ctx, request)
        };
        let account = request.account.clone();
        let body = internal::CancelOrderRequest {
            caller: Some(ctx.caller.clone()),
            request: Some(request),
        };
        let r = self
            .forward(&ctx, &account, body, |mut c, r| async move {
                c.cancel_order(r).await
            })
            .await?;
        Ok(Response::new(unwrap_response(r.response)?))
    }

    async fn cancel_all(
        &self,
        request: Request<v1::CancelAllRequest>,
    ) -> Result<Response<v1::CancelAllResponse>, Status> {
        let (_admitted, ctx, request) = {
            let _admission = otel_span!("admission").entered();
            let admitted = self
                .admission
                .admit("CancelAll", &request, RpcClass::Cancel)?;
            let ctx = self.context(&request, &admitted);
            let request = request.into_inner();
            check_account("account", &request.account)?;
            self.admission
                .require_trade("CancelAll", &admitted, &request.account)?;
            (admitted, ctx, request)
        };
        let account = request.account.clone();
        let body = internal::CancelAllRequest {
            caller: Some(ctx.caller.clone()),
            request: Some(request),
        };
        let r = self
            .forward(&ctx, &account, body, |mut c, r| async move {
                c.cancel_all(r).await
            })
            .await?;
        Ok(Response::new(unwrap_response(r.response)?))
    }

    async fn get_order(
        &self,
        request: Request<v1::GetOrderRequest>,
    ) -> Result<Response<v1::GetOrderResponse>, Status> {
        let (_admitted, ctx, request) =
            self.admit_read("GetOrder", request, |r| r.account.as_str())?;
        let account = request.account.clone();
        let body = internal::GetOrderRequest {
            caller: Some(ctx.caller.clone()),
            request: Some(request),
        };
        let r = self
            .forward(&ctx, &account, body, |mut c, r| async move {
                c.get_order(r).await
            })
            .await?;
        Ok(Response::new(unwrap_response(r.response)?))
    }

    async fn list_orders(
        &self,
        request: Request<v1::ListOrdersRequest>,
    ) -> Result<Response<v1::ListOrdersResponse>, Status> {
        let (_admitted, ctx, request) =
            self.admit_read("ListOrders", request, |r| r.account.as_str())?;
        let account = request.account.clone();
        let body = internal::ListOrdersRequest {
            caller: Some(ctx.caller.clone()),
            request: Some(request),
        };
        let r = self
            .forward(&ctx, &account, body, |mut c, r| async move {
                c.list_orders(r).await
            })
            .await?;
        Ok(Response::new(unwrap_response(r.response)?))
    }

    async fn get_trade_history(
        &self,
        request: Request<v1::GetTradeHistoryRequest>,
    ) -> Result<Response<v1::GetTradeHistoryResponse>, Status> {
        let (_admitted, ctx, request) =
            self.admit_read("GetTradeHistory", request, |r| r.account.as_str())?;
        let account = request.account.clone();
        let body = internal::GetTradeHistoryRequest {
            caller: Some(ctx.caller.clone()),
            request: Some(request),
        };
        let r = self
            .forward(&ctx, &account, body, |mut c, r| async move {
                c.get_trade_history(r).await
            })
            .await?;
        Ok(Response::new(unwrap_response(r.response)?))
    }

    async fn get_positions(
        &self,
        request: Request<v1::GetPositionsRequest>,
    ) -> Result<Response<v1::GetPositionsResponse>, Status> {
        let (_admitted, ctx, request) =
            self.admit_read("GetPositions", request, |r| r.account.as_str())?;
        let account = request.account.clone();
        let body = internal::GetPositionsRequest {
            caller: Some(ctx.caller.clone()),
            request: Some(request),
        };
        let r = self
            .forward(&ctx, &account, body, |mut c, r| async move {
                c.get_positions(r).await
            })
            .await?;
        Ok(Response::new(unwrap_response(r.response)?))
    }

    type SubscribeOrderUpdatesStream = BoxStream<v1::SubscribeOrderUpdatesResponse>;

    async fn subscribe_order_updates(
        &self,
        request: Request<v1::SubscribeOrderUpdatesRequest>,
    ) -> Result<Response<Self::SubscribeOrderUpdatesStream>, Status> {
        let admitted = otel_span!("admission").in_scope(|| {
            self.admission
                .admit("SubscribeOrderUpdates", &request, RpcClass::Stream)
        })?;
        let ctx = self.context(&request, &admitted);
        let mut request = request.into_inner();
        for (i, account) in request.accounts.iter().enumerate() {
            check_account(&format!("accounts[{i}]"), account)?;
            self.admission.require(
                "SubscribeOrderUpdates",
                &admitted,
                Permission::OrdersRead,
                Some(account),
            )?;
        }
        self.admission.require(
            "SubscribeOrderUpdates",
            &admitted,
            Permission::OrdersRead,
            None,
        )?;
        if request.accounts.is_empty() {
            // "Every account the caller may read": its allow-list, or all for a wildcard.
            if let Some(allowed) = &admitted.principal.accounts {
                request.accounts = allowed.iter().cloned().collect();
                request.accounts.sort();
                if request.accounts.is_empty() {
                    return Err(GatewayError::AccountNotAllowed(String::new()).into());
                }
            }
        }
        let mut after: HashMap<String, u64> = HashMap::new();
        for (i, cursor) in request.resume_from.iter().enumerate() {
            if self.shards.by_id(&cursor.shard).is_none() {
                let known: Vec<&str> = self.shards.all().iter().map(|s| s.id.as_str()).collect();
                return Err(GatewayError::field(
                    format!("resume_from[{i}].shard"),
                    format!(
                        "unknown shard {:?} (this deployment has {known:?})",
                        cursor.shard
                    ),
                )
                .into());
            }
            after.insert(cursor.shard.clone(), cursor.sequence);
        }
        // The shards to follow: those owning the requested accounts, or all of them.
        let targets: Vec<&crate::routing::Shard> = if request.accounts.is_empty() {
            self.shards.all().iter().collect()
        } else {
            let mut ids: Vec<&str> = request
                .accounts
                .iter()
                .map(|a| self.shards.for_account(a).id.as_str())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids.into_iter()
                .filter_map(|id| self.shards.by_id(id))
                .collect()
        };
        let mut upstreams = Vec::with_capacity(targets.len());
        for shard in targets {
            let body = internal::SubscribeOrderUpdatesRequest {
                caller: Some(ctx.caller.clone()),
                accounts: request.accounts.clone(),
                after_sequence: after.get(&shard.id).copied(),
            };
            let stream = shard
                .client
                .clone()
                .subscribe_order_updates(Request::new(body))
                .await
                .map_err(|status| GatewayError::Upstream {
                    upstream: Upstream::Executor,
                    status,
                })?
                .into_inner();
            upstreams.push(stream);
        }
        // Fan-in: one task per shard into the client's stream. Order is kept per shard
        // (each shard's sequence), which is what a cursor per shard needs.
        let (tx, rx) = mpsc::channel(256);
        let admitted = Arc::new(admitted);
        for mut upstream in upstreams {
            let tx = tx.clone();
            let shutdown = self.shutdown.clone();
            // Each task holds the stream's admission slot for as long as it runs.
            let admitted = admitted.clone();
            tokio::spawn(async move {
                let _admitted = admitted;
                loop {
                    let item = tokio::select! {
                        message = upstream.message() => match message {
                            Ok(Some(m)) => match m.response {
                                Some(r) => Ok(r),
                                None => continue,
                            },
                            Ok(None) => return,
                            Err(status) => Err(Status::from(GatewayError::Upstream { upstream: Upstream::Executor, status })),
                        },
                        // The client went away: release the upstream stream now.
                        () = tx.closed() => return,
                        () = shutdown.wait() => Err(GatewayError::ShuttingDown.into()),
                    };
                    let end = item.is_err();
                    if tx.send(item).await.is_err() || end {
                        return;
                    }
                }
            });
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The cursor to resume from, kept by a client: the sequence of the last update it saw.
pub fn cursor_of(event: &Event) -> Option<v1::ShardCursor> {
    match event {
        Event::Update(u) => Some(v1::ShardCursor {
            shard: u.shard.clone(),
            sequence: u.sequence,
        }),
        Event::Live(c) => Some(c.clone()),
    }
}
