"""The Event: immutability, ids, property types, validation, timestamps."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import pickle
import random
import typing as t
import uuid

import pytest
from _support import Sink, dropped_reasons

import trackware
from trackware import Event, InvalidEventError, MemoryDeadLetter, RetryPolicy
from trackware._event import iso_time
from trackware._json import dumps
from trackware.exporters import HTTPExporter
from trackware.testing import InMemoryExporter


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.fixture
def tracker() -> t.Iterator[trackware.Tracker]:
    tr = trackware.Tracker([InMemoryExporter()], dead_letter=None)
    yield tr
    tr.shutdown(timeout=1)


def test_event_is_immutable(tracker: trackware.Tracker) -> None:
    """Fields cannot be assigned, deleted or extended."""
    event = tracker.track("e", {"a": 1})
    assert event is not None
    with pytest.raises(AttributeError):
        event.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        event.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        event[1] = "other"  # type: ignore[index]
    with pytest.raises(AttributeError):
        del event.event_id  # type: ignore[misc]
    assert event.name == "e"


def test_event_id_is_a_stable_uuid4(tracker: trackware.Tracker) -> None:
    """event_id is a version-4 UUID string, the same on every read and copy."""
    event = tracker.track("e", {"a": 1})
    assert event is not None
    eid = event.event_id
    assert isinstance(eid, str)
    parsed = uuid.UUID(eid)
    assert parsed.version == 4 and str(parsed) == eid
    assert event.event_id == eid
    assert event.to_dict()["event_id"] == eid
    assert event.replace(name="other").event_id == eid
    assert Event.from_dict(json.loads(dumps(event.to_dict()))).event_id == eid
    assert pickle.loads(pickle.dumps(event)).event_id == eid
    others = {tracker.track("e").event_id for _ in range(1000)}  # type: ignore[union-attr]
    assert len(others) == 1000 and eid not in others


def test_new_event_id_is_uuid4() -> None:
    for _ in range(100):
        assert uuid.UUID(trackware.new_event_id()).version == 4


def test_caller_mutations_after_track_do_not_change_the_event(
    tracker: trackware.Tracker,
) -> None:
    """track() copies what it is given, nested values included."""
    props: dict[str, t.Any] = {"cart": {"items": [1, 2]}, "n": 1}
    event = tracker.track("e", props)
    assert event is not None
    props["n"] = 2
    props["cart"]["items"].append(3)
    assert event.properties == {"cart": {"items": [1, 2]}, "n": 1}


def test_supported_property_types_are_accepted_and_encoded(
    tracker: trackware.Tracker,
) -> None:
    """Scalars, lists, dicts, datetime, date, Decimal, UUID and Enum go through."""
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    props = {
        "s": "x",
        "i": 3,
        "f": 1.5,
        "b": True,
        "n": None,
        "l": [1, "a", None, [2.5]],
        "d": {"k": {"deep": [True]}},
        "t": (1, 2),
        "when": when,
        "day": dt.date(2024, 5, 6),
        "amount": decimal.Decimal("12.50"),
        "id": uid,
        "color": Color.RED,
        "level": Level.HIGH,
    }
    event = tracker.track("e", props)
    assert event is not None
    assert tracker.stats()["dropped"] == {}
    encoded = json.loads(dumps(event.to_dict()))["properties"]
    assert encoded == {
        "s": "x",
        "i": 3,
        "f": 1.5,
        "b": True,
        "n": None,
        "l": [1, "a", None, [2.5]],
        "d": {"k": {"deep": [True]}},
        "t": [1, 2],
        "when": "2024-05-06T07:08:09Z",
        "day": "2024-05-06",
        "amount": 12.5,
        "id": str(uid),
        "color": "red",
        "level": 3,
    }


BAD_VALUES: list[tuple[str, t.Any, str]] = [
    ("set", {1, 2}, "unsupported type set"),
    ("object", object(), "unsupported type object"),
    ("bytes", b"raw", "unsupported type bytes"),
    ("nan", float("nan"), "NaN or infinity"),
    ("inf", float("inf"), "NaN or infinity"),
    ("decimal_nan", decimal.Decimal("NaN"), "NaN or infinity"),
    ("decimal_inf", decimal.Decimal("-Infinity"), "NaN or infinity"),
    ("nested_object", {"a": [1, {"b": object()}]}, "'bad.a[1].b'"),
    ("non_str_key", {1: "x"}, "non-string key"),
    ("function", len, "unsupported type builtin_function_or_method"),
]


@pytest.mark.parametrize(
    ("label", "value", "why"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES]
)
def test_unsupported_values_reject_the_event_with_a_reason(
    tracker: trackware.Tracker, label: str, value: t.Any, why: str
) -> None:
    """An unsupported value drops that event (counted, with a clear reason)."""
    reasons = dropped_reasons(tracker)
    assert tracker.track("e", {"ok": 1, "bad": value}) is None
    assert tracker.stats()["dropped"] == {"invalid": 1}
    assert len(reasons) == 1 and why in reasons[0], reasons
    assert "bad" in reasons[0]
    # The next event is unaffected.
    assert tracker.track("e", {"ok": 1}) is not None


def test_too_deep_nesting_is_rejected(tracker: trackware.Tracker) -> None:
    value: t.Any = 1
    for _ in range(40):
        value = {"x": value}
    reasons = dropped_reasons(tracker)
    assert tracker.track("e", {"deep": value}) is None
    assert "nested more than 32 levels" in reasons[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"traits": {"x": object()}},
        {"context": {"x": float("inf")}},
        {"timestamp": dt.datetime(2024, 1, 1)},
        {"timestamp": "yesterday"},
    ],
    ids=["traits", "context", "naive_timestamp", "str_timestamp"],
)
def test_invalid_traits_context_and_timestamps_are_rejected(
    tracker: trackware.Tracker, kwargs: dict[str, t.Any]
) -> None:
    assert tracker.track("e", {"a": 1}, **kwargs) is None
    assert tracker.stats()["dropped"] == {"invalid": 1}


@pytest.mark.parametrize("name", ["", None, 42])
def test_bad_names_are_rejected(tracker: trackware.Tracker, name: t.Any) -> None:
    assert tracker.track(name) is None
    assert tracker.stats()["dropped"] == {"invalid": 1}


def test_properties_must_be_a_mapping(tracker: trackware.Tracker) -> None:
    reasons = dropped_reasons(tracker)
    assert tracker.track("e", [("a", 1)]) is None  # type: ignore[arg-type]
    assert "properties must be a dict" in reasons[0]


def test_strict_tracker_raises_with_the_reason() -> None:
    """strict=True turns the rejection into an InvalidEventError for the caller."""
    tracker = trackware.Tracker([InMemoryExporter()], dead_letter=None, strict=True)
    with pytest.raises(InvalidEventError, match="unsupported type set"):
        tracker.track("e", {"tags": {"a"}})
    with pytest.raises(InvalidEventError, match="NaN or infinity"):
        tracker.track("e", {"ratio": float("nan")})
    with pytest.raises(InvalidEventError, match="non-empty string"):
        tracker.track("")
    assert isinstance(InvalidEventError("x"), TypeError)
    tracker.shutdown(timeout=1)


def test_a_rejected_event_never_poisons_a_batch(sink: Sink) -> None:
    """Events rejected at track() leave the others to arrive in one try."""
    dead = MemoryDeadLetter()
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)],
        dead_letter=dead,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.02),
        flush_interval=60,
    )
    good = []
    for i in range(10):
        good.append(tracker.track("e", {"i": i}))
        tracker.track("e", {"i": i, "ratio": float("nan")})
        tracker.track("e", {"i": i, "when": object()})
    assert tracker.flush(10)
    assert sorted(sink.ids) == sorted(e.event_id for e in good if e)
    assert sink.requests == 1
    stats = tracker.stats()
    assert stats["dropped"] == {"invalid": 20}
    assert stats["destinations"]["http"]["retried"] == 0 and not dead.records
    tracker.shutdown()


def test_timestamps_are_aware_utc(tracker: trackware.Tracker) -> None:
    when = dt.datetime(
        2024, 5, 6, 9, 8, 9, 250000, tzinfo=dt.timezone(dt.timedelta(hours=2))
    )
    event = tracker.track("e", timestamp=when)
    assert event is not None
    assert event.timestamp == when and event.timestamp.tzinfo == dt.timezone.utc
    assert event.to_dict()["timestamp"] == "2024-05-06T07:08:09.250Z"
    epoch = tracker.track("e", timestamp=1_700_000_000.5)
    assert epoch is not None and epoch.unix_time == 1_700_000_000.5
    now = tracker.track("e")
    assert now is not None and now.timestamp.tzinfo is not None
    with pytest.raises(InvalidEventError):
        Event("e", timestamp=dt.datetime(2024, 1, 1))


def test_iso_time_matches_the_standard_library() -> None:
    """The cached formatter agrees with datetime for many instants."""
    rng = random.Random(7)
    base = 1_700_000_000.0
    values = [base + rng.random() * 5 for _ in range(2000)]
    values += [base + 0.9995, base + 0.0004, base, 0.0, 1e9 + 0.999999]
    for unix in values:
        expected = dt.datetime.fromtimestamp(unix, dt.timezone.utc)
        text = iso_time(unix)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert text.endswith("Z") and len(text) == 24
        assert abs((parsed - expected).total_seconds()) < 0.001, (unix, text)
        assert parsed <= expected


def test_replace_validates_the_field_names(tracker: trackware.Tracker) -> None:
    event = tracker.track("e", {"a": 1}, user_id="u-1")
    assert event is not None
    changed = event.replace(properties={"a": 2})
    assert changed.properties == {"a": 2} and changed.user_id == "u-1"
    assert event.properties == {"a": 1}
    with pytest.raises(TypeError, match="no field"):
        event.replace(colour="red")


def test_non_string_ids_are_coerced(tracker: trackware.Tracker) -> None:
    event = tracker.track("e", user_id=42, anonymous_id=7)  # type: ignore[arg-type]
    assert event is not None
    assert event.user_id == "42" and event.anonymous_id == "7"
