"""Conversions between the typed models and the generated protobuf messages."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest

from execbridge import (
    AttachedOrder,
    BookDelta,
    Channel,
    FeedStatus,
    InvalidArgument,
    Liquidity,
    MevProtection,
    OrderEventType,
    OrderRequest,
    OrderStatus,
    OrderType,
    PriceLevel,
    ProtocolError,
    RejectReason,
    ResourceExhausted,
    Side,
    SlowConsumerPolicy,
    StatusFrame,
    TimeInForce,
    TopOfBook,
    TradingMode,
)
from execbridge import _convert
from execbridge._proto.v1 import execution_service_pb2 as svc_pb
from execbridge._proto.v1 import market_data_service_pb2 as md_pb
from execbridge._proto.v1 import orders_pb2 as pb

from .conftest import proto_order

FULL = OrderRequest(
    client_order_id="c-1",
    account="demo",
    venue="solana-jupiter",
    mode=TradingMode.LIVE,
    symbol="SOL-USDC",
    side=Side.SELL,
    type=OrderType.STOP_LOSS_LIMIT,
    time_in_force=TimeInForce.IOC,
    quantity=Decimal("1E-8"),
    price=Decimal("150.25"),
    stop_price=Decimal("151"),
    stop_loss=AttachedOrder(trigger_price=Decimal("140")),
    take_profit=AttachedOrder(trigger_price=Decimal("170"), limit_price=Decimal("169.5")),
    slippage_bps=25,
    mev_protection=MevProtection(private_relay=True, tip_lamports=10_000, max_priority_fee_micro_lamports=5),
    metadata={"strategy": "mean-revert"},
)


def test_order_request_survives_a_round_trip_through_protobuf() -> None:
    message = _convert.order_request_to_proto(FULL)
    wire = pb.OrderRequest.FromString(message.SerializeToString())
    assert _convert.order_request_from_proto(wire) == FULL


def test_order_request_fields_land_on_the_proto_fields_with_the_proto_enum_values() -> None:
    message = _convert.order_request_to_proto(FULL)
    assert message.side == pb.SIDE_SELL
    assert message.type == pb.ORDER_TYPE_STOP_LOSS_LIMIT
    assert message.mode == pb.TRADING_MODE_LIVE
    assert message.time_in_force == pb.TIME_IN_FORCE_IOC
    assert message.take_profit.limit_price == "169.5"
    assert message.stop_loss.limit_price == ""
    assert message.mev_protection.tip_lamports == 10_000


def test_decimals_go_on_the_wire_without_exponent_and_keep_their_digits() -> None:
    message = _convert.order_request_to_proto(FULL)
    assert message.quantity == "0.00000001"
    assert _convert.decimal_to_wire(Decimal("1.50")) == "1.50"
    assert _convert.decimal_to_wire(Decimal("1E+3")) == "1000"


def test_a_market_order_sends_empty_price_strings() -> None:
    order = OrderRequest.market(account="a", symbol="BTC-USDT", side=Side.BUY, quantity="2")
    message = _convert.order_request_to_proto(order)
    assert (message.price, message.stop_price) == ("", "")
    assert not message.HasField("stop_loss")
    assert not message.HasField("mev_protection")


def test_order_from_proto_maps_empty_strings_to_none_and_timestamps_to_utc() -> None:
    message = proto_order(status=pb.ORDER_STATUS_NEW)
    order = _convert.order_from_proto(message)
    assert order.status is OrderStatus.NEW
    assert order.average_fill_price is None
    assert order.reject_reason is None
    assert order.venue_order_id is None
    assert order.updated_at is None
    assert order.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert order.client_order_id == "cid-1"
    assert order.is_open


def test_a_rejected_order_carries_its_reason() -> None:
    message = proto_order(status=pb.ORDER_STATUS_REJECTED)
    message.reject_reason = pb.REJECT_REASON_RISK_PRICE_BAND
    message.reject_message = "price 1 is outside 5% of 65000"
    order = _convert.order_from_proto(message)
    assert order.reject_reason is RejectReason.RISK_PRICE_BAND
    assert order.is_terminal


def test_an_enum_value_newer_than_this_client_becomes_unspecified() -> None:
    message = proto_order()
    message.status = 42  # a value a later v1 might add
    assert _convert.order_from_proto(message).status is OrderStatus.UNSPECIFIED


def test_a_malformed_decimal_from_the_server_is_a_protocol_error_naming_the_field() -> None:
    message = proto_order(filled="lots")
    with pytest.raises(ProtocolError, match="order.filled_quantity"):
        _convert.order_from_proto(message)


def test_order_update_with_fill_converts_fill_and_progress() -> None:
    update = pb.OrderUpdate(
        shard="s0",
        sequence=7,
        event=pb.ORDER_EVENT_TYPE_FILLED,
        order=proto_order(status=pb.ORDER_STATUS_FILLED, filled="0.5"),
        fill=pb.Fill(
            trade_id="t-1",
            order_id="s0-1",
            client_order_id="cid-1",
            account="acct",
            venue="paper",
            symbol="BTC-USDT",
            side=pb.SIDE_BUY,
            price="65001.5",
            quantity="0.5",
            fee="0.01",
            fee_asset="USDT",
            liquidity=pb.LIQUIDITY_TAKER,
        ),
        progress="1",
    )
    converted = _convert.order_update_from_proto(update)
    assert (converted.shard, converted.sequence, converted.event) == ("s0", 7, OrderEventType.FILLED)
    assert converted.progress == Decimal(1)
    assert converted.fill is not None
    assert converted.fill.notional == Decimal("32500.75")
    assert converted.fill.liquidity is Liquidity.TAKER
    assert converted.order.filled_quantity == Decimal("0.5")


def test_positions_response_converts_positions_and_balances() -> None:
    response = svc_pb.GetPositionsResponse(
        positions=[pb.Position(account="a", venue="paper", symbol="ETH-USDT", quantity="-1.5", realized_pnl="3")],
        balances=[pb.Balance(account="a", asset="USDT", total="1000", locked="250.5")],
    )
    portfolio = _convert.portfolio_from_proto(response)
    position = portfolio.position("ETH-USDT")
    assert position is not None and position.quantity == Decimal("-1.5")
    assert position.average_entry_price is None and position.unrealized_pnl == 0
    assert portfolio.position("BTC-USDT") is None
    assert portfolio.balances[0].free == Decimal("749.5")


def test_a_batch_error_becomes_the_exception_a_unary_call_would_raise() -> None:
    result = svc_pb.OrderResult(
        index=3,
        client_order_id="c-3",
        error=pb.OrderError(
            code=3,
            reason="INVALID_QUANTITY",
            message="bad quantity",
            field_violations=[pb.FieldViolation(field="order.quantity", description="not a decimal")],
        ),
    )
    converted = _convert.order_result_from_proto(result, "b1")
    assert not converted.ok
    assert isinstance(converted.error, InvalidArgument)
    assert converted.error.reason == "INVALID_QUANTITY"
    assert converted.error.field_violations[0].field == "order.quantity"
    with pytest.raises(InvalidArgument):
        converted.unwrap()


def test_a_batch_error_with_an_unknown_code_number_is_still_classified() -> None:
    result = svc_pb.OrderResult(index=0, error=pb.OrderError(code=8, message="slow down"))
    error = _convert.order_result_from_proto(result, "b1").error
    assert isinstance(error, ResourceExhausted)
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    odd = svc_pb.OrderResult(index=0, error=pb.OrderError(code=999, message="?"))
    assert _convert.order_result_from_proto(odd, "b1").error.code is grpc.StatusCode.UNKNOWN  # type: ignore[union-attr]


def test_a_batch_result_without_outcome_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        _convert.order_result_from_proto(svc_pb.OrderResult(index=0), "b1")


def test_market_data_payloads_convert_to_their_typed_events() -> None:
    top = md_pb.MarketDataEvent(
        venue="paper",
        symbol="BTC-USDT",
        sequence=9,
        top_of_book=md_pb.TopOfBook(bid_price="99", bid_quantity="1", ask_price="101", ask_quantity="2"),
    )
    event = _convert.market_data_event_from_proto(top)
    assert isinstance(event.payload, TopOfBook)
    assert event.payload.mid_price == Decimal(100)
    assert event.payload.last_price is None

    delta = md_pb.MarketDataEvent(
        symbol="BTC-USDT", book_delta=md_pb.BookDelta(bids=[md_pb.PriceLevel(price="99", quantity="0")])
    )
    assert _convert.market_data_event_from_proto(delta).payload == BookDelta(
        bids=(PriceLevel(Decimal(99), Decimal(0)),), asks=()
    )
    status = md_pb.MarketDataEvent(status=md_pb.StatusFrame(status=md_pb.FEED_STATUS_STALE, reason="idle"))
    assert _convert.market_data_event_from_proto(status).payload == StatusFrame(
        status=FeedStatus.STALE, reason="idle"
    )


def test_subscribe_request_carries_channels_and_policy() -> None:
    request = _convert.subscribe_to_proto(
        ["BTC-USDT"], venue="paper", channels=[Channel.TOP_OF_BOOK, Channel.TRADES],
        policy=SlowConsumerPolicy.CONFLATE,
    )
    assert list(request.subscribe.channels) == [md_pb.CHANNEL_TOP_OF_BOOK, md_pb.CHANNEL_TRADES]
    assert request.subscribe.policy == md_pb.SLOW_CONSUMER_POLICY_CONFLATE


def test_naive_datetimes_are_taken_as_utc() -> None:
    stamp = _convert.datetime_to_proto(datetime(2024, 1, 2, 3, 4, 5))
    assert stamp.seconds == int(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp())
