"""A tour of the execbridge client against the paper venue.

    python examples/demo_orchestrator.py --target 127.0.0.1:50051

It follows the account's order updates, samples market data, trades (market buy, market
sell, a resting limit order it then cancels, a marketable limit order), and prints the
orders, trade history and positions. Everything happens on the paper venue in PAPER mode:
no real money moves. ``e2e/demo.py`` starts the services and runs this for you.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from execbridge import (
    ExecbridgeError,
    ExecutionClient,
    Order,
    OrderEventType,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    OrderUpdateStream,
    Side,
    TopOfBook,
    TradingMode,
)

ACCOUNT = "demo"
VENUE = "paper"
MODE = TradingMode.PAPER
SYMBOLS = ("BTC-USDT", "ETH-USDT")
TICKS_PER_SYMBOL = 3
WAIT = 15.0  # seconds any one step may take


class DemoError(RuntimeError):
    """Something did not happen the way the paper venue promises."""


# --- printing ------------------------------------------------------------------------


def section(number: int, title: str) -> None:
    heading = f"{number:>2}. {title}"
    print(f"\n{heading}\n{'-' * len(heading)}")


def say(text: str = "") -> None:
    print(f"    {text}".rstrip())


def num(value: Decimal | None) -> str:
    """A decimal without trailing zeros or exponent ("-" when absent)."""
    if value is None:
        return "-"
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def progress_bar(fraction: Decimal, width: int = 10) -> str:
    filled = int((fraction * width).to_integral_value(rounding=ROUND_FLOOR))
    return "[" + "#" * filled + "." * (width - filled) + f"] {fraction * 100:>3.0f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if not rows:
        say("(none)")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    say("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    say("  ".join("-" * w for w in widths))
    for row in rows:
        say("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def describe_update(update: OrderUpdate) -> str:
    order = update.order
    head = (
        f"    update {update.shard}#{update.sequence:<4} {order.symbol:<9} {order.side.name:<4} "
        f"{update.event.name:<16} -> {order.status.name:<16}"
    )
    if update.event is OrderEventType.FILLED and update.fill is not None:
        fill = update.fill
        return (
            f"{head} fill {num(fill.quantity)} @ {num(fill.price)} "
            f"(fee {num(fill.fee)} {fill.fee_asset})  {progress_bar(update.progress)}"
        )
    if order.status is OrderStatus.REJECTED:
        return f"{head} {order.reject_reason.name if order.reject_reason else ''} {order.reject_message}"
    return head


# --- following orders ----------------------------------------------------------------


class OrderTracker:
    """Prints every order update and lets the demo wait for an order to reach a state."""

    def __init__(self, updates: OrderUpdateStream) -> None:
        self._updates = updates
        self._latest: dict[str, Order] = {}
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._follow(), name="demo-order-updates")

    async def _follow(self) -> None:
        async for update in self._updates:
            print(describe_update(update).rstrip(), flush=True)
            async with self._changed:
                self._latest[update.order.client_order_id] = update.order
                self._changed.notify_all()

    async def wait_for(self, client_order_id: str, done: Callable[[Order], bool]) -> Order:
        """The order once an update shows ``done(order)``.

        Raises:
            DemoError: no such update within WAIT seconds.
            ExecbridgeError: the update stream failed.
        """

        def reached() -> bool:
            order = self._latest.get(client_order_id)
            return order is not None and done(order)

        async def condition() -> None:
            async with self._changed:
                await self._changed.wait_for(reached)

        waiter = asyncio.create_task(condition())
        finished, _ = await asyncio.wait({waiter, self._task}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if waiter in finished:
            return self._latest[client_order_id]
        if self._task in finished:
            self._task.result()  # raises the stream's error
            raise DemoError("the order update stream ended")
        last = self._latest.get(client_order_id)
        raise DemoError(
            f"order {client_order_id} did not get there within {WAIT}s "
            f"(last status: {last.status.name if last else 'no update at all'})"
        )

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def new_id(kind: str) -> str:
    return f"demo-{kind}-{uuid.uuid4().hex[:8]}"


async def place(client: ExecutionClient, tracker: OrderTracker, order: OrderRequest, until: Callable[[Order], bool]) -> Order:
    price = f" @ {num(order.price)}" if order.price is not None else ""
    say(f"submit {order.type.name} {order.side.name} {num(order.quantity)} {order.symbol}{price}  ({order.client_order_id})")
    result = await client.submit_order(order)
    say(f"-> {result.order.order_id}: {result.order.status.name}" + (" (duplicate)" if result.duplicate else ""))
    if result.order.status is OrderStatus.REJECTED:
        raise DemoError(f"{order.client_order_id} was rejected: {result.order.reject_message}")
    final = await tracker.wait_for(order.client_order_id, until)
    filled = f", filled {num(final.filled_quantity)} @ avg {num(final.average_fill_price)}" if final.filled_quantity else ""
    say(f"=> {final.status.name}{filled}")
    return final


def is_status(*statuses: OrderStatus) -> Callable[[Order], bool]:
    return lambda order: order.status in statuses


# --- the tour ------------------------------------------------------------------------


async def sample_market_data(client: ExecutionClient) -> dict[str, TopOfBook]:
    """A few top-of-book ticks per symbol; returns the latest one of each."""
    latest: dict[str, TopOfBook] = {}
    counts = dict.fromkeys(SYMBOLS, 0)
    table_rows: list[list[str]] = []
    async with client.market_data(SYMBOLS) as stream:
        async with asyncio.timeout(WAIT):
            async for event in stream:
                top = event.payload
                if not isinstance(top, TopOfBook) or event.symbol not in counts:
                    continue
                if counts[event.symbol] >= TICKS_PER_SYMBOL:
                    continue
                counts[event.symbol] += 1
                latest[event.symbol] = top
                table_rows.append(
                    [
                        event.symbol,
                        str(event.sequence),
                        f"{num(top.bid_price)} x {num(top.bid_quantity)}",
                        f"{num(top.ask_price)} x {num(top.ask_quantity)}",
                        num(top.spread),
                        num(top.last_price),
                    ]
                )
                if all(c >= TICKS_PER_SYMBOL for c in counts.values()):
                    break
    table(["symbol", "seq", "bid (price x qty)", "ask (price x qty)", "spread", "last"], table_rows)
    for symbol in SYMBOLS:
        top = latest.get(symbol)
        if top is None or top.bid_price is None or top.ask_price is None:
            raise DemoError(f"no two-sided quote for {symbol}")
    return latest


async def run(target: str) -> None:
    """Run the tour against the gateway at ``target``.

    Raises:
        ExecbridgeError: a call failed.
        DemoError: the paper venue did not behave as promised.
    """
    print("execbridge demo")
    print(f"    gateway  {target}")
    print(f"    account  {ACCOUNT!r} on venue {VENUE!r}, {MODE.name} mode (no real money moves)")

    async with ExecutionClient.connect(target) as client:
        await client.wait_ready(timeout=WAIT)

        section(1, "Order updates")
        async with client.order_updates(accounts=[ACCOUNT]) as updates:
            await updates.wait_live(timeout=WAIT)
            say(f"following account {ACCOUNT!r}; live on shard(s) {', '.join(sorted(updates.live_shards))}")
            tracker = OrderTracker(updates)
            try:
                await tour(client, tracker)
            finally:
                await tracker.aclose()

        section(8, "Orders (newest first)")
        page = await client.list_orders(ACCOUNT, page_size=20)
        table(
            ["order id", "client order id", "type", "side", "qty", "symbol", "price", "status", "filled", "avg price"],
            [
                [
                    o.order_id,
                    o.client_order_id,
                    o.request.type.name,
                    o.side.name,
                    num(o.request.quantity),
                    o.symbol,
                    num(o.request.price),
                    o.status.name,
                    num(o.filled_quantity),
                    num(o.average_fill_price),
                ]
                for o in page
            ],
        )

        section(9, "Trade history (newest first)")
        fills = await client.trade_history(ACCOUNT, page_size=20)
        table(
            ["time (UTC)", "trade id", "order id", "side", "qty", "symbol", "price", "fee", "liquidity"],
            [
                [
                    f.executed_at.strftime("%H:%M:%S.%f")[:-3] if f.executed_at else "-",
                    f.trade_id,
                    f.order_id,
                    f.side.name,
                    num(f.quantity),
                    f.symbol,
                    num(f.price),
                    f"{num(f.fee)} {f.fee_asset}",
                    f.liquidity.name,
                ]
                for f in fills
            ],
        )

        section(10, "Positions and balances")
        portfolio = await client.positions(ACCOUNT)
        table(
            ["symbol", "venue", "quantity", "avg entry", "mark", "unrealized pnl", "realized pnl"],
            [
                [
                    p.symbol,
                    p.venue,
                    num(p.quantity),
                    num(p.average_entry_price),
                    num(p.mark_price),
                    num(p.unrealized_pnl),
                    num(p.realized_pnl),
                ]
                for p in portfolio.positions
            ],
        )
        say()
        table(
            ["asset", "total", "locked", "free"],
            [[b.asset, num(b.total), num(b.locked), num(b.free)] for b in portfolio.balances],
        )
    print("\ndone.")


async def tour(client: ExecutionClient, tracker: OrderTracker) -> None:
    section(2, f"Market data: {TICKS_PER_SYMBOL} ticks of {' and '.join(SYMBOLS)}")
    quotes = await sample_market_data(client)
    btc, eth = quotes["BTC-USDT"], quotes["ETH-USDT"]
    assert btc.bid_price is not None and eth.ask_price is not None  # checked by sampling

    section(3, "Market buy (fills at the ask)")
    await place(
        client,
        tracker,
        OrderRequest.market(
            account=ACCOUNT, symbol="BTC-USDT", side=Side.BUY, quantity="0.02",
            venue=VENUE, mode=MODE, client_order_id=new_id("mkt-buy"),
        ),
        until=is_status(OrderStatus.FILLED),
    )

    section(4, "Market sell of half of it (fills at the bid)")
    await place(
        client,
        tracker,
        OrderRequest.market(
            account=ACCOUNT, symbol="BTC-USDT", side=Side.SELL, quantity="0.01",
            venue=VENUE, mode=MODE, client_order_id=new_id("mkt-sell"),
        ),
        until=is_status(OrderStatus.FILLED),
    )

    section(5, "Limit buy 3% below the bid (rests), then cancel it")
    resting_price = (btc.bid_price * Decimal("0.97")).to_integral_value(rounding=ROUND_FLOOR)
    resting = await place(
        client,
        tracker,
        OrderRequest.limit(
            account=ACCOUNT, symbol="BTC-USDT", side=Side.BUY, quantity="0.01", price=resting_price,
            venue=VENUE, mode=MODE, client_order_id=new_id("lmt-rest"),
        ),
        until=lambda o: o.status is OrderStatus.NEW or o.is_terminal,
    )
    if resting.status is not OrderStatus.NEW:
        raise DemoError(f"the far limit order should rest, but it is {resting.status.name}")
    open_orders = await client.list_orders(ACCOUNT, open_only=True)
    say(f"open orders now: {', '.join(o.order_id for o in open_orders) or '(none)'}")
    canceled = await client.cancel_order(account=ACCOUNT, client_order_id=resting.client_order_id)
    say(f"cancel requested -> {canceled.status.name}")
    await tracker.wait_for(resting.client_order_id, is_status(OrderStatus.CANCELED))
    say("=> CANCELED")

    section(6, "Limit buy 1% above the ask (marketable: fills now, at the ask or better)")
    marketable_price = (eth.ask_price * Decimal("1.01")).to_integral_value(rounding=ROUND_CEILING)
    await place(
        client,
        tracker,
        OrderRequest.limit(
            account=ACCOUNT, symbol="ETH-USDT", side=Side.BUY, quantity="0.1", price=marketable_price,
            venue=VENUE, mode=MODE, client_order_id=new_id("lmt-take"),
        ),
        until=is_status(OrderStatus.FILLED),
    )

    section(7, "Open orders left")
    left = await client.list_orders(ACCOUNT, open_only=True)
    say(", ".join(o.order_id for o in left) if left.items else "none: everything filled or was canceled")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tour the execbridge client on the paper venue.")
    parser.add_argument("--target", default="127.0.0.1:50051", help="the gateway's host:port")
    args = parser.parse_args(argv)
    try:
        asyncio.run(run(args.target))
    except (ExecbridgeError, DemoError) as error:
        print(f"\ndemo failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
