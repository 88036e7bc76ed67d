"""Helpers of the end-to-end tests: waiting for updates, reading quotes, picking prices."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from execbridge import ExecutionClient, Order, OrderStatus, OrderUpdate, OrderUpdateStream, TopOfBook
from stack import Stack

#: Seconds any one expected event may take before a test fails (the paper venue answers
#: in milliseconds; the margin is for a loaded 2-core machine).
EVENT_TIMEOUT = 15.0


async def next_update(
    updates: OrderUpdateStream, predicate: Callable[[OrderUpdate], bool], *, timeout: float = EVENT_TIMEOUT
) -> tuple[OrderUpdate, list[OrderUpdate]]:
    """The first update matching ``predicate``, and every update read up to it."""
    seen: list[OrderUpdate] = []
    async with asyncio.timeout(timeout):
        async for update in updates:
            seen.append(update)
            if predicate(update):
                return update, seen
    raise AssertionError(f"the update stream ended before a matching update; saw {describe(seen)}")


def describe(updates: list[OrderUpdate]) -> str:
    return ", ".join(
        f"{u.shard}#{u.sequence} {u.order.client_order_id} {u.event.name}->{u.order.status.name}" for u in updates
    ) or "nothing"


async def quote(client: ExecutionClient, symbol: str) -> TopOfBook:
    """A current two-sided top of book of ``symbol``."""
    async with client.market_data([symbol]) as stream:
        async with asyncio.timeout(EVENT_TIMEOUT):
            async for event in stream:
                top = event.payload
                if (
                    event.symbol == symbol
                    and isinstance(top, TopOfBook)
                    and top.bid_price is not None
                    and top.ask_price is not None
                ):
                    return top
    raise AssertionError(f"the market data stream ended without a quote for {symbol}")


def far_below(top: TopOfBook) -> Decimal:
    """A buy price that rests: 3% under the bid, in whole units (a multiple of any tick)."""
    assert top.bid_price is not None
    return (top.bid_price * Decimal("0.97")).to_integral_value(rounding=ROUND_FLOOR)


def marketable_buy(top: TopOfBook) -> Decimal:
    """A buy price that crosses: 1% over the ask, in whole units."""
    assert top.ask_price is not None
    return (top.ask_price * Decimal("1.01")).to_integral_value(rounding=ROUND_CEILING)


def summary(order: Order) -> str:
    return f"{order.order_id} {order.client_order_id} {order.status.name} filled={order.filled_quantity}"


async def until_filled(
    updates: OrderUpdateStream, client_order_ids: list[str], *, timeout: float = EVENT_TIMEOUT
) -> list[OrderUpdate]:
    """Every update read until each of the orders was seen FILLED, in whatever order."""
    waiting = set(client_order_ids)
    seen: list[OrderUpdate] = []
    async with asyncio.timeout(timeout):
        async for update in updates:
            seen.append(update)
            if update.order.status is OrderStatus.FILLED:
                waiting.discard(update.order.client_order_id)
            if not waiting:
                return seen
    raise AssertionError(f"the update stream ended with {waiting} not filled; saw {describe(seen)}")


def drained(running: Stack) -> Iterator[Stack]:
    """A fixture's body for a started stack: yields it, then stops it and asserts that every
    service drained and exited 0 on SIGTERM (-9: killed after its grace period)."""
    try:
        yield running
    finally:
        exit_codes = running.stop()
    unclean = {name: code for name, code in exit_codes.items() if code != 0}
    assert not unclean, f"services did not exit 0 on SIGTERM (-9: killed after the grace): {unclean}; logs: {running.log_dir}"
