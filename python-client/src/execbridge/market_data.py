"""Typed, immutable market data events.

Every event names its venue and symbol and carries one payload; match on the payload::

    async for event in stream:
        match event.payload:
            case TopOfBook(bid_price=bid, ask_price=ask):
                ...
            case StatusFrame(status=FeedStatus.STALE):
                ...
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from .enums import FeedStatus

__all__ = [
    "BookDelta",
    "BookSnapshot",
    "Gap",
    "MarketDataEvent",
    "MarketDataPayload",
    "PriceLevel",
    "StatusFrame",
    "TopOfBook",
    "Trade",
]


@dataclass(frozen=True, slots=True)
class PriceLevel:
    """One price level of a book."""

    price: Decimal
    quantity: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class TopOfBook:
    """Best bid and ask with sizes, last trade price and session volume (None when unknown)."""

    bid_price: Decimal | None
    bid_quantity: Decimal | None
    ask_price: Decimal | None
    ask_quantity: Decimal | None
    last_price: Decimal | None
    volume: Decimal | None

    @property
    def mid_price(self) -> Decimal | None:
        if self.bid_price is None or self.ask_price is None:
            return None
        return (self.bid_price + self.ask_price) / 2

    @property
    def spread(self) -> Decimal | None:
        if self.bid_price is None or self.ask_price is None:
            return None
        return self.ask_price - self.bid_price


@dataclass(frozen=True, slots=True, kw_only=True)
class Trade:
    """One trade on the venue."""

    trade_id: str
    price: Decimal
    quantity: Decimal
    #: Side of the aggressor: True when the buyer was the maker (the seller aggressed).
    buyer_is_maker: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class BookSnapshot:
    """Full depth replacing whatever the subscriber held."""

    bids: tuple[PriceLevel, ...]
    asks: tuple[PriceLevel, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BookDelta:
    """Changed levels; a quantity of zero removes a level."""

    bids: tuple[PriceLevel, ...]
    asks: tuple[PriceLevel, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusFrame:
    """A change in the trustworthiness of a symbol's data (or of the whole stream)."""

    status: FeedStatus
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Gap:
    """Messages were dropped for this subscriber (DROP_OLDEST policy)."""

    dropped: int


MarketDataPayload = TopOfBook | Trade | BookSnapshot | BookDelta | StatusFrame | Gap


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketDataEvent:
    """One market data event for a (venue, symbol)."""

    venue: str
    #: Empty for a status frame about the whole stream.
    symbol: str
    #: Per (venue, symbol), strictly increasing across channels.
    sequence: int
    #: When the venue produced the data and when execbridge received it.
    exchange_time: datetime | None
    receive_time: datetime | None
    #: None for a payload kind this client does not know yet.
    payload: MarketDataPayload | None
