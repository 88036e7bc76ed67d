"""Observability of client calls: correlation ids, OpenTelemetry spans, Prometheus metrics.

- Every call carries an ``x-correlation-id`` (a fresh one, or the one set with
  :func:`correlation_id` for a block of calls); log records and exceptions carry it too.
- With ``opentelemetry-api`` installed and a TracerProvider configured by the application,
  each call is a CLIENT span and its W3C ``traceparent`` (and ``tracestate``) goes out in
  the call's metadata, so the gateway's spans join the caller's trace. Without the package,
  without a configured provider, or with ``tracing=False``, nothing is done per call beyond
  one ``isinstance`` check.
- :class:`PrometheusMetrics` (``pip install 'execbridge[metrics]'``) records a latency
  histogram, errors by code, calls in flight, retries, stream reconnects and breaker state.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "CORRELATION_HEADER",
    "ClientMetrics",
    "PrometheusMetrics",
    "correlation_id",
    "current_correlation_id",
]

CORRELATION_HEADER = "x-correlation-id"

_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "execbridge_correlation_id", default=None
)


@contextmanager
def correlation_id(value: str | None = None) -> Iterator[str]:
    """Send every call made inside the block with this correlation id (a fresh one if
    None); yields the id::

        with execbridge.correlation_id("rebalance-42"):
            await client.submit_order(...)
    """
    chosen = value or uuid.uuid4().hex
    token = _correlation.set(chosen)
    try:
        yield chosen
    finally:
        _correlation.reset(token)


def current_correlation_id() -> str | None:
    """The correlation id set by :func:`correlation_id` around this code, if any."""
    return _correlation.get()


class ClientMetrics(Protocol):
    """What the client reports. :class:`PrometheusMetrics` implements it; so can a test."""

    def call_started(self, method: str) -> None: ...
    def call_finished(self, method: str, code: str, seconds: float) -> None: ...
    def retried(self, method: str, code: str) -> None: ...
    def reconnected(self, stream: str) -> None: ...
    def circuit_state(self, state: str) -> None: ...


class PrometheusMetrics:
    """Client metrics in a ``prometheus_client`` registry (the global one by default).

    Raises:
        ImportError: ``prometheus_client`` is not installed.
    """

    def __init__(self, *, registry: CollectorRegistry | None = None, namespace: str = "execbridge_client") -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        reg = REGISTRY if registry is None else registry
        self.latency = Histogram(
            f"{namespace}_request_duration_seconds",
            "Duration of client calls, retries included.",
            ["method", "code"],
            registry=reg,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.errors = Counter(
            f"{namespace}_errors", "Failed client calls by status code.", ["method", "code"], registry=reg
        )
        self.in_flight = Gauge(
            f"{namespace}_in_flight", "Client calls in flight.", ["method"], registry=reg
        )
        self.retries = Counter(
            f"{namespace}_retries", "Retried tries by status code.", ["method", "code"], registry=reg
        )
        self.reconnects = Counter(
            f"{namespace}_reconnects", "Stream reconnects.", ["stream"], registry=reg
        )
        self.circuit_open = Gauge(
            f"{namespace}_circuit_open", "1 while the circuit breaker is open or half open.", registry=reg
        )

    def call_started(self, method: str) -> None:
        self.in_flight.labels(method).inc()

    def call_finished(self, method: str, code: str, seconds: float) -> None:
        self.in_flight.labels(method).dec()
        self.latency.labels(method, code).observe(seconds)
        if code != "OK":
            self.errors.labels(method, code).inc()

    def retried(self, method: str, code: str) -> None:
        self.retries.labels(method, code).inc()

    def reconnected(self, stream: str) -> None:
        self.reconnects.labels(stream).inc()

    def circuit_state(self, state: str) -> None:
        self.circuit_open.set(0 if state == "closed" else 1)


class _Tracing:
    """The OpenTelemetry hooks, resolved once; inert when the API is not installed."""

    def __init__(self, enabled: bool) -> None:
        self.tracer: Any = None
        self._unconfigured: Any = None
        self._provider: Any = None
        self._inject: Any = None
        self._kind: Any = None
        self._status: Any = None
        if not enabled:
            return
        try:
            from opentelemetry import propagate, trace
        except ImportError:
            return
        self.tracer = trace.get_tracer("execbridge")
        # Until the application installs a TracerProvider (the SDK) the API hands out a
        # proxy and every span would be a no-op: skip the work entirely then.
        self._provider = trace.get_tracer_provider
        self._unconfigured = trace.ProxyTracerProvider
        self._inject = propagate.inject
        self._kind = trace.SpanKind.CLIENT
        self._status = trace.Status, trace.StatusCode

    @contextmanager
    def span(self, method: str, correlation: str, metadata: list[tuple[str, str]]) -> Iterator[Any]:
        """A CLIENT span around a call; appends its trace context to ``metadata``."""
        if self.tracer is None or isinstance(self._provider(), self._unconfigured):
            yield None
            return
        service, _, name = method.rpartition("/")
        with self.tracer.start_as_current_span(
            method,
            kind=self._kind,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                "execbridge.correlation_id": correlation,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            carrier: dict[str, str] = {}
            self._inject(carrier)
            metadata.extend(carrier.items())
            yield span

    def inject_current(self, metadata: list[tuple[str, str]]) -> None:
        """Append the current trace context (no span of our own): for opening streams."""
        if self.tracer is None or isinstance(self._provider(), self._unconfigured):
            return
        carrier: dict[str, str] = {}
        self._inject(carrier)
        metadata.extend(carrier.items())

    def finish(self, span: Any, code: str) -> None:
        if span is None:
            return
        span.set_attribute("rpc.grpc.status_code", code)
        if code != "OK":
            status, status_code = self._status
            span.set_status(status(status_code.ERROR, code))


class Telemetry:
    """Per-client observability: one object the client calls around every RPC."""

    def __init__(self, *, metrics: ClientMetrics | None, tracing: bool) -> None:
        self.metrics = metrics
        self.tracing = _Tracing(tracing)

    @contextmanager
    def call(self, method: str, metadata: list[tuple[str, str]]) -> Iterator[_CallRecord]:
        """Observe one call: correlation id and trace context are appended to ``metadata``."""
        correlation = _correlation.get() or uuid.uuid4().hex
        metadata.append((CORRELATION_HEADER, correlation))
        record = _CallRecord(correlation)
        if self.metrics is not None:
            self.metrics.call_started(method)
        start = time.perf_counter()
        try:
            with self.tracing.span(method, correlation, metadata) as span:
                try:
                    yield record
                finally:
                    self.tracing.finish(span, record.code)
        finally:
            if self.metrics is not None:
                self.metrics.call_finished(method, record.code, time.perf_counter() - start)


class _CallRecord:
    __slots__ = ("code", "correlation_id")

    def __init__(self, correlation_id: str) -> None:
        self.correlation_id = correlation_id
        self.code = "OK"
