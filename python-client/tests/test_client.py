"""ExecutionClient against fake services on a real grpc.aio server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import pytest

from execbridge import (
    DeadlineExceeded,
    ExecutionClient,
    FeedStatus,
    StatusFrame,
    InvalidArgument,
    OrderEventType,
    OrderRequest,
    OrderStatus,
    PermissionDenied,
    ProtocolError,
    RetryPolicy,
    Side,
    TopOfBook,
    Unavailable,
    ValidationError,
)
from execbridge._proto.v1 import execution_service_pb2 as svc_pb
from execbridge._proto.v1 import orders_pb2 as pb

from .conftest import Handler, Server, abort_with, proto_order, rich_status

FAST_STREAM_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)


def market(symbol: str = "BTC-USDT", quantity: str = "0.5", cid: str | None = None) -> OrderRequest:
    return OrderRequest.market(account="acct", symbol=symbol, side=Side.BUY, quantity=quantity, client_order_id=cid)


async def test_submit_order_sends_the_converted_order_and_the_api_key(server: Server, submit_ok: Handler) -> None:
    server.execution.submit_order = submit_ok
    order = market(cid="cid-7")
    async with ExecutionClient.connect(server.target, api_key="sekret") as client:
        result = await client.submit_order(order)
    sent = server.execution.seen_requests[0]
    assert sent.order.client_order_id == "cid-7" and sent.order.quantity == "0.5"
    assert sent.order.type == pb.ORDER_TYPE_MARKET
    assert server.execution.seen_metadata[0]["x-api-key"] == "sekret"
    assert result.order.client_order_id == "cid-7"
    assert result.order.request == order
    assert result.duplicate is False


async def test_no_api_key_header_is_sent_without_an_api_key(server: Server, submit_ok: Handler) -> None:
    server.execution.submit_order = submit_ok
    async with ExecutionClient.connect(server.target) as client:
        await client.submit_order(market())
    assert "x-api-key" not in server.execution.seen_metadata[0]


async def test_the_api_key_never_appears_in_the_client_options_repr() -> None:
    async with ExecutionClient.connect("127.0.0.1:1", api_key="sekret") as client:
        assert "sekret" not in repr(client.options)
        assert "127.0.0.1:1" in repr(client.options)


async def test_an_invalid_order_is_refused_before_it_is_sent(server: Server, submit_ok: Handler) -> None:
    server.execution.submit_order = submit_ok
    bad = OrderRequest(account="acct", symbol="BTC-USDT", side=Side.BUY, type=market().type, quantity=Decimal(0))
    async with ExecutionClient.connect(server.target) as client:
        with pytest.raises(ValidationError) as caught:
            await client.submit_order(bad)
    assert caught.value.field == "quantity"
    assert server.execution.seen_requests == []


async def test_unavailable_is_retried_with_the_same_client_order_id(server: Server, submit_ok: Handler) -> None:
    failures = 2

    async def flaky(request: Any, context: Any) -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        return await submit_ok(request, context)

    server.execution.submit_order = flaky
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01)
    async with ExecutionClient.connect(server.target, retry=policy) as client:
        result = await client.submit_order(market(cid="same-id"))
    assert result.order.client_order_id == "same-id"
    assert [r.order.client_order_id for r in server.execution.seen_requests] == ["same-id"] * 3


async def test_retries_stop_after_max_attempts_with_the_last_error(server: Server) -> None:
    async def down(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "down")

    server.execution.submit_order = down
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01)
    async with ExecutionClient.connect(server.target, retry=policy) as client:
        with pytest.raises(Unavailable, match="down"):
            await client.submit_order(market())
    assert len(server.execution.seen_requests) == 2


async def test_a_call_slower_than_its_timeout_is_deadline_exceeded(server: Server) -> None:
    async def slow(request: Any, context: Any) -> Any:
        await asyncio.sleep(5)

    server.execution.get_order = slow
    async with ExecutionClient.connect(server.target) as client:
        with pytest.raises(DeadlineExceeded):
            await client.get_order(account="a", order_id="x", timeout=0.2)


async def test_get_order_needs_exactly_one_id() -> None:
    async with ExecutionClient.connect("127.0.0.1:1") as client:
        with pytest.raises(ValidationError):
            await client.get_order(account="a")
        with pytest.raises(ValidationError):
            await client.get_order(account="a", order_id="x", client_order_id="y")


def batch_echo(fail_index: int | None = None):  # type: ignore[no-untyped-def]
    async def handler(requests: Any, context: Any) -> AsyncIterator[svc_pb.SubmitOrdersResponse]:
        async for request in requests:
            results = []
            for index, order in enumerate(request.orders):
                if order.client_order_id == "bad":
                    results.append(
                        svc_pb.OrderResult(
                            index=index,
                            client_order_id=order.client_order_id,
                            error=pb.OrderError(code=3, reason="INVALID_SYMBOL", message="unknown symbol"),
                        )
                    )
                else:
                    results.append(
                        svc_pb.OrderResult(
                            index=index,
                            client_order_id=order.client_order_id,
                            order=proto_order(client_order_id=order.client_order_id),
                        )
                    )
            yield svc_pb.SubmitOrdersResponse(results=results, batch_id=request.batch_id)

    return handler


async def test_submit_orders_yields_one_result_per_order_in_order(server: Server) -> None:
    server.execution.submit_orders = batch_echo()

    async def orders() -> AsyncIterator[OrderRequest | list[OrderRequest]]:
        yield market(cid="a1")
        yield [market(cid="b1"), market(cid="bad"), market(cid="b3")]
        yield []
        yield market(cid="c1")

    async with ExecutionClient.connect(server.target) as client:
        results = [r async for r in client.submit_orders(orders())]
    assert [r.client_order_id for r in results] == ["a1", "b1", "bad", "b3", "c1"]
    assert [r.batch_id for r in results] == ["b1", "b2", "b2", "b2", "b3"]
    assert [r.index for r in results] == [0, 0, 1, 2, 0]
    assert [r.ok for r in results] == [True, True, False, True, True]
    assert isinstance(results[2].error, InvalidArgument)
    assert results[3].unwrap().client_order_id == "b3"


async def test_submit_orders_accepts_a_plain_list(server: Server) -> None:
    server.execution.submit_orders = batch_echo()
    async with ExecutionClient.connect(server.target) as client:
        results = [r async for r in client.submit_orders([market(cid="x"), market(cid="y")])]
    assert [r.client_order_id for r in results] == ["x", "y"]


async def test_an_invalid_order_in_a_stream_stops_sending_after_earlier_results(server: Server) -> None:
    server.execution.submit_orders = batch_echo()
    bad = OrderRequest(account="", symbol="BTC-USDT", side=Side.BUY, type=market().type, quantity=Decimal(1))
    async with ExecutionClient.connect(server.target) as client:
        seen: list[str] = []
        with pytest.raises(ValidationError) as caught:
            async for result in client.submit_orders([market(cid="ok1"), bad, market(cid="never")]):
                seen.append(result.client_order_id)
    assert seen == ["ok1"]
    assert caught.value.field == "account"


async def test_a_response_with_the_wrong_number_of_results_is_a_protocol_error(server: Server) -> None:
    async def short(requests: Any, context: Any) -> AsyncIterator[svc_pb.SubmitOrdersResponse]:
        async for request in requests:
            yield svc_pb.SubmitOrdersResponse(results=[], batch_id=request.batch_id)

    server.execution.submit_orders = short
    async with ExecutionClient.connect(server.target) as client:
        with pytest.raises(ProtocolError, match="0 results"):
            async for _ in client.submit_orders([[market(), market()]]):
                pass


def update(sequence: int, shard: str = "s0") -> svc_pb.SubscribeOrderUpdatesResponse:
    return svc_pb.SubscribeOrderUpdatesResponse(
        update=pb.OrderUpdate(
            shard=shard,
            sequence=sequence,
            event=pb.ORDER_EVENT_TYPE_ACKNOWLEDGED,
            order=proto_order(sequence=sequence),
            progress="0",
        )
    )


def live(sequence: int, shard: str = "s0") -> svc_pb.SubscribeOrderUpdatesResponse:
    return svc_pb.SubscribeOrderUpdatesResponse(live=pb.ShardCursor(shard=shard, sequence=sequence))


async def test_order_updates_reconnect_and_resume_without_gap_or_duplicate(server: Server) -> None:
    subscriptions: list[svc_pb.SubscribeOrderUpdatesRequest] = []

    async def subscribe(request: Any, context: Any) -> AsyncIterator[Any]:
        subscriptions.append(request)
        if len(subscriptions) == 1:
            yield live(0)
            for sequence in (1, 2, 3):
                yield update(sequence)
            await abort_with(context, rich_status(grpc.StatusCode.UNAVAILABLE, "gateway restarting"))
        else:
            # Replays from the cursor, overlapping by one: the client must drop the duplicate.
            for sequence in (3, 4, 5):
                yield update(sequence)
            yield live(5)
            await asyncio.sleep(30)

    server.execution.subscribe = subscribe
    async with ExecutionClient.connect(server.target, stream_retry=FAST_STREAM_RETRY) as client:
        async with client.order_updates(accounts=["acct"]) as updates:
            received = [(u.shard, u.sequence) async for u in _take(updates, 5)]
            assert updates.cursors == {"s0": 5}
            assert updates.reconnects == 1
    assert received == [("s0", n) for n in (1, 2, 3, 4, 5)]
    assert list(subscriptions[0].accounts) == ["acct"] and not subscriptions[0].resume_from
    assert [(c.shard, c.sequence) for c in subscriptions[1].resume_from] == [("s0", 3)]


async def test_order_updates_resume_from_a_given_cursor_and_go_live(server: Server) -> None:
    subscriptions: list[svc_pb.SubscribeOrderUpdatesRequest] = []

    async def subscribe(request: Any, context: Any) -> AsyncIterator[Any]:
        subscriptions.append(request)
        yield update(11)
        yield live(11)
        await asyncio.sleep(30)

    server.execution.subscribe = subscribe
    async with ExecutionClient.connect(server.target) as client:
        async with client.order_updates(resume_from={"s0": 10}) as updates:
            await updates.wait_live(timeout=5)
            assert updates.live_shards == {"s0"}
            first = await anext(updates)
    assert (first.sequence, first.event) == (11, OrderEventType.ACKNOWLEDGED)
    assert first.order.status is OrderStatus.NEW
    assert [(c.shard, c.sequence) for c in subscriptions[0].resume_from] == [("s0", 10)]


async def test_a_live_cursor_is_where_a_reconnect_resumes_when_no_update_came(server: Server) -> None:
    subscriptions: list[svc_pb.SubscribeOrderUpdatesRequest] = []

    async def subscribe(request: Any, context: Any) -> AsyncIterator[Any]:
        subscriptions.append(request)
        if len(subscriptions) == 1:
            yield live(41)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "bye")
        yield update(42)
        await asyncio.sleep(30)

    server.execution.subscribe = subscribe
    async with ExecutionClient.connect(server.target, stream_retry=FAST_STREAM_RETRY) as client:
        async with client.order_updates() as updates:
            assert (await anext(updates)).sequence == 42
    assert [(c.shard, c.sequence) for c in subscriptions[1].resume_from] == [("s0", 41)]


async def test_a_non_retryable_stream_error_ends_iteration_with_that_error(server: Server) -> None:
    async def subscribe(request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not your account")
        yield update(1)  # unreachable; makes this an async generator

    server.execution.subscribe = subscribe
    async with ExecutionClient.connect(server.target) as client:
        updates = client.order_updates(accounts=["someone-else"])
        with pytest.raises(PermissionDenied):
            await updates.wait_live(timeout=5)
        with pytest.raises(PermissionDenied):
            await anext(updates)
        with pytest.raises(StopAsyncIteration):
            await anext(updates)


async def test_order_updates_give_up_after_the_stream_retry_policy(server: Server) -> None:
    calls = 0

    async def subscribe(request: Any, context: Any) -> AsyncIterator[Any]:
        nonlocal calls
        calls += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        yield update(1)

    server.execution.subscribe = subscribe
    async with ExecutionClient.connect(server.target, stream_retry=FAST_STREAM_RETRY) as client:
        with pytest.raises(Unavailable):
            async for _ in client.order_updates():
                pass
    assert calls == FAST_STREAM_RETRY.max_attempts


async def test_closing_the_client_ends_an_open_order_update_stream(server: Server) -> None:
    async def subscribe(request: Any, context: Any) -> AsyncIterator[Any]:
        yield live(0)
        await asyncio.sleep(30)

    server.execution.subscribe = subscribe
    client = ExecutionClient.connect(server.target)
    updates = client.order_updates()
    await updates.wait_live(timeout=5)
    consumer = asyncio.create_task(anext(updates))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(consumer, 5)


async def test_market_data_streams_and_follows_add_and_remove(server: Server) -> None:
    async with ExecutionClient.connect(server.target) as client:
        async with client.market_data(["BTC-USDT"]) as stream:
            first = await anext(stream)
            await stream.add(["ETH-USDT"])
            second = await anext(stream)
            await stream.remove(["BTC-USDT"])
            assert stream.symbols == {"ETH-USDT"}
            await stream.add(["SOL-USDT"])
            third = await anext(stream)
    assert [e.symbol for e in (first, second, third)] == ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
    assert isinstance(first.payload, TopOfBook) and first.payload.ask_price == Decimal(101)
    actions = [(r.WhichOneof("action"), list(getattr(r, r.WhichOneof("action")).symbols)) for r in server.market_data.requests]
    assert actions == [
        ("subscribe", ["BTC-USDT"]),
        ("subscribe", ["ETH-USDT"]),
        ("unsubscribe", ["BTC-USDT"]),
        ("subscribe", ["SOL-USDT"]),
    ]


async def test_market_data_from_an_unreachable_server_is_unavailable_without_reconnect() -> None:
    async with ExecutionClient.connect("127.0.0.1:1") as client:
        with pytest.raises(Unavailable):
            async with client.market_data(["BTC-USDT"], reconnect=False) as stream:
                await anext(stream)


async def test_a_reconnecting_market_data_stream_says_so_then_gives_up_with_unavailable() -> None:
    async with ExecutionClient.connect("127.0.0.1:1", stream_retry=FAST_STREAM_RETRY) as client:
        async with client.market_data(["BTC-USDT"]) as stream:
            frames = []
            with pytest.raises(Unavailable):
                while True:
                    frames.append(await asyncio.wait_for(anext(stream), 5))
            assert stream.status("BTC-USDT") is FeedStatus.RECONNECTING
    assert len(frames) == FAST_STREAM_RETRY.max_attempts - 1
    assert all(isinstance(f.payload, StatusFrame) and f.payload.status is FeedStatus.RECONNECTING for f in frames)


async def _take(stream: AsyncIterator[Any], count: int) -> AsyncIterator[Any]:
    for _ in range(count):
        yield await asyncio.wait_for(anext(stream), 5)


async def test_a_reconnected_market_data_stream_subscribes_to_what_it_had_in_few_messages() -> None:
    from .conftest import FakeMarketData
    from execbridge._proto.v1 import market_data_service_pb2_grpc as md_grpc

    first, second = FakeMarketData(), FakeMarketData()
    server = grpc.aio.server()
    md_grpc.add_MarketDataServiceServicer_to_server(first, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with ExecutionClient.connect(f"127.0.0.1:{port}", stream_retry=RetryPolicy(max_attempts=50, initial_backoff=0.05, max_backoff=0.1)) as client:
        async with client.market_data(["BTC-USDT"]) as stream:
            await anext(stream)
            for symbol in ("ETH-USDT", "SOL-USDT", "XRP-USDT"):
                await stream.add([symbol])
            await stream.remove(["ETH-USDT"])
            await server.stop(None)
            event = await asyncio.wait_for(anext(stream), 5)
            while not isinstance(event.payload, StatusFrame):
                event = await asyncio.wait_for(anext(stream), 5)
            assert event.payload.status is FeedStatus.RECONNECTING
            server = grpc.aio.server()
            md_grpc.add_MarketDataServiceServicer_to_server(second, server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            got = {(await asyncio.wait_for(anext(stream), 10)).symbol for _ in range(3)}
    await server.stop(None)
    assert got == {"BTC-USDT", "SOL-USDT", "XRP-USDT"}
    assert [list(r.subscribe.symbols) for r in second.requests] == [["BTC-USDT", "SOL-USDT", "XRP-USDT"]]
