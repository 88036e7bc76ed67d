"""Malformed requests are INVALID_ARGUMENT with a field violation naming the field.

The typed client refuses such orders before sending them, so these tests speak to the
gateway through the generated stub, as a client in another language would, and classify
the answer with the client's translator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
import pytest_asyncio

from execbridge import InvalidArgument, from_rpc_error
from execbridge._proto.v1 import execution_service_pb2 as svc_pb
from execbridge._proto.v1 import execution_service_pb2_grpc as svc_grpc
from execbridge._proto.v1 import orders_pb2 as pb
from stack import Stack

if TYPE_CHECKING:
    from execbridge._proto.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def stub(stack: Stack) -> AsyncIterator[ExecutionServiceAsyncStub]:
    async with grpc.aio.insecure_channel(stack.gateway_target) as channel:
        yield svc_grpc.ExecutionServiceStub(channel)


def order(account: str, **fields: object) -> pb.OrderRequest:
    base: dict[str, object] = dict(
        client_order_id="bad-input-1",
        account=account,
        venue="paper",
        mode=pb.TRADING_MODE_PAPER,
        symbol="BTC-USDT",
        side=pb.SIDE_BUY,
        type=pb.ORDER_TYPE_MARKET,
        time_in_force=pb.TIME_IN_FORCE_GTC,
        quantity="0.01",
    )
    base.update(fields)
    return pb.OrderRequest(**base)  # type: ignore[arg-type]


async def submit_error(stub: ExecutionServiceAsyncStub, request: pb.OrderRequest) -> InvalidArgument:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitOrder(svc_pb.SubmitOrderRequest(order=request), timeout=10)
    error = from_rpc_error(caught.value)
    assert isinstance(error, InvalidArgument), f"expected INVALID_ARGUMENT, got {error!r}"
    return error


def violation_fields(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.field_violations]


async def test_a_quantity_that_is_not_a_decimal_is_invalid_argument_naming_quantity(
    stub: ExecutionServiceAsyncStub, account: str
) -> None:
    error = await submit_error(stub, order(account, quantity="abc"))
    assert any(f.split(".")[-1] == "quantity" for f in violation_fields(error)), error
    assert error.domain == "execbridge.dev" and error.reason, f"ErrorInfo missing: {error!r}"


async def test_a_limit_order_without_price_is_invalid_argument_naming_price(
    stub: ExecutionServiceAsyncStub, account: str
) -> None:
    error = await submit_error(stub, order(account, type=pb.ORDER_TYPE_LIMIT, price=""))
    assert any(f.split(".")[-1] == "price" for f in violation_fields(error)), error


async def test_every_bad_field_of_a_request_is_named(stub: ExecutionServiceAsyncStub, account: str) -> None:
    error = await submit_error(stub, order(account, quantity="-1", side=pb.SIDE_UNSPECIFIED))
    names = {f.split(".")[-1] for f in violation_fields(error)}
    assert {"quantity", "side"} <= names, error


async def test_a_bad_order_in_a_batch_fails_alone_with_its_field_violation(
    stub: ExecutionServiceAsyncStub, account: str
) -> None:
    good = order(account, client_order_id="batch-good")
    bad = order(account, client_order_id="batch-bad", quantity="abc")

    async def requests() -> AsyncIterator[svc_pb.SubmitOrdersRequest]:
        yield svc_pb.SubmitOrdersRequest(orders=[good, bad], batch_id="only")

    responses = [r async for r in stub.SubmitOrders(requests(), timeout=10)]
    assert [r.batch_id for r in responses] == ["only"]
    results = responses[0].results
    assert [r.client_order_id for r in results] == ["batch-good", "batch-bad"]
    assert results[0].WhichOneof("outcome") == "order"
    assert results[1].WhichOneof("outcome") == "error"
    assert results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert any(v.field.split(".")[-1] == "quantity" for v in results[1].error.field_violations)
