"""Orders from the Python client through the gateway and executor to the paper venue.

Prices for limit orders come from the marketdata service directly (`prices`), so these
tests do not depend on the gateway's market data proxy, which test_market_data covers.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from execbridge import (
    ExecutionClient,
    Liquidity,
    OrderEventType,
    OrderRequest,
    OrderStatus,
    Side,
)
from helpers import EVENT_TIMEOUT, describe, far_below, marketable_buy, next_update, quote

pytestmark = pytest.mark.asyncio


async def test_a_market_buy_fills_and_the_fill_shows_in_every_query(client: ExecutionClient, account: str) -> None:
    async with client.order_updates(accounts=[account]) as updates:
        await updates.wait_live(timeout=EVENT_TIMEOUT)
        order = OrderRequest.market(account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.01")
        submitted = await client.submit_order(order)
        assert submitted.order.status in (OrderStatus.NEW, OrderStatus.FILLED), submitted.order
        assert submitted.order.client_order_id == order.client_order_id
        assert not submitted.duplicate

        filled, seen = await next_update(updates, lambda u: u.event is OrderEventType.FILLED)

    assert filled.order.client_order_id == order.client_order_id
    assert filled.order.status is OrderStatus.FILLED, describe(seen)
    assert filled.progress == Decimal(1)
    fill = filled.fill
    assert fill is not None
    assert (fill.quantity, fill.side, fill.symbol, fill.account) == (Decimal("0.01"), Side.BUY, "BTC-USDT", account)
    assert fill.price > 0
    assert fill.liquidity is Liquidity.TAKER
    sequences = [u.sequence for u in seen]
    assert sequences == sorted(set(sequences)), f"sequences not strictly increasing: {describe(seen)}"

    fetched = await client.get_order(account=account, client_order_id=order.client_order_id)
    assert fetched.status is OrderStatus.FILLED
    assert fetched.order_id == submitted.order.order_id
    assert fetched.filled_quantity == Decimal("0.01")
    assert fetched.remaining_quantity == 0
    assert fetched.average_fill_price == fill.price
    assert fetched.sequence >= filled.sequence

    by_order_id = await client.get_order(account=account, order_id=submitted.order.order_id)
    assert by_order_id.client_order_id == order.client_order_id

    listed = await client.list_orders(account)
    assert [o.order_id for o in listed] == [submitted.order.order_id]
    assert listed.next_page_token is None
    assert (await client.list_orders(account, open_only=True)).items == ()

    history = await client.trade_history(account)
    assert [(f.trade_id, f.price, f.quantity) for f in history] == [(fill.trade_id, fill.price, fill.quantity)]

    portfolio = await client.positions(account)
    position = portfolio.position("BTC-USDT")
    assert position is not None, portfolio
    assert position.quantity == Decimal("0.01")
    assert position.average_entry_price == fill.price


async def test_a_market_buy_then_sell_fill_near_each_other_and_flatten_the_position(client: ExecutionClient, account: str) -> None:
    buy = await client.submit_order(OrderRequest.market(account=account, symbol="ETH-USDT", side=Side.BUY, quantity="0.1"))
    sell = await client.submit_order(OrderRequest.market(account=account, symbol="ETH-USDT", side=Side.SELL, quantity="0.1"))
    async with asyncio.timeout(EVENT_TIMEOUT):
        while True:
            orders = {o.side: o for o in await client.list_orders(account)}
            if all(o.status is OrderStatus.FILLED for o in orders.values()) and len(orders) == 2:
                break
            await asyncio.sleep(0.05)
    assert {buy.order.order_id, sell.order.order_id} == {o.order_id for o in orders.values()}
    buy_price, sell_price = orders[Side.BUY].average_fill_price, orders[Side.SELL].average_fill_price
    assert buy_price is not None and sell_price is not None
    # Buys fill at the ask and sells at the bid; the book moves at most a few ticks between.
    assert abs(buy_price - sell_price) / buy_price < Decimal("0.01")
    position = (await client.positions(account)).position("ETH-USDT")
    assert position is not None and position.quantity == 0


async def test_a_far_limit_order_rests_until_canceled(
    client: ExecutionClient, prices: ExecutionClient, account: str
) -> None:
    top = await quote(prices, "BTC-USDT")
    async with client.order_updates(accounts=[account]) as updates:
        await updates.wait_live(timeout=EVENT_TIMEOUT)
        order = OrderRequest.limit(
            account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.01", price=far_below(top)
        )
        submitted = await client.submit_order(order)
        assert submitted.order.status is OrderStatus.NEW, submitted.order
        await next_update(updates, lambda u: u.order.status is OrderStatus.NEW)

        open_orders = await client.list_orders(account, open_only=True, symbol="BTC-USDT")
        assert [o.client_order_id for o in open_orders] == [order.client_order_id]
        assert open_orders.items[0].request.price == far_below(top)
        assert open_orders.items[0].filled_quantity == 0

        canceled = await client.cancel_order(account=account, client_order_id=order.client_order_id)
        assert canceled.status in (OrderStatus.PENDING_CANCEL, OrderStatus.CANCELED)
        final, seen = await next_update(updates, lambda u: u.order.status is OrderStatus.CANCELED)

    assert final.event is OrderEventType.CANCELED, describe(seen)
    assert final.order.filled_quantity == 0
    assert (await client.get_order(account=account, order_id=submitted.order.order_id)).status is OrderStatus.CANCELED
    assert (await client.list_orders(account, open_only=True)).items == ()
    assert (await client.trade_history(account)).items == ()


async def test_cancel_all_cancels_every_open_order_of_the_account(
    client: ExecutionClient, prices: ExecutionClient, account: str
) -> None:
    btc, eth = await quote(prices, "BTC-USDT"), await quote(prices, "ETH-USDT")
    resting = [
        await client.submit_order(
            OrderRequest.limit(account=account, symbol=symbol, side=Side.BUY, quantity="0.01", price=far_below(top))
        )
        for symbol, top in (("BTC-USDT", btc), ("ETH-USDT", eth))
    ]
    assert [r.order.status for r in resting] == [OrderStatus.NEW, OrderStatus.NEW]

    canceled = await client.cancel_all(account)
    assert {o.order_id for o in canceled} == {r.order.order_id for r in resting}
    async with asyncio.timeout(EVENT_TIMEOUT):
        while (await client.list_orders(account, open_only=True)).items:
            await asyncio.sleep(0.05)
    statuses = {o.status for o in await client.list_orders(account)}
    assert statuses == {OrderStatus.CANCELED}


async def test_a_marketable_limit_order_fills_at_its_limit_or_better(
    client: ExecutionClient, prices: ExecutionClient, account: str
) -> None:
    top = await quote(prices, "ETH-USDT")
    limit = marketable_buy(top)
    async with client.order_updates(accounts=[account]) as updates:
        await updates.wait_live(timeout=EVENT_TIMEOUT)
        submitted = await client.submit_order(
            OrderRequest.limit(account=account, symbol="ETH-USDT", side=Side.BUY, quantity="0.1", price=limit)
        )
        assert submitted.order.status in (OrderStatus.NEW, OrderStatus.FILLED), submitted.order
        filled, seen = await next_update(updates, lambda u: u.order.status is OrderStatus.FILLED)
    assert filled.fill is not None, describe(seen)
    assert filled.fill.price <= limit
    assert filled.order.average_fill_price is not None and filled.order.average_fill_price <= limit


async def test_resubmitting_a_client_order_id_returns_the_original_order(client: ExecutionClient, account: str) -> None:
    order = OrderRequest.market(account=account, symbol="SOL-USDT", side=Side.BUY, quantity="1")
    first = await client.submit_order(order)
    again = await client.submit_order(order)
    assert again.duplicate is True
    assert again.order.order_id == first.order.order_id
    assert [o.order_id for o in await client.list_orders(account)] == [first.order.order_id]


async def test_submit_orders_streams_one_result_per_order_in_order(
    client: ExecutionClient, prices: ExecutionClient, account: str
) -> None:
    top = await quote(prices, "BTC-USDT")

    def resting(n: int) -> OrderRequest:
        return OrderRequest.limit(
            account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.001",
            price=far_below(top), client_order_id=f"{account}-{n}",
        )

    batches: list[OrderRequest | list[OrderRequest]] = [
        resting(0),
        [resting(1), resting(2), resting(3)],
        [resting(4), resting(5)],
    ]
    results = [r async for r in client.submit_orders(batches)]

    assert [r.client_order_id for r in results] == [f"{account}-{n}" for n in range(6)]
    assert [r.index for r in results] == [0, 0, 1, 2, 0, 1]
    assert all(r.ok for r in results), [str(r.error) for r in results if r.error]
    assert len({r.unwrap().order_id for r in results}) == 6
    listed = await client.list_orders(account, open_only=True, page_size=1000)
    assert len(listed) == 6
    await client.cancel_all(account)
