"""A service with an invalid configuration refuses to start: exit 64, the bad key named on
stderr, and no port bound.

"No port bound" is checked by holding the service's gRPC and admin ports open: a service
that tried to bind before validating would fail on "address in use" instead of reporting
its configuration.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from stack import LOOPBACK, SERVICES, binary_path, env_key, free_ports, service_environment

BAD_CONFIG_EXIT = 64  # the services' documented exit code for an invalid configuration


@contextmanager
def held_ports() -> Iterator[tuple[str, str]]:
    """Two loopback addresses whose ports this test holds (listening) meanwhile."""
    with ExitStack() as stack:
        addresses = []
        for port in free_ports(2):
            sock = stack.enter_context(socket.socket())
            sock.bind((LOOPBACK, port))
            sock.listen()
            addresses.append(f"{LOOPBACK}:{port}")
        yield addresses[0], addresses[1]


def run_service(service: str, *, config: str | None, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    args = [str(binary_path(service))]
    if config is not None:
        path = tmp_path / f"{service}.toml"
        path.write_text(config)
        args += ["--config", str(path)]
    return subprocess.run(
        args, env=service_environment(env), capture_output=True, text=True, timeout=30, check=False
    )


def assert_refused(result: subprocess.CompletedProcess[str], key: str) -> None:
    assert result.returncode == BAD_CONFIG_EXIT, f"exit {result.returncode}; stderr:\n{result.stderr}"
    assert key in result.stderr, f"{key!r} not named; stderr:\n{result.stderr}"
    assert "in use" not in result.stderr.lower(), f"it tried to bind a port:\n{result.stderr}"


def listen_toml(listen: str, admin: str) -> str:
    return f'[server]\nlisten = "{listen}"\nadmin_listen = "{admin}"\n'


@pytest.mark.parametrize("service", SERVICES)
def test_an_unknown_key_in_the_config_file_is_refused_and_named(service: str, tmp_path: Path) -> None:
    with held_ports() as (listen, admin):
        config = listen_toml(listen, admin) + "listen_backlog_typo = 5\n"
        result = run_service(service, config=config, env={}, tmp_path=tmp_path)
    assert_refused(result, "listen_backlog_typo")


@pytest.mark.parametrize("service", SERVICES)
def test_an_unknown_section_in_the_config_file_is_refused_and_named(service: str, tmp_path: Path) -> None:
    with held_ports() as (listen, admin):
        config = listen_toml(listen, admin) + "\n[telemetree]\nendpoint = \"x\"\n"
        result = run_service(service, config=config, env={}, tmp_path=tmp_path)
    assert_refused(result, "telemetree")


@pytest.mark.parametrize("service", SERVICES)
def test_a_bad_value_in_the_config_file_is_refused_and_named(service: str, tmp_path: Path) -> None:
    with held_ports() as (listen, admin):
        config = listen_toml(listen, admin) + 'shutdown_grace_secs = "soon"\n'
        result = run_service(service, config=config, env={}, tmp_path=tmp_path)
    assert_refused(result, "shutdown_grace_secs")


def run_with_setting(service: str, key: str, value: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Runs `service` on held ports with one setting (`key` = `value`) from the environment."""
    with held_ports() as (listen, admin):
        env = {
            env_key(service, "server.listen"): listen,
            env_key(service, "server.admin_listen"): admin,
            env_key(service, key): value,
        }
        return run_service(service, config=None, env=env, tmp_path=tmp_path)


@pytest.mark.parametrize("service", SERVICES)
def test_a_bad_value_from_the_environment_is_refused_and_named(service: str, tmp_path: Path) -> None:
    assert_refused(run_with_setting(service, "log.format", "xml", tmp_path), "format")


@pytest.mark.parametrize("service", SERVICES)
def test_an_unknown_key_from_the_environment_is_refused_and_named(service: str, tmp_path: Path) -> None:
    assert_refused(run_with_setting(service, "server.colour", "blue", tmp_path), "colour")


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("server.max_header_list_bytes", "100"),
        ("server.max_decoding_message_bytes", "0"),
        ("server.max_encoding_message_bytes", "1073741824"),
        ("server.max_connection_age_secs", "99999999"),
        ("server.tcp_nodelay", "sometimes"),
        ("server.worker_threads", "100000"),
    ],
)
def test_a_connection_limit_out_of_range_is_refused_and_named(
    service: str, key: str, value: str, tmp_path: Path
) -> None:
    assert_refused(run_with_setting(service, key, value, tmp_path), key)


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("gateway", "auth.max_failures_per_connection", "1000000"),
        # A market data batch must fit the encoding limit with room for one more event.
        ("marketdata", "fanout.max_batch_bytes", "3000000"),
        # The audit trail's memory is bounded; no bound at all is refused.
        ("executor", "audit.queue_records", "0"),
        ("executor", "audit.flush_interval_ms", "60000"),
        # Too short an idempotency window would let a slow retry trade twice.
        ("executor", "shard.idempotency_window_secs", "5"),
        ("executor", "shard.retain_finished_orders", "1000000000"),
        # A snapshot every few records would spend the executor rewriting its state.
        ("executor", "journal.snapshot_every_records", "10"),
    ],
)
def test_a_service_limit_out_of_range_is_refused_and_named(service: str, key: str, value: str, tmp_path: Path) -> None:
    assert_refused(run_with_setting(service, key, value, tmp_path), key)


def test_a_missing_config_file_is_refused_and_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with held_ports() as (listen, admin):
        env = {env_key("gateway", "server.listen"): listen, env_key("gateway", "server.admin_listen"): admin}
        result = subprocess.run(
            [str(binary_path("gateway")), "--config", str(missing)],
            env=service_environment(env), capture_output=True, text=True, timeout=30, check=False,
        )
    assert result.returncode != 0, f"exit {result.returncode}; stderr:\n{result.stderr}"
    assert "nowhere.toml" in result.stderr
    assert "in use" not in result.stderr.lower(), f"it tried to bind a port:\n{result.stderr}"
