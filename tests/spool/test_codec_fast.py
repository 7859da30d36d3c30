"""The codec's orjson path (when the extra is installed) reads back exactly the
values the standard library's path does, and reads records written before."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import typing as t
import uuid

import pytest

from trackware import _codec
from trackware._codec import FORMAT, decode, encode
from trackware._event import Event, make_event
from trackware._json import dumps


class _Colour(str, enum.Enum):
    RED = "red"


_CASES: list[dict[t.Any, object]] = [
    {"offer": "o-1", "amount": 3, "ratio": 0.1, "ok": True, "none": None},
    # Beyond 64 bits: orjson refuses to write them and reads them as floats.
    {"big": 2**70, "negative": -(2**64), "edge": 2**63, "id": 12345678901234567890},
    # orjson writes these floats differently ("0.00001"); the value is the same.
    {"small": 1e-05, "tiny": 5e-324, "huge": 1.7976931348623157e308, "neg0": -0.0},
    {
        "naive": dt.datetime(2026, 1, 2, 3, 4, 5),
        "aware": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
        "day": dt.date(2026, 1, 2),
        "price": decimal.Decimal("1.5"),
        "uuid": uuid.UUID(int=5),
        "colour": _Colour.RED,
        "pair": (1, 2),
    },
    {"text": "é \u2028 \x00 \U0001f600", "nested": {"list": [1.5, None, [True]]}},
    {1: "an int key", "digits": "1234567890123456789012"},
]


def _event(props: dict[t.Any, object]) -> Event:
    return make_event(
        "offer.viewed",
        props,
        "u-1",
        None,
        "a@example.com",
        None,
        {"plan": "pro"},
        {"page": {"path": "/offers"}},
        1796622233.4621346,
        123,
        None,
    )


def _written_before(event: Event) -> bytes:
    """A FORMAT 1 record as the standard-library-only codec wrote it."""
    return dumps([FORMAT, event.event_id, *event[1:]]).encode("utf-8")


@pytest.mark.parametrize("props", _CASES)
def test_the_values_read_back_are_the_standard_librarys(
    props: dict[t.Any, object],
) -> None:
    event = _event(props)
    body = encode(event)
    before = _written_before(event)
    assert json.loads(body) == json.loads(before)
    back = decode(body)
    assert back == decode(before)
    assert back == decode(before.decode("utf-8"))
    assert back.event_id == event.event_id
    assert back.unix_time == event.unix_time and back.size == 123
    assert decode(encode(back)) == back


def test_big_integers_keep_their_exact_value() -> None:
    back = decode(encode(_event(_CASES[1])))
    assert back.properties["big"] == 2**70 and type(back.properties["big"]) is int
    assert back.properties["negative"] == -(2**64)
    assert back.properties["edge"] == 2**63
    assert back.properties["id"] == 12345678901234567890


def test_text_utf_8_cannot_carry_still_raises() -> None:
    with pytest.raises((TypeError, ValueError)):
        encode(_event({"s": "\ud800"}))


@pytest.mark.skipif(not _codec.ORJSON, reason="orjson is not installed")
def test_orjson_writes_records_every_reader_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = _event(_CASES[2])
    fast, before = encode(event), _written_before(event)
    # orjson's text (1e-05 as 0.00001), marked "[1.0," for the orjson reader...
    assert fast.startswith(b"[1.0,") and b'"small":1e-05' not in fast
    expected = decode(before)
    assert decode(fast) == expected
    # ...and still format 1 to a reader without orjson (or an older one).
    monkeypatch.setattr(_codec, "_orjson", None)
    assert decode(fast) == expected and decode(before) == expected
    assert expected.properties["small"] == 1e-05
    # What orjson cannot write goes the standard way, unmarked.
    monkeypatch.undo()
    assert encode(_event(_CASES[1])).startswith(b"[1,")
