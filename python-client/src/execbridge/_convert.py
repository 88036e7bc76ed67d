"""The one boundary between the typed models and the generated protobuf messages.

Decimals travel as plain decimal strings ("0.00000001", never "1E-8"). Empty strings on
the wire become ``None`` for optional values and zero for totals. A value the contract
does not allow (a price that is not a decimal) raises :class:`ProtocolError` naming the
field; an enum value this client does not know yet becomes ``UNSPECIFIED``. Enums are
written by proto value name ("SIDE_BUY"), which the generated stubs type-check.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from . import market_data as md
from ._proto.v1 import admin_service_pb2 as admin_pb
from ._proto.v1 import execution_service_pb2 as svc_pb
from ._proto.v1 import market_data_service_pb2 as md_pb
from ._proto.v1 import orders_pb2 as pb
from .enums import (
    Channel,
    FeedStatus,
    Liquidity,
    OrderEventType,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    SlowConsumerPolicy,
    TimeInForce,
    TradingMode,
    TradingState,
    proto_name,
)
from .errors import (
    ExecbridgeError,
    FieldViolation,
    ProtocolError,
    error_for_code,
    status_code_from_number,
)
from .models import (
    AccountRisk,
    AttachedOrder,
    Balance,
    Fill,
    MevProtection,
    Order,
    OrderRequest,
    OrderResult,
    OrderUpdate,
    Portfolio,
    Position,
    RiskLimits,
)

_E = TypeVar("_E", bound=enum.Enum)
_ZERO = Decimal(0)


# --- scalars -------------------------------------------------------------------------


def decimal_to_wire(value: Decimal) -> str:
    """A decimal string without exponent: Decimal("1E-8") -> "0.00000001"."""
    return format(value, "f")


def _optional_decimal_to_wire(value: Decimal | None) -> str:
    return "" if value is None else decimal_to_wire(value)


def _decimal(raw: str, field: str) -> Decimal:
    """A required decimal; empty means zero (proto3's default for an unset total)."""
    value = _optional_decimal(raw, field)
    return _ZERO if value is None else value


def _optional_decimal(raw: str, field: str) -> Decimal | None:
    if raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ProtocolError(f"server sent {field}={raw!r}, which is not a decimal") from None
    if not value.is_finite():
        raise ProtocolError(f"server sent {field}={raw!r}, which is not a finite decimal")
    return value


_MEMBERS: dict[type[enum.Enum], dict[int, enum.Enum]] = {}


def _enum(enum_type: type[_E], number: int) -> _E:
    # A dict lookup instead of Enum.__call__: conversion of batch results is hot.
    members = _MEMBERS.get(enum_type)
    if members is None:
        members = _MEMBERS[enum_type] = {m.value: m for m in enum_type}
    member = members.get(number)
    if member is None:
        # A value added to the contract after this client was built.
        member = members[0]
    return member  # type: ignore[return-value]


def datetime_to_proto(value: datetime) -> Timestamp:
    """A protobuf Timestamp; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _timestamp(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


# --- orders --------------------------------------------------------------------------


def order_request_to_proto(order: OrderRequest) -> pb.OrderRequest:
    message = pb.OrderRequest(
        client_order_id=order.client_order_id,
        account=order.account,
        venue=order.venue,
        mode=proto_name(order.mode),
        symbol=order.symbol,
        side=proto_name(order.side),
        type=proto_name(order.type),
        time_in_force=proto_name(order.time_in_force),
        post_only=order.post_only,
        quantity=decimal_to_wire(order.quantity),
        price=_optional_decimal_to_wire(order.price),
        stop_price=_optional_decimal_to_wire(order.stop_price),
        slippage_bps=order.slippage_bps,
        metadata=dict(order.metadata),
    )
    if order.stop_loss is not None:
        message.stop_loss.CopyFrom(_attached_to_proto(order.stop_loss))
    if order.take_profit is not None:
        message.take_profit.CopyFrom(_attached_to_proto(order.take_profit))
    if order.mev_protection is not None:
        mev = order.mev_protection
        message.mev_protection.CopyFrom(
            pb.MevProtection(
                private_relay=mev.private_relay,
                tip_lamports=mev.tip_lamports,
                max_priority_fee_micro_lamports=mev.max_priority_fee_micro_lamports,
            )
        )
    return message


def _attached_to_proto(attached: AttachedOrder) -> pb.AttachedOrder:
    return pb.AttachedOrder(
        trigger_price=decimal_to_wire(attached.trigger_price),
        limit_price=_optional_decimal_to_wire(attached.limit_price),
    )


def order_request_from_proto(message: pb.OrderRequest) -> OrderRequest:
    """The request as the server echoes it; not validated (the server accepted it)."""
    return OrderRequest(
        client_order_id=message.client_order_id,
        account=message.account,
        venue=message.venue,
        mode=_enum(TradingMode, message.mode),
        symbol=message.symbol,
        side=_enum(Side, message.side),
        type=_enum(OrderType, message.type),
        time_in_force=_enum(TimeInForce, message.time_in_force),
        post_only=message.post_only,
        quantity=_decimal(message.quantity, "order.request.quantity"),
        price=_optional_decimal(message.price, "order.request.price"),
        stop_price=_optional_decimal(message.stop_price, "order.request.stop_price"),
        stop_loss=_attached_from_proto(message.stop_loss, "stop_loss")
        if message.HasField("stop_loss")
        else None,
        take_profit=_attached_from_proto(message.take_profit, "take_profit")
        if message.HasField("take_profit")
        else None,
        slippage_bps=message.slippage_bps,
        mev_protection=MevProtection(
            private_relay=message.mev_protection.private_relay,
            tip_lamports=message.mev_protection.tip_lamports,
            max_priority_fee_micro_lamports=message.mev_protection.max_priority_fee_micro_lamports,
        )
        if message.HasField("mev_protection")
        else None,
        metadata=dict(message.metadata),
    )


def _attached_from_proto(message: pb.AttachedOrder, name: str) -> AttachedOrder:
    return AttachedOrder(
        trigger_price=_decimal(message.trigger_price, f"{name}.trigger_price"),
        limit_price=_optional_decimal(message.limit_price, f"{name}.limit_price"),
    )


def order_from_proto(message: pb.Order, request: OrderRequest | None = None) -> Order:
    """The order; ``request`` is the caller's own request when it is known to be the one
    the server echoes (a fresh, non-duplicate result), which saves converting it back."""
    reject_reason = _enum(RejectReason, message.reject_reason)
    return Order(
        order_id=message.order_id,
        request=order_request_from_proto(message.request) if request is None else request,
        status=_enum(OrderStatus, message.status),
        filled_quantity=_decimal(message.filled_quantity, "order.filled_quantity"),
        remaining_quantity=_decimal(message.remaining_quantity, "order.remaining_quantity"),
        average_fill_price=_optional_decimal(
            message.average_fill_price, "order.average_fill_price"
        ),
        reject_reason=None if reject_reason is RejectReason.UNSPECIFIED else reject_reason,
        reject_message=message.reject_message,
        venue_order_id=message.venue_order_id or None,
        created_at=_timestamp(message.created_at, message.HasField("created_at")),
        updated_at=_timestamp(message.updated_at, message.HasField("updated_at")),
        sequence=message.sequence,
        fees=_decimal(message.fees, "order.fees"),
        fee_asset=message.fee_asset,
    )


def fill_from_proto(message: pb.Fill) -> Fill:
    return Fill(
        trade_id=message.trade_id,
        order_id=message.order_id,
        client_order_id=message.client_order_id,
        account=message.account,
        venue=message.venue,
        symbol=message.symbol,
        side=_enum(Side, message.side),
        price=_decimal(message.price, "fill.price"),
        quantity=_decimal(message.quantity, "fill.quantity"),
        fee=_decimal(message.fee, "fill.fee"),
        fee_asset=message.fee_asset,
        liquidity=_enum(Liquidity, message.liquidity),
        executed_at=_timestamp(message.executed_at, message.HasField("executed_at")),
    )


def position_from_proto(message: pb.Position) -> Position:
    return Position(
        account=message.account,
        venue=message.venue,
        symbol=message.symbol,
        quantity=_decimal(message.quantity, "position.quantity"),
        average_entry_price=_optional_decimal(
            message.average_entry_price, "position.average_entry_price"
        ),
        realized_pnl=_decimal(message.realized_pnl, "position.realized_pnl"),
        mark_price=_optional_decimal(message.mark_price, "position.mark_price"),
        unrealized_pnl=_decimal(message.unrealized_pnl, "position.unrealized_pnl"),
        updated_at=_timestamp(message.updated_at, message.HasField("updated_at")),
    )


def balance_from_proto(message: pb.Balance) -> Balance:
    return Balance(
        account=message.account,
        asset=message.asset,
        total=_decimal(message.total, "balance.total"),
        locked=_decimal(message.locked, "balance.locked"),
    )


def portfolio_from_proto(message: svc_pb.GetPositionsResponse) -> Portfolio:
    return Portfolio(
        positions=tuple(position_from_proto(p) for p in message.positions),
        balances=tuple(balance_from_proto(b) for b in message.balances),
    )


def order_update_from_proto(message: pb.OrderUpdate) -> OrderUpdate:
    return OrderUpdate(
        shard=message.shard,
        sequence=message.sequence,
        event=_enum(OrderEventType, message.event),
        order=order_from_proto(message.order),
        fill=fill_from_proto(message.fill) if message.HasField("fill") else None,
        progress=_decimal(message.progress, "update.progress"),
        timestamp=_timestamp(message.timestamp, message.HasField("timestamp")),
    )


def order_error_from_proto(message: pb.OrderError) -> ExecbridgeError:
    """The exception a unary call would raise for the same failure.

    A batch error has no ``RetryInfo``; a rate limit carries its delay as the
    ``retry_after_ms`` metadata instead, which becomes ``retry_delay``.
    """
    retry_delay: float | None = None
    raw_delay = message.metadata.get("retry_after_ms", "")
    if raw_delay.isdigit():
        retry_delay = int(raw_delay) / 1000
    return error_for_code(
        status_code_from_number(message.code),
        message.message,
        reason=message.reason,
        metadata=dict(message.metadata),
        field_violations=[
            FieldViolation(v.field, v.description) for v in message.field_violations
        ],
        retry_delay=retry_delay,
    )


def order_result_from_proto(
    message: svc_pb.OrderResult, batch_id: str, sent: OrderRequest | None = None
) -> OrderResult:
    """One batch result; ``sent`` is the request sent at this position, reused as the
    order's request when the result is a fresh order for it (not a duplicate)."""
    outcome = message.WhichOneof("outcome")
    if outcome == "order":
        reuse = (
            sent
            if sent is not None
            and not message.duplicate
            and message.order.request.client_order_id == sent.client_order_id
            else None
        )
        order, error = order_from_proto(message.order, reuse), None
    elif outcome == "error":
        order, error = None, order_error_from_proto(message.error)
    else:
        raise ProtocolError(
            f"result {message.index} of batch {batch_id!r} has neither an order nor an error"
        )
    return OrderResult(
        index=message.index,
        client_order_id=message.client_order_id,
        order=order,
        error=error,
        duplicate=message.duplicate,
        batch_id=batch_id,
    )


# --- market data ---------------------------------------------------------------------


def subscribe_to_proto(
    symbols: Iterable[str],
    *,
    venue: str,
    channels: Iterable[Channel],
    policy: SlowConsumerPolicy,
) -> md_pb.StreamMarketDataRequest:
    return md_pb.StreamMarketDataRequest(
        subscribe=md_pb.Subscribe(
            venue=venue,
            symbols=list(symbols),
            channels=[proto_name(c) for c in channels],
            policy=proto_name(policy),
        )
    )


def unsubscribe_to_proto(
    symbols: Iterable[str], *, venue: str, channels: Iterable[Channel]
) -> md_pb.StreamMarketDataRequest:
    return md_pb.StreamMarketDataRequest(
        unsubscribe=md_pb.Unsubscribe(
            venue=venue, symbols=list(symbols), channels=[proto_name(c) for c in channels]
        )
    )


def _levels(levels: Iterable[md_pb.PriceLevel], name: str) -> tuple[md.PriceLevel, ...]:
    return tuple(
        md.PriceLevel(_decimal(level.price, f"{name}.price"), _decimal(level.quantity, f"{name}.quantity"))
        for level in levels
    )


def market_data_event_from_proto(message: md_pb.MarketDataEvent) -> md.MarketDataEvent:
    payload: md.MarketDataPayload | None
    kind = message.WhichOneof("payload")
    if kind == "top_of_book":
        top = message.top_of_book
        payload = md.TopOfBook(
            bid_price=_optional_decimal(top.bid_price, "top_of_book.bid_price"),
            bid_quantity=_optional_decimal(top.bid_quantity, "top_of_book.bid_quantity"),
            ask_price=_optional_decimal(top.ask_price, "top_of_book.ask_price"),
            ask_quantity=_optional_decimal(top.ask_quantity, "top_of_book.ask_quantity"),
            last_price=_optional_decimal(top.last_price, "top_of_book.last_price"),
            volume=_optional_decimal(top.volume, "top_of_book.volume"),
        )
    elif kind == "trade":
        trade = message.trade
        payload = md.Trade(
            trade_id=trade.trade_id,
            price=_decimal(trade.price, "trade.price"),
            quantity=_decimal(trade.quantity, "trade.quantity"),
            buyer_is_maker=trade.buyer_is_maker,
        )
    elif kind == "book_snapshot":
        payload = md.BookSnapshot(
            bids=_levels(message.book_snapshot.bids, "book_snapshot.bids"),
            asks=_levels(message.book_snapshot.asks, "book_snapshot.asks"),
        )
    elif kind == "book_delta":
        payload = md.BookDelta(
            bids=_levels(message.book_delta.bids, "book_delta.bids"),
            asks=_levels(message.book_delta.asks, "book_delta.asks"),
        )
    elif kind == "status":
        payload = md.StatusFrame(
            status=_enum(FeedStatus, message.status.status), reason=message.status.reason
        )
    elif kind == "gap":
        payload = md.Gap(dropped=message.gap.dropped)
    else:
        payload = None
    return md.MarketDataEvent(
        venue=message.venue,
        symbol=message.symbol,
        sequence=message.sequence,
        exchange_time=_timestamp(message.exchange_time, message.HasField("exchange_time")),
        receive_time=_timestamp(message.receive_time, message.HasField("receive_time")),
        payload=payload,
    )


# --- admin ---------------------------------------------------------------------------


def risk_limits_to_proto(limits: RiskLimits) -> admin_pb.RiskLimits:
    return admin_pb.RiskLimits(
        max_order_quantity=_optional_decimal_to_wire(limits.max_order_quantity),
        max_order_notional=_optional_decimal_to_wire(limits.max_order_notional),
        max_open_orders=limits.max_open_orders,
        max_position=_optional_decimal_to_wire(limits.max_position),
        max_gross_exposure=_optional_decimal_to_wire(limits.max_gross_exposure),
        price_band_bps=limits.price_band_bps,
        max_orders_per_second=limits.max_orders_per_second,
        max_daily_loss=_optional_decimal_to_wire(limits.max_daily_loss),
    )


def _limit(raw: str, field: str) -> Decimal | None:
    value = _optional_decimal(raw, field)
    return None if value is None or value == 0 else value


def risk_limits_from_proto(message: admin_pb.RiskLimits) -> RiskLimits:
    return RiskLimits(
        max_order_quantity=_limit(message.max_order_quantity, "limits.max_order_quantity"),
        max_order_notional=_limit(message.max_order_notional, "limits.max_order_notional"),
        max_open_orders=message.max_open_orders,
        max_position=_limit(message.max_position, "limits.max_position"),
        max_gross_exposure=_limit(message.max_gross_exposure, "limits.max_gross_exposure"),
        price_band_bps=message.price_band_bps,
        max_orders_per_second=message.max_orders_per_second,
        max_daily_loss=_limit(message.max_daily_loss, "limits.max_daily_loss"),
    )


def account_risk_from_proto(message: admin_pb.AccountRisk) -> AccountRisk:
    return AccountRisk(
        account=message.account,
        state=_enum(TradingState, message.state),
        symbol_states={s.symbol: _enum(TradingState, s.state) for s in message.symbol_states},
        paper_limits=risk_limits_from_proto(message.paper_limits),
        live_limits=risk_limits_from_proto(message.live_limits),
    )
