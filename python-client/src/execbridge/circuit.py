"""A circuit breaker shared by every unary call of a client.

After ``failure_threshold`` consecutive failures that say the server is unwell
(unavailable, deadline exceeded, internal, unknown, overloaded) the breaker opens and calls
fail at once with :class:`~execbridge.errors.CircuitOpen` instead of piling onto a sick
gateway. After ``reset_timeout`` seconds it lets ``half_open_calls`` probes through: a
success closes it, a failure opens it again. Errors that prove the server is alive and
answering (invalid argument, not found, permission denied, ...) count as successes.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import (
    CircuitOpen,
    DeadlineExceeded,
    ExecbridgeError,
    Internal,
    Overloaded,
    Unavailable,
    UnknownError,
)

__all__ = ["CircuitBreaker", "CircuitBreakerConfig", "CircuitState"]

_log = logging.getLogger("execbridge")

#: Failures that say the server (or the way to it) is unwell.
_UNHEALTHY: tuple[type[ExecbridgeError], ...] = (
    Unavailable,
    DeadlineExceeded,
    Internal,
    UnknownError,
    Overloaded,
)


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, kw_only=True)
class CircuitBreakerConfig:
    """When the breaker opens and how it recovers.

    Attributes:
        failure_threshold: consecutive unhealthy failures that open the breaker.
        reset_timeout: seconds the breaker stays open before letting a probe through.
        half_open_calls: probes allowed at once while half open.
    """

    failure_threshold: int = 5
    reset_timeout: float = 2.0
    half_open_calls: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_calls < 1 or self.reset_timeout < 0:
            raise ValueError("failure_threshold and half_open_calls >= 1, reset_timeout >= 0")


class CircuitBreaker:
    """The breaker's state machine. Not thread-safe: it lives on the client's event loop."""

    def __init__(
        self,
        config: CircuitBreakerConfig,
        *,
        name: str = "gateway",
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        self._config = config
        self._name = name
        self._clock = clock
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self._retry_in() <= 0:
            return CircuitState.HALF_OPEN
        return self._state

    def _retry_in(self) -> float:
        return self._opened_at + self._config.reset_timeout - self._clock()

    def before_call(self) -> None:
        """Admit a call or refuse it.

        Raises:
            CircuitOpen: the breaker is open (or half open with its probes taken).
        """
        if self._state is CircuitState.CLOSED:
            return
        if self._state is CircuitState.OPEN:
            wait = self._retry_in()
            if wait > 0:
                raise CircuitOpen(
                    f"circuit breaker for {self._name} is open; next probe in {wait:.2f}s",
                    reason="CIRCUIT_OPEN",
                    retry_delay=wait,
                )
            self._set(CircuitState.HALF_OPEN)
            self._probes = 0
        if self._probes >= self._config.half_open_calls:
            raise CircuitOpen(
                f"circuit breaker for {self._name} is half open and probing",
                reason="CIRCUIT_OPEN",
                retry_delay=self._config.reset_timeout / 4,
            )
        self._probes += 1

    def abandon(self) -> None:
        """An admitted call ended without an outcome (cancelled): free its probe slot."""
        if self._state is CircuitState.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    def record(self, error: ExecbridgeError | None) -> None:
        """Record the outcome of an admitted call (None: success)."""
        if error is None or not isinstance(error, _UNHEALTHY) or isinstance(error, CircuitOpen):
            if self._state is not CircuitState.CLOSED:
                _log.info("circuit breaker closed", extra={"circuit": self._name})
                self._set(CircuitState.CLOSED)
            self._failures = 0
            return
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self._config.failure_threshold:
            if self._state is not CircuitState.OPEN:
                _log.warning(
                    "circuit breaker opened after %d failures (%s)",
                    self._failures,
                    type(error).__name__,
                    extra={"circuit": self._name, "failures": self._failures},
                )
            self._opened_at = self._clock()
            self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
