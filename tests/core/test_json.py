"""JSON encoding of event data (trackware/_json.py) on its own: how rich values
are written by dumps() and converted by to_jsonable(), and what is refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid

import pytest

from trackware._json import dumps, json_default, to_jsonable


class Colour(enum.Enum):
    RED = "red"
    NESTED = (1, 2)


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: int
    y: int


UTC = dt.timezone.utc
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
RICH = {
    "aware": dt.datetime(2026, 12, 7, 3, 4, 5, 678000, tzinfo=UTC),
    "naive": dt.datetime(2026, 12, 7, 3, 4, 5),
    "offset": dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "day": dt.date(2026, 2, 28),
    "amount": decimal.Decimal("19.99"),
    "id": ID,
    "colour": Colour.RED,
    "level": Level.HIGH,
    "point": Point(1, 2),
    "pair": (1, "two"),
    "text": "café ☕",
}
EXPECTED = {
    "aware": "2026-12-07T03:04:05.678000Z",
    "naive": "2026-12-07T03:04:05Z",  # taken as UTC
    "offset": "2026-01-02T03:04:00+02:00",
    "day": "2026-02-28",
    "amount": 19.99,
    "id": "12345678-1234-5678-1234-567812345678",
    "colour": "red",
    "level": 3,
    "point": {"x": 1, "y": 2},
    "pair": [1, "two"],
    "text": "café ☕",
}


def test_dumps_writes_rich_values_compactly() -> None:
    text = dumps(RICH)
    assert json.loads(text) == EXPECTED
    assert ", " not in text and '": ' not in text  # compact separators
    assert "café ☕" in text  # UTF-8 text, not \\u escapes


def test_to_jsonable_makes_the_same_values() -> None:
    plain = to_jsonable(RICH)
    assert plain == EXPECTED
    assert json.loads(json.dumps(plain)) == EXPECTED
    # Recursively, through lists, tuples and nested dicts; enums by value.
    assert to_jsonable({"a": [(Colour.NESTED, {"d": ID})]}) == {
        "a": [[[1, 2], {"d": str(ID)}]]
    }


def test_dumps_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})
    with pytest.raises(ValueError):
        dumps({"x": float("inf")})
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        dumps({"x": object()})
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        json_default({1, 2})
