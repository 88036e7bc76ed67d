"""Fixtures of the end-to-end tests: the real binaries on loopback, and clients of them.

Each test module gets its own ``stack`` (starting one takes well under a second), so a
service that a module's tests break cannot fail the modules after it; tests that stop or
restart a service (shutdown, reconnect) start a stack of their own. When a test fails, the
path of the services' logs is added to its report.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from execbridge import ExecutionClient
from helpers import EVENT_TIMEOUT, drained
from stack import Stack


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Every service drains and exits 0 on SIGTERM; a wedged one is SIGKILLed (-9).
    yield from drained(Stack().start())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        stacks = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Stack)]
        for running in stacks:
            report.sections.append(("execbridge service logs", str(running.log_dir)))


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[ExecutionClient]:
    async with ExecutionClient.connect(stack.gateway_target) as connected:
        await connected.wait_ready(timeout=EVENT_TIMEOUT)
        yield connected


@pytest_asyncio.fixture
async def prices(stack: Stack) -> AsyncIterator[ExecutionClient]:
    """A client of the marketdata service itself, for tests that need a price but test
    something else than the gateway's market data proxy."""
    async with ExecutionClient.connect(stack["marketdata"].listen) as connected:
        await connected.wait_ready(timeout=EVENT_TIMEOUT)
        yield connected


@pytest.fixture
def account() -> str:
    """A fresh account per test, so tests never see each other's orders or positions."""
    return f"e2e-{uuid.uuid4().hex[:10]}"
