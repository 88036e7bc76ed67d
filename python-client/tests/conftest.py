"""Shared fixtures: a real grpc.aio server on a free loopback port serving fake services.

The fakes implement the generated servicer interfaces, so every test exercises the real
wire (HTTP/2, serialization, metadata, status trailers) between the client and a server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from execbridge._proto.v1 import execution_service_pb2 as svc_pb
from execbridge._proto.v1 import execution_service_pb2_grpc as svc_grpc
from execbridge._proto.v1 import market_data_service_pb2 as md_pb
from execbridge._proto.v1 import market_data_service_pb2_grpc as md_grpc
from execbridge._proto.v1 import orders_pb2 as pb

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def rich_status(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str = "",
    domain: str = "execbridge.dev",
    metadata: dict[str, str] | None = None,
    violations: list[tuple[str, str]] | None = None,
    retry_delay_s: int | None = None,
) -> grpc.Status:
    """A grpc.Status with google.rpc details, as the gateway sends them."""
    details: list[any_pb2.Any] = []
    if reason:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {}))
        details.append(info)
    if violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in violations
                ]
            )
        )
        details.append(bad)
    if retry_delay_s is not None:
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_delay_s)))
        details.append(retry)
    return rpc_status.to_status(
        status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    )


async def abort_with(context: grpc.aio.ServicerContext, status: grpc.Status) -> None:
    await context.abort(status.code, status.details, status.trailing_metadata)


def proto_order(
    *,
    order_id: str = "s0-1",
    client_order_id: str = "cid-1",
    account: str = "acct",
    status: int = pb.ORDER_STATUS_NEW,
    quantity: str = "0.5",
    filled: str = "0",
    price: str = "",
    order_type: int = pb.ORDER_TYPE_MARKET,
    sequence: int = 1,
) -> pb.Order:
    request = pb.OrderRequest(
        client_order_id=client_order_id,
        account=account,
        venue="paper",
        mode=pb.TRADING_MODE_PAPER,
        symbol="BTC-USDT",
        side=pb.SIDE_BUY,
        type=order_type,
        time_in_force=pb.TIME_IN_FORCE_GTC,
        quantity=quantity,
        price=price,
    )
    order = pb.Order(
        order_id=order_id,
        request=request,
        status=status,
        filled_quantity=filled,
        remaining_quantity=quantity,
        sequence=sequence,
        fees="0",
        fee_asset="USDT",
    )
    order.created_at.FromSeconds(1_700_000_000)
    return order


@dataclass
class FakeExecution(svc_grpc.ExecutionServiceServicer):
    """An ExecutionService whose behaviour each test scripts by assigning handlers."""

    submit_order: Handler | None = None
    get_order: Handler | None = None
    list_orders: Handler | None = None
    submit_orders: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]] | None = None
    subscribe: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]] | None = None
    seen_metadata: list[dict[str, str]] = field(default_factory=list)
    seen_requests: list[Any] = field(default_factory=list)

    def _record(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.seen_requests.append(request)
        self.seen_metadata.append({k: v for k, v in context.invocation_metadata() or ()})

    async def SubmitOrder(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._record(request, context)
        assert self.submit_order is not None, "test did not script SubmitOrder"
        return await self.submit_order(request, context)

    async def GetOrder(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._record(request, context)
        assert self.get_order is not None, "test did not script GetOrder"
        return await self.get_order(request, context)

    async def ListOrders(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._record(request, context)
        assert self.list_orders is not None, "test did not script ListOrders"
        return await self.list_orders(request, context)

    async def SubmitOrders(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        self._record(None, context)
        assert self.submit_orders is not None, "test did not script SubmitOrders"
        async for response in self.submit_orders(request_iterator, context):
            yield response

    async def SubscribeOrderUpdates(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._record(request, context)
        assert self.subscribe is not None, "test did not script SubscribeOrderUpdates"
        async for response in self.subscribe(request, context):
            yield response


@dataclass
class FakeMarketData(md_grpc.MarketDataServiceServicer):
    """Echoes each Subscribe with one top-of-book event per symbol; records Unsubscribes."""

    requests: list[md_pb.StreamMarketDataRequest] = field(default_factory=list)

    async def StreamMarketData(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        sequence = 0
        async for request in request_iterator:
            self.requests.append(request)
            if request.WhichOneof("action") != "subscribe":
                continue
            for symbol in request.subscribe.symbols:
                sequence += 1
                yield md_pb.StreamMarketDataResponse(
                    events=[
                        md_pb.MarketDataEvent(
                            venue=request.subscribe.venue or "paper",
                            symbol=symbol,
                            sequence=sequence,
                            top_of_book=md_pb.TopOfBook(
                                bid_price="100.5", bid_quantity="2", ask_price="101", ask_quantity="3"
                            ),
                        )
                    ]
                )


@dataclass
class Server:
    target: str
    execution: FakeExecution
    market_data: FakeMarketData
    server: grpc.aio.Server


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    execution = FakeExecution()
    market_data = FakeMarketData()
    aio_server = grpc.aio.server()
    svc_grpc.add_ExecutionServiceServicer_to_server(execution, aio_server)
    md_grpc.add_MarketDataServiceServicer_to_server(market_data, aio_server)
    port = aio_server.add_insecure_port("127.0.0.1:0")
    await aio_server.start()
    try:
        yield Server(f"127.0.0.1:{port}", execution, market_data, aio_server)
    finally:
        await aio_server.stop(grace=None)


@pytest.fixture
def submit_ok() -> Handler:
    async def handler(request: svc_pb.SubmitOrderRequest, context: Any) -> svc_pb.SubmitOrderResponse:
        order = proto_order(client_order_id=request.order.client_order_id, quantity=request.order.quantity)
        order.request.CopyFrom(request.order)
        return svc_pb.SubmitOrderResponse(order=order)

    return handler
