"""The SDK's surface against the real services: every method, page iteration, packed
batch submission, the sync facade, market data status, and errors by reason."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from execbridge import (
    ExecutionClient,
    IdempotencyMismatch,
    OrderRequest,
    OrderStatus,
    PermissionDenied,
    Side,
    SyncExecutionClient,
    TopOfBook,
    TradingState,
    ValidationError,
)
from helpers import EVENT_TIMEOUT, far_below, quote, until_filled
from stack import Stack

pytestmark = pytest.mark.asyncio


def market(account: str, side: Side = Side.BUY, quantity: str = "0.001") -> OrderRequest:
    return OrderRequest.market(account=account, symbol="BTC-USDT", side=side, quantity=quantity)


async def test_every_query_and_its_page_iterator_agree(client: ExecutionClient, account: str) -> None:
    orders = [market(account) for _ in range(5)]
    async with client.order_updates(accounts=[account]) as updates:
        await updates.wait_live(timeout=EVENT_TIMEOUT)
        for order in orders:
            await client.submit_order(order, timeout=EVENT_TIMEOUT)
        await until_filled(updates, [o.client_order_id for o in orders])

    listed = [o async for o in client.iter_orders(account, page_size=2)]
    assert sorted(o.client_order_id for o in listed) == sorted(o.client_order_id for o in orders)
    first_page = await client.list_orders(account, page_size=2)
    assert len(first_page) == 2 and first_page.next_page_token is not None

    fills = [f async for f in client.iter_trade_history(account, page_size=2)]
    assert {f.client_order_id for f in fills} == {o.client_order_id for o in orders}
    portfolio = await client.positions(account)
    position = portfolio.position("BTC-USDT")
    assert position is not None and position.quantity == Decimal("0.005")

    one = await client.get_order(account=account, client_order_id=orders[0].client_order_id)
    assert one.status is OrderStatus.FILLED


async def test_cancel_order_and_cancel_all_end_resting_orders(client: ExecutionClient, account: str) -> None:
    top = await quote(client, "BTC-USDT")
    resting = [
        OrderRequest.limit(account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.001", price=far_below(top))
        for _ in range(3)
    ]
    for order in resting:
        result = await client.submit_order(order)
        assert result.order.status is OrderStatus.NEW
    canceled = await client.cancel_order(account=account, client_order_id=resting[0].client_order_id)
    assert canceled.status in (OrderStatus.PENDING_CANCEL, OrderStatus.CANCELED)
    rest = await client.cancel_all(account)
    assert {o.client_order_id for o in rest} == {o.client_order_id for o in resting[1:]}
    await asyncio.sleep(0.2)
    assert [o async for o in client.iter_orders(account, open_only=True)] == []


async def test_submit_orders_packs_a_thousand_orders_and_answers_each_in_order(client: ExecutionClient, account: str) -> None:
    orders = [market(account) for _ in range(1000)]
    results = [r async for r in client.submit_orders(orders, max_batch=250)]
    assert [r.client_order_id for r in results] == [o.client_order_id for o in orders]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert len({r.batch_id for r in results}) < 100  # many orders per message


async def test_a_reused_client_order_id_with_other_fields_names_them(client: ExecutionClient, account: str) -> None:
    first = market(account)
    await client.submit_order(first)
    changed = market(account, quantity="0.002")
    clash = OrderRequest.market(
        account=account, symbol="BTC-USDT", side=Side.BUY, quantity=changed.quantity, client_order_id=first.client_order_id
    )
    with pytest.raises(IdempotencyMismatch) as caught:
        await client.submit_order(clash)
    assert "quantity" in caught.value.differing_fields
    assert caught.value.correlation_id


async def test_admin_calls_need_the_admin_permission(client: ExecutionClient, account: str) -> None:
    with pytest.raises(PermissionDenied) as caught:
        await client.admin.set_trading_state(account, TradingState.HALTED, reason="drill")
    assert caught.value.reason == "MISSING_PERMISSION"
    with pytest.raises(ValidationError):
        await client.admin.flatten(account, reason="")


async def test_market_data_symbols_can_be_added_and_removed_and_report_their_status(client: ExecutionClient) -> None:
    seen: set[str] = set()
    async with client.market_data(["BTC-USDT"]) as stream:
        await stream.add(["ETH-USDT"])
        async with asyncio.timeout(EVENT_TIMEOUT):
            async for event in stream:
                if isinstance(event.payload, TopOfBook):
                    seen.add(event.symbol)
                if seen == {"BTC-USDT", "ETH-USDT"}:
                    break
        await stream.remove(["BTC-USDT"])
        assert stream.symbols == {"ETH-USDT"}
        assert stream.status("ETH-USDT").name == "LIVE"


async def test_the_sync_client_trades_and_streams(stack: Stack, account: str) -> None:
    def body() -> None:
        with SyncExecutionClient.connect(stack.gateway_target) as client:
            client.wait_ready(EVENT_TIMEOUT)
            with client.order_updates(accounts=[account]) as updates:
                updates.wait_live(EVENT_TIMEOUT)
                order = market(account)
                assert client.submit_order(order).order.client_order_id == order.client_order_id
                for update in updates:
                    if update.order.status is OrderStatus.FILLED:
                        break
            results = list(client.submit_orders([market(account) for _ in range(10)]))
            assert all(r.ok for r in results) and len(results) == 10
            assert len(list(client.iter_orders(account))) == 11

    await asyncio.to_thread(body)
