"""The error translator, against a real grpc.aio server sending rich status details."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from execbridge import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    ExecbridgeError,
    ExecutionClient,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NO_RETRY,
    NotFound,
    OrderRequest,
    PermissionDenied,
    ResourceExhausted,
    Side,
    Unauthenticated,
    Unavailable,
    UnknownError,
    from_rpc_error,
)
from execbridge._proto.v1 import execution_service_pb2 as svc_pb
from execbridge._proto.v1 import execution_service_pb2_grpc as svc_grpc

from .conftest import Server, abort_with, proto_order, rich_status


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.ABORTED, Aborted),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.INTERNAL, Internal),
        (grpc.StatusCode.UNKNOWN, UnknownError),
    ],
    ids=lambda v: getattr(v, "name", getattr(v, "__name__", "")),
)
async def test_each_status_code_becomes_its_exception_class_with_error_info(
    server: Server, code: grpc.StatusCode, expected: type[ExecbridgeError]
) -> None:
    async def fail(request: Any, context: Any) -> Any:
        await abort_with(context, rich_status(code, "it failed", reason="SOME_REASON", metadata={"k": "v"}))

    server.execution.get_order = fail
    async with ExecutionClient.connect(server.target, retry=NO_RETRY) as client:
        with pytest.raises(ExecbridgeError) as caught:
            await client.get_order(account="a", order_id="s0-1")
    error = caught.value
    assert type(error) is expected
    assert error.code is code
    assert error.message == "it failed"
    assert (error.reason, error.domain, dict(error.metadata)) == ("SOME_REASON", "execbridge.dev", {"k": "v"})


async def test_invalid_argument_carries_the_bad_request_field_violations(server: Server) -> None:
    async def fail(request: Any, context: Any) -> Any:
        await abort_with(
            context,
            rich_status(
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid order",
                reason="INVALID_ORDER",
                violations=[("order.quantity", "not a decimal: 'abc'"), ("order.price", "required for LIMIT")],
            ),
        )

    server.execution.get_order = fail
    async with ExecutionClient.connect(server.target) as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.get_order(account="a", order_id="s0-1")
    assert [(v.field, v.description) for v in caught.value.field_violations] == [
        ("order.quantity", "not a decimal: 'abc'"),
        ("order.price", "required for LIMIT"),
    ]
    assert "order.quantity" in str(caught.value)
    assert len(server.execution.seen_requests) == 1  # INVALID_ARGUMENT is never retried


async def test_retry_info_becomes_retry_delay(server: Server) -> None:
    async def fail(request: Any, context: Any) -> Any:
        await abort_with(
            context, rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", reason="RATE_LIMITED", retry_delay_s=3)
        )

    server.execution.get_order = fail
    async with ExecutionClient.connect(server.target) as client:
        with pytest.raises(ResourceExhausted) as caught:
            await client.get_order(account="a", order_id="s0-1")
    assert caught.value.retry_delay == 3.0


async def test_an_error_without_details_is_classified_by_its_code_alone(server: Server) -> None:
    async def fail(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no order s0-9")

    server.execution.get_order = fail
    async with ExecutionClient.connect(server.target) as client:
        with pytest.raises(NotFound) as caught:
            await client.get_order(account="a", order_id="s0-9")
    assert (caught.value.message, caught.value.reason, caught.value.field_violations) == ("no order s0-9", None, ())


async def test_undecodable_status_details_do_not_break_classification(server: Server) -> None:
    async def fail(request: Any, context: Any) -> Any:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED, "no", trailing_metadata=(("grpc-status-details-bin", b"\xff\xfe"),)
        )

    server.execution.get_order = fail
    async with ExecutionClient.connect(server.target) as client:
        with pytest.raises(PermissionDenied):
            await client.get_order(account="a", order_id="s0-1")


async def test_an_unreachable_server_is_unavailable() -> None:
    async with ExecutionClient.connect("127.0.0.1:1", retry=NO_RETRY) as client:
        with pytest.raises(Unavailable):
            await client.get_order(account="a", order_id="s0-1", timeout=5)


async def test_from_rpc_error_is_usable_on_raw_generated_stub_calls(server: Server) -> None:
    async def fail(request: Any, context: Any) -> Any:
        await abort_with(context, rich_status(grpc.StatusCode.ABORTED, "conflict", reason="CONFLICT"))

    server.execution.get_order = fail
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = svc_grpc.ExecutionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetOrder(svc_pb.GetOrderRequest(account="a", order_id="x"))
    error = from_rpc_error(caught.value)
    assert isinstance(error, Aborted) and error.reason == "CONFLICT"


def internal(debug_error_string: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="Internal error from Core",
        debug_error_string=debug_error_string,
    )


def test_a_send_the_local_grpc_core_refused_on_an_ending_stream_is_unavailable() -> None:
    # As grpc-python reports it (grpc/grpc#36066): no server sent this status.
    error = from_rpc_error(internal('Failed "execute_batch": (<grpc._cython.cygrpc.SendMessageOperation object>,)'))
    assert type(error) is Unavailable and error.code is grpc.StatusCode.UNAVAILABLE
    assert "send them again" in error.message
    # An INTERNAL the server sent stays INTERNAL.
    sent = internal("UNKNOWN:Error received from peer ipv4:127.0.0.1:5 {grpc_status:13}")
    assert type(from_rpc_error(sent)) is Internal


async def test_a_batch_stream_the_server_ends_unavailable_while_orders_are_sent_fails_unavailable(
    server: Server,
) -> None:
    """The server ends the stream while the client is still writing. Sometimes the write
    loses the race and grpc-python replaces the server's status with a local INTERNAL; the
    client must still report UNAVAILABLE, the status its user can act on."""

    async def ending(requests: Any, context: Any) -> AsyncIterator[svc_pb.SubmitOrdersResponse]:
        answered = 0
        async for request in requests:
            yield svc_pb.SubmitOrdersResponse(
                batch_id=request.batch_id,
                results=[
                    svc_pb.OrderResult(
                        index=i,
                        client_order_id=o.client_order_id,
                        order=proto_order(client_order_id=o.client_order_id),
                    )
                    for i, o in enumerate(request.orders)
                ],
            )
            answered += 1
            if answered == 3:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")

    def endless() -> Iterator[OrderRequest]:
        n = 0
        while True:
            n += 1
            yield OrderRequest.market(
                account="a", symbol="BTC-USDT", side=Side.BUY, quantity="1", client_order_id=f"c{n}"
            )

    server.execution.submit_orders = ending
    outcomes: Counter[str] = Counter()
    refused = "Unavailable (send refused)"
    async with ExecutionClient.connect(server.target, retry=NO_RETRY, stream_retry=NO_RETRY) as client:
        # One stream in a few dozen loses the race here: run until three did (at most 3,000).
        for _ in range(3000):
            try:
                async for _result in client.submit_orders(endless(), max_batch=1):
                    pass
                outcomes["ended without error"] += 1
            except ExecbridgeError as error:
                lost = "its status was lost" in error.message
                outcomes[f"{type(error).__name__}{' (send refused)' if lost else ''}"] += 1
            if outcomes[refused] >= 3:
                break
    print(f"stream outcomes: {dict(outcomes)}")
    assert set(outcomes) <= {"Unavailable", refused}, outcomes
    assert outcomes[refused] >= 1, f"no stream lost the race in {outcomes.total()} tries: {outcomes}"
