"""SIGTERM drains the gateway: in-flight calls finish or fail UNAVAILABLE, nothing hangs,
and the process exits within its grace period."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from execbridge import (
    NO_RETRY,
    ExecbridgeError,
    ExecutionClient,
    OrderRequest,
    Side,
)
from helpers import EVENT_TIMEOUT
from stack import Stack

pytestmark = pytest.mark.asyncio

GRACE_SECS = 5
#: What a call may end with while the gateway shuts down.
ALLOWED = {"OK", "UNAVAILABLE"}


#: The full text of every outcome outside ALLOWED, for the failure message.
UNEXPECTED: list[str] = []


def outcome_of(error: BaseException, where: str = "") -> str:
    if isinstance(error, ExecbridgeError):
        name = error.code.name if error.code is not None else type(error).__name__
    else:
        name = f"{type(error).__name__}: {error}"
    if name not in ALLOWED:
        UNEXPECTED.append(f"{where}: {name}: {error!r}")
    return name


async def test_sigterm_to_the_gateway_lets_every_call_finish_or_fail_unavailable_within_the_grace() -> None:
    account = f"e2e-drain-{uuid.uuid4().hex[:8]}"
    with Stack(config={"gateway": {"server.shutdown_grace_secs": str(GRACE_SECS)}}) as stack:
        async with ExecutionClient.connect(
            stack.gateway_target, retry=NO_RETRY, stream_retry=NO_RETRY
        ) as client:
            await client.wait_ready(timeout=EVENT_TIMEOUT)
            outcomes: Counter[str] = Counter()
            terminated = asyncio.Event()
            give_up = time.monotonic() + 60  # a bound on the loops, should all else fail

            def order(tag: str) -> OrderRequest:
                return OrderRequest.market(
                    account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.001",
                    client_order_id=f"{tag}-{uuid.uuid4().hex[:12]}",
                )

            async def unary_worker(number: int) -> None:
                while time.monotonic() < give_up:
                    try:
                        await client.submit_order(order(f"u{number}"), timeout=GRACE_SECS + 10)
                        outcomes["OK"] += 1
                    except Exception as error:
                        outcomes[outcome_of(error, "unary")] += 1
                        if terminated.is_set():
                            return
                    await asyncio.sleep(0.02)

            async def batches() -> AsyncIterator[list[OrderRequest]]:
                while time.monotonic() < give_up:
                    yield [order("s"), order("s")]
                    await asyncio.sleep(0.02)

            async def stream_worker() -> None:
                try:
                    async for result in client.submit_orders(batches()):
                        outcomes["OK" if result.ok else f"order {outcome_of(result.error, 'batch order')}"] += 1  # type: ignore[arg-type]
                    outcomes["stream ended without error"] += 1
                except Exception as error:
                    outcomes[outcome_of(error, "batch stream")] += 1

            async def subscriber() -> None:
                try:
                    async with client.order_updates(accounts=[account]) as updates:
                        async for _ in updates:
                            pass
                    outcomes["update stream ended without error"] += 1
                except Exception as error:
                    outcomes[outcome_of(error, "update stream")] += 1

            workers = [asyncio.create_task(unary_worker(n)) for n in range(4)]
            workers += [asyncio.create_task(stream_worker()), asyncio.create_task(subscriber())]
            await asyncio.sleep(1.5)
            assert outcomes["OK"] > 0 and set(outcomes) == {"OK"}, f"before SIGTERM: {outcomes}"

            gateway = stack["gateway"].process
            assert gateway is not None
            started = time.monotonic()
            gateway.send_signal(signal.SIGTERM)
            terminated.set()
            exit_code = await asyncio.to_thread(gateway.wait, GRACE_SECS + 10)
            elapsed = time.monotonic() - started

            _, hung = await asyncio.wait(workers, timeout=GRACE_SECS + 10)
            for task in hung:
                task.cancel()
            assert not hung, f"{len(hung)} calls still pending after the gateway exited; outcomes {outcomes}"

    assert elapsed <= GRACE_SECS + 1, f"the gateway took {elapsed:.1f}s to exit (grace {GRACE_SECS}s)"
    assert exit_code == 0, f"the gateway exited with {exit_code} on SIGTERM"
    assert set(outcomes) <= ALLOWED, f"calls ended otherwise than OK or UNAVAILABLE: {outcomes}: {UNEXPECTED}"
    assert outcomes["UNAVAILABLE"] >= 1, outcomes
