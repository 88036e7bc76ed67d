"""Parsing of loosely typed input (dicts, strings) into model values, collecting violations.

Each parser appends a :class:`FieldViolation` naming the field instead of raising, so one
:class:`ValidationError` can report every bad field of a request at once.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from .enums import proto_prefix
from .errors import FieldViolation

_E = TypeVar("_E", bound=enum.Enum)


class Violations:
    """Collects the field violations of one request."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def __bool__(self) -> bool:
        return bool(self.items)


def decimal_value(value: object, field: str, out: Violations) -> Decimal | None:
    """A Decimal from a Decimal, an int or a decimal string; never from a float.

    Floats are refused: ``0.1`` is not one tenth in binary, and money must be exact.
    """
    if isinstance(value, bool):
        out.add(field, "must be a decimal string or Decimal, not a bool")
        return None
    if isinstance(value, Decimal):
        parsed = value
    elif isinstance(value, int):
        parsed = Decimal(value)
    elif isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            out.add(field, f"not a decimal number: {value!r}")
            return None
    elif isinstance(value, float):
        out.add(field, "must be a decimal string or Decimal, not a float (floats are inexact)")
        return None
    else:
        out.add(field, f"must be a decimal string or Decimal, not {type(value).__name__}")
        return None
    if not parsed.is_finite():
        out.add(field, f"must be a finite number, got {value!r}")
        return None
    return parsed


def enum_value(enum_type: type[_E], value: object, field: str, out: Violations) -> _E | None:
    """An enum member from itself or its name: "BUY", "buy" or "SIDE_BUY" for Side.BUY."""
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        name = value.strip().upper()
        prefix = proto_prefix(enum_type)
        if name.startswith(prefix):
            name = name[len(prefix) :]
        member = enum_type.__members__.get(name)
        if member is not None and name != "UNSPECIFIED":
            return member
    choices = ", ".join(m.name for m in enum_type if m.name != "UNSPECIFIED")
    out.add(field, f"must be one of {choices}; got {value!r}")
    return None


def string_value(value: object, field: str, out: Violations) -> str | None:
    if isinstance(value, str):
        return value
    out.add(field, f"must be a string, not {type(value).__name__}")
    return None


def bool_value(value: object, field: str, out: Violations) -> bool | None:
    if isinstance(value, bool):
        return value
    out.add(field, f"must be true or false, not {value!r}")
    return None


def int_value(value: object, field: str, out: Violations, *, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        out.add(field, f"must be an integer, not {type(value).__name__}")
        return None
    if not low <= value <= high:
        out.add(field, f"must be between {low} and {high}, got {value}")
        return None
    return value


def mapping_value(value: object, field: str, out: Violations) -> Mapping[str, object] | None:
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return value
    out.add(field, "must be a mapping with string keys")
    return None


def unknown_keys(data: Mapping[str, object], known: set[str], prefix: str, out: Violations) -> None:
    for key in sorted(set(data) - known):
        out.add(f"{prefix}{key}", "unknown field")
