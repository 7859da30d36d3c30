"""What a vendor receives does not depend on the encoder: with or without
orjson (the ``orjson`` extra), every path that writes an event writes the
bytes ``dumps(event.to_dict())`` writes, and ``HTTPExporter``'s bodies are
those bytes joined."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pytest

from trackware import Event
from trackware._event import wire_dict
from trackware._json import dumps, encode_checked
from trackware.exporters import HTTPExporter
from trackware.exporters._base import encode_event, event_json

ORDINARY = [
    Event("offer.activated", {"offer_id": "o-1", "amount": 3.25}, user_id="c-42"),
    Event("page.viewed", context={"path": "/offers", "when": dt.date(2026, 1, 2)}),
    Event("custom.id", {"x": None}, event_id='app "id" \\ é'),
]
AWKWARD = [
    Event("tiny", {"f": 1e-7, "g": 2.5e-5}),
    Event("big", {"n": 2**70, "d": decimal.Decimal("1e-6")}),
    Event("text", {"s": "1e-5, 0.00001 \u2028 \x00 😀"}),
]


def expected(event: Event) -> bytes:
    return dumps(event.to_dict()).encode("utf-8")


@pytest.mark.parametrize("event", ORDINARY + AWKWARD, ids=lambda e: e.name)
def test_every_path_writes_an_event_the_same(event: Event) -> None:
    data = expected(event)
    assert encode_checked(wire_dict(event)) == data
    assert event_json(event) == data
    assert encode_event(event.to_dict()).encode("utf-8") == data
    assert json.loads(data)["event_id"] == event.event_id


@pytest.mark.parametrize(
    "events", [ORDINARY, ORDINARY + AWKWARD], ids=["ordinary", "awkward"]
)
@pytest.mark.parametrize("body", ["batch", "array", "single"])
def test_http_exporter_bodies_are_the_events_joined(
    events: list[Event], body: str
) -> None:
    exporter = HTTPExporter("http://127.0.0.1:9/events", body=body)
    requests, result = exporter.build_requests(events)
    assert not result.rejected
    joined = b",".join(expected(e) for e in events)
    if body == "single":
        assert [r.content for r in requests] == [expected(e) for e in events]
        return
    (request,) = requests
    assert request.events == events
    if body == "array":
        assert request.content == b"[" + joined + b"]"
    else:
        content = request.content or b""
        assert content.startswith(b'{"events":[' + joined + b'],"sent_at":"')
        assert json.loads(content)["sent_at"].endswith("Z")
