"""The one retry helper: exponential backoff with jitter, for calls and stream reconnects.

The client retries only calls that are safe to repeat: queries, cancels, and submits
(idempotent on ``client_order_id``). It retries what the server calls transient
(:class:`~execbridge.errors.Unavailable`), a rate limit or load shedding that says when to
come back (``ResourceExhausted`` with ``RetryInfo``; the request was not processed), and,
when ``attempt_timeout`` is set, a try that ran over its own deadline: all within the
call's overall timeout and ``max_attempts``. Calls that are not safe to repeat (``flatten``)
are made with :data:`NO_RETRY`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from .circuit import CircuitBreaker
from .errors import DeadlineExceeded, ExecbridgeError, ResourceExhausted, Unavailable, from_rpc_error

__all__ = ["RetryPolicy", "call_with_retry"]

_log = logging.getLogger("execbridge")
_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """When and how fast to try again.

    Attributes:
        max_attempts: tries in total, the first included (1 disables retries).
        initial_backoff: seconds before the second try.
        max_backoff: upper bound of one wait, in seconds.
        multiplier: growth of the wait per try.
        jitter: the fraction of each wait that is randomised (0 to 1), so many clients
            do not come back in lockstep.
        retry_on: the error classes worth another try.
        attempt_timeout: seconds one try may take (None: the whole remaining timeout). A
            try that runs over is retried with the same request: for a submit the same
            ``client_order_id``, so the gateway returns the first order, never a second.
        retry_rate_limited: retry a ``ResourceExhausted`` that carries a ``RetryInfo``
            delay, after that delay.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2
    retry_on: tuple[type[ExecbridgeError], ...] = (Unavailable,)
    attempt_timeout: float | None = None
    retry_rate_limited: bool = True

    def __post_init__(self) -> None:
        if self.attempt_timeout is not None and self.attempt_timeout <= 0:
            raise ValueError("attempt_timeout must be positive")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def should_retry(self, error: ExecbridgeError, attempt: int) -> bool:
        """Whether ``error``, raised by try number ``attempt`` (from 1), deserves another."""
        if attempt >= self.max_attempts:
            return False
        if isinstance(error, self.retry_on):
            return True
        # Only a RetryInfo makes RESOURCE_EXHAUSTED transient: without it the cause may be
        # a message over the size limit, which never gets better.
        return (
            self.retry_rate_limited
            and isinstance(error, ResourceExhausted)
            and error.retry_delay is not None
        )

    def backoff(self, attempt: int, error: ExecbridgeError | None = None) -> float:
        """Seconds to wait after try number ``attempt`` (from 1) failed with ``error``.

        A server's ``RetryInfo`` delay is a floor: the client never comes back sooner.
        """
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        delay = base * (1 - self.jitter * random.random())
        if error is not None and error.retry_delay is not None:
            delay = max(delay, error.retry_delay)
        return delay


#: No retries at all.
NO_RETRY = RetryPolicy(max_attempts=1)


#: Called before each retry: (error, try number that failed, delay).
OnRetry = Callable[[ExecbridgeError, int, float], None]


async def call_with_retry(
    attempt: Callable[[float | None], Awaitable[_T]],
    *,
    policy: RetryPolicy,
    timeout: float | None,
    what: str,
    breaker: CircuitBreaker | None = None,
    on_retry: OnRetry | None = None,
) -> _T:
    """Await ``attempt(try_timeout)`` until it succeeds, retrying per ``policy``.

    ``timeout`` bounds all tries together; each try gets what remains of it, or
    ``policy.attempt_timeout`` if that is shorter. gRPC failures are translated into
    :class:`~execbridge.errors.ExecbridgeError` here, so callers never see a raw gRPC error.
    The ``breaker`` admits each try and records its outcome.

    Raises:
        ExecbridgeError: the last try's error once no retry is left or worth it;
            :class:`~execbridge.errors.CircuitOpen` when the breaker refuses a try.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    number = 0
    while True:
        number += 1
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded(f"{what}: timed out after {number - 1} tries")
        try_timeout = remaining
        cut_short = policy.attempt_timeout is not None and (
            remaining is None or policy.attempt_timeout < remaining
        )
        if cut_short:
            try_timeout = policy.attempt_timeout
        cause: BaseException
        admitted = False
        try:
            if breaker is not None:
                breaker.before_call()
                admitted = True
            result = await attempt(try_timeout)
        except asyncio.CancelledError:
            # The caller gave up: no verdict on the server, but a half-open probe slot
            # must not stay taken forever.
            if breaker is not None and admitted:
                breaker.abandon()
            raise
        except grpc.aio.AioRpcError as rpc_error:
            error, cause = from_rpc_error(rpc_error), rpc_error
        except ExecbridgeError as own:  # CircuitOpen, or an error the attempt translated
            error, cause = own, own
        else:
            if breaker is not None:
                breaker.record(None)
            return result
        if breaker is not None and cause is not error:
            breaker.record(error)
        retryable = policy.should_retry(error, number) or (
            # A try cut short by its own (shorter) deadline, not the call's.
            isinstance(error, DeadlineExceeded) and cut_short and number < policy.max_attempts
        )
        if not retryable:
            if cause is error:
                raise error
            raise error from cause
        delay = policy.backoff(number, error)
        if deadline is not None and loop.time() + delay >= deadline:
            if cause is error:
                raise error
            raise error from cause
        _log.warning(
            "%s failed (%s); retrying in %.3fs (try %d of %d)",
            what,
            error.code.name if error.code else type(error).__name__,
            delay,
            number + 1,
            policy.max_attempts,
            extra={"rpc": what, "attempt": number, "error_code": error.code.name if error.code else None},
        )
        if on_retry is not None:
            on_retry(error, number, delay)
        await asyncio.sleep(delay)
