"""The Python enums mirror the proto enums exactly."""

from __future__ import annotations

import enum

import pytest
from google.protobuf.descriptor import EnumDescriptor

from execbridge import enums
from execbridge._proto.v1 import market_data_service_pb2 as md_pb
from execbridge._proto.v1 import orders_pb2 as pb

PAIRS: list[tuple[type[enum.Enum], EnumDescriptor]] = [
    (enums.Side, pb.DESCRIPTOR.enum_types_by_name["Side"]),
    (enums.OrderType, pb.DESCRIPTOR.enum_types_by_name["OrderType"]),
    (enums.TimeInForce, pb.DESCRIPTOR.enum_types_by_name["TimeInForce"]),
    (enums.TradingMode, pb.DESCRIPTOR.enum_types_by_name["TradingMode"]),
    (enums.OrderStatus, pb.DESCRIPTOR.enum_types_by_name["OrderStatus"]),
    (enums.RejectReason, pb.DESCRIPTOR.enum_types_by_name["RejectReason"]),
    (enums.Liquidity, pb.DESCRIPTOR.enum_types_by_name["Liquidity"]),
    (enums.OrderEventType, pb.DESCRIPTOR.enum_types_by_name["OrderEventType"]),
    (enums.Channel, md_pb.DESCRIPTOR.enum_types_by_name["Channel"]),
    (enums.SlowConsumerPolicy, md_pb.DESCRIPTOR.enum_types_by_name["SlowConsumerPolicy"]),
    (enums.FeedStatus, md_pb.DESCRIPTOR.enum_types_by_name["FeedStatus"]),
]


def test_every_proto_enum_of_the_public_api_has_a_python_mirror() -> None:
    mirrored = {descriptor.full_name for _, descriptor in PAIRS}
    declared = {
        e.full_name
        for module in (pb, md_pb)
        for e in module.DESCRIPTOR.enum_types_by_name.values()
    }
    assert declared == mirrored


@pytest.mark.parametrize(("python_enum", "descriptor"), PAIRS, ids=lambda p: getattr(p, "__name__", ""))
def test_python_enum_has_the_same_names_and_numbers_as_the_proto_enum(
    python_enum: type[enum.Enum], descriptor: EnumDescriptor
) -> None:
    proto = {v.name: v.number for v in descriptor.values}
    python = {enums.proto_name(m): m.value for m in python_enum}
    assert python == proto


def test_proto_prefix_follows_the_proto_naming_of_enum_values() -> None:
    assert enums.proto_prefix(enums.SlowConsumerPolicy) == "SLOW_CONSUMER_POLICY_"
    assert enums.proto_name(enums.TimeInForce.GTC) == "TIME_IN_FORCE_GTC"


def test_open_statuses_are_exactly_the_working_states_of_the_contract() -> None:
    assert {s for s in enums.OrderStatus if s.is_open} == {
        enums.OrderStatus.PENDING_NEW,
        enums.OrderStatus.NEW,
        enums.OrderStatus.PARTIALLY_FILLED,
        enums.OrderStatus.PENDING_CANCEL,
        enums.OrderStatus.UNKNOWN,
    }
    assert not any(s.is_open and s.is_terminal for s in enums.OrderStatus)
