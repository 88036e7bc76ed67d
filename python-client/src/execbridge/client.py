"""ExecutionClient: the async client of the execbridge gateway.

One client holds a small pool of gRPC channels to the gateway (see ``_channels``) and
speaks the public services (``execbridge.v1.ExecutionService``, ``MarketDataService`` and,
through :attr:`ExecutionClient.admin`, ``AdminService``)::

    async with ExecutionClient.connect("127.0.0.1:50051") as client:
        result = await client.submit_order(
            OrderRequest.market(account="demo", symbol="BTC-USDT", side=Side.BUY, quantity="0.01")
        )

Every unary call goes through one path (:meth:`ExecutionClient._unary`): auth metadata,
correlation id, trace context, metrics, the circuit breaker and the retry helper. Calls
safe to repeat (queries, cancels, submits: idempotent on ``client_order_id``) retry per
the client's ``retry`` policy within their timeout; ``flatten`` never retries. Every
failure is an :class:`~execbridge.errors.ExecbridgeError`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import grpc
from google.protobuf.message import Message

from . import __version__
from ._channels import ChannelConfig, ChannelPool, Stubs, TlsConfig, parse_targets
from ._convert import (
    datetime_to_proto,
    fill_from_proto,
    order_from_proto,
    order_request_to_proto,
    order_result_from_proto,
    portfolio_from_proto,
)
from ._proto.v1 import execution_service_pb2 as svc_pb
from ._proto.v1 import market_data_service_pb2 as md_pb
from .circuit import CircuitBreaker, CircuitBreakerConfig, CircuitState
from .enums import Channel, OrderStatus, SlowConsumerPolicy, proto_name
from .errors import (
    Cancelled,
    ExecbridgeError,
    FieldViolation,
    ProtocolError,
    Unavailable,
    ValidationError,
    from_rpc_error,
)
from .models import Fill, Order, OrderRequest, OrderResult, Page, Portfolio, SubmitResult
from .retry import NO_RETRY, RetryPolicy, call_with_retry
from .streams import MarketDataStream, OrderUpdateStream
from .telemetry import CORRELATION_HEADER, ClientMetrics, Telemetry, current_correlation_id

if TYPE_CHECKING:
    from .admin import AdminClient

__all__ = ["ClientOptions", "ExecutionClient"]

_log = logging.getLogger("execbridge")

_Req = TypeVar("_Req", bound=Message)
_Resp = TypeVar("_Resp", bound=Message)

#: The metadata key carrying the API key.
API_KEY_HEADER = "x-api-key"
#: The metadata key carrying a JWT as "Bearer <token>".
AUTHORIZATION_HEADER = "authorization"

_EXECUTION = "execbridge.v1.ExecutionService"


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """How a client connects and behaves. Built by :meth:`ExecutionClient.connect`.

    Attributes:
        target: the gateway: "host:port", "h1:p,h2:p" (a static list) or "dns:///host:port".
        api_key: sent as ``x-api-key`` metadata on every call; never logged or shown.
        bearer_token: a JWT sent as ``authorization: Bearer <token>``; never logged.
        token_provider: called before each call for a fresh JWT (rotating tokens); wins
            over ``bearer_token``. It must be fast (cache the token).
        timeout: default seconds a unary call may take, retries included (None: no limit).
        retry: when unary calls that are safe to repeat are tried again.
        stream_retry: when long-lived streams reconnect (more patient: a gateway restart
            takes seconds).
        circuit_breaker: when unary calls stop being sent to a failing gateway; None
            disables the breaker.
        tls: TLS or mTLS from files, re-read when they change; None with ``credentials``
            None is plaintext (loopback, or inside a mesh that does mTLS).
        credentials: fixed gRPC channel credentials (an alternative to ``tls``).
        channel: pool size, keepalive, reconnect backoff, message limits.
        update_buffer: order updates buffered for a slow consumer before the stream
            applies backpressure to the server.
        metrics: where call metrics go (:class:`~execbridge.telemetry.PrometheusMetrics`).
        tracing: OpenTelemetry spans and ``traceparent`` propagation when the
            ``opentelemetry-api`` package is installed.
    """

    target: str
    api_key: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    token_provider: Callable[[], str] | None = field(default=None, repr=False)
    timeout: float | None = 10.0
    retry: RetryPolicy = RetryPolicy()
    stream_retry: RetryPolicy = RetryPolicy(
        max_attempts=20, initial_backoff=0.1, max_backoff=2.0, retry_on=(Unavailable, Cancelled)
    )
    circuit_breaker: CircuitBreakerConfig | None = CircuitBreakerConfig()
    tls: TlsConfig | None = None
    credentials: grpc.ChannelCredentials | None = field(default=None, repr=False)
    channel: ChannelConfig = ChannelConfig()
    update_buffer: int = 1024
    metrics: ClientMetrics | None = field(default=None, repr=False)
    tracing: bool = True

    @property
    def targets(self) -> tuple[str, ...]:
        return parse_targets(self.target)


class _Closable(Protocol):
    async def aclose(self) -> None: ...


class ExecutionClient:
    """Async client of the execbridge gateway. Create it with :meth:`connect`."""

    def __init__(self, options: ClientOptions) -> None:
        self._options = options
        self._telemetry = Telemetry(metrics=options.metrics, tracing=options.tracing)
        self._pool = ChannelPool(
            options.targets,
            config=options.channel,
            user_agent=f"execbridge-python/{__version__}",
            tls=options.tls,
            credentials=options.credentials,
        )
        self._breaker = (
            None
            if options.circuit_breaker is None
            else CircuitBreaker(
                options.circuit_breaker,
                name=options.target,
                on_change=self._circuit_changed,
            )
        )
        static: list[tuple[str, str]] = []
        if options.api_key:
            static.append((API_KEY_HEADER, options.api_key))
        if options.bearer_token and options.token_provider is None:
            static.append((AUTHORIZATION_HEADER, f"Bearer {options.bearer_token}"))
        self._static_metadata = tuple(static)
        self._secrets = tuple(s for s in (options.api_key, options.bearer_token) if s)
        self._streams: set[_Closable] = set()
        self._admin: AdminClient | None = None

    @classmethod
    def connect(
        cls,
        target: str | Sequence[str],
        *,
        api_key: str | None = None,
        bearer_token: str | None = None,
        token_provider: Callable[[], str] | None = None,
        timeout: float | None = 10.0,
        retry: RetryPolicy | None = None,
        stream_retry: RetryPolicy | None = None,
        circuit_breaker: CircuitBreakerConfig | None = CircuitBreakerConfig(),
        tls: TlsConfig | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel: ChannelConfig | None = None,
        channel_options: Sequence[tuple[str, str | int]] = (),
        pool_size: int | None = None,
        update_buffer: int = 1024,
        metrics: ClientMetrics | None = None,
        tracing: bool = True,
    ) -> ExecutionClient:
        """A client for the gateway at ``target``: "host:port", a list of them (or one
        string separated by commas), or "dns:///host:port".

        Connections are made lazily by the first call; use it as ``async with`` so they
        are closed. ``retry=execbridge.NO_RETRY`` disables retries and
        ``circuit_breaker=None`` the breaker. ``pool_size`` and ``channel_options`` are
        shortcuts into ``channel``.

        Raises:
            ValueError: no target, both ``tls`` and ``credentials``, or a bad option.
            OSError: a TLS file cannot be read.
        """
        if tls is not None and credentials is not None:
            raise ValueError("give tls or credentials, not both")
        targets = parse_targets(target)
        defaults = ClientOptions(target=",".join(targets))
        base = channel or ChannelConfig()
        channel_config = ChannelConfig(
            pool_size=pool_size or base.pool_size,
            keepalive_time=base.keepalive_time,
            keepalive_timeout=base.keepalive_timeout,
            initial_reconnect_backoff=base.initial_reconnect_backoff,
            max_reconnect_backoff=base.max_reconnect_backoff,
            max_message_bytes=base.max_message_bytes,
            options=tuple(base.options) + tuple(channel_options),
        )
        options = ClientOptions(
            target=",".join(targets),
            api_key=api_key,
            bearer_token=bearer_token,
            token_provider=token_provider,
            timeout=timeout,
            retry=retry or defaults.retry,
            stream_retry=stream_retry or defaults.stream_retry,
            circuit_breaker=circuit_breaker,
            tls=tls,
            credentials=credentials,
            channel=channel_config,
            update_buffer=update_buffer,
            metrics=metrics,
            tracing=tracing,
        )
        return cls(options)

    @property
    def options(self) -> ClientOptions:
        return self._options

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every open stream, then the channels."""
        for stream in list(self._streams):
            await stream.aclose()
        await self._pool.close()

    @property
    def admin(self) -> AdminClient:
        """The operator controls (``execbridge.v1.AdminService``; needs the admin permission)."""
        if self._admin is None:
            from .admin import AdminClient

            self._admin = AdminClient(self)
        return self._admin

    @property
    def circuit_state(self) -> CircuitState:
        """The circuit breaker's state (CLOSED when there is no breaker)."""
        return CircuitState.CLOSED if self._breaker is None else self._breaker.state

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the channels are connected.

        Raises:
            Unavailable: not connected within ``timeout`` seconds.
        """
        try:
            await asyncio.wait_for(self._pool.channel_ready(), timeout)
        except TimeoutError:
            raise Unavailable(
                f"could not connect to {self._options.target} within {timeout}s"
            ) from None

    # --- orders ----------------------------------------------------------------------

    async def submit_order(self, order: OrderRequest, *, timeout: float | None = None) -> SubmitResult:
        """Submit one order; returns once the venue accepted or rejected it.

        A venue or risk rejection is a normal result with status REJECTED. Retrying with
        the same ``client_order_id`` returns the original order (``duplicate=True``).

        Raises:
            ValidationError: the order breaks the contract's rules; not sent.
            InvalidArgument: the gateway refused the request.
            ExecbridgeError: any other failure.
        """
        order.validate()
        request = svc_pb.SubmitOrderRequest(order=order_request_to_proto(order))
        response = await self._unary(
            lambda s: s.execution.SubmitOrder, request, timeout, f"{_EXECUTION}/SubmitOrder"
        )
        _require(response, "order", "SubmitOrder")
        return SubmitResult(order=order_from_proto(response.order), duplicate=response.duplicate)

    async def submit_orders(
        self,
        orders: AsyncIterable[OrderRequest | Sequence[OrderRequest]]
        | Iterable[OrderRequest | Sequence[OrderRequest]],
        *,
        max_batch: int = 500,
        max_in_flight: int = 10_000,
    ) -> AsyncIterator[OrderResult]:
        """Submit orders over one stream; yields one result per order, in order.

        Each item of ``orders`` is an order or a sequence of orders (sent as one message,
        as given). Single orders that are ready together are packed into one message of up
        to ``max_batch`` orders (per-message overhead, not encoding, bounds throughput); a
        lone order is sent at once, so packing adds no latency. Backpressure is end to end: gRPC flow control paces the
        writes, and at most ``max_in_flight`` orders are sent and not yet answered, so a
        consumer that stops reading results stops the sending. A failed order is a
        result with ``error`` set; the stream goes on. To stop early, close the iterator
        (``async with contextlib.aclosing(client.submit_orders(...)) as results:``).

        Raises:
            ValidationError: an order breaks the contract's rules. It and the orders after
                it are not sent; results of the orders sent before it are yielded first.
            ExecbridgeError: the stream failed. Results not yet yielded are unknown:
                resubmit those orders with the same client_order_ids (idempotent).
        """
        if max_batch < 1 or max_in_flight < max_batch:
            raise ValueError("need max_batch >= 1 and max_in_flight >= max_batch")
        call = self._pool.pick().execution.SubmitOrders(metadata=self._stream_metadata())
        sent: collections.deque[tuple[str, list[OrderRequest]]] = collections.deque()
        stopped: list[BaseException] = []
        credit = asyncio.Semaphore(max_in_flight)
        # Input read but not yet sent: single orders, or a list the caller made one batch.
        # The writer packs the single orders that are ready together.
        ready: asyncio.Queue[OrderRequest | list[OrderRequest] | None] = asyncio.Queue(max_batch * 2)

        async def read_input() -> None:
            try:
                async for item in _aiter(orders):
                    batch = _as_batch(item)
                    if isinstance(item, OrderRequest):
                        await ready.put(item)
                    elif batch:
                        await ready.put(batch)
            except Exception as error:  # the input failed: stop after what was read
                stopped.append(error)
            await ready.put(None)

        async def write_all() -> None:
            number = 0
            carry: OrderRequest | list[OrderRequest] | None = None
            done = False
            try:
                while not done:
                    first = carry if carry is not None else await ready.get()
                    carry = None
                    if first is None:
                        break
                    if isinstance(first, list):
                        batch = first
                    else:
                        batch = [first]
                        while len(batch) < max_batch and not ready.empty():
                            item = ready.get_nowait()
                            if not isinstance(item, OrderRequest):
                                carry = item
                                if item is None:
                                    done = True
                                break
                            batch.append(item)
                    valid = []
                    for order in batch:
                        try:
                            order.validate()
                        except ValidationError as error:
                            stopped.insert(0, error)
                            done = True
                            break
                        valid.append(order)
                    if not valid:
                        break
                    for _ in valid:
                        await credit.acquire()
                    number += 1
                    batch_id = f"b{number}"
                    sent.append((batch_id, valid))
                    await call.write(
                        svc_pb.SubmitOrdersRequest(
                            orders=[order_request_to_proto(o) for o in valid], batch_id=batch_id
                        )
                    )
            except grpc.aio.AioRpcError:
                return  # the call failed; reading reports why
            with suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
                await call.done_writing()

        reader = asyncio.create_task(read_input(), name="execbridge-submit-orders-input")
        writer = asyncio.create_task(write_all(), name="execbridge-submit-orders")
        try:
            while True:
                try:
                    response = await call.read()
                except grpc.aio.AioRpcError as rpc_error:
                    error = from_rpc_error(rpc_error)
                    if self._scrub(error):
                        raise error from None
                    raise error from rpc_error
                if not isinstance(response, svc_pb.SubmitOrdersResponse):  # grpc.aio.EOF
                    break
                if not sent:
                    raise ProtocolError("SubmitOrders answered a batch that was never sent")
                batch_id, batch = sent.popleft()
                size = len(batch)
                if response.batch_id != batch_id or len(response.results) != size:
                    raise ProtocolError(
                        f"SubmitOrders answered batch {response.batch_id!r} with "
                        f"{len(response.results)} results; expected {batch_id!r} with {size}"
                    )
                for result in response.results:
                    credit.release()
                    known = batch[result.index] if 0 <= result.index < size else None
                    yield order_result_from_proto(result, batch_id, known)
            await writer
            if stopped:
                raise stopped[0]
            if sent:
                unanswered = sum(len(batch) for _, batch in sent)
                raise ProtocolError(f"SubmitOrders ended with {unanswered} orders unanswered")
        finally:
            reader.cancel()
            writer.cancel()
            call.cancel()

    async def cancel_order(
        self,
        *,
        account: str,
        client_order_id: str | None = None,
        order_id: str | None = None,
        timeout: float | None = None,
    ) -> Order:
        """Request the cancellation of one order, named by exactly one of its ids.

        Returns the order after the request (PENDING_CANCEL or CANCELED).

        Raises:
            ValidationError: not exactly one id given.
            NotFound: no such order.
            ExecbridgeError: any other failure.
        """
        request = svc_pb.CancelOrderRequest(account=account)
        _set_order_id(request, client_order_id, order_id)
        response = await self._unary(
            lambda s: s.execution.CancelOrder, request, timeout, f"{_EXECUTION}/CancelOrder"
        )
        _require(response, "order", "CancelOrder")
        return order_from_proto(response.order)

    async def cancel_all(
        self,
        account: str,
        *,
        symbol: str | None = None,
        venue: str | None = None,
        timeout: float | None = None,
    ) -> list[Order]:
        """Request the cancellation of every open order of ``account`` (optionally of one
        symbol or venue); returns the orders a cancel was requested for.

        Raises:
            ExecbridgeError: the request failed.
        """
        request = svc_pb.CancelAllRequest(account=account, symbol=symbol or "", venue=venue or "")
        response = await self._unary(
            lambda s: s.execution.CancelAll, request, timeout, f"{_EXECUTION}/CancelAll"
        )
        return [order_from_proto(o) for o in response.orders]

    async def get_order(
        self,
        *,
        account: str,
        client_order_id: str | None = None,
        order_id: str | None = None,
        timeout: float | None = None,
    ) -> Order:
        """One order, named by exactly one of its ids.

        Raises:
            ValidationError: not exactly one id given.
            NotFound: no such order.
            ExecbridgeError: any other failure.
        """
        request = svc_pb.GetOrderRequest(account=account)
        _set_order_id(request, client_order_id, order_id)
        response = await self._unary(
            lambda s: s.execution.GetOrder, request, timeout, f"{_EXECUTION}/GetOrder"
        )
        _require(response, "order", "GetOrder")
        return order_from_proto(response.order)

    async def list_orders(
        self,
        account: str,
        *,
        open_only: bool = False,
        symbol: str | None = None,
        statuses: Iterable[OrderStatus] = (),
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> Page[Order]:
        """One page of the account's orders, newest first.

        Raises:
            ValidationError: ``page_size`` outside 1-1000.
            ExecbridgeError: the request failed.
        """
        request = svc_pb.ListOrdersRequest(
            account=account,
            symbol=symbol or "",
            open_only=open_only,
            statuses=[proto_name(s) for s in statuses],
            page_size=_page_size(page_size),
            page_token=page_token or "",
        )
        if start_time is not None:
            request.start_time.CopyFrom(datetime_to_proto(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(datetime_to_proto(end_time))
        response = await self._unary(
            lambda s: s.execution.ListOrders, request, timeout, f"{_EXECUTION}/ListOrders"
        )
        return Page(
            items=tuple(order_from_proto(o) for o in response.orders),
            next_page_token=response.next_page_token or None,
        )

    async def trade_history(
        self,
        account: str,
        *,
        symbol: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> Page[Fill]:
        """One page of the account's fills, newest first.

        Raises:
            ValidationError: ``page_size`` outside 1-1000.
            ExecbridgeError: the request failed.
        """
        request = svc_pb.GetTradeHistoryRequest(
            account=account,
            symbol=symbol or "",
            page_size=_page_size(page_size),
            page_token=page_token or "",
        )
        if start_time is not None:
            request.start_time.CopyFrom(datetime_to_proto(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(datetime_to_proto(end_time))
        response = await self._unary(
            lambda s: s.execution.GetTradeHistory, request, timeout, f"{_EXECUTION}/GetTradeHistory"
        )
        return Page(
            items=tuple(fill_from_proto(f) for f in response.fills),
            next_page_token=response.next_page_token or None,
        )

    async def iter_orders(
        self,
        account: str,
        *,
        open_only: bool = False,
        symbol: str | None = None,
        statuses: Iterable[OrderStatus] = (),
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Order]:
        """Every order :meth:`list_orders` would return, fetching page after page lazily.

        Raises:
            ExecbridgeError: a page could not be fetched.
        """
        token: str | None = None
        while True:
            page = await self.list_orders(
                account,
                open_only=open_only,
                symbol=symbol,
                statuses=tuple(statuses),
                start_time=start_time,
                end_time=end_time,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            )
            for order in page.items:
                yield order
            token = page.next_page_token
            if token is None:
                return

    async def iter_trade_history(
        self,
        account: str,
        *,
        symbol: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Fill]:
        """Every fill :meth:`trade_history` would return, fetching page after page lazily.

        Raises:
            ExecbridgeError: a page could not be fetched.
        """
        token: str | None = None
        while True:
            page = await self.trade_history(
                account,
                symbol=symbol,
                start_time=start_time,
                end_time=end_time,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            )
            for fill in page.items:
                yield fill
            token = page.next_page_token
            if token is None:
                return

    async def positions(
        self, account: str, *, venue: str | None = None, timeout: float | None = None
    ) -> Portfolio:
        """The account's positions and balances.

        Raises:
            ExecbridgeError: the request failed.
        """
        request = svc_pb.GetPositionsRequest(account=account, venue=venue or "")
        response = await self._unary(
            lambda s: s.execution.GetPositions, request, timeout, f"{_EXECUTION}/GetPositions"
        )
        return portfolio_from_proto(response)

    def _reconnected(self, stream: str) -> Callable[[], None]:
        metrics = self._options.metrics

        def record() -> None:
            if metrics is not None:
                metrics.reconnected(stream)

        return record

    # --- streams ---------------------------------------------------------------------

    def order_updates(
        self,
        *,
        accounts: Iterable[str] = (),
        resume_from: Mapping[str, int] | None = None,
    ) -> OrderUpdateStream:
        """Follow every state change and fill of ``accounts`` (all readable ones if empty).

        ``resume_from`` maps shard -> last sequence seen (a previous stream's ``cursors``):
        updates after it are replayed first. Without it the stream starts live.
        """
        stream = OrderUpdateStream(
            open_call=lambda request: self._pool.first().execution.SubscribeOrderUpdates(
                request, metadata=self._stream_metadata()
            ),
            accounts=accounts,
            resume_from=resume_from or {},
            retry=self._options.stream_retry,
            buffer=self._options.update_buffer,
            on_close=self._streams.discard,
            on_reconnect=self._reconnected("order_updates"),
        )
        self._streams.add(stream)
        return stream

    def market_data(
        self,
        symbols: Iterable[str],
        *,
        channels: Iterable[Channel] = (Channel.TOP_OF_BOOK,),
        venue: str = "",
        policy: SlowConsumerPolicy = SlowConsumerPolicy.UNSPECIFIED,
        reconnect: bool = True,
    ) -> MarketDataStream:
        """Stream market data for ``symbols``; add and remove symbols while streaming.

        ``venue`` empty means the server's default venue. With ``reconnect`` a lost stream
        is reopened under the client's ``stream_retry`` policy and every symbol is
        subscribed again; meanwhile the stream yields a RECONNECTING status frame, and
        the server's snapshot after the resubscription makes the book whole again.
        """
        stream = MarketDataStream(
            open_call=lambda: self._pool.first().market_data.StreamMarketData(
                metadata=self._stream_metadata()
            ),
            symbols=symbols,
            venue=venue,
            channels=channels,
            policy=policy,
            on_close=self._streams.discard,
            retry=self._options.stream_retry if reconnect else NO_RETRY,
            on_reconnect=self._reconnected("market_data"),
        )
        self._streams.add(stream)
        return stream

    # --- plumbing --------------------------------------------------------------------

    def _auth_metadata(self) -> list[tuple[str, str]]:
        metadata = list(self._static_metadata)
        if self._options.token_provider is not None:
            token = self._options.token_provider()
            metadata.append((AUTHORIZATION_HEADER, f"Bearer {token}"))
            if token not in self._secrets:
                self._secrets = (*self._secrets[-8:], token)
        return metadata

    def _stream_metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata for opening a stream: auth, a correlation id, the caller's trace context."""
        metadata = self._auth_metadata()
        metadata.append((CORRELATION_HEADER, current_correlation_id() or uuid.uuid4().hex))
        self._telemetry.tracing.inject_current(metadata)
        return tuple(metadata)

    def _circuit_changed(self, state: CircuitState) -> None:
        if self._options.metrics is not None:
            self._options.metrics.circuit_state(state.value)

    def _on_retry(self, method: str) -> Callable[[ExecbridgeError, int, float], None]:
        metrics = self._options.metrics

        def record(error: ExecbridgeError, attempt: int, delay: float) -> None:
            if metrics is not None:
                metrics.retried(method, error.code.name if error.code else type(error).__name__)

        return record

    def _scrub(self, error: ExecbridgeError) -> bool:
        """Remove any secret of this client from an error's text (a server may echo one).

        Returns whether one was found: the raw gRPC error it came from then carries the
        secret too and must not be chained.
        """
        found = False
        for secret in self._secrets:
            if secret and secret in error.message:
                error.message = error.message.replace(secret, "<redacted>")
                error.args = (error.message,)
                found = True
        for key, value in list(error.metadata.items()):
            if any(secret and secret in value for secret in self._secrets):
                error.metadata = {**error.metadata, key: "<redacted>"}
                found = True
        return found

    async def _unary(
        self,
        method: Callable[[Stubs], grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]],
        request: _Req,
        timeout: float | None,
        name: str,
        *,
        retry: RetryPolicy | None = None,
    ) -> _Resp:
        """The one path of every unary call (see the module docstring).

        Each try picks the next channel of the pool, so a retry fails over to another
        connection (and, with a static list of targets, to another gateway).
        """
        metadata = self._auth_metadata()
        with self._telemetry.call(name, metadata) as record:
            frozen = tuple(metadata)
            pool = self._pool

            async def attempt(remaining: float | None) -> _Resp:
                return await method(pool.pick())(request, timeout=remaining, metadata=frozen)

            try:
                return await call_with_retry(
                    attempt,
                    policy=self._options.retry if retry is None else retry,
                    timeout=self._options.timeout if timeout is None else timeout,
                    what=name,
                    breaker=self._breaker,
                    on_retry=self._on_retry(name),
                )
            except ExecbridgeError as error:
                record.code = error.code.name if error.code else type(error).__name__
                error.correlation_id = record.correlation_id
                _log.debug(
                    "%s failed: %s",
                    name,
                    type(error).__name__,
                    extra={"rpc": name, "correlation_id": record.correlation_id, "error_code": record.code},
                )
                if self._scrub(error):
                    raise error from None
                raise
            except asyncio.CancelledError:
                record.code = "CANCELLED"
                raise


def _require(message: Message, name: str, what: str) -> None:
    if not message.HasField(name):
        raise ProtocolError(f"{what} answered without {name!r}")


def _set_order_id(
    request: svc_pb.CancelOrderRequest | svc_pb.GetOrderRequest,
    client_order_id: str | None,
    order_id: str | None,
) -> None:
    if (client_order_id is None) == (order_id is None):
        raise ValidationError(
            [FieldViolation("client_order_id", "give exactly one of client_order_id and order_id")]
        )
    if client_order_id is not None:
        request.client_order_id = client_order_id
    elif order_id is not None:
        request.order_id = order_id


def _page_size(page_size: int | None) -> int:
    if page_size is None:
        return 0
    if not 1 <= page_size <= 1000:
        raise ValidationError([FieldViolation("page_size", "must be between 1 and 1000")])
    return page_size


def _as_batch(item: OrderRequest | Sequence[OrderRequest]) -> list[OrderRequest]:
    batch = [item] if isinstance(item, OrderRequest) else list(item)
    for order in batch:
        if not isinstance(order, OrderRequest):
            raise TypeError(f"expected OrderRequest, got {type(order).__name__}")
    return batch


async def _aiter(items: AsyncIterable[Any] | Iterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
