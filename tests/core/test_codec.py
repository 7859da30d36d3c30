"""The event codec the spool and Redis Streams store events with."""

from __future__ import annotations

import datetime as dt

import pytest

from trackware import Tracker
from trackware._codec import decode, encode
from trackware._deadletter import MemoryDeadLetter


def _event() -> object:
    tracker = Tracker([], dead_letter=MemoryDeadLetter(), register_atexit=False)
    try:
        return tracker.track(
            "offer.viewed",
            {"offer": "o-1", "amount": 12.5, "when": dt.date(2026, 1, 2), "n": [1, 2]},
            user_id="u-1",
            email="a@example.com",
            context={"path": "/offers"},
        )
    finally:
        tracker.shutdown()


def test_round_trip_keeps_id_time_size_and_fields() -> None:
    event = _event()
    back = decode(encode(event))  # type: ignore[arg-type]
    assert back.event_id == event.event_id  # type: ignore[attr-defined]
    assert back.unix_time == event.unix_time  # type: ignore[attr-defined]
    assert back.size == event.size  # type: ignore[attr-defined]
    assert back.properties["when"] == "2026-01-02"
    assert back.properties["n"] == [1, 2]
    assert back.user_id == "u-1" and back.email == "a@example.com"
    assert back.context["path"] == "/offers"
    assert decode(encode(back)) == back


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b'[1, "id"]',
        b'[2, "i", "n", {}, null, null, null, null, {}, {}, 1.0, 10]',
        b'[1, 5, "n", {}, null, null, null, null, {}, {}, 1.0, 10]',
        b'[1, "i", "n", [], null, null, null, null, {}, {}, 1.0, 10]',
        b"\xff\xfe",
        b'[1, "i", "n", {}, null, null, null, null, {}, {}, 1.0, 10',
    ],
)
def test_anything_else_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data)
