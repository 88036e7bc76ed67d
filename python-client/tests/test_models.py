"""OrderRequest construction and validation: from_dict names the bad field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from execbridge import (
    AttachedOrder,
    InvalidArgument,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
    TradingMode,
    ValidationError,
)

VALID: dict[str, Any] = {
    "client_order_id": "strat-1:42",
    "account": "demo",
    "symbol": "BTC-USDT",
    "side": "BUY",
    "type": "LIMIT",
    "quantity": "0.010",
    "price": "65000.5",
}


def test_from_dict_builds_the_typed_order_with_safe_defaults() -> None:
    order = OrderRequest.from_dict(VALID)
    assert order == OrderRequest(
        client_order_id="strat-1:42",
        account="demo",
        symbol="BTC-USDT",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal("0.010"),
        price=Decimal("65000.5"),
    )
    assert order.venue == "paper"
    assert order.mode is TradingMode.PAPER
    assert order.time_in_force is TimeInForce.GTC


@pytest.mark.parametrize("side", ["BUY", "buy", "SIDE_BUY", " Buy ", Side.BUY])
def test_from_dict_accepts_enum_members_and_names_with_or_without_prefix(side: object) -> None:
    assert OrderRequest.from_dict({**VALID, "side": side}).side is Side.BUY


def test_from_dict_accepts_order_type_as_an_alias_of_type() -> None:
    data = {k: v for k, v in VALID.items() if k != "type"} | {"order_type": "limit"}
    assert OrderRequest.from_dict(data).type is OrderType.LIMIT


def test_from_dict_generates_a_client_order_id_when_none_is_given() -> None:
    data = {k: v for k, v in VALID.items() if k != "client_order_id"}
    first, second = OrderRequest.from_dict(data), OrderRequest.from_dict(data)
    assert first.client_order_id != second.client_order_id
    assert len(first.client_order_id) <= 36


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"quantity": "abc"}, "quantity", "not a decimal"),
        ({"quantity": 0.1}, "quantity", "float"),
        ({"quantity": "0"}, "quantity", "greater than zero"),
        ({"quantity": "-1"}, "quantity", "greater than zero"),
        ({"quantity": "NaN"}, "quantity", "finite"),
        ({"quantity": None}, "quantity", "required"),
        ({"price": None}, "price", "required for a LIMIT order"),
        ({"price": ""}, "price", "required for a LIMIT order"),
        ({"type": "MARKET"}, "price", "must be empty for a MARKET order"),
        ({"side": "SIDEWAYS"}, "side", "must be one of BUY, SELL"),
        ({"side": "UNSPECIFIED"}, "side", "must be one of"),
        ({"type": 2}, "type", "must be one of"),
        ({"mode": "REAL"}, "mode", "PAPER, LIVE"),
        ({"account": ""}, "account", "must not be empty"),
        ({"account": 7}, "account", "must be a string"),
        ({"client_order_id": "x" * 37}, "client_order_id", "1-36 characters"),
        ({"client_order_id": "has space"}, "client_order_id", "1-36 characters"),
        ({"slippage_bps": 10_001}, "slippage_bps", "between 0 and 10000"),
        ({"slippage_bps": "5"}, "slippage_bps", "integer"),
        ({"post_only": "yes"}, "post_only", "true or false"),
        ({"stop_price": "100"}, "stop_price", "must be empty for a LIMIT order"),
        ({"type": "STOP_LOSS_LIMIT"}, "stop_price", "required for a STOP_LOSS_LIMIT order"),
        ({"stop_loss": {"trigger_price": "x"}}, "stop_loss.trigger_price", "not a decimal"),
        ({"stop_loss": {}}, "stop_loss.trigger_price", "required"),
        ({"take_profit": {"trigger_price": "1", "when": "now"}}, "take_profit.when", "unknown field"),
        ({"mev_protection": {"tip_lamports": -1}}, "mev_protection.tip_lamports", "between 0"),
        ({"metadata": {"k": 1}}, "metadata.k", "must be a string"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_from_dict_names_the_invalid_field(change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        OrderRequest.from_dict({**VALID, **change})
    fields = {v.field: v.description for v in caught.value.field_violations}
    assert field in fields, fields
    assert words in fields[field]
    assert field in str(caught.value)


def test_from_dict_reports_every_invalid_field_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        OrderRequest.from_dict({**VALID, "quantity": "abc", "side": "UP", "colour": "red"})
    assert {v.field for v in caught.value.field_violations} == {"quantity", "side", "colour"}
    assert caught.value.field == "colour"  # unknown keys are reported first


def test_a_validation_error_is_an_invalid_argument_and_a_value_error() -> None:
    with pytest.raises(ValidationError) as caught:
        OrderRequest.from_dict({**VALID, "quantity": "abc"})
    assert isinstance(caught.value, InvalidArgument)
    assert isinstance(caught.value, ValueError)
    assert caught.value.code is not None and caught.value.code.name == "INVALID_ARGUMENT"


def test_market_and_limit_factories_validate() -> None:
    order = OrderRequest.market(account="demo", symbol="ETH-USDT", side=Side.SELL, quantity="1")
    assert (order.type, order.price, order.quantity) == (OrderType.MARKET, None, Decimal(1))
    with pytest.raises(ValidationError) as caught:
        OrderRequest.limit(account="demo", symbol="ETH-USDT", side=Side.BUY, quantity="1", price="-2")
    assert caught.value.field == "price"


def test_a_hand_built_order_is_validated_by_validate() -> None:
    order = OrderRequest(
        account="demo",
        symbol="BTC-USDT",
        side=Side.BUY,
        type=OrderType.STOP_LOSS,
        quantity=Decimal("1"),
        stop_price=Decimal("10"),
        post_only=True,
        stop_loss=AttachedOrder(trigger_price=Decimal("0")),
    )
    with pytest.raises(ValidationError) as caught:
        order.validate()
    assert {v.field for v in caught.value.field_violations} == {"post_only", "stop_loss.trigger_price"}


def test_models_are_frozen() -> None:
    order = OrderRequest.from_dict(VALID)
    with pytest.raises(AttributeError):
        order.quantity = Decimal(2)  # type: ignore[misc]
