"""The SDK's resilience against the real services: a submit retried after a forced
timeout makes one order; the circuit breaker opens while the gateway is down and closes
when it is back; order updates resume across a gateway restart under load with no gap and
no duplicate; market data resubscribes by itself after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from execbridge import (
    CircuitBreakerConfig,
    CircuitOpen,
    CircuitState,
    ExecutionClient,
    FeedStatus,
    NO_RETRY,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    RetryPolicy,
    Side,
    StatusFrame,
    TopOfBook,
    Unavailable,
)
from helpers import EVENT_TIMEOUT, describe
from stack import Stack

pytestmark = pytest.mark.asyncio

PATIENT = RetryPolicy(max_attempts=100, initial_backoff=0.05, max_backoff=0.5)


def market(account: str, tag: str = "o") -> OrderRequest:
    return OrderRequest.market(
        account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.001", client_order_id=f"{tag}-{uuid.uuid4().hex[:10]}"
    )


class StallingProxy:
    """A TCP proxy whose server-to-client direction can be held: requests arrive, answers
    wait. That is a lost answer, as a client sees a slow network or a GC pause."""

    def __init__(self, upstream: str) -> None:
        self.host, port = upstream.rsplit(":", 1)
        self.port = int(port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def target(self) -> str:
        assert self._server is not None
        return "127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]

    async def __aenter__(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, held: bool) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if held:
                        await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for task in (
            asyncio.create_task(pump(reader, up_writer, False)),
            asyncio.create_task(pump(up_reader, writer, True)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def test_a_submit_retried_after_a_forced_timeout_yields_one_order(stack: Stack, account: str) -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.05, max_backoff=0.2, attempt_timeout=0.3)
    async with StallingProxy(stack.gateway_target) as proxy:
        async with ExecutionClient.connect(proxy.target, retry=policy) as client:
            await client.wait_ready(timeout=EVENT_TIMEOUT)
            await client.positions(account)  # the connection is up before the stall
            order = market(account, "stall")
            proxy.flowing.clear()
            asyncio.get_running_loop().call_later(0.5, proxy.flowing.set)
            result = await client.submit_order(order, timeout=EVENT_TIMEOUT)
            matching = [o async for o in client.iter_orders(account) if o.client_order_id == order.client_order_id]
    # The first try reached the gateway and made the order; its answer was held past the
    # try's deadline; a retry with the same client_order_id found the same order.
    assert result.order.client_order_id == order.client_order_id
    assert len(matching) == 1, matching
    assert result.order.order_id == matching[0].order_id


async def test_the_circuit_opens_while_the_gateway_is_down_and_closes_when_it_is_back(account: str) -> None:
    breaker = CircuitBreakerConfig(failure_threshold=3, reset_timeout=0.5)
    with Stack() as stack:
        async with ExecutionClient.connect(stack.gateway_target, retry=NO_RETRY, circuit_breaker=breaker, timeout=2) as client:
            await client.positions(account)
            assert await asyncio.to_thread(stack.stop_service, "gateway") == 0
            failures = 0
            with pytest.raises(CircuitOpen):
                for _ in range(10):
                    try:
                        await client.positions(account)
                    except CircuitOpen:
                        raise
                    except Unavailable:
                        failures += 1
            assert failures == 3 and client.circuit_state is CircuitState.OPEN

            await asyncio.to_thread(stack.start_service, "gateway")
            async with asyncio.timeout(EVENT_TIMEOUT):
                while True:
                    try:
                        await client.positions(account)
                        break
                    except Unavailable:  # CircuitOpen until the probe, then the probe's outcome
                        await asyncio.sleep(0.1)
            assert client.circuit_state is CircuitState.CLOSED


async def test_order_updates_resume_across_a_restart_under_load_with_no_gap_and_no_duplicate() -> None:
    account = f"e2e-sdk-restart-{uuid.uuid4().hex[:8]}"
    submitted: list[str] = []
    with Stack() as stack:
        async with ExecutionClient.connect(
            stack.gateway_target, stream_retry=PATIENT, retry=PATIENT, timeout=EVENT_TIMEOUT * 2, circuit_breaker=None
        ) as client:
            await client.wait_ready(timeout=EVENT_TIMEOUT)
            async with client.order_updates() as updates:
                await updates.wait_live(timeout=EVENT_TIMEOUT)

                async def trade() -> None:
                    for _ in range(30):
                        order = market(account, "load")
                        await client.submit_order(order)  # retried through the restart
                        submitted.append(order.client_order_id)
                        await asyncio.sleep(0.02)

                async def restart() -> None:
                    await asyncio.sleep(0.2)
                    assert await asyncio.to_thread(stack.stop_service, "gateway") == 0
                    await asyncio.sleep(0.3)
                    await asyncio.to_thread(stack.start_service, "gateway")

                seen: list[OrderUpdate] = []

                ended: dict[str, OrderStatus] = {}

                async def follow() -> None:
                    async for update in updates:
                        seen.append(update)
                        if update.order.status.is_terminal and update.order.account == account:
                            ended[update.order.client_order_id] = update.order.status

                follower = asyncio.create_task(follow())
                try:
                    async with asyncio.timeout(EVENT_TIMEOUT * 2):
                        await asyncio.gather(trade(), restart())
                        # A submit returns after its fill may already have been delivered:
                        # wait for the set, not for one more update.
                        while not set(ended) >= set(submitted):
                            await asyncio.sleep(0.05)
                except TimeoutError:
                    missing = sorted(set(submitted) - set(ended))
                    pytest.fail(f"{len(submitted)} submitted; no terminal update for {missing}; saw {describe(seen)}")
                finally:
                    follower.cancel()
                    await asyncio.gather(follower, return_exceptions=True)
                assert set(ended.values()) == {OrderStatus.FILLED}, ended
                reconnects = updates.reconnects
            orders = [o async for o in client.iter_orders(account)]

    assert reconnects >= 1
    sequences = [u.sequence for u in seen]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), describe(seen)
    assert sorted(o.client_order_id for o in orders) == sorted(submitted)  # one order per id


async def _top_of_book(stream: AsyncIterator[object]) -> None:
    async for event in stream:
        if isinstance(getattr(event, "payload", None), TopOfBook):
            return


async def test_market_data_reconnects_and_resubscribes_after_a_gateway_restart() -> None:
    with Stack() as stack:
        async with ExecutionClient.connect(stack.gateway_target, stream_retry=PATIENT) as client:
            async with client.market_data(["BTC-USDT", "ETH-USDT"]) as stream:
                async with asyncio.timeout(EVENT_TIMEOUT):
                    await _top_of_book(stream)
                assert await asyncio.to_thread(stack.stop_service, "gateway") == 0
                frames = []
                async with asyncio.timeout(EVENT_TIMEOUT):
                    async for event in stream:
                        if isinstance(event.payload, StatusFrame):
                            frames.append(event.payload.status)
                            if event.payload.status is FeedStatus.RECONNECTING:
                                break
                assert stream.status("BTC-USDT") is FeedStatus.RECONNECTING
                await asyncio.to_thread(stack.start_service, "gateway")
                symbols: set[str] = set()
                async with asyncio.timeout(EVENT_TIMEOUT):
                    async for event in stream:
                        if isinstance(event.payload, TopOfBook):
                            symbols.add(event.symbol)
                        if symbols == {"BTC-USDT", "ETH-USDT"}:
                            break
                assert stream.reconnects >= 1
                assert stream.status("BTC-USDT") is FeedStatus.LIVE
