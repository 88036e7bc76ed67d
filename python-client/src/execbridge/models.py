"""Typed, immutable models of orders, fills, positions and order updates.

Money and quantities are :class:`decimal.Decimal`, never float. Optional values the proto
carries as empty strings (a limit price on a market order, the average fill price before
the first fill) are ``None`` here. The conversion to and from protobuf lives in one module,
``execbridge._convert``; nothing here knows about protobuf.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, Self, TypeVar

from . import _parse
from .enums import (
    Liquidity,
    OrderEventType,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
    TradingMode,
    TradingState,
)
from .errors import ExecbridgeError, ValidationError

__all__ = [
    "AccountRisk",
    "AttachedOrder",
    "FlattenResult",
    "RiskLimits",
    "Balance",
    "Fill",
    "MevProtection",
    "Order",
    "OrderRequest",
    "OrderResult",
    "OrderUpdate",
    "Page",
    "Portfolio",
    "Position",
    "SubmitResult",
    "new_client_order_id",
]

_T = TypeVar("_T")

# 1-36 characters of [A-Za-z0-9._:-], as the contract requires.
CLIENT_ORDER_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,36}")
_UINT64_MAX = 2**64 - 1


def new_client_order_id() -> str:
    """A fresh, unique client order id (32 hex characters)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachedOrder:
    """A stop-loss or take-profit attached to a parent order; works once the parent fills."""

    trigger_price: Decimal
    #: None: a market order once triggered.
    limit_price: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MevProtection:
    """Protection against maximal-extractable-value attacks on swap venues (Solana)."""

    private_relay: bool = False
    tip_lamports: int = 0
    max_priority_fee_micro_lamports: int = 0


@dataclass(frozen=True, kw_only=True)
class OrderRequest:
    """Everything the caller controls about an order.

    Build one with :meth:`market`, :meth:`limit`, :meth:`from_dict` (all validated) or the
    constructor (validated when submitted). The defaults are the safe ones: the paper venue
    in PAPER mode, good till canceled, a fresh ``client_order_id``.
    """

    account: str
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    venue: str = "paper"
    mode: TradingMode = TradingMode.PAPER
    time_in_force: TimeInForce = TimeInForce.GTC
    client_order_id: str = field(default_factory=new_client_order_id)
    post_only: bool = False
    stop_loss: AttachedOrder | None = None
    take_profit: AttachedOrder | None = None
    slippage_bps: int = 0
    mev_protection: MevProtection | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def market(
        cls,
        *,
        account: str,
        symbol: str,
        side: Side,
        quantity: Decimal | str,
        venue: str = "paper",
        mode: TradingMode = TradingMode.PAPER,
        client_order_id: str | None = None,
        **options: Any,
    ) -> Self:
        """A validated MARKET order.

        Raises:
            ValidationError: a field is invalid; the error names it.
        """
        return cls.from_dict(
            dict(
                account=account,
                symbol=symbol,
                side=side,
                type=OrderType.MARKET,
                quantity=quantity,
                venue=venue,
                mode=mode,
                client_order_id=client_order_id or new_client_order_id(),
                **options,
            )
        )

    @classmethod
    def limit(
        cls,
        *,
        account: str,
        symbol: str,
        side: Side,
        quantity: Decimal | str,
        price: Decimal | str,
        venue: str = "paper",
        mode: TradingMode = TradingMode.PAPER,
        client_order_id: str | None = None,
        **options: Any,
    ) -> Self:
        """A validated LIMIT order.

        Raises:
            ValidationError: a field is invalid; the error names it.
        """
        return cls.from_dict(
            dict(
                account=account,
                symbol=symbol,
                side=side,
                type=OrderType.LIMIT,
                quantity=quantity,
                price=price,
                venue=venue,
                mode=mode,
                client_order_id=client_order_id or new_client_order_id(),
                **options,
            )
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """An order from a plain mapping, as read from JSON, YAML or a strategy's config.

        Keys are the field names (``order_type`` is accepted for ``type``). Enums may be
        members or names ("BUY", "buy", "SIDE_BUY"); money is a decimal string, an int or a
        Decimal, never a float. Missing optional fields take the constructor's defaults.

        Raises:
            ValidationError: every invalid, missing or unknown field, named by its path
                (``quantity``, ``stop_loss.trigger_price``).
        """
        out = _parse.Violations()
        data = dict(data)
        if "order_type" in data:
            if "type" in data:
                out.add("order_type", "give either type or order_type, not both")
            data["type"] = data.pop("order_type")
        _parse.unknown_keys(data, _ORDER_REQUEST_FIELDS, "", out)

        values: dict[str, Any] = {}

        def required(name: str) -> object:
            if name not in data or data[name] is None:
                out.add(name, "is required")
                return None
            return data[name]

        for name in ("account", "symbol"):
            raw = required(name)
            if raw is not None:
                values[name] = _parse.string_value(raw, name, out)
        for name in ("venue", "client_order_id"):
            if data.get(name) is not None:
                values[name] = _parse.string_value(data[name], name, out)

        if (raw := required("side")) is not None:
            values["side"] = _parse.enum_value(Side, raw, "side", out)
        if (raw := required("type")) is not None:
            values["type"] = _parse.enum_value(OrderType, raw, "type", out)
        if data.get("mode") is not None:
            values["mode"] = _parse.enum_value(TradingMode, data["mode"], "mode", out)
        if data.get("time_in_force") is not None:
            values["time_in_force"] = _parse.enum_value(
                TimeInForce, data["time_in_force"], "time_in_force", out
            )

        if (raw := required("quantity")) is not None:
            values["quantity"] = _parse.decimal_value(raw, "quantity", out)
        for name in ("price", "stop_price"):
            # An empty string means "no price", as on the wire.
            if data.get(name) not in (None, ""):
                values[name] = _parse.decimal_value(data[name], name, out)

        if data.get("post_only") is not None:
            values["post_only"] = _parse.bool_value(data["post_only"], "post_only", out)
        if data.get("slippage_bps") is not None:
            values["slippage_bps"] = _parse.int_value(
                data["slippage_bps"], "slippage_bps", out, low=0, high=10_000
            )
        for name in ("stop_loss", "take_profit"):
            if data.get(name) is not None:
                values[name] = _attached_from_dict(data[name], name, out)
        if data.get("mev_protection") is not None:
            values["mev_protection"] = _mev_from_dict(data["mev_protection"], out)
        if data.get("metadata") is not None:
            metadata = _parse.mapping_value(data["metadata"], "metadata", out)
            if metadata is not None:
                bad = [k for k, v in metadata.items() if not isinstance(v, str)]
                for key in bad:
                    out.add(f"metadata.{key}", "must be a string")
                values["metadata"] = {k: str(v) for k, v in metadata.items()}

        if out:
            raise ValidationError(out.items)
        order = cls(**values)
        order.validate()
        return order

    def validate(self) -> None:
        """Check the request against the contract's rules (not the venue's tick sizes).

        Raises:
            ValidationError: every rule the request breaks, naming each field.
        """
        out = _parse.Violations()
        if not CLIENT_ORDER_ID_RE.fullmatch(self.client_order_id):
            out.add("client_order_id", "must be 1-36 characters of A-Z a-z 0-9 . _ : -")
        for name in ("account", "venue", "symbol"):
            if not getattr(self, name).strip():
                out.add(name, "must not be empty")
        for name, value in (
            ("side", self.side),
            ("type", self.type),
            ("mode", self.mode),
            ("time_in_force", self.time_in_force),
        ):
            if value.name == "UNSPECIFIED":
                out.add(name, "must be specified")
        _check_positive(self.quantity, "quantity", out)
        if self.type.needs_price:
            if self.price is None:
                out.add("price", f"is required for a {self.type.name} order")
            else:
                _check_positive(self.price, "price", out)
        elif self.price is not None and self.type is not OrderType.UNSPECIFIED:
            out.add("price", f"must be empty for a {self.type.name} order")
        if self.type.needs_stop_price:
            if self.stop_price is None:
                out.add("stop_price", f"is required for a {self.type.name} order")
            else:
                _check_positive(self.stop_price, "stop_price", out)
        elif self.stop_price is not None and self.type is not OrderType.UNSPECIFIED:
            out.add("stop_price", f"must be empty for a {self.type.name} order")
        if self.post_only and self.type is not OrderType.LIMIT:
            out.add("post_only", "is allowed on LIMIT orders only")
        if not 0 <= self.slippage_bps <= 10_000:
            out.add("slippage_bps", "must be between 0 and 10000")
        for name, attached in (("stop_loss", self.stop_loss), ("take_profit", self.take_profit)):
            if attached is not None:
                _check_positive(attached.trigger_price, f"{name}.trigger_price", out)
                if attached.limit_price is not None:
                    _check_positive(attached.limit_price, f"{name}.limit_price", out)
        if self.mev_protection is not None:
            for name in ("tip_lamports", "max_priority_fee_micro_lamports"):
                if not 0 <= getattr(self.mev_protection, name) <= _UINT64_MAX:
                    out.add(f"mev_protection.{name}", "must be between 0 and 2**64-1")
        if out:
            raise ValidationError(out.items)


_ORDER_REQUEST_FIELDS = set(OrderRequest.__dataclass_fields__)


def _check_positive(value: object, name: str, out: _parse.Violations) -> None:
    if not isinstance(value, Decimal):
        out.add(name, f"must be a Decimal, not {type(value).__name__}")
    elif not value.is_finite() or value <= 0:
        out.add(name, f"must be greater than zero, got {value}")


def _attached_from_dict(raw: object, name: str, out: _parse.Violations) -> AttachedOrder | None:
    data = _parse.mapping_value(raw, name, out)
    if data is None:
        return None
    _parse.unknown_keys(data, {"trigger_price", "limit_price"}, f"{name}.", out)
    if data.get("trigger_price") in (None, ""):
        out.add(f"{name}.trigger_price", "is required")
        return None
    trigger = _parse.decimal_value(data["trigger_price"], f"{name}.trigger_price", out)
    limit = None
    if data.get("limit_price") not in (None, ""):
        limit = _parse.decimal_value(data["limit_price"], f"{name}.limit_price", out)
    if trigger is None:
        return None
    return AttachedOrder(trigger_price=trigger, limit_price=limit)


def _mev_from_dict(raw: object, out: _parse.Violations) -> MevProtection | None:
    data = _parse.mapping_value(raw, "mev_protection", out)
    if data is None:
        return None
    names = {"private_relay", "tip_lamports", "max_priority_fee_micro_lamports"}
    _parse.unknown_keys(data, names, "mev_protection.", out)
    relay = _parse.bool_value(data.get("private_relay", False), "mev_protection.private_relay", out)
    tip = _parse.int_value(
        data.get("tip_lamports", 0), "mev_protection.tip_lamports", out, low=0, high=_UINT64_MAX
    )
    fee = _parse.int_value(
        data.get("max_priority_fee_micro_lamports", 0),
        "mev_protection.max_priority_fee_micro_lamports",
        out,
        low=0,
        high=_UINT64_MAX,
    )
    if relay is None or tip is None or fee is None:
        return None
    return MevProtection(private_relay=relay, tip_lamports=tip, max_priority_fee_micro_lamports=fee)


@dataclass(frozen=True, kw_only=True)
class Order:
    """An order as execbridge knows it."""

    #: Assigned by execbridge ("<shard>-<n>").
    order_id: str
    #: The request as accepted.
    request: OrderRequest
    status: OrderStatus
    filled_quantity: Decimal
    remaining_quantity: Decimal
    #: Volume-weighted average fill price; None before the first fill.
    average_fill_price: Decimal | None
    #: Set when status is REJECTED.
    reject_reason: RejectReason | None
    reject_message: str
    #: The venue's own identifier, once acknowledged.
    venue_order_id: str | None
    created_at: datetime | None
    updated_at: datetime | None
    #: Sequence number of the last update applied to this order (per shard).
    sequence: int
    fees: Decimal
    fee_asset: str

    @property
    def client_order_id(self) -> str:
        return self.request.client_order_id

    @property
    def account(self) -> str:
        return self.request.account

    @property
    def symbol(self) -> str:
        return self.request.symbol

    @property
    def side(self) -> Side:
        return self.request.side

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill:
    """One execution of (part of) an order."""

    #: The venue's trade identifier; fills are deduplicated on it.
    trade_id: str
    order_id: str
    client_order_id: str
    account: str
    venue: str
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_asset: str
    liquidity: Liquidity
    executed_at: datetime | None

    @property
    def notional(self) -> Decimal:
        return self.price * self.quantity


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """A net position in one instrument."""

    account: str
    venue: str
    symbol: str
    #: Signed base quantity: positive long, negative short.
    quantity: Decimal
    #: Average entry price of the open quantity; None when flat.
    average_entry_price: Decimal | None
    realized_pnl: Decimal
    #: Last market price used to mark the position; None when unknown.
    mark_price: Decimal | None
    unrealized_pnl: Decimal
    updated_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance:
    """Cash or an asset held by an account."""

    account: str
    asset: str
    total: Decimal
    #: Reserved by open orders.
    locked: Decimal

    @property
    def free(self) -> Decimal:
        return self.total - self.locked


@dataclass(frozen=True, slots=True, kw_only=True)
class Portfolio:
    """Positions and balances of one account, as returned by ``positions()``."""

    positions: tuple[Position, ...]
    balances: tuple[Balance, ...]

    def position(self, symbol: str, venue: str | None = None) -> Position | None:
        """The position in ``symbol`` (on ``venue`` if given), or None when there is none."""
        for position in self.positions:
            if position.symbol == symbol and (venue is None or position.venue == venue):
                return position
        return None


@dataclass(frozen=True, kw_only=True)
class OrderUpdate:
    """A change to one order: every state change and every fill."""

    #: The executor shard that owns the order; sequences are per shard.
    shard: str
    #: Strictly increasing per shard.
    sequence: int
    event: OrderEventType
    #: The order after the change.
    order: Order
    #: Present when ``event`` is FILLED.
    fill: Fill | None
    #: Fraction filled, 0 to 1.
    progress: Decimal
    timestamp: datetime | None


@dataclass(frozen=True, kw_only=True)
class SubmitResult:
    """The answer to ``submit_order``."""

    order: Order
    #: True when this call matched an earlier order with the same client_order_id.
    duplicate: bool


@dataclass(frozen=True, kw_only=True)
class OrderResult:
    """The outcome of one order of a ``submit_orders`` stream: an order or an error."""

    #: Position of the order in its batch.
    index: int
    client_order_id: str
    order: Order | None
    #: The per-order failure, as the exception the same failure raises from a unary call.
    error: ExecbridgeError | None
    duplicate: bool
    batch_id: str

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Order:
        """The order, or raise its error.

        Raises:
            ExecbridgeError: the order failed.
        """
        if self.error is not None:
            raise self.error
        assert self.order is not None, "an OrderResult has an order or an error"
        return self.order


@dataclass(frozen=True, kw_only=True)
class Page(Generic[_T]):
    """One page of a listing; pass ``next_page_token`` back to get the next one."""

    items: tuple[_T, ...]
    #: None on the last page.
    next_page_token: str | None

    def __iter__(self) -> Iterator[_T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskLimits:
    """Pre-trade limits of one account for one trading mode; None (or 0) means no limit."""

    max_order_quantity: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_open_orders: int = 0
    max_position: Decimal | None = None
    max_gross_exposure: Decimal | None = None
    #: A limit price may be at most this many basis points from the last market price.
    price_band_bps: int = 0
    max_orders_per_second: int = 0
    max_daily_loss: Decimal | None = None


@dataclass(frozen=True, kw_only=True)
class AccountRisk:
    """An account's trading states and risk limits, as the executor holds them."""

    account: str
    state: TradingState
    #: Per-symbol states; the stricter of the account and symbol state applies.
    symbol_states: Mapping[str, TradingState]
    paper_limits: RiskLimits
    live_limits: RiskLimits


@dataclass(frozen=True, kw_only=True)
class FlattenResult:
    """What ``admin.flatten`` did: the orders canceled, then the market orders sent."""

    canceled: tuple[Order, ...]
    submitted: tuple[Order, ...]
