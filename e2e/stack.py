"""Run the real execbridge binaries (marketdata, executor, gateway) on free loopback ports.

As a context manager, from tests and the demo::

    with Stack() as stack:
        run_against(stack.gateway_target)     # "127.0.0.1:<port>"

As a command, until Ctrl-C::

    python e2e/stack.py [--bin-dir DIR] [--log-level debug]

Each service gets its ports and upstream endpoints through its environment
(``EXECBRIDGE_<SERVICE>_<SECTION>__<KEY>``), starts in dependency order, and counts as up
once ``GET http://<admin>/readyz`` answers 200. Stopping sends SIGTERM in reverse order and
SIGKILL to whatever outlives its grace period. Each service's stdout and stderr go to
files in ``log_dir`` (kept after the run for post-mortems).

The binaries are ``target/debug/execbridge-<service>`` of this repository unless
``$EXECBRIDGE_BIN_DIR`` (or ``bin_dir=``) names another directory.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

REPO = Path(__file__).resolve().parent.parent
#: In start order: each service depends only on the ones before it.
SERVICES = ("marketdata", "executor", "gateway")
LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    """A service could not be started (the message carries the tail of its stderr)."""


def bin_dir_default() -> Path:
    configured = os.environ.get("EXECBRIDGE_BIN_DIR")
    return Path(configured) if configured else REPO / "target" / "debug"


def binary_path(service: str, bin_dir: Path | None = None) -> Path:
    """The binary of ``service``; raises StackError with the build command if missing."""
    path = (bin_dir or bin_dir_default()) / f"execbridge-{service}"
    if not path.is_file():
        raise StackError(
            f"{path} does not exist: build the services first with `cargo build --bins` "
            "(or point EXECBRIDGE_BIN_DIR at the directory holding them)"
        )
    return path


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]


def env_key(service: str, dotted: str) -> str:
    """The environment variable overriding config key ``dotted`` ("server.listen")."""
    return f"EXECBRIDGE_{service.upper()}_" + "__".join(p.upper() for p in dotted.split("."))


def service_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without inherited execbridge settings, plus ``overrides``.

    An EXECBRIDGE_* variable of the developer's shell would otherwise silently change
    what the stack runs.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECBRIDGE_")}
    env.update(overrides)
    return env


def readyz(admin: str, timeout: float = 1.0) -> int | None:
    """The status code of ``GET http://<admin>/readyz``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{admin}/readyz", timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


@dataclass
class Service:
    """One running (or stopped) service of the stack."""

    name: str
    binary: Path
    listen: str
    admin: str
    #: Config overrides as dotted keys ("executor.endpoint" -> value).
    config: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.{self.starts}.stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.{self.starts}.stderr.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def logs(self) -> str:
        """Everything the current run wrote, stdout then stderr."""
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)


class Stack:
    """The three services, wired to each other on free loopback ports."""

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        config: Mapping[str, Mapping[str, str]] | None = None,
        log_dir: Path | None = None,
        log_level: str | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float | None = None,
    ) -> None:
        """
        Args:
            bin_dir: where the binaries are (default: $EXECBRIDGE_BIN_DIR or target/debug).
            config: extra config per service as dotted keys, e.g.
                ``{"gateway": {"server.shutdown_grace_secs": "3"}}``.
            log_dir: where service logs go (default: a fresh temporary directory).
            log_level: every service's ``log.level``.
            startup_timeout: seconds a service may take to become ready.
            stop_timeout: seconds after SIGTERM before SIGKILL (default: the service's
                shutdown grace plus 5).
        """
        self.bin_dir = bin_dir or bin_dir_default()
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="execbridge-stack-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        ports = iter(free_ports(2 * len(SERVICES)))
        self.services: dict[str, Service] = {}
        for name in SERVICES:
            self.services[name] = Service(
                name=name,
                binary=binary_path(name, self.bin_dir),
                listen=f"{LOOPBACK}:{next(ports)}",
                admin=f"{LOOPBACK}:{next(ports)}",
                config={},
                log_dir=self.log_dir,
            )
        md, ex = self.services["marketdata"], self.services["executor"]
        self.services["executor"].config["marketdata.endpoint"] = f"http://{md.listen}"
        self.services["gateway"].config["executor.endpoint"] = f"http://{ex.listen}"
        self.services["gateway"].config["marketdata.endpoint"] = f"http://{md.listen}"
        for name, service in self.services.items():
            service.config["server.listen"] = service.listen
            service.config["server.admin_listen"] = service.admin
            if log_level:
                service.config["log.level"] = log_level
            service.config.update((config or {}).get(name, {}))

    # --- addresses -------------------------------------------------------------------

    @property
    def gateway_target(self) -> str:
        """The gateway's gRPC address, "127.0.0.1:<port>"."""
        return self.services["gateway"].listen

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> Self:
        """Start every service in dependency order and wait until each is ready.

        Raises:
            StackError: a service exited or did not become ready in time; whatever was
                started is stopped again.
        """
        try:
            for name in SERVICES:
                self.start_service(name)
        except BaseException:
            self.stop()
            raise
        return self

    def start_service(self, name: str) -> Service:
        """Start one service (again, after :meth:`stop_service`) and wait until ready."""
        service = self.services[name]
        if service.running:
            raise StackError(f"{name} is already running")
        service.starts += 1
        env = service_environment({env_key(name, k): v for k, v in service.config.items()})
        stdout = service.stdout_path.open("wb")
        stderr = service.stderr_path.open("wb")
        try:
            service.process = subprocess.Popen(
                [str(service.binary)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                # Its own session: a Ctrl-C meant for the stack's owner does not reach the
                # services directly; the stack stops them in order.
                start_new_session=True,
            )
        finally:
            stdout.close()
            stderr.close()
        self._wait_ready(service)
        return service

    def _wait_ready(self, service: Service) -> None:
        assert service.process is not None
        deadline = time.monotonic() + self.startup_timeout
        status: int | None = None
        while time.monotonic() < deadline:
            code = service.process.poll()
            if code is not None:
                raise StackError(
                    f"{service.name} exited with code {code} before it was ready; stderr:\n"
                    f"{service.stderr_tail()}"
                )
            status = readyz(service.admin)
            if status == 200:
                return
            time.sleep(0.05)
        self.stop_service(service.name)
        raise StackError(
            f"{service.name} not ready within {self.startup_timeout}s (last /readyz: {status}); "
            f"stderr:\n{service.stderr_tail()}"
        )

    def stop_service(self, name: str, *, timeout: float | None = None) -> int | None:
        """SIGTERM one service, SIGKILL it after ``timeout``; returns its exit code."""
        service = self.services[name]
        process = service.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout if timeout is not None else self._stop_timeout(service))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def _stop_timeout(self, service: Service) -> float:
        if self.stop_timeout is not None:
            return self.stop_timeout
        return float(service.config.get("server.shutdown_grace_secs", "10")) + 5

    def stop(self) -> dict[str, int | None]:
        """Stop every service in reverse start order; returns their exit codes."""
        return {name: self.stop_service(name) for name in reversed(SERVICES)}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def describe(self) -> str:
        lines = [f"{'service':<11} {'gRPC':<21} {'admin (/healthz /readyz /metrics)'}"]
        for service in self.services.values():
            lines.append(f"{service.name:<11} {service.listen:<21} http://{service.admin}")
        lines.append(f"logs: {self.log_dir}")
        return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the execbridge stack until Ctrl-C.")
    parser.add_argument("--bin-dir", type=Path, default=None, help="directory of the binaries")
    parser.add_argument("--log-dir", type=Path, default=None, help="where service logs go")
    parser.add_argument("--log-level", default=None, help="every service's log.level")
    args = parser.parse_args(argv)

    # SIGTERM ends the stack like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack = Stack(bin_dir=args.bin_dir, log_dir=args.log_dir, log_level=args.log_level)
        with stack:
            print(stack.describe())
            print(f"\ngateway: {stack.gateway_target}   (Ctrl-C stops the stack)", flush=True)
            while all(s.running for s in stack.services.values()):
                time.sleep(0.5)
            dead = [s for s in stack.services.values() if not s.running]
            for service in dead:
                print(f"\n{service.name} exited; stderr:\n{service.stderr_tail()}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
        return 0
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
