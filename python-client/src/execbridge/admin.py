"""AdminClient: the operator controls of ``execbridge.v1.AdminService``.

Reached as :attr:`ExecutionClient.admin <execbridge.ExecutionClient.admin>`; it shares the
client's channels, credentials, breaker, telemetry and retry policy. Every call needs a
principal with the ``admin`` permission and writes the ``reason`` to the audit trail.
Setting a state or limits and cancelling are safe to repeat and retry; :meth:`flatten`
sends market orders and is never retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._convert import account_risk_from_proto, order_from_proto, risk_limits_to_proto
from ._proto.v1 import admin_service_pb2 as admin_pb
from .enums import TradingMode, TradingState, proto_name
from .errors import FieldViolation, ProtocolError, ValidationError
from .models import AccountRisk, FlattenResult, Order, RiskLimits
from .retry import NO_RETRY

if TYPE_CHECKING:
    from .client import ExecutionClient

__all__ = ["AdminClient"]

_ADMIN = "execbridge.v1.AdminService"


class AdminClient:
    """Kill switch, risk limits, cancel-all and flatten for one account at a time."""

    def __init__(self, client: ExecutionClient) -> None:
        self._client = client

    async def set_trading_state(
        self,
        account: str,
        state: TradingState,
        *,
        reason: str,
        symbol: str | None = None,
        timeout: float | None = None,
    ) -> AccountRisk:
        """Set the trading state of ``account`` (or of one ``symbol`` of it).

        ``TradingState.HALTED`` is the kill switch: every new order is rejected.

        Raises:
            ValidationError: ``state`` is UNSPECIFIED or ``reason`` is empty.
            PermissionDenied: the caller lacks the admin permission.
            ExecbridgeError: any other failure.
        """
        if state is TradingState.UNSPECIFIED:
            raise ValidationError([FieldViolation("state", "must be specified")])
        _need_reason(reason)
        request = admin_pb.SetTradingStateRequest(
            account=account, symbol=symbol or "", state=proto_name(state), reason=reason
        )
        response = await self._client._unary(
            lambda s: s.admin.SetTradingState, request, timeout, f"{_ADMIN}/SetTradingState"
        )
        return _risk(response.risk if response.HasField("risk") else None, "SetTradingState")

    async def get_risk_limits(self, account: str, *, timeout: float | None = None) -> AccountRisk:
        """The account's trading states and risk limits.

        Raises:
            ExecbridgeError: the request failed.
        """
        request = admin_pb.GetRiskLimitsRequest(account=account)
        response = await self._client._unary(
            lambda s: s.admin.GetRiskLimits, request, timeout, f"{_ADMIN}/GetRiskLimits"
        )
        return _risk(response.risk if response.HasField("risk") else None, "GetRiskLimits")

    async def set_risk_limits(
        self,
        account: str,
        limits: RiskLimits,
        *,
        mode: TradingMode = TradingMode.PAPER,
        reason: str,
        timeout: float | None = None,
    ) -> AccountRisk:
        """Replace the account's risk limits for ``mode``.

        Raises:
            ValidationError: ``mode`` is UNSPECIFIED or ``reason`` is empty.
            ExecbridgeError: the request failed.
        """
        if mode is TradingMode.UNSPECIFIED:
            raise ValidationError([FieldViolation("mode", "must be specified")])
        _need_reason(reason)
        request = admin_pb.SetRiskLimitsRequest(
            account=account, mode=proto_name(mode), limits=risk_limits_to_proto(limits), reason=reason
        )
        response = await self._client._unary(
            lambda s: s.admin.SetRiskLimits, request, timeout, f"{_ADMIN}/SetRiskLimits"
        )
        return _risk(response.risk if response.HasField("risk") else None, "SetRiskLimits")

    async def cancel_all_orders(
        self,
        account: str,
        *,
        reason: str,
        symbol: str | None = None,
        venue: str | None = None,
        timeout: float | None = None,
    ) -> list[Order]:
        """Cancel every open order of ``account`` (optionally one symbol or venue).

        Raises:
            ExecbridgeError: the request failed.
        """
        _need_reason(reason)
        request = admin_pb.CancelAllOrdersRequest(
            account=account, symbol=symbol or "", venue=venue or "", reason=reason
        )
        response = await self._client._unary(
            lambda s: s.admin.CancelAllOrders, request, timeout, f"{_ADMIN}/CancelAllOrders"
        )
        return [order_from_proto(o) for o in response.orders]

    async def flatten(
        self,
        account: str,
        *,
        reason: str,
        symbol: str | None = None,
        venue: str | None = None,
        timeout: float | None = None,
    ) -> FlattenResult:
        """Cancel every open order of ``account`` and close its positions at market.

        Never retried: a second flatten after a lost answer could trade again.

        Raises:
            UnknownOutcome: the answer was lost; check positions before trying again.
            ExecbridgeError: the request failed.
        """
        _need_reason(reason)
        request = admin_pb.FlattenRequest(
            account=account, symbol=symbol or "", venue=venue or "", reason=reason
        )
        response = await self._client._unary(
            lambda s: s.admin.Flatten, request, timeout, f"{_ADMIN}/Flatten", retry=NO_RETRY
        )
        return FlattenResult(
            canceled=tuple(order_from_proto(o) for o in response.canceled),
            submitted=tuple(order_from_proto(o) for o in response.submitted),
        )


def _need_reason(reason: str) -> None:
    if not reason.strip():
        raise ValidationError([FieldViolation("reason", "must say why (it goes to the audit trail)")])


def _risk(message: admin_pb.AccountRisk | None, what: str) -> AccountRisk:
    if message is None:
        raise ProtocolError(f"{what} answered without 'risk'")
    return account_risk_from_proto(message)
