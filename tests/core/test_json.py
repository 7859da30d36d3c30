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

from trackware._json import dumps, encode_checked, json_default, to_jsonable


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


class Name(str, enum.Enum):
    A = "a"


class Text(str):
    pass


class Mapping(dict):  # type: ignore[type-arg]
    def items(self):  # type: ignore[no-untyped-def]
        return [("changed", 1)]


#: Values whose JSON text differs between encoders unless handled: tiny and
#: huge floats, integers past 64 bits, control characters and non-ASCII
#: text, rich values, enums, subclasses of the plain types.
CORPUS: list[object] = [
    {"f": [0.0, -0.0, 0.1, 1e-4, 9.9e-5, 1.5e-5, 1e-5, 3e-7, 1e-9, 1e-10, 5e-324]},
    {"f": [1e15, 1e16, 1.2345678901234567e16, 1e22, 1.7976931348623157e308, 100.0]},
    {"i": [2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**40, -(10**300)]},
    {"s": "".join(map(chr, range(0x30))) + '\u2028\x7f é ☕ 😀 \\ " /'},
    {"strings that look like floats": ["0.00001", "type-1a", "e-5", "1e-07"]},
    RICH,
    {"enums": [Name.A, Level.HIGH, Colour.NESTED], "sub": Text("x")},
    {"dict subclass": Mapping(a=1)},
    {"deep": [[[[{"a": [1, {"b": None}]}]]]], "empty": [{}, [], ""]},
    [1, "top-level list"],
    "top-level text",
    dt.time(1, 2),  # refused by both
]


@pytest.mark.parametrize("value", CORPUS, ids=range(len(CORPUS)))
def test_encode_checked_writes_the_bytes_dumps_writes(value: object) -> None:
    """With or without orjson (the ``orjson`` extra): what vendors receive
    does not depend on it."""
    try:
        expected = dumps(value).encode("utf-8")
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            encode_checked(value)
        return
    assert encode_checked(value) == expected
    assert expected == json.dumps(
        value, default=json_default, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def test_a_structure_containing_itself_is_refused() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises((ValueError, RecursionError)):
        dumps(loop)
    with pytest.raises((ValueError, RecursionError)):
        encode_checked(loop)
