"""Long-lived streams: order updates (resumable) and market data (re-subscribable).

Both are async iterators and async context managers; leaving the ``async with`` block (or
calling :meth:`aclose`) ends the gRPC call. The client that opened a stream closes it
when the client itself closes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Final, Self

import grpc

from ._convert import (
    market_data_event_from_proto,
    order_update_from_proto,
    subscribe_to_proto,
    unsubscribe_to_proto,
)
from ._proto.v1 import execution_service_pb2 as svc_pb
from ._proto.v1 import market_data_service_pb2 as md_pb
from ._proto.v1 import orders_pb2 as pb
from .enums import Channel, FeedStatus, SlowConsumerPolicy
from .errors import DeadlineExceeded, ExecbridgeError, Unavailable, UnknownError, from_rpc_error
from .market_data import BookSnapshot, MarketDataEvent, StatusFrame
from .models import OrderUpdate
from .retry import RetryPolicy

__all__ = ["MarketDataStream", "OrderUpdateStream"]

_log = logging.getLogger("execbridge")

OpenUpdates = Callable[
    [svc_pb.SubscribeOrderUpdatesRequest],
    "grpc.aio.UnaryStreamCall[svc_pb.SubscribeOrderUpdatesRequest, svc_pb.SubscribeOrderUpdatesResponse]",
]
OpenMarketData = Callable[
    [],
    "grpc.aio.StreamStreamCall[md_pb.StreamMarketDataRequest, md_pb.StreamMarketDataResponse]",
]


class _End:
    """Queued after the last item: the stream was closed."""


_END: Final = _End()


class OrderUpdateStream:
    """Every state change and fill of the followed accounts' orders, in order per shard.

    The stream survives a lost connection or a gateway restart: it reconnects with backoff
    (the client's ``stream_retry`` policy) and resumes after the last sequence it received
    per shard, so nothing is missed and nothing is delivered twice. Only when the policy
    gives up does iteration raise the last error.

    :attr:`cursors` holds the last sequence the consumer received per shard; persist it and
    pass it as ``resume_from`` to continue in a later process::

        async with client.order_updates(accounts=["demo"]) as updates:
            await updates.wait_live()
            async for update in updates:
                ...
    """

    def __init__(
        self,
        *,
        open_call: OpenUpdates,
        accounts: Iterable[str],
        resume_from: Mapping[str, int],
        retry: RetryPolicy,
        buffer: int,
        on_close: Callable[[OrderUpdateStream], None],
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._open = open_call
        self._on_reconnect = on_reconnect
        self._accounts = tuple(accounts)
        self._retry = retry
        self._on_close = on_close
        # Last sequence per shard received from the server (queued or delivered): where a
        # reconnect resumes. Only the pump task writes it.
        self._received: dict[str, int] = dict(resume_from)
        # Last sequence per shard handed to the consumer.
        self._delivered: dict[str, int] = dict(resume_from)
        # Bounded, so a slow consumer slows the pump and gRPC flow control slows the server.
        self._queue: asyncio.Queue[OrderUpdate | ExecbridgeError | _End] = asyncio.Queue(buffer)
        self._live = asyncio.Event()
        self._live_shards: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._call: grpc.aio.UnaryStreamCall[
            svc_pb.SubscribeOrderUpdatesRequest, svc_pb.SubscribeOrderUpdatesResponse
        ] | None = None
        self._failure: ExecbridgeError | None = None
        self._finished = False
        self._closed = False
        self.reconnects = 0
        """How many times the stream reconnected."""

    @property
    def cursors(self) -> Mapping[str, int]:
        """The last sequence delivered to the consumer, per shard."""
        return dict(self._delivered)

    @property
    def live_shards(self) -> frozenset[str]:
        """The shards whose subscription has caught up and delivers live updates."""
        return frozenset(self._live_shards)

    async def wait_live(self, timeout: float | None = None) -> None:
        """Wait until the subscription is live (after any replay) on at least one shard.

        Orders submitted after this returns are guaranteed to show up on the stream.

        Raises:
            DeadlineExceeded: not live within ``timeout`` seconds.
            ExecbridgeError: the subscription failed for good.
        """
        task = self._start()
        live = asyncio.ensure_future(self._live.wait())
        try:
            done, _ = await asyncio.wait(
                {live, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            live.cancel()
        if self._live.is_set():
            return
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise RuntimeError("the order update stream was closed while waiting")
        raise DeadlineExceeded(f"order updates not live within {timeout}s")

    def _start(self) -> asyncio.Task[None]:
        if self._closed:
            raise RuntimeError("the order update stream is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name="execbridge-order-updates")
        return self._task

    async def _pump(self) -> None:
        try:
            await self._follow()
        except asyncio.CancelledError:
            raise
        except Exception as unexpected:  # never leave the consumer waiting on a dead pump
            _log.exception("order update stream failed")
            await self._fail(
                UnknownError(f"the order update stream failed: {unexpected!r}")
            )

    async def _follow(self) -> None:
        failures = 0
        while True:
            request = svc_pb.SubscribeOrderUpdatesRequest(
                accounts=list(self._accounts),
                resume_from=[
                    pb.ShardCursor(shard=shard, sequence=sequence)
                    for shard, sequence in sorted(self._received.items())
                ],
            )
            call = self._call = self._open(request)
            try:
                async for response in call:
                    failures = 0
                    await self._handle(response)
                # A subscription never ends by itself: the server is going away.
                error: ExecbridgeError = Unavailable(
                    "the server ended the order update stream", reason="STREAM_ENDED"
                )
            except grpc.aio.AioRpcError as rpc_error:
                error = from_rpc_error(rpc_error)
            except ExecbridgeError as protocol_error:  # a malformed update
                await self._fail(protocol_error)
                return
            failures += 1
            if not self._retry.should_retry(error, failures):
                await self._fail(error)
                return
            delay = self._retry.backoff(failures, error)
            _log.warning(
                "order update stream interrupted (%s); resuming after %s in %.2fs",
                error,
                dict(self._received) or "live",
                delay,
                extra={"stream": "order_updates", "attempt": failures, "cursors": dict(self._received)},
            )
            self.reconnects += 1
            if self._on_reconnect is not None:
                self._on_reconnect()
            await asyncio.sleep(delay)

    async def _handle(self, response: svc_pb.SubscribeOrderUpdatesResponse) -> None:
        kind = response.WhichOneof("event")
        if kind == "update":
            update = order_update_from_proto(response.update)
            last = self._received.get(update.shard)
            if last is not None and update.sequence <= last:
                _log.debug("dropping duplicate update %s/%d", update.shard, update.sequence)
                return
            self._received[update.shard] = update.sequence
            await self._queue.put(update)
        elif kind == "live":
            cursor = response.live
            # The shard's position when it went live: resume from here if the connection
            # drops before the next update, so updates in between are replayed.
            if cursor.sequence > self._received.get(cursor.shard, -1):
                self._received[cursor.shard] = cursor.sequence
                self._delivered.setdefault(cursor.shard, cursor.sequence)
            self._live_shards.add(cursor.shard)
            self._live.set()

    async def _fail(self, error: ExecbridgeError) -> None:
        self._failure = error
        await self._queue.put(error)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> OrderUpdate:
        if self._finished or self._closed:
            raise StopAsyncIteration
        self._start()
        item = await self._queue.get()
        if isinstance(item, _End):
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, ExecbridgeError):
            self._finished = True
            raise item
        self._delivered[item.shard] = item.sequence
        return item

    async def __aenter__(self) -> Self:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the subscription. Iteration then stops; :attr:`cursors` stays readable."""
        if self._closed:
            return
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                # Our own cancellation of the pump, unless this task is being cancelled.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        # Wake a consumer blocked on the queue; undelivered updates are dropped.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)
        self._on_close(self)


class MarketDataStream:
    """Market data events for a changing set of symbols.

    The server sends a snapshot first for each new subscription, then updates and status
    frames. :meth:`add` and :meth:`remove` change the subscription while streaming::

        async with client.market_data(["BTC-USDT"]) as stream:
            async for event in stream:
                ...
                await stream.add(["ETH-USDT"])

    The data's trustworthiness is surfaced, not hidden: the server's STALE and RESYNCING
    status frames are yielded as events (``StatusFrame``) and :meth:`status` tells the
    last one per symbol. When the connection is lost the stream yields a RECONNECTING
    frame (symbol ``""``: the whole stream), reopens under its retry policy and
    subscribes again to everything it had; the server's fresh snapshots follow. When the
    policy gives up, iteration raises the last error.
    """

    def __init__(
        self,
        *,
        open_call: OpenMarketData,
        symbols: Iterable[str],
        venue: str,
        channels: Iterable[Channel],
        policy: SlowConsumerPolicy,
        on_close: Callable[[MarketDataStream], None],
        retry: RetryPolicy | None = None,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._open = open_call
        self._initial = tuple(symbols)
        self._venue = venue
        self._channels = tuple(channels)
        self._policy = policy
        self._on_close = on_close
        self._retry = retry or RetryPolicy(max_attempts=1)
        self._on_reconnect = on_reconnect
        self._symbols: set[str] = set()
        # What the subscription is: channels per (venue, symbol). A new connection is
        # subscribed to exactly this, however many adds and removes led to it.
        self._desired: dict[tuple[str, str], set[Channel]] = {}
        self._status: dict[str, FeedStatus] = {}
        self._call: grpc.aio.StreamStreamCall[
            md_pb.StreamMarketDataRequest, md_pb.StreamMarketDataResponse
        ] | None = None
        self._opened = False
        self._failures = 0
        self._reopen_at = 0.0
        self._pending: collections.deque[MarketDataEvent] = collections.deque()
        # grpc.aio allows one write at a time; add() and remove() may race from two tasks.
        self._write_lock = asyncio.Lock()
        self._closed = False
        self.reconnects = 0
        """How many times the stream reconnected."""

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols currently subscribed (as requested by this client)."""
        return frozenset(self._symbols)

    def status(self, symbol: str) -> FeedStatus:
        """The last status of ``symbol``'s data: LIVE until a frame said otherwise."""
        return self._status.get(symbol, self._status.get("", FeedStatus.LIVE))

    async def add(
        self,
        symbols: Iterable[str],
        *,
        channels: Iterable[Channel] | None = None,
        venue: str | None = None,
    ) -> None:
        """Subscribe to more symbols (the stream's channels and venue unless given).

        Raises:
            ExecbridgeError: the stream has failed.
        """
        wanted = list(symbols)
        chosen_venue = self._venue if venue is None else venue
        chosen = self._channels if channels is None else tuple(channels)
        await self._write(
            subscribe_to_proto(wanted, venue=chosen_venue, channels=chosen, policy=self._policy)
        )
        for symbol in wanted:
            self._desired.setdefault((chosen_venue, symbol), set()).update(chosen)
        self._symbols.update(wanted)

    async def remove(
        self,
        symbols: Iterable[str],
        *,
        channels: Iterable[Channel] | None = None,
        venue: str | None = None,
    ) -> None:
        """Unsubscribe from symbols (every channel of them unless ``channels`` is given).

        Events already in flight for them may still arrive.

        Raises:
            ExecbridgeError: the stream has failed.
        """
        unwanted = list(symbols)
        chosen_venue = self._venue if venue is None else venue
        dropped = () if channels is None else tuple(channels)
        await self._write(unsubscribe_to_proto(unwanted, venue=chosen_venue, channels=dropped))
        for symbol in unwanted:
            key = (chosen_venue, symbol)
            if key in self._desired:
                self._desired[key].difference_update(dropped or self._desired[key])
                if not self._desired[key]:
                    del self._desired[key]
        if channels is None:
            self._symbols.difference_update(unwanted)
            for symbol in unwanted:
                self._status.pop(symbol, None)

    async def _ensure_open(
        self,
    ) -> grpc.aio.StreamStreamCall[md_pb.StreamMarketDataRequest, md_pb.StreamMarketDataResponse]:
        if self._closed:
            raise RuntimeError("the market data stream is closed")
        if self._call is None:
            wait = self._reopen_at - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
            call = self._call = self._open()
            if not self._opened:
                self._opened = True
                for symbol in self._initial:
                    self._desired.setdefault((self._venue, symbol), set()).update(self._channels)
                self._symbols.update(self._initial)
            async with self._write_lock:
                for request in self._resubscriptions():
                    try:
                        await call.write(request)
                    except grpc.aio.AioRpcError:
                        break  # reading reports the failure
        return self._call

    def _resubscriptions(self) -> list[md_pb.StreamMarketDataRequest]:
        """The fewest Subscribe messages that make a new stream what this one is."""
        groups: dict[tuple[str, tuple[Channel, ...]], list[str]] = {}
        for (venue, symbol), channels in sorted(self._desired.items()):
            key = (venue, tuple(sorted(channels, key=lambda c: c.value)))
            groups.setdefault(key, []).append(symbol)
        return [
            subscribe_to_proto(symbols, venue=venue, channels=channels, policy=self._policy)
            for (venue, channels), symbols in groups.items()
        ]

    async def _write(self, request: md_pb.StreamMarketDataRequest) -> None:
        call = await self._ensure_open()
        async with self._write_lock:
            try:
                await call.write(request)
            except grpc.aio.AioRpcError as rpc_error:
                # The reconnect subscribes from the desired state; without one this is final.
                if not self._retry.should_retry(from_rpc_error(rpc_error), self._failures + 1):
                    raise from_rpc_error(rpc_error) from rpc_error

    def _lost(self, error: ExecbridgeError) -> MarketDataEvent:
        """Schedule a reconnect after ``error`` and return the RECONNECTING frame.

        Raises:
            ExecbridgeError: the retry policy gives up.
        """
        self._failures += 1
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if not self._retry.should_retry(error, self._failures):
            raise error
        delay = self._retry.backoff(self._failures, error)
        self._reopen_at = asyncio.get_running_loop().time() + delay
        self.reconnects += 1
        if self._on_reconnect is not None:
            self._on_reconnect()
        _log.warning(
            "market data stream interrupted (%s); resubscribing %d symbols in %.2fs",
            error,
            len(self._symbols),
            delay,
            extra={"stream": "market_data", "attempt": self._failures},
        )
        self._status = dict.fromkeys([*self._symbols, ""], FeedStatus.RECONNECTING)
        return MarketDataEvent(
            venue=self._venue,
            symbol="",
            sequence=0,
            exchange_time=None,
            receive_time=None,
            payload=StatusFrame(status=FeedStatus.RECONNECTING, reason=str(error)),
        )

    def _track(self, event: MarketDataEvent) -> None:
        payload = event.payload
        if isinstance(payload, StatusFrame):
            if event.symbol:
                self._status[event.symbol] = payload.status
            else:
                self._status = {"": payload.status}
        elif event.symbol and self._status.get(event.symbol, FeedStatus.LIVE) is not FeedStatus.LIVE:
            if isinstance(payload, BookSnapshot) or self._status.get(event.symbol) is FeedStatus.RECONNECTING:
                self._status[event.symbol] = FeedStatus.LIVE
        if event.symbol and self._status.get("") is FeedStatus.RECONNECTING:
            self._status.pop("", None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> MarketDataEvent:
        if self._closed:
            raise StopAsyncIteration
        while not self._pending:
            call = await self._ensure_open()
            try:
                response = await call.read()
            except grpc.aio.AioRpcError as rpc_error:
                if self._closed:
                    raise StopAsyncIteration from None
                error = from_rpc_error(rpc_error)
                try:
                    return self._lost(error)
                except ExecbridgeError:
                    raise error from rpc_error
            except asyncio.CancelledError:
                if self._closed:  # aclose() from another task cancelled the call
                    raise StopAsyncIteration from None
                raise
            if not isinstance(response, md_pb.StreamMarketDataResponse):  # grpc.aio.EOF
                if self._closed:
                    raise StopAsyncIteration
                return self._lost(
                    Unavailable("the server ended the market data stream", reason="STREAM_ENDED")
                )
            self._failures = 0
            for message in response.events:
                event = market_data_event_from_proto(message)
                self._track(event)
                self._pending.append(event)
        return self._pending.popleft()

    async def __aenter__(self) -> Self:
        await self._ensure_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the stream."""
        if self._closed:
            return
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        self._on_close(self)
