"""PageView (trackware/_page.py): the one page builder of the integrations."""

from __future__ import annotations

import typing as t

import trackware
from trackware._page import PageView
from trackware._redact import PAGE_KEYS
from trackware.testing import InMemoryExporter


class Request:
    method = "GET"
    path = "/offers/7"
    referrer: str | None = "https://shop.test/list?q=secret"
    anonymous_id = "0123456789abcdef0123456789abcdef"
    start_wall = 1_700_000_000.5


def view(tracker: trackware.Tracker, **fields: t.Any) -> PageView:
    page = PageView.__new__(PageView)
    values: dict[str, t.Any] = {
        "tracker": tracker,
        "name": "page",
        "request": Request(),
        "status": 200,
        "route": "/offers/<id>",
        "endpoint": "offers.show",
        "blueprint": "offers",
        "error": None,
        "duration": 0.25,
        "user_id": "u-1",
        "email": "a@b.test",
        "phone": None,
        "traits": {},
        "context": {"path": "/offers/7"},
    }
    values.update(fields)
    for name, value in values.items():
        setattr(page, name, value)
    return page


def make() -> tuple[trackware.Tracker, InMemoryExporter]:
    memory = InMemoryExporter()
    tracker = trackware.Tracker([memory], register_atexit=False, dead_letter=None)
    return tracker, memory


def test_build_makes_the_event_from_the_view() -> None:
    tracker, _ = make()
    event = view(tracker, error="KeyError").build()
    assert event is not None
    assert event.name == "page"
    assert dict(event.properties) == {
        "method": "GET",
        "path": "/offers/7",
        "route": "/offers/<id>",
        "endpoint": "offers.show",
        "status": 200,
        "duration": 0.25,
        "blueprint": "offers",
        "referrer": "https://shop.test/list",  # never the query string
        "error": "KeyError",
    }
    assert set(event.properties) == PAGE_KEYS
    assert (event.user_id, event.anonymous_id, event.email) == (
        "u-1",
        Request.anonymous_id,
        "a@b.test",
    )
    assert event.context == {"path": "/offers/7"}
    assert event.timestamp.timestamp() == Request.start_wall
    tracker.shutdown(1)


def test_no_status_is_recorded_as_500_and_optional_keys_stay_out() -> None:
    tracker, _ = make()
    request = Request()
    request.referrer = None
    event = view(tracker, request=request, status=None, blueprint=None).build()
    assert event is not None
    assert event.properties["status"] == 500
    assert "blueprint" not in event.properties
    assert "referrer" not in event.properties
    assert "error" not in event.properties
    tracker.shutdown(1)


def test_an_odd_value_goes_through_track() -> None:
    tracker, memory = make()
    # A value track() accepts: tracked by it, as it is.
    assert view(tracker, route=42).build() is None
    # One it refuses: counted as invalid, never built unchecked.
    assert view(tracker, route=object()).build() is None
    assert tracker.flush(10)
    [event] = memory.events
    assert event.properties["route"] == 42
    assert event.user_id == "u-1"
    assert tracker.stats()["dropped"] == {"invalid": 1}
    ok = view(tracker, route=None, endpoint=None).build()
    assert ok is not None and ok.properties["route"] is None
    tracker.shutdown(1)
