"""A market-making orchestrator on the paper venue.

    python examples/market_maker.py --target 127.0.0.1:50051 --seconds 30

It quotes a bid and an ask around the mid price from market data, keeps its inventory
within limits (no bid at the long limit, no ask at the short limit), and cancels and
replaces its quotes when the mid moves ``--requote-ticks`` or more. When the feed says
its data cannot be trusted (STALE, RESYNCING, or the stream is reconnecting) it pulls its
quotes until the data is LIVE again. After ``--seconds`` it cancels everything it has open,
prints a summary and exits 0. Run it against ``make run`` (the embedded default stack):
everything is PAPER, no real money moves.

What it shows of the SDK: the async client, one market data stream and one order update
stream running side by side, idempotent submits (each quote has its own client_order_id,
so a retried submit never doubles a quote), cancels by client_order_id, ``cancel_all`` on
the way out, and errors by class.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from execbridge import (
    ExecbridgeError,
    ExecutionClient,
    FeedStatus,
    NotFound,
    FailedPrecondition,
    OrderEventType,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    Side,
    StatusFrame,
    TopOfBook,
)

log = logging.getLogger("market_maker")


@dataclass(frozen=True, kw_only=True)
class Config:
    target: str
    account: str
    symbol: str
    seconds: float
    size: Decimal
    half_spread_ticks: int
    requote_ticks: int
    max_inventory: Decimal
    min_inventory: Decimal
    tick: Decimal


@dataclass
class Quote:
    side: Side
    price: Decimal
    client_order_id: str


@dataclass
class Book:
    """What the strategy knows: its inventory, its working quotes, some counters."""

    inventory: Decimal = Decimal(0)
    quotes: dict[Side, Quote] = field(default_factory=dict)
    quoted_mid: Decimal | None = None
    placed: int = 0
    replaced: int = 0
    canceled: int = 0
    rejected: int = 0
    fills: int = 0
    bought: Decimal = Decimal(0)
    sold: Decimal = Decimal(0)
    pulled_for_status: int = 0
    #: Quotes whose cancel was refused (filled or finished meanwhile) and whose final
    #: update has not arrived yet: client_order_id -> side. Their side is not quoted again
    #: until the update says what happened, or a fill could be counted too late.
    settling: dict[str, Side] = field(default_factory=dict)


class MarketMaker:
    def __init__(self, client: ExecutionClient, config: Config) -> None:
        self.client = client
        self.config = config
        self.book = Book()
        # Quote changes are serialised: a market data tick and a fill must not both
        # replace the same quote at once.
        self._lock = asyncio.Lock()

    # --- pricing ----------------------------------------------------------------------

    def bid_price(self, mid: Decimal) -> Decimal:
        """``half_spread_ticks`` under the mid, on the tick grid."""
        tick = self.config.tick
        return ((mid / tick).to_integral_value(rounding=ROUND_FLOOR) - self.config.half_spread_ticks) * tick

    def ask_price(self, mid: Decimal) -> Decimal:
        """``half_spread_ticks`` over the mid, on the tick grid."""
        tick = self.config.tick
        return ((mid / tick).to_integral_value(rounding=ROUND_CEILING) + self.config.half_spread_ticks) * tick

    def wanted_sides(self) -> set[Side]:
        """Sides to quote: none that could take inventory beyond its limits."""
        sides = set()
        if self.book.inventory + self.config.size <= self.config.max_inventory:
            sides.add(Side.BUY)
        if self.book.inventory - self.config.size >= self.config.min_inventory:
            sides.add(Side.SELL)
        return sides - set(self.book.settling.values())

    def moved(self, mid: Decimal) -> bool:
        if self.book.quoted_mid is None:
            return True
        return abs(mid - self.book.quoted_mid) >= self.config.requote_ticks * self.config.tick

    # --- quoting ----------------------------------------------------------------------

    async def requote(self, mid: Decimal, *, force: bool = False) -> None:
        async with self._lock:
            wanted = self.wanted_sides()
            stale = [s for s in self.book.quotes if s not in wanted or force or self.moved(mid)]
            for side in stale:
                await self._cancel(side)
                self.book.replaced += 1
            # Fills may have arrived while cancelling, or a cancel found its quote gone.
            wanted = self.wanted_sides()
            for side in wanted - set(self.book.quotes):
                price = self.bid_price(mid) if side is Side.BUY else self.ask_price(mid)
                await self._place(side, price)
            self.book.quoted_mid = mid

    async def _place(self, side: Side, price: Decimal) -> None:
        order = OrderRequest.limit(
            account=self.config.account,
            symbol=self.config.symbol,
            side=side,
            quantity=self.config.size,
            price=price,
            post_only=True,
            client_order_id=f"mm-{side.name[0].lower()}-{uuid.uuid4().hex[:16]}",
        )
        result = await self.client.submit_order(order, timeout=5)
        if result.order.status is OrderStatus.REJECTED:
            self.book.rejected += 1
            log.info("%s quote at %s rejected: %s", side.name, price, result.order.reject_message)
            return
        self.book.placed += 1
        self.book.quotes[side] = Quote(side, price, order.client_order_id)
        log.debug("quoted %s %s @ %s", side.name, self.config.size, price)

    async def _cancel(self, side: Side) -> None:
        quote = self.book.quotes.pop(side, None)
        if quote is None:
            return
        self.book.settling[quote.client_order_id] = side
        try:
            await self.client.cancel_order(account=self.config.account, client_order_id=quote.client_order_id, timeout=5)
            self.book.canceled += 1
            self.book.settling.pop(quote.client_order_id, None)
        except (NotFound, FailedPrecondition):
            pass  # filled (or already gone) in the meantime: the update stream tells

    async def pull_quotes(self) -> None:
        async with self._lock:
            for side in list(self.book.quotes):
                await self._cancel(side)
            self.book.quoted_mid = None

    # --- events -----------------------------------------------------------------------

    async def on_update(self, update: OrderUpdate) -> None:
        order = update.order
        if order.account != self.config.account or order.symbol != self.config.symbol:
            return
        if update.event is OrderEventType.FILLED and update.fill is not None:
            fill = update.fill
            self.book.fills += 1
            if fill.side is Side.BUY:
                self.book.inventory += fill.quantity
                self.book.bought += fill.quantity
            else:
                self.book.inventory -= fill.quantity
                self.book.sold += fill.quantity
            log.info("filled %s %s @ %s; inventory %s", fill.side.name, fill.quantity, fill.price, self.book.inventory)
        if order.status.is_terminal:
            self.book.settling.pop(order.client_order_id, None)
            quote = self.book.quotes.get(order.side)
            if quote is not None and quote.client_order_id == order.client_order_id:
                del self.book.quotes[order.side]  # requoted on the next tick

    async def follow_updates(self, ready: asyncio.Event) -> None:
        async with self.client.order_updates(accounts=[self.config.account]) as updates:
            await updates.wait_live(timeout=10)
            ready.set()
            async for update in updates:
                await self.on_update(update)

    async def follow_market(self) -> None:
        async with self.client.market_data([self.config.symbol]) as stream:
            async for event in stream:
                payload = event.payload
                if isinstance(payload, StatusFrame):
                    if payload.status is not FeedStatus.LIVE:
                        log.warning("feed %s (%s): pulling quotes", payload.status.name, payload.reason)
                        self.book.pulled_for_status += 1
                        await self.pull_quotes()
                    continue
                if not isinstance(payload, TopOfBook) or event.symbol != self.config.symbol:
                    continue
                if stream.status(self.config.symbol) is not FeedStatus.LIVE:
                    continue
                mid = payload.mid_price
                if mid is None:
                    continue
                try:
                    await self.requote(mid)
                except ExecbridgeError as error:
                    # A failed quote is not fatal: the next tick tries again.
                    log.warning("requote failed: %r", error)

    async def run(self) -> Book:
        ready = asyncio.Event()
        updates = asyncio.create_task(self.follow_updates(ready), name="mm-updates")
        await asyncio.wait_for(ready.wait(), 10)
        market = asyncio.create_task(self.follow_market(), name="mm-market")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            done, _ = await asyncio.wait(
                {updates, market, asyncio.create_task(stop.wait())},
                timeout=self.config.seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done & {updates, market}:
                task.result()  # a stream that failed for good ends the run with its error
        finally:
            market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await market
            await self.pull_quotes()
            # Belt and braces: nothing of ours stays open, whatever the bookkeeping says.
            await self.client.cancel_all(self.config.account, symbol=self.config.symbol)
            await asyncio.sleep(0.2)  # the last updates (cancels, fills) arrive
            updates.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await updates
        return self.book


def parse(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--account", default=f"mm-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--symbol", default="BTC-USDT")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--size", type=Decimal, default=Decimal("0.001"))
    parser.add_argument("--half-spread-ticks", type=int, default=1, help="quote distance from the mid")
    parser.add_argument("--requote-ticks", type=int, default=2, help="mid move that cancels and replaces")
    parser.add_argument("--max-inventory", type=Decimal, default=Decimal("0.005"))
    parser.add_argument("--min-inventory", type=Decimal, default=Decimal("0"),
                        help="negative to allow going short (the paper venue needs the balance)")
    parser.add_argument("--tick", type=Decimal, default=Decimal("0.01"))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return Config(
        target=args.target, account=args.account, symbol=args.symbol, seconds=args.seconds, size=args.size,
        half_spread_ticks=args.half_spread_ticks, requote_ticks=args.requote_ticks, max_inventory=args.max_inventory,
        min_inventory=args.min_inventory, tick=args.tick,
    )


async def main(argv: list[str] | None = None) -> int:
    config = parse(argv)
    async with ExecutionClient.connect(config.target) as client:
        await client.wait_ready(timeout=10)
        book = await MarketMaker(client, config).run()
        open_orders = [o async for o in client.iter_orders(config.account, open_only=True)]
        portfolio = await client.positions(config.account)
    position = portfolio.position(config.symbol)
    print(
        f"account {config.account} {config.symbol}: placed {book.placed} quotes, replaced {book.replaced}, "
        f"canceled {book.canceled}, rejected {book.rejected}, fills {book.fills} "
        f"(bought {book.bought}, sold {book.sold}); inventory {book.inventory}; "
        f"position {position.quantity if position else 0}; open orders left {len(open_orders)}; "
        f"quotes pulled for feed status {book.pulled_for_status}"
    )
    if open_orders:
        print("error: orders left open:", [o.client_order_id for o in open_orders], file=sys.stderr)
        return 1
    if not config.min_inventory <= book.inventory <= config.max_inventory:
        print("error: inventory outside its limits", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
