"""Correlation ids, W3C trace context, Prometheus metrics and structured log records."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from execbridge import (
    ExecutionClient,
    NotFound,
    OrderRequest,
    PrometheusMetrics,
    RetryPolicy,
    Side,
    correlation_id,
)

from .conftest import Handler, Server

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_PROVIDER)


def market() -> OrderRequest:
    return OrderRequest.market(account="acct", symbol="BTC-USDT", side=Side.BUY, quantity="0.5")


async def test_each_call_carries_a_fresh_correlation_id(server: Server, submit_ok: Handler) -> None:
    server.execution.submit_order = submit_ok
    async with ExecutionClient.connect(server.target) as client:
        await client.submit_order(market())
        await client.submit_order(market())
    ids = [m["x-correlation-id"] for m in server.execution.seen_metadata]
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)


async def test_a_correlation_id_set_by_the_caller_goes_on_every_call_and_error(server: Server, submit_ok: Handler) -> None:
    async def missing(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such order")

    server.execution.submit_order = submit_ok
    server.execution.get_order = missing
    async with ExecutionClient.connect(server.target) as client:
        with correlation_id("rebalance-42"):
            await client.submit_order(market())
            with pytest.raises(NotFound) as caught:
                await client.get_order(account="acct", order_id="x")
    assert [m["x-correlation-id"] for m in server.execution.seen_metadata] == ["rebalance-42"] * 2
    assert caught.value.correlation_id == "rebalance-42"


async def test_a_span_is_recorded_and_its_traceparent_sent(server: Server, submit_ok: Handler) -> None:
    _EXPORTER.clear()
    server.execution.submit_order = submit_ok
    tracer = trace.get_tracer("test")
    async with ExecutionClient.connect(server.target) as client:
        with tracer.start_as_current_span("strategy-tick") as parent:
            await client.submit_order(market())
    traceparent = server.execution.seen_metadata[0]["traceparent"]
    version, trace_id, span_id, flags = traceparent.split("-")
    assert int(trace_id, 16) == parent.get_span_context().trace_id
    spans = {s.name: s for s in _EXPORTER.get_finished_spans()}
    call = spans["execbridge.v1.ExecutionService/SubmitOrder"]
    assert int(span_id, 16) == call.context.span_id
    assert call.parent is not None and call.parent.span_id == parent.get_span_context().span_id
    assert call.attributes is not None and call.attributes["rpc.grpc.status_code"] == "OK"


async def test_tracing_off_sends_no_traceparent(server: Server, submit_ok: Handler) -> None:
    server.execution.submit_order = submit_ok
    async with ExecutionClient.connect(server.target, tracing=False) as client:
        with trace.get_tracer("test").start_as_current_span("tick"):
            await client.submit_order(market())
    assert "traceparent" not in server.execution.seen_metadata[0]


async def test_metrics_count_latency_errors_retries_and_in_flight(server: Server, submit_ok: Handler) -> None:
    failures = 1

    async def flaky(request: Any, context: Any) -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "blip")
        return await submit_ok(request, context)

    async def missing(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such order")

    server.execution.submit_order = flaky
    server.execution.get_order = missing
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    policy = RetryPolicy(initial_backoff=0.01)
    async with ExecutionClient.connect(server.target, metrics=metrics, retry=policy) as client:
        await client.submit_order(market())
        with pytest.raises(NotFound):
            await client.get_order(account="a", order_id="x")
    submit = "execbridge.v1.ExecutionService/SubmitOrder"
    get = "execbridge.v1.ExecutionService/GetOrder"
    value = registry.get_sample_value
    assert value("execbridge_client_request_duration_seconds_count", {"method": submit, "code": "OK"}) == 1
    assert value("execbridge_client_errors_total", {"method": get, "code": "NOT_FOUND"}) == 1
    assert value("execbridge_client_retries_total", {"method": submit, "code": "UNAVAILABLE"}) == 1
    assert value("execbridge_client_in_flight", {"method": submit}) == 0


async def test_retries_are_logged_with_structured_fields(server: Server, submit_ok: Handler, caplog: pytest.LogCaptureFixture) -> None:
    failures = 1

    async def flaky(request: Any, context: Any) -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "blip")
        return await submit_ok(request, context)

    server.execution.submit_order = flaky
    caplog.set_level(logging.WARNING, logger="execbridge")
    async with ExecutionClient.connect(server.target, retry=RetryPolicy(initial_backoff=0.01)) as client:
        await client.submit_order(market())
    record = next(r for r in caplog.records if "retrying" in r.getMessage())
    assert record.rpc == "execbridge.v1.ExecutionService/SubmitOrder"  # type: ignore[attr-defined]
    assert record.error_code == "UNAVAILABLE"  # type: ignore[attr-defined]
    assert record.attempt == 1  # type: ignore[attr-defined]


async def test_a_stream_is_opened_with_the_callers_trace_context_and_a_correlation_id(server: Server) -> None:
    async def subscribe(request: Any, context: Any) -> Any:
        await asyncio.sleep(10)
        yield  # pragma: no cover

    server.execution.subscribe = subscribe
    async with ExecutionClient.connect(server.target) as client:
        with trace.get_tracer("test").start_as_current_span("strategy") as parent:
            with correlation_id("stream-7"):
                updates = client.order_updates()
                async with updates:
                    await asyncio.sleep(0.2)
    metadata = server.execution.seen_metadata[0]
    assert metadata["x-correlation-id"] == "stream-7"
    assert int(metadata["traceparent"].split("-")[1], 16) == parent.get_span_context().trace_id
