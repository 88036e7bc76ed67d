"""Python enums mirroring the execbridge.v1 proto enums.

Member values are the proto numbers and member names are the proto names without their
prefix (``SIDE_BUY`` -> ``Side.BUY``). A unit test checks every proto enum value has its
member here, so the two cannot drift apart silently. Values the server sends that this
client does not know yet (v1 grows new enum values compatibly) convert to ``UNSPECIFIED``.
"""

from __future__ import annotations

import enum
import functools

__all__ = [
    "Channel",
    "FeedStatus",
    "Liquidity",
    "OrderEventType",
    "OrderStatus",
    "OrderType",
    "RejectReason",
    "Side",
    "SlowConsumerPolicy",
    "TimeInForce",
    "TradingMode",
    "TradingState",
    "proto_name",
    "proto_prefix",
]


@functools.cache
def proto_prefix(enum_type: type[enum.Enum]) -> str:
    """The prefix of the proto value names of an enum: OrderType -> "ORDER_TYPE_"."""
    name = enum_type.__name__
    snake = "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name))
    return snake.upper() + "_"


@functools.cache
def proto_name(member: enum.Enum) -> str:
    """The proto value name of a member: Side.BUY -> "SIDE_BUY"."""
    return proto_prefix(type(member)) + member.name


class Side(enum.Enum):
    """Which side of the book an order trades on."""

    UNSPECIFIED = 0
    BUY = 1
    SELL = 2


class OrderType(enum.Enum):
    """How an order executes."""

    UNSPECIFIED = 0
    MARKET = 1
    LIMIT = 2
    STOP_LOSS = 3
    STOP_LOSS_LIMIT = 4
    TAKE_PROFIT = 5
    TAKE_PROFIT_LIMIT = 6

    @property
    def needs_price(self) -> bool:
        """Whether orders of this type carry a limit price."""
        return self in (OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT)

    @property
    def needs_stop_price(self) -> bool:
        """Whether orders of this type carry a trigger price."""
        return self in (
            OrderType.STOP_LOSS,
            OrderType.STOP_LOSS_LIMIT,
            OrderType.TAKE_PROFIT,
            OrderType.TAKE_PROFIT_LIMIT,
        )


class TimeInForce(enum.Enum):
    """How long an order stays working."""

    UNSPECIFIED = 0
    GTC = 1
    IOC = 2
    FOK = 3


class TradingMode(enum.Enum):
    """Whether an order reaches a real venue."""

    UNSPECIFIED = 0
    PAPER = 1
    LIVE = 2


class OrderStatus(enum.Enum):
    """The life of an order: PENDING_NEW -> NEW -> PARTIALLY_FILLED -> FILLED, or a terminal
    CANCELED, REJECTED or EXPIRED."""

    UNSPECIFIED = 0
    PENDING_NEW = 1
    NEW = 2
    PARTIALLY_FILLED = 3
    FILLED = 4
    PENDING_CANCEL = 5
    CANCELED = 6
    REJECTED = 7
    EXPIRED = 8
    UNKNOWN = 9

    @property
    def is_terminal(self) -> bool:
        """Whether the order can no longer change."""
        return self in (
            OrderStatus.FILLED,
            OrderStatus.CANCELED,
            OrderStatus.REJECTED,
            OrderStatus.EXPIRED,
        )

    @property
    def is_open(self) -> bool:
        """Whether the order is still working (what ``list_orders(open_only=True)`` returns)."""
        return self in (
            OrderStatus.PENDING_NEW,
            OrderStatus.NEW,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.PENDING_CANCEL,
            OrderStatus.UNKNOWN,
        )


class RejectReason(enum.Enum):
    """Why an order was rejected; ``Order.reject_message`` carries the human detail."""

    UNSPECIFIED = 0
    UNKNOWN_SYMBOL = 1
    UNKNOWN_VENUE = 2
    NO_MARKET_DATA = 3
    POST_ONLY_WOULD_TAKE = 4
    FOK_NOT_FILLABLE = 5
    INSUFFICIENT_BALANCE = 6
    TRADING_HALTED = 7
    REDUCE_ONLY = 8
    RISK_MAX_QUANTITY = 9
    RISK_MAX_NOTIONAL = 10
    RISK_MAX_OPEN_ORDERS = 11
    RISK_MAX_POSITION = 12
    RISK_GROSS_EXPOSURE = 13
    RISK_PRICE_BAND = 14
    RISK_ORDER_RATE = 15
    RISK_DAILY_LOSS = 16
    SLIPPAGE_EXCEEDED = 17
    VENUE_REJECTED = 18
    VENUE_UNAVAILABLE = 19
    NO_LIQUIDITY = 20


class Liquidity(enum.Enum):
    """Whether a fill added or took liquidity."""

    UNSPECIFIED = 0
    MAKER = 1
    TAKER = 2


class OrderEventType(enum.Enum):
    """Why an order update was published."""

    UNSPECIFIED = 0
    ACCEPTED = 1
    ACKNOWLEDGED = 2
    FILLED = 3
    CANCEL_REQUESTED = 4
    CANCELED = 5
    REJECTED = 6
    EXPIRED = 7
    TRIGGERED = 8
    UNKNOWN = 9


class Channel(enum.Enum):
    """What kind of market data a subscription carries."""

    UNSPECIFIED = 0
    TOP_OF_BOOK = 1
    TRADES = 2
    DEPTH = 3


class SlowConsumerPolicy(enum.Enum):
    """What the server does when a market data subscriber falls behind."""

    UNSPECIFIED = 0
    CONFLATE = 1
    DROP_OLDEST = 2
    DISCONNECT = 3


class FeedStatus(enum.Enum):
    """Whether the market data of a stream can be trusted."""

    UNSPECIFIED = 0
    LIVE = 1
    STALE = 2
    RESYNCING = 3
    RECONNECTING = 4


class TradingState(enum.Enum):
    """Whether an account (or one of its symbols) may trade: HALTED is the kill switch."""

    UNSPECIFIED = 0
    ACTIVE = 1
    REDUCE_ONLY = 2
    HALTED = 3
