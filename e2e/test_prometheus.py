"""Observability end to end: a real Prometheus (Debian package) scrapes the three services
while orders flow, and the log contract holds across processes (JSON lines with the
correlation id, the level changed at run time, canary secrets never written).

Prometheus is not vendored: ``make prometheus-bin`` installs Debian's ``prometheus`` with
``--no-install-recommends``. Without it these tests fail (never skip) and say so.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from execbridge import NO_RETRY, ExecbridgeError, ExecutionClient, OrderRequest, Side
from execbridge._convert import order_request_to_proto
from execbridge._proto.v1 import execution_service_pb2 as svc_pb
from execbridge._proto.v1 import execution_service_pb2_grpc as svc_grpc
from helpers import EVENT_TIMEOUT, drained, far_below, quote
from stack import REPO, SERVICES, Stack

pytestmark = pytest.mark.asyncio

RULES = REPO / "observability" / "rules" / "execbridge.rules.yml"
#: Canary secrets: sent through the gateway, never to be found in any log.
CANARY_API_KEY = "ak-canary-7f3d9c1e5b2a4d6f8e0a"
CANARY_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJjYW5hcnktN2YzZDljMWUiLCJleHAiOjQxMDI0NDQ4MDB9."
    "Y2FuYXJ5LXNpZ25hdHVyZS03ZjNkOWMxZTViMmE"
)
CANARY_VENUE_SECRET = "vs-canary-0b1c2d3e4f5a6b7c8d9e"


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").is_file() else None)
    if found is None:
        pytest.fail(
            "the prometheus binary is missing: install it with `make prometheus-bin` "
            "(Debian: apt-get install -y --no-install-recommends prometheus)"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def journal_dir() -> Iterator[Path]:
    """The executor's journal directory, where its audit trail (``audit.sqlite``) lives."""
    path = Path(tempfile.mkdtemp(prefix="execbridge-e2e-journal-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(journal_dir: Path) -> Iterator[Stack]:
    """JSON logs at debug level (the most the redaction has to survive); at most two open
    orders per account, so the risk check has something to deny."""
    config = {name: {"log.format": "json", "log.level": "debug"} for name in SERVICES}
    config["executor"]["risk.paper.max_open_orders"] = "2"
    config["executor"]["journal.dir"] = str(journal_dir)
    yield from drained(Stack(config=config).start())


class Prometheus:
    """A Prometheus server on loopback scraping the stack every second."""

    def __init__(self, stack: Stack) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="execbridge-prometheus-"))
        self.address = f"127.0.0.1:{free_port()}"
        jobs = "\n".join(
            f"  - job_name: {name}\n    static_configs:\n      - targets: ['{stack[name].admin}']" for name in SERVICES
        )
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {RULES}\n"
            f"scrape_configs:\n{jobs}\n"
        )
        self.log = (self.dir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address={self.address}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: str) -> dict:
        url = f"http://{self.address}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=5) as response:
            body: dict = json.load(response)
            return body

    def query(self, expr: str) -> list[dict]:
        body = self.get("/api/v1/query", query=expr)
        assert body["status"] == "success", body
        result: list[dict] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        """The single value of ``expr`` now (0 when there is no series)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} has {len(result)} series"
        return float(result[0]["value"][1]) if result else 0.0

    def wait(self, what: str, check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited: {(self.dir / 'prometheus.log').read_text()[-2000:]}"
            try:
                last = check()
                if last:
                    return last
            except (OSError, AssertionError, KeyError) as e:
                last = e
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}; prometheus dir: {self.dir}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def prometheus(stack: Stack) -> Iterator[Prometheus]:
    server = Prometheus(stack)
    try:
        server.wait("prometheus ready", lambda: urllib.request.urlopen(f"http://{server.address}/-/ready", timeout=2).status == 200)
        server.wait(
            "every service scraped",
            lambda: sorted(r["metric"]["job"] for r in server.query("up == 1")) == sorted(SERVICES),
        )
        yield server
    finally:
        server.stop()


async def drive_orders(stack: Stack, account: str) -> None:
    """Market orders that fill, then resting limit orders until the risk check denies."""
    async with ExecutionClient.connect(stack.gateway_target) as client:
        await client.wait_ready(timeout=EVENT_TIMEOUT)
        for _ in range(5):
            await client.submit_order(OrderRequest.market(account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.01"))
        async with ExecutionClient.connect(stack["marketdata"].listen) as prices:
            top = await quote(prices, "BTC-USDT")
        for _ in range(4):
            try:
                await client.submit_order(
                    OrderRequest.limit(account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.01", price=far_below(top))
                )
            except ExecbridgeError:
                pass  # a risk denial may surface as an error or as a REJECTED order

        await client.cancel_all(account)


async def test_prometheus_scrapes_the_key_series_and_they_move(stack: Stack, prometheus: Prometheus) -> None:
    # Series that exist before any order: readiness, gauges, upstream state.
    for expr in (
        'execbridge_ready{job="executor"}',
        'execbridge_ready{job="gateway"}',
        'execbridge_ready{job="marketdata"}',
        'executor_journal_queue_records{job="executor"}',
        'sum(marketdata_instruments{job="marketdata", status="LIVE"})',
    ):
        prometheus.wait(f"{expr} to be scraped", lambda expr=expr: prometheus.query(expr))
    assert prometheus.value('execbridge_ready{job="executor"}') == 1

    moving = (
        'sum(executor_orders_total{job="executor", status="PENDING_NEW", venue="paper"})',
        'sum(executor_orders_total{job="executor", status="FILLED"})',
        'sum(executor_orders_total{job="executor", status="CANCELED"})',
        'sum(executor_orders_total{job="executor", status="REJECTED", reason="RISK_MAX_OPEN_ORDERS"})',
        'sum(executor_risk_denials_total{job="executor", reason="RISK_MAX_OPEN_ORDERS"})',
        'sum(execbridge_grpc_server_handling_seconds_count{job="gateway", grpc_service="execbridge.v1.ExecutionService", grpc_method="SubmitOrder", grpc_code="OK"})',
        'sum(execbridge_grpc_server_handling_seconds_count{job="executor", grpc_service="execbridge.internal.v1.ExecutorService", grpc_method="SubmitOrder"})',
        'sum(execbridge_grpc_server_handling_seconds_count{job="marketdata", grpc_method="StreamMarketData"})',
        'sum(executor_journal_fsync_seconds_count{job="executor"})',
        'sum(marketdata_events_published_total{job="marketdata"})',
    )
    # Labelled series appear with their first observation: one round makes them exist,
    # a second must move each of them (Prometheus sees no increase in a series' first
    # sample, so only the second round shows up in rate()).
    await drive_orders(stack, f"e2e-prom-a-{time.time_ns()}")
    for expr in moving:
        prometheus.wait(f"{expr} to exist", lambda expr=expr: prometheus.value(expr) > 0)
    time.sleep(2)  # two more scrapes: the baseline is in the database
    before = {expr: prometheus.value(expr) for expr in moving}
    await drive_orders(stack, f"e2e-prom-b-{time.time_ns()}")
    for expr in moving:
        prometheus.wait(f"{expr} to move past {before[expr]}", lambda expr=expr: prometheus.value(expr) > before[expr])
    submitted = moving[0]
    assert prometheus.value(submitted) >= before[submitted] + 9, "every order of the second round counted"
    # Latency histograms answer quantile queries; the recording rules evaluate.
    p99_expr = 'histogram_quantile(0.99, sum by (le) (rate(execbridge_grpc_server_handling_seconds_bucket{job="gateway", grpc_method="SubmitOrder"}[1m])))'
    # NaN until two scrapes bracket the calls.
    p99 = prometheus.wait("a SubmitOrder p99", lambda: not math.isnan(prometheus.value(p99_expr)) and prometheus.value(p99_expr))
    assert 0 < p99 < 5, p99
    prometheus.wait(
        "the latency SLO recording rule",
        lambda: prometheus.query('execbridge:trading_calls_slow:ratio_rate5m{job="gateway"}'),
    )
    rules = prometheus.get("/api/v1/rules")["data"]["groups"]
    unhealthy = [r["name"] for g in rules for r in g["rules"] if r.get("health") not in ("ok", "unknown")]
    assert not unhealthy, f"rules failing to evaluate: {unhealthy}"


async def test_auth_failures_are_counted_and_canary_secrets_never_reach_the_logs_or_the_audit_trail(
    stack: Stack, prometheus: Prometheus, journal_dir: Path
) -> None:
    failures = 'sum(gateway_authentication_failures_total{job="gateway"})'
    before = prometheus.value(failures)
    venue_secret = [("x-venue-secret", CANARY_VENUE_SECRET), ("x-api-secret", CANARY_VENUE_SECRET)]
    for credentials in ({"api_key": CANARY_API_KEY}, {"bearer_token": CANARY_JWT}):
        async with ExecutionClient.connect(stack.gateway_target, retry=NO_RETRY, **credentials) as client:  # type: ignore[arg-type]
            with pytest.raises(ExecbridgeError):
                await client.submit_order(
                    OrderRequest.market(account="e2e-canary", symbol="BTC-USDT", side=Side.BUY, quantity="0.01")
                )
    # The venue secret rides in metadata of an otherwise valid (anonymous) call, and in a
    # malformed authorization header.
    async with grpc.aio.insecure_channel(stack.gateway_target) as channel:
        health: Any = channel.unary_unary("/grpc.health.v1.Health/Check")
        for metadata in (venue_secret, [("authorization", f"Bearer {CANARY_VENUE_SECRET}")]):
            try:
                await health(b"", metadata=metadata, timeout=5)
            except grpc.aio.AioRpcError:
                pass
    prometheus.wait("authentication failures counted", lambda: prometheus.value(failures) >= before + 2)
    # An accepted order (the dev policy lets anonymous callers paper-trade) carrying the
    # secrets in its call metadata: it reaches the executor, its journal and audit trail.
    audited = OrderRequest.market(account="e2e-canary-audit", symbol="BTC-USDT", side=Side.BUY, quantity="0.01")
    async with grpc.aio.insecure_channel(stack.gateway_target) as channel:
        stub = svc_grpc.ExecutionServiceStub(channel)
        await stub.SubmitOrder(
            svc_pb.SubmitOrderRequest(order=order_request_to_proto(audited)),
            metadata=[*venue_secret, ("x-api-key-hint", CANARY_API_KEY)],
            timeout=10,
        )

    await asyncio.sleep(0.5)  # let the services flush their last lines
    logs = {name: stack[name].logs() for name in SERVICES}
    assert any("UNKNOWN_API_KEY" in text for text in logs.values()), "the failed authentication was not logged at all"
    for name, text in logs.items():
        for canary in (CANARY_API_KEY, CANARY_JWT, CANARY_JWT.split(".")[1], CANARY_VENUE_SECRET):
            assert canary not in text, f"{name} logged a canary secret ({canary[:12]}...): {stack.log_dir}"

    # The audit trail: every row as text, once the order's entries are in it.
    trail = journal_dir / "audit.sqlite"
    deadline = time.monotonic() + EVENT_TIMEOUT
    rows: list[str] = []
    while time.monotonic() < deadline:
        if trail.exists():
            with sqlite3.connect(f"file:{trail}?mode=ro", uri=True) as db:
                rows = ["|".join(map(str, row)) for row in db.execute("SELECT * FROM execbridge_audit")]
            if any("e2e-canary-audit" in row for row in rows):
                break
        await asyncio.sleep(0.2)
    assert any("e2e-canary-audit" in row for row in rows), f"the order never reached the audit trail {trail}"
    for row in rows:
        for canary in (CANARY_API_KEY, CANARY_JWT, CANARY_JWT.split(".")[1], CANARY_VENUE_SECRET):
            assert canary not in row, f"the audit trail holds a canary secret ({canary[:12]}...): {row[:200]}"


async def test_json_lines_carry_the_correlation_id_and_the_level_changes_at_run_time(stack: Stack) -> None:
    admin = stack["gateway"].admin
    put = urllib.request.Request(f"http://{admin}/loglevel", data=b"trace", method="PUT")
    with urllib.request.urlopen(put, timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"http://{admin}/loglevel", timeout=5) as response:
        assert response.read().decode().strip() == "trace"
    bad = urllib.request.Request(f"http://{admin}/loglevel", data=b"info,=[", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=5)
    assert refused.value.code == 400

    async with grpc.aio.insecure_channel(stack.gateway_target) as channel:
        health: Any = channel.unary_unary("/grpc.health.v1.Health/Check")
        call = health(b"", metadata=[("x-correlation-id", "e2e-corr-0001")], timeout=5)
        await call
        assert dict(await call.initial_metadata()).get("x-correlation-id") == "e2e-corr-0001"
    put = urllib.request.Request(f"http://{admin}/loglevel", data=b"debug", method="PUT")
    urllib.request.urlopen(put, timeout=5).close()
    await asyncio.sleep(0.3)

    lines = [json.loads(line) for line in stack["gateway"].logs().splitlines() if line.startswith("{")]
    assert lines, "no JSON lines from the gateway"
    missing = [line for line in lines if "correlation_id" not in line or "trace_id" not in line]
    assert not missing, f"lines without correlation_id/trace_id: {missing[:3]}"
    assert any(line["correlation_id"] == "e2e-corr-0001" for line in lines), "no line of the call carries its correlation id"


#: Series that appear only on events this stack does not produce: native TLS, rate limits
#: in force, slow consumers, sequence gaps, feed loss.
CONDITIONAL = {
    "execbridge_certificate_expiry_seconds",
    "gateway_rate_limit_rejections_total",
    "gateway_admission_refusals_total",
    "marketdata_dropped_events_total",
    "marketdata_slow_consumer_disconnects_total",
    "marketdata_upstream_reconnects_total",
    "marketdata_sequence_gaps_total",
    "executor_marketdata_reconnects_total",
}


def names_used() -> set[str]:
    """Metric names the shipped dashboards and rules query (histogram suffixes removed)."""
    sources = [RULES.read_text()] + [p.read_text() for p in (REPO / "observability" / "dashboards").glob("*.json")]
    found = set(re.findall(r"\b((?:execbridge|executor|gateway|marketdata)_[a-z0-9_]+)", "\n".join(sources)))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in found}


async def test_every_metric_the_dashboards_and_rules_use_is_exposed(stack: Stack, prometheus: Prometheus) -> None:
    # Runs after the tests above (file order): orders, auth failures and streams happened.
    exposed = set(prometheus.get("/api/v1/label/__name__/values")["data"])
    exposed |= {re.sub(r"_(bucket|count|sum)$", "", name) for name in exposed}
    missing = sorted(name for name in names_used() - exposed if name not in CONDITIONAL)
    assert not missing, f"dashboards or rules query metrics no service exposes: {missing}"
