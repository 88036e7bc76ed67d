"""Market data through the gateway: ticks for subscribed symbols, add and remove mid-stream."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest

from execbridge import ExecutionClient, MarketDataEvent, MarketDataStream, TopOfBook
from helpers import EVENT_TIMEOUT
from stack import Stack

pytestmark = pytest.mark.asyncio


async def read_for(stream: MarketDataStream, seconds: float) -> list[MarketDataEvent]:
    """Every event that arrives within ``seconds``."""
    events: list[MarketDataEvent] = []
    try:
        async with asyncio.timeout(seconds):
            async for event in stream:
                events.append(event)
    except TimeoutError:
        pass
    return events


async def read_until(stream: MarketDataStream, symbol: str, count: int) -> list[MarketDataEvent]:
    """Events up to and including the ``count``-th top of book of ``symbol``."""
    events: list[MarketDataEvent] = []
    seen = 0
    async with asyncio.timeout(EVENT_TIMEOUT):
        async for event in stream:
            events.append(event)
            if event.symbol == symbol and isinstance(event.payload, TopOfBook):
                seen += 1
                if seen == count:
                    return events
    raise AssertionError(f"the stream ended after {seen} ticks of {symbol}")


def tops(events: list[MarketDataEvent], symbol: str) -> list[TopOfBook]:
    return [e.payload for e in events if e.symbol == symbol and isinstance(e.payload, TopOfBook)]


async def test_a_subscribed_symbol_streams_two_sided_ticks_in_sequence(client: ExecutionClient) -> None:
    async with client.market_data(["BTC-USDT"]) as stream:
        events = await read_until(stream, "BTC-USDT", 5)
    assert {e.symbol for e in events} == {"BTC-USDT"}
    assert {e.venue for e in events} == {"paper"}
    for top in tops(events, "BTC-USDT"):
        assert top.bid_price is not None and top.ask_price is not None, top
        assert 0 < top.bid_price < top.ask_price, top
        assert top.bid_quantity and top.ask_quantity, top
    sequences = [e.sequence for e in events]
    assert sequences == sorted(set(sequences)), f"not strictly increasing: {sequences}"


async def test_symbols_added_and_removed_mid_stream_start_and_stop_ticking(client: ExecutionClient) -> None:
    async with client.market_data(["BTC-USDT"]) as stream:
        await read_until(stream, "BTC-USDT", 2)

        await stream.add(["ETH-USDT"])
        after_add = await read_until(stream, "ETH-USDT", 3)
        assert tops(after_add, "ETH-USDT"), "no ETH-USDT tick after adding it"

        await stream.remove(["BTC-USDT"])
        removed_at = time.monotonic()
        # Ticks already in flight may still arrive; a few tick intervals later none may.
        settle = await read_until(stream, "ETH-USDT", 3)
        late = await read_for(stream, 1.5)

    by_symbol: defaultdict[str, int] = defaultdict(int)
    for event in late:
        by_symbol[event.symbol] += 1
    assert by_symbol["BTC-USDT"] == 0, (
        f"BTC-USDT still ticking {time.monotonic() - removed_at:.1f}s after remove: {dict(by_symbol)}"
    )
    assert by_symbol["ETH-USDT"] > 0, f"ETH-USDT stopped too: {dict(by_symbol)}"
    assert stream.symbols == {"ETH-USDT"}
    assert tops(settle, "ETH-USDT")


async def test_separate_streams_get_their_own_symbols_only(client: ExecutionClient) -> None:
    async with client.market_data(["SOL-USDT"]) as sol, client.market_data(["ETH-USDT"]) as eth:
        sol_events = await read_until(sol, "SOL-USDT", 3)
        eth_events = await read_until(eth, "ETH-USDT", 3)
    assert {e.symbol for e in sol_events} == {"SOL-USDT"}
    assert {e.symbol for e in eth_events} == {"ETH-USDT"}


async def test_closed_streams_leave_the_gateway_responsive_and_stoppable() -> None:
    # Its own stack: if closing streams wedges the gateway, no other test inherits it.
    with Stack(config={"gateway": {"server.shutdown_grace_secs": "3"}}) as own:
        async with ExecutionClient.connect(own.gateway_target) as fresh:
            async with fresh.market_data(["SOL-USDT"]) as first, fresh.market_data(["ETH-USDT"]) as second:
                await read_until(first, "SOL-USDT", 2)
                await read_until(second, "ETH-USDT", 2)
            await asyncio.sleep(0.5)

            started = time.monotonic()
            async with fresh.market_data(["BTC-USDT"]) as third:
                await read_until(third, "BTC-USDT", 2)
            took = time.monotonic() - started
            # Ticks come every 100 ms: two of them take a fraction of a second.
            assert took < 2, f"a new stream took {took:.1f}s to deliver two ticks after two streams closed"
            portfolio = await fresh.positions("nobody", timeout=2)
            assert portfolio.positions == ()
        exit_codes = own.stop()
    assert exit_codes["gateway"] == 0, f"the gateway did not stop on SIGTERM: {exit_codes}"
