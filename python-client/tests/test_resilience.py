"""Retries, backoff, the circuit breaker, the channel pool and target failover, against
real grpc.aio servers on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from execbridge import (
    CircuitBreakerConfig,
    CircuitOpen,
    CircuitState,
    DeadlineExceeded,
    ExecutionClient,
    InvalidArgument,
    NO_RETRY,
    OrderRequest,
    RateLimited,
    ResourceExhausted,
    RetryPolicy,
    Side,
    Unavailable,
)
from execbridge._proto.v1 import execution_service_pb2 as svc_pb
from execbridge._proto.v1 import execution_service_pb2_grpc as svc_grpc
from execbridge.circuit import CircuitBreaker

from .conftest import FakeExecution, Handler, Server, abort_with, proto_order, rich_status

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.02)


def market(cid: str | None = None) -> OrderRequest:
    return OrderRequest.market(account="acct", symbol="BTC-USDT", side=Side.BUY, quantity="0.5", client_order_id=cid)


def idempotent_submit(slow_first: int) -> tuple[Handler, dict[str, int]]:
    """A SubmitOrder that stalls the first ``slow_first`` calls past the client's try deadline
    but records every order, like the gateway: one order per client_order_id."""
    orders: dict[str, int] = {}

    async def handler(request: svc_pb.SubmitOrderRequest, context: Any) -> svc_pb.SubmitOrderResponse:
        cid = request.order.client_order_id
        duplicate = cid in orders
        orders[cid] = orders.get(cid, 0) + 1
        calls = sum(orders.values())
        if calls <= slow_first:
            await asyncio.sleep(1.0)  # the answer is lost: the client's try times out
        order = proto_order(client_order_id=cid)
        return svc_pb.SubmitOrderResponse(order=order, duplicate=duplicate)

    return handler, orders


async def test_a_submit_whose_try_times_out_is_retried_with_the_same_id_and_yields_one_order(server: Server) -> None:
    handler, orders = idempotent_submit(slow_first=1)
    server.execution.submit_order = handler
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, attempt_timeout=0.2)
    async with ExecutionClient.connect(server.target, retry=policy) as client:
        result = await client.submit_order(market("cid-timeout"), timeout=5)
    # Two tries reached the server with the same id; the server made one order of them.
    assert orders == {"cid-timeout": 2}
    assert result.order.client_order_id == "cid-timeout" and result.duplicate is True
    assert {r.order.client_order_id for r in server.execution.seen_requests} == {"cid-timeout"}


async def test_the_overall_timeout_still_bounds_retried_tries(server: Server) -> None:
    handler, _ = idempotent_submit(slow_first=100)
    server.execution.submit_order = handler
    policy = RetryPolicy(max_attempts=50, initial_backoff=0.01, attempt_timeout=0.1)
    async with ExecutionClient.connect(server.target, retry=policy) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(DeadlineExceeded) as caught:
            await client.submit_order(market(), timeout=0.35)
        assert loop.time() - start < 1.0
    assert caught.value.correlation_id


async def test_a_rate_limit_is_retried_after_the_servers_retry_info(server: Server, submit_ok: Handler) -> None:
    calls = 0

    async def limited(request: Any, context: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await abort_with(context, rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", reason="RATE_LIMITED", retry_delay_s=0))
        return await submit_ok(request, context)

    server.execution.submit_order = limited
    async with ExecutionClient.connect(server.target, retry=FAST) as client:
        await client.submit_order(market())
    assert calls == 2


async def test_a_rate_limit_beyond_the_timeout_raises_rate_limited_with_retry_after(server: Server) -> None:
    async def limited(request: Any, context: Any) -> Any:
        await abort_with(context, rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", reason="RATE_LIMITED", retry_delay_s=3))

    server.execution.submit_order = limited
    async with ExecutionClient.connect(server.target, retry=FAST) as client:
        with pytest.raises(RateLimited) as caught:
            await client.submit_order(market(), timeout=1)
    assert caught.value.retry_after == 3.0
    assert len(server.execution.seen_requests) == 1


async def test_resource_exhausted_without_retry_info_is_not_retried(server: Server) -> None:
    async def too_big(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "message too large")

    server.execution.submit_order = too_big
    async with ExecutionClient.connect(server.target, retry=FAST) as client:
        with pytest.raises(ResourceExhausted):
            await client.submit_order(market())
    assert len(server.execution.seen_requests) == 1


async def test_invalid_argument_is_never_retried(server: Server) -> None:
    async def invalid(request: Any, context: Any) -> Any:
        await abort_with(context, rich_status(grpc.StatusCode.INVALID_ARGUMENT, "bad", reason="INVALID_FIELD", violations=[("order.symbol", "unknown")]))

    server.execution.submit_order = invalid
    async with ExecutionClient.connect(server.target, retry=FAST) as client:
        with pytest.raises(InvalidArgument):
            await client.submit_order(market())
    assert len(server.execution.seen_requests) == 1


def test_backoff_grows_exponentially_within_its_cap_and_jitter() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0, jitter=0.5)
    for attempt, base in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)):
        for _ in range(50):
            assert base * 0.5 <= policy.backoff(attempt) <= base


async def test_the_circuit_opens_after_consecutive_failures_and_recovers_through_a_probe(server: Server, submit_ok: Handler) -> None:
    healthy = False

    async def handler(request: Any, context: Any) -> Any:
        if not healthy:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        return await submit_ok(request, context)

    server.execution.submit_order = handler
    breaker = CircuitBreakerConfig(failure_threshold=3, reset_timeout=0.3)
    async with ExecutionClient.connect(server.target, retry=NO_RETRY, circuit_breaker=breaker) as client:
        for _ in range(3):
            with pytest.raises(Unavailable):
                await client.submit_order(market())
        assert client.circuit_state is CircuitState.OPEN
        with pytest.raises(CircuitOpen) as caught:
            await client.submit_order(market())
        assert caught.value.retry_delay is not None and 0 < caught.value.retry_delay <= 0.3
        assert len(server.execution.seen_requests) == 3  # the refused call was never sent

        healthy = True
        await asyncio.sleep(0.35)
        assert client.circuit_state is CircuitState.HALF_OPEN
        await client.submit_order(market())
        assert client.circuit_state is CircuitState.CLOSED


async def test_a_failed_probe_opens_the_circuit_again() -> None:
    now = [0.0]
    breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1, reset_timeout=1.0), clock=lambda: now[0])
    breaker.before_call()
    breaker.record(Unavailable("down"))
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    now[0] = 1.5
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # only one probe at a time
    breaker.record(Unavailable("still down"))
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_errors_that_prove_the_server_answers_keep_the_circuit_closed() -> None:
    breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=2))
    for _ in range(5):
        breaker.before_call()
        breaker.record(InvalidArgument("bad"))
    assert breaker.state is CircuitState.CLOSED


async def _serve(execution: FakeExecution) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    svc_grpc.add_ExecutionServiceServicer_to_server(execution, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_a_static_target_list_fails_over_to_the_next_gateway(submit_ok: Handler) -> None:
    execution = FakeExecution(submit_order=submit_ok)
    live, port = await _serve(execution)
    try:
        targets = ["127.0.0.1:1", f"127.0.0.1:{port}"]  # the first refuses connections
        async with ExecutionClient.connect(targets, retry=FAST) as client:
            for _ in range(4):
                await client.submit_order(market())
        assert len(execution.seen_requests) == 4
    finally:
        await live.stop(None)


async def test_the_pool_spreads_calls_over_separate_connections(submit_ok: Handler) -> None:
    peers: set[str] = set()

    async def handler(request: Any, context: Any) -> Any:
        peers.add(context.peer())
        return await submit_ok(request, context)

    execution = FakeExecution(submit_order=handler)
    live, port = await _serve(execution)
    try:
        async with ExecutionClient.connect(f"127.0.0.1:{port}", pool_size=3) as client:
            await asyncio.gather(*(client.submit_order(market()) for _ in range(9)))
        assert len(peers) == 3  # three client ports: three TCP connections
    finally:
        await live.stop(None)


async def test_a_dns_target_is_resolved_and_used(submit_ok: Handler) -> None:
    execution = FakeExecution(submit_order=submit_ok)
    live, port = await _serve(execution)
    try:
        async with ExecutionClient.connect(f"dns:///localhost:{port}") as client:
            await client.submit_order(market())
        assert len(execution.seen_requests) == 1
    finally:
        await live.stop(None)


async def test_submit_orders_packs_ready_orders_into_few_messages(server: Server) -> None:
    sizes: list[int] = []

    async def echo(requests: Any, context: Any) -> Any:
        async for request in requests:
            sizes.append(len(request.orders))
            yield svc_pb.SubmitOrdersResponse(
                batch_id=request.batch_id,
                results=[
                    svc_pb.OrderResult(index=i, client_order_id=o.client_order_id, order=proto_order(client_order_id=o.client_order_id))
                    for i, o in enumerate(request.orders)
                ],
            )

    server.execution.submit_orders = echo
    orders = [market(f"p{i}") for i in range(1000)]
    async with ExecutionClient.connect(server.target) as client:
        results = [r async for r in client.submit_orders(orders, max_batch=200)]
    assert [r.client_order_id for r in results] == [o.client_order_id for o in orders]
    # A fresh result's order carries the request as sent (not converted back from the echo).
    assert all(r.order is not None and r.order.request is o for r, o in zip(results, orders, strict=True))
    assert sum(sizes) == 1000 and max(sizes) <= 200
    assert len(sizes) < 100  # packed, not one message per order


async def test_submit_orders_stops_sending_when_results_are_not_read(server: Server) -> None:
    received = 0

    async def echo(requests: Any, context: Any) -> Any:
        nonlocal received
        async for request in requests:
            received += len(request.orders)
            yield svc_pb.SubmitOrdersResponse(
                batch_id=request.batch_id,
                results=[svc_pb.OrderResult(index=i, client_order_id=o.client_order_id, order=proto_order()) for i, o in enumerate(request.orders)],
            )

    server.execution.submit_orders = echo

    def endless() -> Any:
        number = 0
        while True:
            number += 1
            yield market(f"e{number}")

    async with ExecutionClient.connect(server.target) as client:
        results = client.submit_orders(endless(), max_batch=10, max_in_flight=50)
        first = await anext(results)
        await asyncio.sleep(0.3)
        assert first.ok
        assert received <= 60  # in flight stays bounded while nobody reads
        await results.aclose()


async def test_a_cancelled_probe_frees_its_slot_for_the_next_one(server: Server, submit_ok: Handler) -> None:
    stall = asyncio.Event()

    async def handler(request: Any, context: Any) -> Any:
        if not stall.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        return await submit_ok(request, context)

    async def hang(request: Any, context: Any) -> Any:
        await asyncio.sleep(10)

    server.execution.submit_order = handler
    server.execution.get_order = hang
    breaker = CircuitBreakerConfig(failure_threshold=1, reset_timeout=0.05)
    async with ExecutionClient.connect(server.target, retry=NO_RETRY, circuit_breaker=breaker) as client:
        with pytest.raises(Unavailable):
            await client.submit_order(market())
        await asyncio.sleep(0.06)
        probe = asyncio.create_task(client.get_order(account="a", order_id="x"))  # the probe hangs
        await asyncio.sleep(0.05)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        stall.set()
        await client.submit_order(market())  # a new probe is admitted, succeeds, closes
        assert client.circuit_state is CircuitState.CLOSED


async def test_wait_ready_returns_when_any_target_is_up(submit_ok: Handler) -> None:
    live, port = await _serve(FakeExecution(submit_order=submit_ok))
    try:
        async with ExecutionClient.connect(["127.0.0.1:1", f"127.0.0.1:{port}"]) as client:
            await client.wait_ready(timeout=3)
    finally:
        await live.stop(None)
