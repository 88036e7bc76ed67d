//! The public `AdminService`: the kill switch and risk controls, for principals with the
//! `admin` permission on the account. Forwarded to the executor that owns the account,
//! which journals and audits every change with the principal and reason.
//!
//! Admin calls spend the cancel budget, not the submit budget: halting an account must
//! never wait behind a flood of orders.

use std::future::Future;

use execbridge_api::internal::v1 as internal;
use execbridge_api::internal::v1::executor_service_client::ExecutorServiceClient;
use execbridge_api::v1::admin_service_server::AdminService;
use execbridge_api::v1::{self};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::error::{GatewayError, Upstream};
use crate::execution::{Execution, check_account};
use crate::policy::{Permission, RpcClass};

impl Execution {
    /// Admits, authorises (admin on the account) and forwards one admin call.
    async fn admin_call<Req, IReq, IResp, Resp, F, Fut>(
        &self,
        rpc: &'static str,
        request: Request<Req>,
        account: fn(&Req) -> &str,
        wrap: fn(internal::Caller, Req) -> IReq,
        unwrap: fn(IResp) -> Option<Resp>,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(ExecutorServiceClient<Channel>, Request<IReq>) -> Fut,
        Fut: Future<Output = Result<Response<IResp>, Status>>,
    {
        let (_admitted, ctx, request) = {
            let _admission = execbridge_runtime::otel_span!("admission").entered();
            let admitted = self.admission.admit(rpc, &request, RpcClass::Cancel)?;
            let ctx = self.context(&request, &admitted);
            let request = request.into_inner();
            check_account("account", account(&request))?;
            self.admission
                .require(rpc, &admitted, Permission::Admin, Some(account(&request)))?;
            (admitted, ctx, request)
        };
        let account = account(&request).to_owned();
        let response = self
            .forward(&ctx, &account, wrap(ctx.caller.clone(), request), call)
            .await?;
        let response = unwrap(response).ok_or_else(|| GatewayError::Upstream {
            upstream: Upstream::Executor,
            status: Status::internal("executor sent an empty response"),
        })?;
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl AdminService for Execution {
    async fn set_trading_state(
        &self,
        request: Request<v1::SetTradingStateRequest>,
    ) -> Result<Response<v1::SetTradingStateResponse>, Status> {
        self.admin_call(
            "SetTradingState",
            request,
            |r| &r.account,
            |caller, r| internal::SetTradingStateRequest {
                caller: Some(caller),
                request: Some(r),
            },
            |r: internal::SetTradingStateResponse| r.response,
            |mut c, r| async move { c.set_trading_state(r).await },
        )
        .await
    }

    async fn get_risk_limits(
        &self,
        request: Request<v1::GetRiskLimitsRequest>,
    ) -> Result<Response<v1::GetRiskLimitsResponse>, Status> {
        self.admin_call(
            "GetRiskLimits",
            request,
            |r| &r.account,
            |caller, r| internal::GetRiskLimitsRequest {
                caller: Some(caller),
                request: Some(r),
            },
            |r: internal::GetRiskLimitsResponse| r.response,
            |mut c, r| async move { c.get_risk_limits(r).await },
        )
        .await
    }

    async fn set_risk_limits(
        &self,
        request: Request<v1::SetRiskLimitsRequest>,
    ) -> Result<Response<v1::SetRiskLimitsResponse>, Status> {
        self.admin_call(
            "SetRiskLimits",
            request,
            |r| &r.account,
            |caller, r| internal::SetRiskLimitsRequest {
                caller: Some(caller),
                request: Some(r),
            },
            |r: internal::SetRiskLimitsResponse| r.response,
            |mut c, r| async move { c.set_risk_limits(r).await },
        )
        .await
    }

    async fn cancel_all_orders(
        &self,
        request: Request<v1::CancelAllOrdersRequest>,
    ) -> Result<Response<v1::CancelAllOrdersResponse>, Status> {
        self.admin_call(
            "CancelAllOrders",
            request,
            |r| &r.account,
            |caller, r| internal::CancelAllOrdersRequest {
                caller: Some(caller),
                request: Some(r),
            },
            |r: internal::CancelAllOrdersResponse| r.response,
            |mut c, r| async move { c.cancel_all_orders(r).await },
        )
        .await
    }

    async fn flatten(
        &self,
        request: Request<v1::FlattenRequest>,
    ) -> Result<Response<v1::FlattenResponse>, Status> {
        self.admin_call(
            "Flatten",
            request,
            |r| &r.account,
            |caller, r| internal::FlattenRequest {
                caller: Some(caller),
                request: Some(r),
            },
            |r: internal::FlattenResponse| r.response,
            |mut c, r| async move { c.flatten(r).await },
        )
        .await
    }
}
