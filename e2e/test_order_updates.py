"""Order updates resume from a sequence after a reconnect, with no gap and no duplicate.

Both tests follow every account, so the shard's sequence numbers they see must be
contiguous: any gap is a lost update, any repeat a duplicate.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from execbridge import (
    ExecutionClient,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    RetryPolicy,
    Side,
)
from execbridge._convert import order_request_to_proto
from execbridge._proto.internal.v1 import executor_service_pb2 as internal_pb
from execbridge._proto.internal.v1 import executor_service_pb2_grpc as internal_grpc
from execbridge._proto.v1 import execution_service_pb2 as svc_pb
from helpers import EVENT_TIMEOUT, describe, until_filled
from stack import Stack

pytestmark = pytest.mark.asyncio


def market(account: str, tag: str) -> OrderRequest:
    return OrderRequest.market(
        account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.001",
        client_order_id=f"{tag}-{uuid.uuid4().hex[:8]}",
    )


def ids(orders: list[OrderRequest]) -> list[str]:
    return [o.client_order_id for o in orders]


def assert_contiguous(updates: list[OrderUpdate]) -> None:
    shards = {u.shard for u in updates}
    assert len(shards) == 1, f"expected one shard, got {shards}"
    sequences = [u.sequence for u in updates]
    expected = list(range(sequences[0], sequences[0] + len(sequences)))
    assert sequences == expected, f"gap or duplicate: {describe(updates)}"


async def test_a_new_subscription_resumes_after_the_cursor_with_no_gap_and_no_duplicate(
    client: ExecutionClient, account: str
) -> None:
    first_orders = [market(account, "before"), market(account, "before")]
    async with client.order_updates() as first:
        await first.wait_live(timeout=EVENT_TIMEOUT)
        for order in first_orders:
            await client.submit_order(order)
        seen_first = await until_filled(first, ids(first_orders))
        cursors = dict(first.cursors)
    assert cursors == {seen_first[-1].shard: seen_first[-1].sequence}

    # Nobody listens while these trade.
    missed_orders = [market(account, "missed"), market(account, "missed")]
    for order in missed_orders:
        await client.submit_order(order)
    await asyncio.sleep(0.5)  # let the fills happen while nobody listens

    async with client.order_updates(resume_from=cursors) as second:
        seen_second = await until_filled(second, ids(missed_orders))
        await second.wait_live(timeout=EVENT_TIMEOUT)

    assert_contiguous(seen_first)
    assert_contiguous(seen_second)
    shard = seen_first[-1].shard
    assert seen_second[0].sequence == cursors[shard] + 1, (
        f"resumed at {seen_second[0].sequence}, expected {cursors[shard] + 1}: {describe(seen_second)}"
    )
    replayed = {u.order.client_order_id for u in seen_second}
    assert {o.client_order_id for o in missed_orders} <= replayed


async def test_the_update_stream_survives_a_gateway_restart_and_replays_what_happened_meanwhile() -> None:
    account = f"e2e-restart-{uuid.uuid4().hex[:8]}"
    patient = RetryPolicy(max_attempts=60, initial_backoff=0.1, max_backoff=0.5)
    with Stack() as stack:
        async with ExecutionClient.connect(stack.gateway_target, stream_retry=patient) as client:
            await client.wait_ready(timeout=EVENT_TIMEOUT)
            async with client.order_updates() as updates:
                await updates.wait_live(timeout=EVENT_TIMEOUT)
                before = market(account, "before")
                await client.submit_order(before)
                seen = await until_filled(updates, ids([before]))

                assert await asyncio.to_thread(stack.stop_service, "gateway") == 0

                # While the gateway is down, an order reaches the executor directly.
                meanwhile = market(account, "meanwhile")
                async with grpc.aio.insecure_channel(stack["executor"].listen) as channel:
                    executor = internal_grpc.ExecutorServiceStub(channel)
                    await executor.SubmitOrder(
                        internal_pb.SubmitOrderRequest(
                            caller=internal_pb.Caller(principal="e2e", correlation_id=uuid.uuid4().hex),
                            request=svc_pb.SubmitOrderRequest(order=order_request_to_proto(meanwhile)),
                        ),
                        timeout=EVENT_TIMEOUT,
                    )
                await asyncio.sleep(0.3)  # the fill happens while the gateway is down

                await asyncio.to_thread(stack.start_service, "gateway")
                after = market(account, "after")
                await client.submit_order(after)
                seen += await until_filled(updates, ids([meanwhile, after]), timeout=EVENT_TIMEOUT * 2)
                reconnects = updates.reconnects

    assert reconnects >= 1
    assert_contiguous(seen)
    filled_in_order = [u.order.client_order_id for u in seen if u.order.status is OrderStatus.FILLED]
    assert filled_in_order == ids([before, meanwhile, after]), describe(seen)
