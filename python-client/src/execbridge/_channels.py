"""The pool of gRPC channels a client spreads its calls over, and how they are built.

One HTTP/2 connection serialises on one lock, so throughput needs a few. Each channel gets
its own subchannel pool (``grpc.use_local_subchannel_pool``): without it grpc-core shares
one TCP connection between channels with equal arguments and the pool buys nothing.

Targets are a static list (channel ``i`` connects to ``targets[i % n]``; a retried call
picks the next channel, so it fails over to the next target) or one name resolved by gRPC
(``dns:///host:port``) and balanced ``round_robin`` over every address it resolves to.

With TLS, the CA, certificate and key files are read again every ``reload_interval``
seconds when the pool is used; when their content changed, a new set of channels replaces
the old one, and the old channels close after ``retire_grace`` seconds so calls in flight
on them finish.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from ._proto.v1 import admin_service_pb2_grpc as admin_grpc
from ._proto.v1 import execution_service_pb2_grpc as svc_grpc
from ._proto.v1 import market_data_service_pb2_grpc as md_grpc

__all__ = ["ChannelConfig", "ChannelPool", "Stubs", "TlsConfig", "parse_targets"]

_log = logging.getLogger("execbridge")


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """TLS (``ca_file`` only, or nothing for the system roots) or mTLS (with a client
    ``cert_file`` and ``key_file``). Paths, so rotated files are picked up again.

    Attributes:
        ca_file: PEM bundle of the CAs that sign the gateway's certificate; None: the
            system's roots.
        cert_file: PEM client certificate (chain) for mTLS.
        key_file: PEM private key of ``cert_file``; never logged.
        server_name: the name to verify the gateway's certificate against, when it
            differs from the target's host.
        reload_interval: seconds between checks of the files for new content.
        retire_grace: seconds the previous channels stay open after a reload.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    reload_interval: float = 5.0
    retire_grace: float = 30.0

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file for mTLS, or neither")

    def _paths(self) -> tuple[str, ...]:
        return tuple(p for p in (self.ca_file, self.cert_file, self.key_file) if p)

    def read(self) -> tuple[str, grpc.ChannelCredentials]:
        """A fingerprint of the files' content and the credentials built from them.

        Raises:
            OSError: a file cannot be read.
        """
        data = {p: Path(p).read_bytes() for p in self._paths()}
        digest = hashlib.sha256()
        for path in self._paths():
            digest.update(path.encode() + b"\0" + data[path] + b"\0")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=data.get(self.ca_file) if self.ca_file else None,
            private_key=data.get(self.key_file) if self.key_file else None,
            certificate_chain=data.get(self.cert_file) if self.cert_file else None,
        )
        return digest.hexdigest(), credentials


@dataclass(frozen=True, kw_only=True)
class ChannelConfig:
    """Connections: how many, how they are kept alive, how fast they come back.

    Attributes:
        pool_size: channels (TCP connections per target) unary calls are spread over.
        keepalive_time: seconds between HTTP/2 pings on an idle connection, so a dead
            peer (a NAT that forgot us, a killed node) is noticed without waiting for TCP.
        keepalive_timeout: seconds a ping may go unanswered before the connection is
            considered dead.
        initial_reconnect_backoff: seconds before the first reconnect (grpcio's 1 s
            default is too slow for a gateway restarting in a second).
        max_reconnect_backoff: the cap on reconnect waits.
        max_message_bytes: largest message sent or received.
        options: extra gRPC channel arguments; they win over the ones above.
    """

    pool_size: int = 1
    keepalive_time: float = 20.0
    keepalive_timeout: float = 5.0
    initial_reconnect_backoff: float = 0.1
    max_reconnect_backoff: float = 2.0
    max_message_bytes: int = 16 * 1024 * 1024
    options: tuple[tuple[str, str | int], ...] = ()

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")

    def channel_args(self, user_agent: str, *, balanced: bool) -> list[tuple[str, str | int]]:
        args: dict[str, str | int] = {
            "grpc.primary_user_agent": user_agent,
            "grpc.use_local_subchannel_pool": 1,
            "grpc.keepalive_time_ms": int(self.keepalive_time * 1000),
            "grpc.keepalive_timeout_ms": int(self.keepalive_timeout * 1000),
            "grpc.keepalive_permit_without_calls": 1,
            "grpc.http2.max_pings_without_data": 0,
            "grpc.initial_reconnect_backoff_ms": int(self.initial_reconnect_backoff * 1000),
            "grpc.min_reconnect_backoff_ms": int(self.initial_reconnect_backoff * 1000),
            "grpc.max_reconnect_backoff_ms": int(self.max_reconnect_backoff * 1000),
            "grpc.max_send_message_length": self.max_message_bytes,
            "grpc.max_receive_message_length": self.max_message_bytes,
            # The client retries itself, with idempotency in mind; gRPC's own retries
            # would retry blindly underneath.
            "grpc.enable_retries": 0,
        }
        if balanced:
            args["grpc.service_config"] = json.dumps(
                {"loadBalancingConfig": [{"round_robin": {}}]}
            )
        args.update(dict(self.options))
        return list(args.items())


def parse_targets(target: str | Sequence[str]) -> tuple[str, ...]:
    """``"h:p"``, ``"h1:p,h2:p"``, ``["h1:p", "h2:p"]`` or ``"dns:///h:p"`` as a tuple.

    Raises:
        ValueError: no target.
    """
    if isinstance(target, str):
        items = [target] if "://" in target else target.split(",")
    else:
        items = list(target)
    targets = tuple(t.strip() for t in items if t.strip())
    if not targets:
        raise ValueError("no target given")
    return targets


class Stubs:
    """The generated stubs of one channel."""

    __slots__ = ("admin", "channel", "execution", "market_data", "target")

    def __init__(self, channel: grpc.aio.Channel, target: str) -> None:
        self.channel = channel
        self.target = target
        self.execution: svc_grpc.ExecutionServiceAsyncStub = svc_grpc.ExecutionServiceStub(channel)
        self.market_data: md_grpc.MarketDataServiceAsyncStub = md_grpc.MarketDataServiceStub(channel)
        self.admin: admin_grpc.AdminServiceAsyncStub = admin_grpc.AdminServiceStub(channel)


class ChannelPool:
    """Channels over the targets, picked round robin; rebuilt when TLS files change."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        config: ChannelConfig,
        user_agent: str,
        tls: TlsConfig | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        on_rebuild: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._targets = tuple(targets)
        self._config = config
        self._user_agent = user_agent
        self._tls = tls
        self._static_credentials = credentials
        self._on_rebuild = on_rebuild
        self._clock = clock
        self._fingerprint: str | None = None
        self._next_check = 0.0
        self._retired: set[grpc.aio.Channel] = set()
        self._closers: set[asyncio.Task[None]] = set()
        self._stubs = self._build(self._credentials())
        self._cycle = itertools.cycle(range(len(self._stubs)))
        self.generation = 0
        """How many times the channels were rebuilt."""

    @property
    def targets(self) -> tuple[str, ...]:
        return self._targets

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if self._tls is None:
            return self._static_credentials
        self._fingerprint, credentials = self._tls.read()
        self._next_check = self._clock() + self._tls.reload_interval
        return credentials

    def _build(self, credentials: grpc.ChannelCredentials | None) -> list[Stubs]:
        stubs = []
        for index in range(max(self._config.pool_size, len(self._targets))):
            target = self._targets[index % len(self._targets)]
            balanced = not target.startswith(("ipv4:", "ipv6:", "unix:")) and ":///" in target
            args = self._config.channel_args(self._user_agent, balanced=balanced)
            if self._tls is not None and self._tls.server_name:
                args.append(("grpc.ssl_target_name_override", self._tls.server_name))
            if credentials is None:
                channel = grpc.aio.insecure_channel(target, options=args)
            else:
                channel = grpc.aio.secure_channel(target, credentials, options=args)
            stubs.append(Stubs(channel, target))
        return stubs

    def pick(self) -> Stubs:
        """The next channel's stubs (after a TLS reload check when one is due)."""
        if self._tls is not None and self._clock() >= self._next_check:
            self._maybe_reload()
        return self._stubs[next(self._cycle)]

    def first(self) -> Stubs:
        """The first channel (long-lived streams; also reload-checked)."""
        if self._tls is not None and self._clock() >= self._next_check:
            self._maybe_reload()
        return self._stubs[0]

    def _maybe_reload(self) -> None:
        assert self._tls is not None
        previous = self._fingerprint
        try:
            fingerprint, credentials = self._tls.read()
        except OSError as error:
            # Mid-rotation (a file replaced but not yet its pair): keep the working channels.
            _log.warning("cannot read TLS files (%s); keeping the current channels", error.strerror)
            self._next_check = self._clock() + self._tls.reload_interval
            return
        self._next_check = self._clock() + self._tls.reload_interval
        if fingerprint == previous:
            return
        _log.info("TLS files changed; rebuilding %d channels", len(self._stubs))
        old = self._stubs
        self._fingerprint = fingerprint
        self._stubs = self._build(credentials)
        self._cycle = itertools.cycle(range(len(self._stubs)))
        self.generation += 1
        for stubs in old:
            self._retire(stubs.channel, self._tls.retire_grace)
        if self._on_rebuild is not None:
            self._on_rebuild()

    def _retire(self, channel: grpc.aio.Channel, grace: float) -> None:
        self._retired.add(channel)

        async def close_later() -> None:
            await asyncio.sleep(grace)
            self._retired.discard(channel)
            await channel.close()

        task = asyncio.get_running_loop().create_task(close_later())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def channel_ready(self) -> None:
        """Return once any channel is connected (one reachable target is enough)."""
        waiters = [asyncio.ensure_future(s.channel.channel_ready()) for s in self._stubs]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def close(self) -> None:
        for task in list(self._closers):
            task.cancel()
        channels = [s.channel for s in self._stubs] + list(self._retired)
        self._retired.clear()
        for channel in channels:
            await channel.close()
