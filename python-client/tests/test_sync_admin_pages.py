"""The blocking facade, the admin calls, page iteration and the reason-specific errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import pytest
import pytest_asyncio

from execbridge import (
    ExecutionClient,
    ClientOrderIdUsed,
    IdempotencyMismatch,
    AlreadyExists,
    OrderRequest,
    Overloaded,
    PermissionDenied,
    RiskLimits,
    ShuttingDown,
    Side,
    SyncExecutionClient,
    TradingMode,
    TradingState,
    UnknownOutcome,
    DeadlineExceeded,
    ValidationError,
)
from execbridge._proto.v1 import admin_service_pb2 as admin_pb
from execbridge._proto.v1 import admin_service_pb2_grpc as admin_grpc
from execbridge._proto.v1 import execution_service_pb2 as svc_pb
from execbridge._proto.v1 import orders_pb2 as pb

from .conftest import Handler, Server, abort_with, proto_order, rich_status


def market(cid: str | None = None) -> OrderRequest:
    return OrderRequest.market(account="acct", symbol="BTC-USDT", side=Side.BUY, quantity="0.5", client_order_id=cid)


async def test_the_sync_client_runs_the_async_client_on_its_own_loop(server: Server, submit_ok: Handler) -> None:
    async def get(request: Any, context: Any) -> Any:
        return svc_pb.GetOrderResponse(order=proto_order(order_id=request.order_id))

    server.execution.submit_order = submit_ok
    server.execution.get_order = get

    def body() -> None:
        with SyncExecutionClient.connect(server.target, api_key="k") as client:
            result = client.submit_order(market("sync-1"), timeout=5)
            assert result.order.client_order_id == "sync-1"
            assert client.get_order(account="acct", order_id="s0-9").order_id == "s0-9"
            with pytest.raises(ValidationError):
                client.get_order(account="acct")
            with client.market_data(["BTC-USDT"]) as stream:
                event = next(stream)
                assert event.symbol == "BTC-USDT"

    # The test's server runs on this loop: block a worker thread, not the loop.
    await asyncio.to_thread(body)
    assert [m["x-api-key"] for m in server.execution.seen_metadata] == ["k", "k"]


@pytest_asyncio.fixture
async def admin_server() -> AsyncIterator[tuple[str, list[Any]]]:
    seen: list[Any] = []

    class Admin(admin_grpc.AdminServiceServicer):
        async def SetTradingState(self, request: Any, context: Any) -> Any:  # noqa: N802
            seen.append(request)
            return admin_pb.SetTradingStateResponse(risk=admin_pb.AccountRisk(account=request.account, state=request.state))

        async def GetRiskLimits(self, request: Any, context: Any) -> Any:  # noqa: N802
            seen.append(request)
            return admin_pb.GetRiskLimitsResponse(
                risk=admin_pb.AccountRisk(
                    account=request.account,
                    state=admin_pb.TRADING_STATE_ACTIVE,
                    symbol_states=[admin_pb.SymbolTradingState(symbol="ETH-USDT", state=admin_pb.TRADING_STATE_HALTED)],
                    paper_limits=admin_pb.RiskLimits(max_order_quantity="5", max_open_orders=10),
                )
            )

        async def SetRiskLimits(self, request: Any, context: Any) -> Any:  # noqa: N802
            seen.append(request)
            return admin_pb.SetRiskLimitsResponse(risk=admin_pb.AccountRisk(account=request.account, paper_limits=request.limits))

        async def CancelAllOrders(self, request: Any, context: Any) -> Any:  # noqa: N802
            seen.append(request)
            return admin_pb.CancelAllOrdersResponse(orders=[proto_order()])

        async def Flatten(self, request: Any, context: Any) -> Any:  # noqa: N802
            seen.append(request)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "lost")

    server = grpc.aio.server()
    admin_grpc.add_AdminServiceServicer_to_server(Admin(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", seen
    await server.stop(None)


async def test_admin_calls_convert_both_ways(admin_server: tuple[str, list[Any]]) -> None:
    target, seen = admin_server
    async with ExecutionClient.connect(target) as client:
        risk = await client.admin.set_trading_state("acct", TradingState.HALTED, reason="kill switch drill")
        assert risk.state is TradingState.HALTED
        risk = await client.admin.get_risk_limits("acct")
        assert risk.symbol_states == {"ETH-USDT": TradingState.HALTED}
        assert risk.paper_limits.max_order_quantity == Decimal(5) and risk.paper_limits.max_position is None
        limits = RiskLimits(max_order_notional=Decimal("10000"), price_band_bps=500)
        risk = await client.admin.set_risk_limits("acct", limits, mode=TradingMode.PAPER, reason="tighten")
        assert risk.paper_limits == limits
        orders = await client.admin.cancel_all_orders("acct", reason="eod")
        assert len(orders) == 1
        with pytest.raises(ValidationError):
            await client.admin.flatten("acct", reason=" ")
        before = len(seen)
        from execbridge import Unavailable

        with pytest.raises(Unavailable):
            await client.admin.flatten("acct", reason="eod")
        assert len(seen) == before + 1  # flatten is never retried
    assert seen[0].state == admin_pb.TRADING_STATE_HALTED and seen[0].reason == "kill switch drill"
    assert seen[2].limits.max_order_notional == "10000" and seen[2].mode == pb.TRADING_MODE_PAPER


async def test_iter_orders_follows_page_tokens_to_the_end(server: Server) -> None:
    pages = {"": (["o1", "o2"], "t1"), "t1": (["o3"], "t2"), "t2": ([], "")}

    async def list_orders(request: Any, context: Any) -> Any:
        ids, token = pages[request.page_token]
        return svc_pb.ListOrdersResponse(orders=[proto_order(order_id=i) for i in ids], next_page_token=token)

    server.execution.list_orders = list_orders
    async with ExecutionClient.connect(server.target) as client:
        ids = [o.order_id async for o in client.iter_orders("acct", page_size=2)]
    assert ids == ["o1", "o2", "o3"]
    assert [r.page_token for r in server.execution.seen_requests] == ["", "t1", "t2"]


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_MISMATCH", IdempotencyMismatch),
        (grpc.StatusCode.ALREADY_EXISTS, "CLIENT_ORDER_ID_USED", ClientOrderIdUsed),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", Overloaded),
        (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", ShuttingDown),
        (grpc.StatusCode.PERMISSION_DENIED, "MISSING_PERMISSION", PermissionDenied),
        (grpc.StatusCode.ALREADY_EXISTS, "SOMETHING_NEW", AlreadyExists),
    ],
)
async def test_reasons_with_a_class_of_their_own_raise_it(server: Server, code: grpc.StatusCode, reason: str, cls: type[Exception]) -> None:
    async def fail(request: Any, context: Any) -> Any:
        await abort_with(context, rich_status(code, "no", reason=reason, metadata={"differing_fields": "quantity,price", "order_id": "s0-1"}))

    server.execution.submit_order = fail
    async with ExecutionClient.connect(server.target, retry=__import__("execbridge").NO_RETRY) as client:
        with pytest.raises(cls) as caught:
            await client.submit_order(market())
    assert type(caught.value) is cls
    if isinstance(caught.value, IdempotencyMismatch):
        assert caught.value.differing_fields == ("quantity", "price") and caught.value.order_id == "s0-1"
    if isinstance(caught.value, ClientOrderIdUsed):
        assert caught.value.order_id == "s0-1"


def test_a_deadline_exceeded_is_an_unknown_outcome() -> None:
    assert issubclass(DeadlineExceeded, UnknownOutcome)
