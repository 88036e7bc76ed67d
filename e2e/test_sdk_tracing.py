"""The SDK's correlation id and W3C trace context reach the gateway: its JSON log lines of
a call carry the id the caller chose and (once the gateway extracts traceparent) the trace
id of the caller's span."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from execbridge import ExecutionClient, OrderRequest, Side, correlation_id
from helpers import EVENT_TIMEOUT
from stack import SERVICES, Stack

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    config = {name: {"log.format": "json", "log.level": "debug"} for name in SERVICES}
    with Stack(config=config) as running:
        yield running


async def submit_traced(stack: Stack, account: str) -> tuple[str, str, list[dict[str, object]]]:
    """Submit one order inside a span and a correlation id; the gateway's lines of it."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    marker = f"sdk-{uuid.uuid4().hex[:12]}"
    async with ExecutionClient.connect(stack.gateway_target) as client:
        await client.wait_ready(timeout=EVENT_TIMEOUT)
        with trace.get_tracer("e2e").start_as_current_span("strategy-tick") as parent:
            with correlation_id(marker):
                order = OrderRequest.market(account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.001")
                await client.submit_order(order)
    await asyncio.sleep(0.3)
    lines = [json.loads(line) for line in stack["gateway"].logs().splitlines() if line.startswith("{")]
    ours = [line for line in lines if line.get("correlation_id") == marker]
    return marker, format(parent.get_span_context().trace_id, "032x"), ours


async def test_the_gateway_logs_the_callers_correlation_id(stack: Stack, account: str) -> None:
    marker, _, ours = await submit_traced(stack, account)
    assert ours, f"no gateway log line carries the correlation id {marker}"
    assert any(
        isinstance(line.get("span"), dict) and line["span"].get("method") == "SubmitOrder" for line in ours  # type: ignore[union-attr]
    )


async def test_the_gateway_logs_the_callers_trace_id(stack: Stack, account: str) -> None:
    _, trace_id, ours = await submit_traced(stack, account)
    assert ours
    if not any(line.get("trace_id") for line in ours):
        # The client sends traceparent (python-client/tests/test_observability.py checks the
        # header); the gateway does not read it into its log context yet.
        pytest.xfail("the gateway does not extract the W3C traceparent into trace_id yet")
    assert any(line.get("trace_id") == trace_id for line in ours), (
        f"the call's lines carry trace ids {sorted({str(line.get('trace_id')) for line in ours})}, expected {trace_id}"
    )
