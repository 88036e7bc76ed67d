"""TLS, mTLS, TLS file reload, auth metadata, and secrets kept out of logs and errors."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from execbridge import (
    ExecutionClient,
    NO_RETRY,
    OrderRequest,
    RetryPolicy,
    Side,
    TlsConfig,
    Unauthenticated,
    Unavailable,
)
from execbridge._proto.v1 import execution_service_pb2_grpc as svc_grpc

from .certs import Authority
from .conftest import FakeExecution, Handler, Server, abort_with, rich_status

CANARY = "canary-key-7f3a9c1e5b"


def market() -> OrderRequest:
    return OrderRequest.market(account="acct", symbol="BTC-USDT", side=Side.BUY, quantity="0.5")


async def tls_server(execution: FakeExecution, ca: Authority, *, client_ca: Authority | None = None, port: int = 0) -> tuple[grpc.aio.Server, int]:
    pair = ca.issue("localhost", server=True)
    credentials = grpc.ssl_server_credentials(
        [(pair.key, pair.cert)],
        root_certificates=client_ca.pem if client_ca else None,
        require_client_auth=client_ca is not None,
    )
    server = grpc.aio.server()
    svc_grpc.add_ExecutionServiceServicer_to_server(execution, server)
    bound = server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    return server, bound


@pytest_asyncio.fixture
async def execution(submit_ok: Handler) -> AsyncIterator[FakeExecution]:
    yield FakeExecution(submit_order=submit_ok)


async def test_tls_with_a_ca_file_connects_and_verifies_the_server(tmp_path: Path, execution: FakeExecution) -> None:
    ca = Authority("test-ca")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    server, port = await tls_server(execution, ca)
    try:
        tls = TlsConfig(ca_file=str(tmp_path / "ca.pem"))
        async with ExecutionClient.connect(f"localhost:{port}", tls=tls) as client:
            await client.submit_order(market())
    finally:
        await server.stop(None)


async def test_a_server_signed_by_another_ca_is_refused(tmp_path: Path, execution: FakeExecution) -> None:
    (tmp_path / "ca.pem").write_bytes(Authority("trusted").pem)
    server, port = await tls_server(execution, Authority("impostor"))
    try:
        tls = TlsConfig(ca_file=str(tmp_path / "ca.pem"))
        async with ExecutionClient.connect(f"localhost:{port}", tls=tls, retry=NO_RETRY, timeout=2) as client:
            with pytest.raises(Unavailable):
                await client.submit_order(market())
        assert execution.seen_requests == []
    finally:
        await server.stop(None)


async def test_mtls_presents_the_client_certificate_and_fails_without_it(tmp_path: Path, execution: FakeExecution) -> None:
    ca = Authority("ca")
    clients = Authority("client-ca")
    pair = clients.issue("orchestrator", server=False)
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    (tmp_path / "client.pem").write_bytes(pair.cert)
    (tmp_path / "client.key").write_bytes(pair.key)
    server, port = await tls_server(execution, ca, client_ca=clients)
    try:
        mtls = TlsConfig(ca_file=str(tmp_path / "ca.pem"), cert_file=str(tmp_path / "client.pem"), key_file=str(tmp_path / "client.key"))
        async with ExecutionClient.connect(f"localhost:{port}", tls=mtls) as client:
            await client.submit_order(market())
        assert len(execution.seen_requests) == 1
        no_cert = TlsConfig(ca_file=str(tmp_path / "ca.pem"))
        async with ExecutionClient.connect(f"localhost:{port}", tls=no_cert, retry=NO_RETRY, timeout=2) as client:
            with pytest.raises(Unavailable):
                await client.submit_order(market())
        assert len(execution.seen_requests) == 1
    finally:
        await server.stop(None)


async def test_rotated_tls_files_are_picked_up_without_a_new_client(tmp_path: Path, execution: FakeExecution) -> None:
    old_ca, new_ca = Authority("old-ca"), Authority("new-ca")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(old_ca.pem)
    server, port = await tls_server(execution, old_ca)
    tls = TlsConfig(ca_file=str(ca_file), reload_interval=0.05, retire_grace=0.1)
    async with ExecutionClient.connect(f"localhost:{port}", tls=tls, retry=NO_RETRY, timeout=2) as client:
        await client.submit_order(market())
        # The server rotates to a certificate of a new CA; the client's files follow.
        await server.stop(None)
        server, _ = await tls_server(execution, new_ca, port=port)
        ca_file.write_bytes(new_ca.pem)
        await asyncio.sleep(0.1)
        await client.submit_order(market())
        assert client._pool.generation == 1
    await server.stop(None)
    assert len(execution.seen_requests) == 2


async def test_an_unreadable_tls_file_mid_rotation_keeps_the_working_channels(tmp_path: Path, execution: FakeExecution) -> None:
    ca = Authority("ca")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.pem)
    server, port = await tls_server(execution, ca)
    try:
        tls = TlsConfig(ca_file=str(ca_file), reload_interval=0.01)
        async with ExecutionClient.connect(f"localhost:{port}", tls=tls) as client:
            await client.submit_order(market())
            ca_file.unlink()
            await asyncio.sleep(0.05)
            await client.submit_order(market())
            assert client._pool.generation == 0
    finally:
        await server.stop(None)


async def test_a_bearer_token_goes_in_the_authorization_header(server: Server, submit_ok: Handler) -> None:
    server.execution.submit_order = submit_ok
    async with ExecutionClient.connect(server.target, bearer_token="jwt.token.sig") as client:
        await client.submit_order(market())
    assert server.execution.seen_metadata[0]["authorization"] == "Bearer jwt.token.sig"


async def test_a_token_provider_is_asked_for_each_call(server: Server, submit_ok: Handler) -> None:
    server.execution.submit_order = submit_ok
    tokens = iter(["t1", "t2"])
    async with ExecutionClient.connect(server.target, token_provider=lambda: next(tokens)) as client:
        await client.submit_order(market())
        await client.submit_order(market())
    assert [m["authorization"] for m in server.execution.seen_metadata] == ["Bearer t1", "Bearer t2"]


async def test_a_canary_key_never_appears_in_logs_or_errors(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    async def echo_key_back(request: Any, context: Any) -> Any:
        key = dict(context.invocation_metadata())["x-api-key"]
        await abort_with(
            context,
            rich_status(grpc.StatusCode.UNAUTHENTICATED, f"unknown API key {key}", reason="UNKNOWN_API_KEY", metadata={"key": key}),
        )

    server.execution.submit_order = echo_key_back
    caplog.set_level(logging.DEBUG)
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01, retry_on=(Unauthenticated,))
    async with ExecutionClient.connect(server.target, api_key=CANARY, retry=policy) as client:
        with pytest.raises(Unauthenticated) as caught:
            await client.submit_order(market())
        trace = "".join(traceback.format_exception(caught.value))
        text = " ".join([trace, str(caught.value), repr(caught.value), str(caught.value.metadata), repr(client.options), repr(client)])
    assert dict(server.execution.seen_metadata[0])["x-api-key"] == CANARY  # it was sent
    assert caught.value.reason == "UNKNOWN_API_KEY"
    assert CANARY not in text
    assert CANARY not in caplog.text
    assert "<redacted>" in str(caught.value)
