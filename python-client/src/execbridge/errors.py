"""The execbridge exception hierarchy and the one translator from gRPC errors into it.

Every failure the client raises is an :class:`ExecbridgeError`. Failures the server reports
map one gRPC status code to one subclass, carrying the machine-readable details the server
attached to the status (``google.rpc.ErrorInfo`` reason/domain/metadata,
``google.rpc.BadRequest`` field violations, ``google.rpc.RetryInfo``)::

    try:
        await client.submit_order(order)
    except InvalidArgument as err:
        for violation in err.field_violations:
            print(violation.field, violation.description)
    except Unavailable:
        ...  # safe to retry: client_order_id makes submission idempotent

:func:`from_rpc_error` is the only place that reads a gRPC error; :func:`error_for_code`
builds the same exceptions from the per-order ``OrderError`` of a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import grpc
from google.protobuf.message import DecodeError
# googleapis-common-protos ships .pyi stubs without py.typed; pyproject.toml follows them,
# and the ignore keeps mypy runs without that config (from the repository root) clean.
import google.rpc.error_details_pb2 as error_details_pb2  # type: ignore[import-untyped, unused-ignore]
import google.rpc.status_pb2 as status_pb2  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "Aborted",
    "AlreadyExists",
    "CircuitOpen",
    "ClientOrderIdUsed",
    "IdempotencyMismatch",
    "Overloaded",
    "RateLimited",
    "ShuttingDown",
    "SlowConsumer",
    "UnknownOutcome",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "ExecbridgeError",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ProtocolError",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UnknownError",
    "ValidationError",
    "error_for_code",
    "from_rpc_error",
]

# The trailer carrying a serialized google.rpc.Status (the "rich error model").
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request: its path (``"order.price"``) and what is wrong."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class ExecbridgeError(Exception):
    """Base of every error the execbridge client raises.

    Attributes:
        code: the gRPC status code, or None for an error detected by the client itself.
        message: the human-readable message.
        reason: ``ErrorInfo.reason``, an UPPER_SNAKE_CASE value to switch on, if given.
        domain: ``ErrorInfo.domain`` ("execbridge.dev" for execbridge's own errors).
        metadata: ``ErrorInfo.metadata``.
        field_violations: ``BadRequest`` field violations (mostly on InvalidArgument).
        retry_delay: seconds the server asks the caller to wait before retrying
            (``RetryInfo``), if given.
        correlation_id: the ``x-correlation-id`` the call was sent with, to find it in
            the gateway's logs.
    """

    #: The status code this class stands for; ``None`` on the base and client-side errors.
    grpc_code: ClassVar[grpc.StatusCode | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        domain: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.grpc_code
        self.reason = reason or None
        self.domain = domain or None
        self.metadata: Mapping[str, str] = dict(metadata or {})
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.retry_delay = retry_delay
        #: The ``x-correlation-id`` of the call that failed (set by the client).
        self.correlation_id: str | None = None

    def __str__(self) -> str:
        head = f"{self.code.name}: {self.message}" if self.code is not None else self.message
        if self.reason:
            head += f" [{self.reason}]"
        if self.field_violations:
            head += " (" + "; ".join(str(v) for v in self.field_violations) + ")"
        return head

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class Cancelled(ExecbridgeError):
    grpc_code = grpc.StatusCode.CANCELLED


class UnknownError(ExecbridgeError):
    grpc_code = grpc.StatusCode.UNKNOWN


class InvalidArgument(ExecbridgeError):
    """The request is malformed; ``field_violations`` says which fields and why."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class ValidationError(InvalidArgument, ValueError):
    """The client refused a request before sending it (same meaning as INVALID_ARGUMENT).

    ``field`` names the first invalid field; ``field_violations`` lists all of them.
    """

    def __init__(self, violations: Iterable[FieldViolation]) -> None:
        found = tuple(violations)
        if not found:
            raise ValueError("a ValidationError needs at least one violation")
        super().__init__(
            "invalid request: " + "; ".join(str(v) for v in found),
            reason="CLIENT_VALIDATION",
            field_violations=found,
        )
        self.field = found[0].field

    def __str__(self) -> str:
        return self.message


class UnknownOutcome(ExecbridgeError):
    """The call may or may not have taken effect: the answer was lost, not the request.

    For a submit, resubmitting with the same ``client_order_id`` (or ``get_order``) finds
    out what happened without creating a second order.
    """


class DeadlineExceeded(UnknownOutcome):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(ExecbridgeError):
    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ExecbridgeError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class IdempotencyMismatch(AlreadyExists):
    """A ``client_order_id`` was reused for an order that differs from the first one.

    ``differing_fields`` names the fields that differ; ``order_id`` the existing order.
    """

    @property
    def differing_fields(self) -> tuple[str, ...]:
        raw = self.metadata.get("differing_fields", "")
        return tuple(f for f in raw.split(",") if f)

    @property
    def order_id(self) -> str | None:
        return self.metadata.get("order_id") or None


class ClientOrderIdUsed(AlreadyExists):
    """A ``client_order_id`` was used by an order that has finished and that the executor
    no longer holds (beyond ``shard.retain_finished_orders``). Within the executor's
    idempotency window the id is refused instead of trading again; a new order needs a new
    ``client_order_id``. ``order_id`` names the order that used it.
    """

    @property
    def order_id(self) -> str | None:
        return self.metadata.get("order_id") or None


class PermissionDenied(ExecbridgeError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ExecbridgeError):
    """A rate limit, load shedding or a message too large; ``retry_delay`` may say when to
    come back (without it the request is not worth repeating as is)."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RateLimited(ResourceExhausted):
    """The caller's budget for this class of call is spent (reason ``RATE_LIMITED``).

    ``retry_after`` is the server's ``RetryInfo`` delay in seconds.
    """

    @property
    def retry_after(self) -> float | None:
        return self.retry_delay


class Overloaded(ResourceExhausted):
    """The gateway sheds load (reason ``OVERLOADED``); the request was not processed."""


class SlowConsumer(ResourceExhausted):
    """The server dropped this stream because the client read too slowly."""


class FailedPrecondition(ExecbridgeError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ExecbridgeError):
    grpc_code = grpc.StatusCode.ABORTED


class OutOfRange(ExecbridgeError):
    grpc_code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(ExecbridgeError):
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ExecbridgeError):
    grpc_code = grpc.StatusCode.INTERNAL


class Unavailable(ExecbridgeError):
    """The service cannot be reached or is shutting down; retrying is safe for orders
    because ``client_order_id`` makes submission idempotent."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class ShuttingDown(Unavailable):
    """The gateway is draining (reason ``SHUTTING_DOWN``); retry on another connection."""


class CircuitOpen(Unavailable):
    """The client's circuit breaker is open: recent calls failed, so this one was not sent.

    ``retry_delay`` is when the breaker lets a probe through again.
    """


class DataLoss(ExecbridgeError):
    grpc_code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(ExecbridgeError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class ProtocolError(ExecbridgeError):
    """The server answered something the contract does not allow (a client-side finding)."""


_BY_CODE: Mapping[grpc.StatusCode, type[ExecbridgeError]] = {
    cls.grpc_code: cls
    for cls in (
        Cancelled,
        UnknownError,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
    if cls.grpc_code is not None
}
# Reasons with a class of their own, under their code's class. The code decides first: a
# reason under an unexpected code keeps the code's class.
_BY_REASON: Mapping[tuple[grpc.StatusCode, str], type[ExecbridgeError]] = {
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED"): RateLimited,
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED"): Overloaded,
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "SLOW_CONSUMER"): SlowConsumer,
    (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_MISMATCH"): IdempotencyMismatch,
    (grpc.StatusCode.ALREADY_EXISTS, "CLIENT_ORDER_ID_USED"): ClientOrderIdUsed,
    (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN"): ShuttingDown,
}
_BY_NUMBER: Mapping[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_code_from_number(number: int) -> grpc.StatusCode:
    """The gRPC status code for its wire number (``google.rpc.Code``); UNKNOWN if unknown."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def error_for_code(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str | None = None,
    domain: str | None = None,
    metadata: Mapping[str, str] | None = None,
    field_violations: Iterable[FieldViolation] = (),
    retry_delay: float | None = None,
) -> ExecbridgeError:
    """The exception for a status code and its details (not raised, returned)."""
    cls = _BY_REASON.get((code, reason or ""), _BY_CODE.get(code, UnknownError))
    return cls(
        message,
        code=code,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=field_violations,
        retry_delay=retry_delay,
    )


#: How grpc-python's debug text starts when the local gRPC core refused to send a message
#: on a stream that was already ending (grpc/grpc#36066): it then reports INTERNAL
#: "Internal error from Core" for the whole call, and the status the server ended the
#: stream with is lost.
_LOCAL_SEND_FAILURE = 'Failed "execute_batch"'


def from_rpc_error(error: grpc.aio.AioRpcError) -> ExecbridgeError:
    """Translate a failed gRPC call into the matching :class:`ExecbridgeError` (returned).

    Reads the rich status details from the ``grpc-status-details-bin`` trailer. Details
    that cannot be decoded are ignored rather than raised: classifying an error must not
    fail, and the status code alone still classifies it.

    A stream that ended while the client was sending on it (a server shutting down, a
    connection closed) is :class:`Unavailable`, although grpc-python reports it as a local
    INTERNAL error: no server said INTERNAL, the requests not yet answered are unknown, and
    sending them again on a new stream is the recovery (orders are idempotent by
    ``client_order_id``). Were the lost status a final one, the new stream gets it again.
    """
    code = error.code()
    if code is grpc.StatusCode.INTERNAL and (error.debug_error_string() or "").startswith(
        _LOCAL_SEND_FAILURE
    ):
        return Unavailable(
            "the stream ended while a message was being sent on it; its status was lost "
            "(the local gRPC library reports INTERNAL). Requests not yet answered are "
            "unknown: send them again",
            code=grpc.StatusCode.UNAVAILABLE,
        )
    message = error.details() or ""
    details = _status_details(error.trailing_metadata())
    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    if details is not None:
        message = message or details.message
        for any_detail in details.details:
            # Unpack is False when the detail is of another type; unknown types are skipped.
            info = error_details_pb2.ErrorInfo()
            bad_request = error_details_pb2.BadRequest()
            retry_info = error_details_pb2.RetryInfo()
            if any_detail.Unpack(info):
                reason, domain = info.reason, info.domain
                metadata.update(info.metadata)
            elif any_detail.Unpack(bad_request):
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                )
            elif any_detail.Unpack(retry_info):
                retry_delay = retry_info.retry_delay.ToTimedelta().total_seconds()
    return error_for_code(
        code,
        message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        retry_delay=retry_delay,
    )


def _status_details(trailers: grpc.aio.Metadata | None) -> status_pb2.Status | None:
    # Not grpc_status.rpc_status.from_call: it raises when the details' message differs
    # from grpc-message, and a classifier must not fail on a server's wording.
    if trailers is None:
        return None
    raw = trailers.get(STATUS_DETAILS_KEY)
    if not isinstance(raw, bytes):
        return None
    try:
        return status_pb2.Status.FromString(raw)
    except DecodeError:
        return None
