"""SyncExecutionClient: the blocking facade over :class:`~execbridge.ExecutionClient`.

For scripts, notebooks and threaded code. There is no second implementation: the facade
runs one ``ExecutionClient`` on a private event loop in a daemon thread and hands each
call to it (``asyncio.run_coroutine_threadsafe``), so retries, the breaker, telemetry and
stream resumption behave exactly as in async code::

    with SyncExecutionClient.connect("127.0.0.1:50051") as client:
        result = client.submit_order(OrderRequest.market(...))
        for update in client.order_updates(accounts=["demo"]):
            ...

Each method has the signature of its async twin (typed through ``ParamSpec``). Streams
become blocking iterators. Calls may come from any thread.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, cast

from .admin import AdminClient
from .client import ClientOptions, ExecutionClient
from .market_data import MarketDataEvent
from .models import OrderUpdate
from .streams import MarketDataStream, OrderUpdateStream

__all__ = ["SyncAdminClient", "SyncExecutionClient", "SyncMarketDataStream", "SyncOrderUpdateStream"]

_P = ParamSpec("_P")
_T = TypeVar("_T")
_Item = TypeVar("_Item")


class _Loop:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="execbridge-sync-loop", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("a SyncExecutionClient cannot be called from its own loop")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except (KeyboardInterrupt, concurrent.futures.TimeoutError):
            future.cancel()
            raise

    def call(self, function: Callable[[], _T]) -> _T:
        """Run a plain function on the loop thread (objects that bind to the loop)."""

        async def invoke() -> _T:
            return function()

        return self.run(invoke())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


def _blocking(
    method: Callable[Concatenate[Any, _P], Awaitable[_T]],
) -> Callable[Concatenate[Any, _P], _T]:
    """A blocking method calling the async ``method`` on the facade's target."""

    def wrapper(self: _Facade, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        async def call() -> _T:
            return await method(self._target(), *args, **kwargs)

        return self._loop.run(call())

    wrapper.__name__ = getattr(method, "__name__", "call")
    wrapper.__doc__ = method.__doc__
    return wrapper


def _iterating(
    method: Callable[Concatenate[Any, _P], AsyncIterator[_T]],
) -> Callable[Concatenate[Any, _P], Iterator[_T]]:
    """A blocking generator over the async generator ``method``."""

    def wrapper(self: _Facade, /, *args: _P.args, **kwargs: _P.kwargs) -> Iterator[_T]:
        loop = self._loop
        agen = loop.call(lambda: method(self._target(), *args, **kwargs))
        try:
            while True:
                try:
                    yield loop.run(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            closer = getattr(agen, "aclose", None)
            if closer is not None:
                loop.run(closer())

    wrapper.__name__ = getattr(method, "__name__", "iterate")
    wrapper.__doc__ = method.__doc__
    return wrapper


async def _anext(iterator: AsyncIterator[_T]) -> _T:
    return await iterator.__anext__()


class _Facade(abc.ABC):
    _loop: _Loop

    @abc.abstractmethod
    def _target(self) -> Any:
        """The async object this facade forwards to."""


class _SyncStream(Generic[_Item]):
    """A blocking iterator and context manager over an async stream."""

    def __init__(self, loop: _Loop, stream: OrderUpdateStream | MarketDataStream) -> None:
        self._loop = loop
        self._stream = stream

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> _Item:
        try:
            item = cast(_Item, self._loop.run(_anext(self._stream)))
        except StopAsyncIteration:
            raise StopIteration from None
        return item

    def __enter__(self) -> Self:
        self._loop.run(self._stream.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self._stream.aclose())


class SyncOrderUpdateStream(_SyncStream[OrderUpdate]):
    """Blocking :class:`~execbridge.OrderUpdateStream` (yields ``OrderUpdate``)."""

    def __init__(self, loop: _Loop, stream: OrderUpdateStream) -> None:
        super().__init__(loop, stream)
        self._updates = stream

    @property
    def cursors(self) -> dict[str, int]:
        return dict(self._updates.cursors)

    def wait_live(self, timeout: float | None = None) -> None:
        self._loop.run(self._updates.wait_live(timeout))


class SyncMarketDataStream(_SyncStream[MarketDataEvent]):
    """Blocking :class:`~execbridge.MarketDataStream` (yields ``MarketDataEvent``)."""

    def __init__(self, loop: _Loop, stream: MarketDataStream) -> None:
        super().__init__(loop, stream)
        self._md = stream

    def add(self, symbols: list[str]) -> None:
        self._loop.run(self._md.add(symbols))

    def remove(self, symbols: list[str]) -> None:
        self._loop.run(self._md.remove(symbols))

    @property
    def symbols(self) -> frozenset[str]:
        return self._md.symbols


def _connecting(
    connect: Callable[_P, ExecutionClient],
) -> Callable[_P, SyncExecutionClient]:
    """``SyncExecutionClient.connect`` with the signature of ``ExecutionClient.connect``."""

    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> SyncExecutionClient:
        return SyncExecutionClient._start(lambda: connect(*args, **kwargs))

    wrapper.__name__ = "connect"
    wrapper.__doc__ = (
        "Start the private event loop and connect; the arguments of "
        ":meth:`ExecutionClient.connect`.\n\nRaises:\n    ValueError: a bad option."
    )
    return wrapper


class SyncAdminClient(_Facade):
    """Blocking :class:`~execbridge.admin.AdminClient`."""

    def __init__(self, loop: _Loop, admin: AdminClient) -> None:
        self._loop = loop
        self._admin = admin

    def _target(self) -> AdminClient:
        return self._admin

    set_trading_state = _blocking(AdminClient.set_trading_state)
    get_risk_limits = _blocking(AdminClient.get_risk_limits)
    set_risk_limits = _blocking(AdminClient.set_risk_limits)
    cancel_all_orders = _blocking(AdminClient.cancel_all_orders)
    flatten = _blocking(AdminClient.flatten)


class SyncExecutionClient(_Facade):
    """Blocking client of the execbridge gateway; same options as :meth:`ExecutionClient.connect`."""

    def __init__(self, loop: _Loop, client: ExecutionClient) -> None:
        self._loop = loop
        self._client = client
        self._admin: SyncAdminClient | None = None

    #: Start the private loop and connect: the signature of :meth:`ExecutionClient.connect`.
    connect = staticmethod(_connecting(ExecutionClient.connect))

    @staticmethod
    def _start(client: Callable[[], ExecutionClient]) -> SyncExecutionClient:
        loop = _Loop()
        try:
            return SyncExecutionClient(loop, loop.call(client))
        except BaseException:
            loop.stop()
            raise

    def _target(self) -> ExecutionClient:
        return self._client

    @property
    def options(self) -> ClientOptions:
        return self._client.options

    @property
    def admin(self) -> SyncAdminClient:
        if self._admin is None:
            self._admin = SyncAdminClient(self._loop, self._client.admin)
        return self._admin

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's streams and channels, then stop the private loop."""
        try:
            self._loop.run(self._client.close())
        finally:
            self._loop.stop()

    wait_ready = _blocking(ExecutionClient.wait_ready)
    submit_order = _blocking(ExecutionClient.submit_order)
    submit_orders = _iterating(ExecutionClient.submit_orders)
    cancel_order = _blocking(ExecutionClient.cancel_order)
    cancel_all = _blocking(ExecutionClient.cancel_all)
    get_order = _blocking(ExecutionClient.get_order)
    list_orders = _blocking(ExecutionClient.list_orders)
    iter_orders = _iterating(ExecutionClient.iter_orders)
    trade_history = _blocking(ExecutionClient.trade_history)
    iter_trade_history = _iterating(ExecutionClient.iter_trade_history)
    positions = _blocking(ExecutionClient.positions)

    def order_updates(self, **kwargs: Any) -> SyncOrderUpdateStream:
        """Blocking :meth:`ExecutionClient.order_updates` (same keyword arguments)."""
        stream = self._loop.call(lambda: self._client.order_updates(**kwargs))
        return SyncOrderUpdateStream(self._loop, stream)

    def market_data(self, symbols: list[str], **kwargs: Any) -> SyncMarketDataStream:
        """Blocking :meth:`ExecutionClient.market_data` (same arguments)."""
        stream = self._loop.call(lambda: self._client.market_data(symbols, **kwargs))
        return SyncMarketDataStream(self._loop, stream)

