"""One trace from the Python client through the gateway and the executor to the venue.

Every service of a real stack exports OTLP/gRPC to a small trace receiver running in this
process (``opentelemetry.proto.collector.trace.v1.TraceService/Export``), and so does the
Python SDK's TracerProvider. One order is submitted inside a span of the test; the spans
the receiver gets for that trace must link up: the SDK's CLIENT span, the gateway's SERVER
span under it (with its ``admission`` span), the gateway's CLIENT hop to the executor, the
executor's SERVER span under that, and the executor's stages: ``risk``, ``journal`` (the
wait for the intent to be durable) and ``venue``, in that order in time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from execbridge import ExecutionClient, OrderRequest, Side
from helpers import EVENT_TIMEOUT, drained
from stack import LOOPBACK, SERVICES, Stack

CLIENT = trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT
SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER

#: Milliseconds between the services' batch exports (the SDK default is 5 s).
EXPORT_DELAY_MS = "100"

@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver got it."""

    service: str
    scope: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, str]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector that keeps every span it is sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []

    def Export(  # noqa: N802 (the gRPC method's name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=service,
                            scope=scope_spans.scope.name,
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes={a.key: str(a.value.string_value or a.value.int_value) for a in span.attributes},
                        )
                    )
        with self._lock:
            self._spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if s.trace_id == trace_id]


class Switchable(SpanProcessor):
    """A span processor that can be switched off: the process-wide TracerProvider outlives
    this module's receiver, and later modules must not export to a closed port."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner
        self._on = True

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self._on:
            self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self._on:
            self._inner.on_end(span)

    def shutdown(self) -> None:
        if self._on:
            self._on = False
            self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis) if self._on else True


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    collector = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    server.start()
    try:
        yield collector, f"{LOOPBACK}:{port}"
    finally:
        server.stop(grace=None)


@pytest.fixture(scope="module")
def client_tracing(receiver: tuple[Receiver, str]) -> Iterator[None]:
    """The Python side exports to the receiver too, through the SDK's OTLP exporter."""
    _, address = receiver
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": "e2e-orchestrator"}))
        trace.set_tracer_provider(provider)
    processor = Switchable(SimpleSpanProcessor(OTLPSpanExporter(endpoint=address, insecure=True)))
    provider.add_span_processor(processor)
    try:
        yield
    finally:
        processor.shutdown()


@pytest.fixture(scope="module")
def stack(receiver: tuple[Receiver, str]) -> Iterator[Stack]:
    _, address = receiver
    config = {name: {"server.tracing.otlp_endpoint": f"http://{address}"} for name in SERVICES}
    # The services' batch exporters read the OpenTelemetry SDK's environment variables.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", EXPORT_DELAY_MS)
        running = Stack(config=config).start()
    yield from drained(running)


@dataclass(frozen=True)
class Trace:
    """The spans of one traced SubmitOrder."""

    trace_id: str
    root_span_id: str
    spans: list[ReceivedSpan]

    def by_id(self) -> dict[str, ReceivedSpan]:
        return {s.span_id: s for s in self.spans}

    def find(self, service: str, name: str, kind: int | None = None) -> list[ReceivedSpan]:
        return [
            s
            for s in self.spans
            if service in s.service and s.name == name and (kind is None or s.kind == kind)
        ]

    def one(self, service: str, name: str, kind: int | None = None) -> ReceivedSpan:
        found = self.find(service, name, kind)
        assert len(found) == 1, f"expected one {name!r} span of {service}, got {len(found)}:\n{self.describe()}"
        return found[0]

    def ancestors(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        """The spans above ``span`` in this trace, nearest first."""
        by_id = self.by_id()
        chain: list[ReceivedSpan] = []
        parent = by_id.get(span.parent_span_id)
        while parent is not None and parent not in chain:
            chain.append(parent)
            parent = by_id.get(parent.parent_span_id)
        return chain

    def describe(self) -> str:
        return "\n".join(
            f"  {s.service or '?'} [{s.scope}] {s.name!r} kind={s.kind} id={s.span_id} parent={s.parent_span_id or '-'}"
            for s in self.spans
        )


GATEWAY_RPC = "execbridge.v1.ExecutionService/SubmitOrder"
EXECUTOR_RPC = "execbridge.internal.v1.ExecutorService/SubmitOrder"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def traced(stack: Stack, receiver: tuple[Receiver, str], client_tracing: None) -> Trace:
    """Submits one order inside a span of the test, then collects that trace's spans."""
    collector, _ = receiver
    async with ExecutionClient.connect(stack.gateway_target) as client:
        await client.wait_ready(timeout=EVENT_TIMEOUT)
        with trace.get_tracer("e2e").start_as_current_span("strategy-tick") as root:
            order = OrderRequest.market(account="acct-trace", symbol="BTC-USDT", side=Side.BUY, quantity="0.001")
            await client.submit_order(order)
    trace_id = format(root.get_span_context().trace_id, "032x")
    root_span_id = format(root.get_span_context().span_id, "016x")
    deadline = time.monotonic() + EVENT_TIMEOUT
    spans = collector.of_trace(trace_id)
    while time.monotonic() < deadline:
        spans = collector.of_trace(trace_id)
        if any("executor" in s.service and s.name == EXECUTOR_RPC for s in spans):
            break
        await asyncio.sleep(0.1)
    # The executor's inner spans end before its RPC span, so they were queued before it;
    # one more export interval lets a batch split between two exports arrive.
    await asyncio.sleep(2 * int(EXPORT_DELAY_MS) / 1000)
    return Trace(trace_id=trace_id, root_span_id=root_span_id, spans=collector.of_trace(trace_id))


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_the_client_gateway_and_executor_spans_form_one_trace(traced: Trace) -> None:
    client = [s for s in traced.spans if s.scope == "execbridge" and s.kind == CLIENT and s.name.endswith("SubmitOrder")]
    assert len(client) == 1, f"the SDK's CLIENT span of SubmitOrder is missing:\n{traced.describe()}"
    assert client[0].parent_span_id == traced.root_span_id

    gateway = traced.one("execbridge-gateway", GATEWAY_RPC, SERVER)
    assert gateway.parent_span_id == client[0].span_id, f"the gateway's RPC span is not the client span's child:\n{traced.describe()}"

    executor = traced.one("execbridge-executor", EXECUTOR_RPC, SERVER)
    chain = traced.ancestors(executor)
    hop = chain[0] if chain else None
    assert hop is not None and hop.service == "execbridge-gateway" and hop.kind == CLIENT, (
        f"the executor's RPC span is not under the gateway's CLIENT hop:\n{traced.describe()}"
    )
    assert gateway in chain, f"the executor's parent chain does not reach the gateway's RPC span:\n{traced.describe()}"
    assert chain[-1].span_id == traced.root_span_id


async def test_the_gateway_admits_inside_its_rpc_span_and_before_forwarding(traced: Trace) -> None:
    gateway = traced.one("execbridge-gateway", GATEWAY_RPC, SERVER)
    admission = traced.one("execbridge-gateway", "admission")
    assert gateway in traced.ancestors(admission), f"admission is not inside the RPC span:\n{traced.describe()}"
    hop = traced.one("execbridge-gateway", "forward", CLIENT)
    assert gateway in traced.ancestors(hop)
    assert admission not in traced.ancestors(hop), "the executor call must not count as admission time"


def executor_stages(traced: Trace, name: str) -> list[ReceivedSpan]:
    """The executor's spans called ``name`` (at least one), each under its RPC span."""
    executor = traced.one("execbridge-executor", EXECUTOR_RPC, SERVER)
    stages = traced.find("execbridge-executor", name)
    assert stages, f"no {name!r} span of the executor:\n{traced.describe()}"
    for stage in stages:
        assert executor in traced.ancestors(stage), f"{name!r} is not under the executor's RPC span:\n{traced.describe()}"
    return stages


def executor_stage(traced: Trace, name: str) -> ReceivedSpan:
    """The executor's one span called ``name``, under its RPC span."""
    stages = executor_stages(traced, name)
    assert len(stages) == 1, f"expected one {name!r} span of the executor:\n{traced.describe()}"
    return stages[0]


async def test_the_paper_venue_hop_is_a_span_of_the_same_trace(traced: Trace) -> None:
    venue = executor_stage(traced, "venue")
    assert venue.kind == CLIENT
    assert venue.attributes.get("outcome") == "accepted", venue.attributes


async def test_the_pre_trade_risk_check_is_a_span_of_the_same_trace(traced: Trace) -> None:
    executor_stage(traced, "risk")


async def test_waiting_for_the_journal_is_a_span_of_the_same_trace(traced: Trace) -> None:
    # A submit waits once, for its intent; the venue's answer is queued to the journal and
    # made durable by a later group commit without holding the caller.
    journal = executor_stages(traced, "journal")
    assert [j.attributes.get("durable") for j in journal] == ["intent"], traced.describe()


async def test_risk_runs_and_the_intent_is_durable_before_the_venue_sees_the_order(traced: Trace) -> None:
    risk = executor_stage(traced, "risk")
    intent = executor_stage(traced, "journal")
    venue = executor_stage(traced, "venue")
    assert risk.end_ns <= intent.start_ns, f"risk after the journal wait:\n{traced.describe()}"
    assert intent.end_ns <= venue.start_ns, f"the venue saw the order before its intent was durable:\n{traced.describe()}"
