"""What track() accepts (the rules of trackware/_validate.py): only what
every exporter can encode, within bounds.

Everything track() accepts must survive the worker's JSON encoding
(``trackware._json.dumps`` and UTF-8); everything else is rejected at once,
on the caller's thread, as ``invalid`` with the rule it broke, never raised
(except by a strict tracker) and never left to jam a destination's batch.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import typing as t

import pytest
from _support import Sink, dropped_reasons
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trackware
from trackware import Event, InvalidEventError, MemoryDeadLetter, RetryPolicy
from trackware._json import dumps
from trackware._validate import MAX_ITEMS
from trackware.exporters import HTTPExporter
from trackware.testing import InMemoryExporter

SURROGATE = json.loads('"\\ud800"')  # what a client's JSON can carry
assert SURROGATE == "\ud800"


class BrokenZone(dt.tzinfo):
    """A tzinfo whose utcoffset raises (e.g. a zone database gone missing)."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        raise RuntimeError("zone data missing")

    def dst(self, when: dt.datetime | None) -> dt.timedelta:
        raise RuntimeError("zone data missing")

    def tzname(self, when: dt.datetime | None) -> str:
        return "broken"


class WrongZone(dt.tzinfo):
    """A tzinfo whose utcoffset is not a timedelta."""

    def utcoffset(self, when: dt.datetime | None) -> t.Any:
        return "+02:00"

    def dst(self, when: dt.datetime | None) -> t.Any:
        return None


class FixedZone(dt.tzinfo):
    """A well-behaved custom tzinfo."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=2)

    def dst(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)


def make(**kw: t.Any) -> tuple[trackware.Tracker, InMemoryExporter]:
    exporter = InMemoryExporter()
    options: dict[str, t.Any] = {"dead_letter": None, "flush_interval": 60}
    options.update(kw)
    return trackware.Tracker([exporter], **options), exporter


@pytest.fixture
def tracker() -> t.Iterator[trackware.Tracker]:
    tr, _ = make()
    yield tr
    tr.shutdown(timeout=1)


def encodes(event: Event) -> bool:
    """What every exporter does with an event on the worker, at the least."""
    dumps(event.to_dict()).encode("utf-8")
    return True


# --- item 1: values that pass validation but fail on the worker ---------------------

BAD_INPUTS: list[tuple[str, tuple[t.Any, ...], dict[str, t.Any], str]] = [
    ("surrogate_value", ("e", {"v": SURROGATE}), {}, "'v'"),
    ("surrogate_in_text", ("e", {"v": "ab" + SURROGATE + "é"}), {}, "surrogate"),
    ("surrogate_key", ("e", {"k" + SURROGATE: 1}), {}, "surrogate"),
    ("surrogate_nested", ("e", {"a": {"b": [1, SURROGATE]}}), {}, "'a.b[1]'"),
    ("surrogate_nested_key", ("e", {"a": {SURROGATE: 1}}), {}, "surrogate"),
    ("surrogate_name", ("e" + SURROGATE, {}), {}, "event name"),
    ("surrogate_user_id", ("e",), {"user_id": "u" + SURROGATE}, "user_id"),
    ("surrogate_anonymous_id", ("e",), {"anonymous_id": SURROGATE}, "anonymous_id"),
    ("surrogate_trait", ("e",), {"traits": {"t": SURROGATE}}, "'t'"),
    ("surrogate_context", ("e",), {"context": {SURROGATE: "x"}}, "surrogate"),
    ("huge_decimal", ("e", {"v": decimal.Decimal("1e400")}), {}, "range"),
    ("huge_negative_decimal", ("e", {"v": decimal.Decimal("-1e309")}), {}, "range"),
    ("huge_int", ("e", {"v": 10**5000}), {}, "range"),
    ("big_int", ("e", {"v": 2**1024}), {}, "range"),
    ("huge_int_nested", ("e", {"v": [-(10**400)]}), {}, "'v[0]'"),
    (
        "raising_tzinfo",
        ("e", {"when": dt.datetime(2024, 1, 1, tzinfo=BrokenZone())}),
        {},
        "'when'",
    ),
    (
        "wrong_tzinfo",
        ("e", {"when": dt.datetime(2024, 1, 1, tzinfo=WrongZone())}),
        {},
        "'when'",
    ),
    ("huge_int_trait", ("e",), {"traits": {"n": 10**5000}}, "'n'"),
    (
        "huge_decimal_context",
        ("e",),
        {"context": {"d": decimal.Decimal("9e999")}},
        "'d'",
    ),
]


@pytest.mark.parametrize(
    ("label", "args", "kwargs", "why"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_values_the_worker_cannot_encode_are_rejected_at_track(
    tracker: trackware.Tracker,
    label: str,
    args: tuple[t.Any, ...],
    kwargs: dict[str, t.Any],
    why: str,
) -> None:
    reasons = dropped_reasons(tracker)
    assert tracker.track(*args, **kwargs) is None
    assert tracker.stats()["dropped"] == {"invalid": 1}
    assert len(reasons) == 1 and why in reasons[0], reasons
    # The reason is safe to log: no lone surrogate in it.
    reasons[0].encode("utf-8")
    strict, _ = make(strict=True)
    with pytest.raises(InvalidEventError):
        strict.track(*args, **kwargs)
    strict.shutdown(timeout=1)


def test_edge_values_that_can_be_encoded_are_kept(tracker: trackware.Tracker) -> None:
    """The bounds reject only what cannot be encoded: the largest int and
    Decimal below the range, non-BMP text, an ordinary custom tzinfo."""
    props = {
        "int": 2**1024 - 1,
        "neg": -(2**1024) + 1,
        "dec": decimal.Decimal("1.7e308"),
        "tiny": decimal.Decimal("1e-400"),
        "emoji": "🎉 ünï",
        "when": dt.datetime(2024, 1, 1, tzinfo=FixedZone()),
        "🔑": "key",
    }
    event = tracker.track("é🎉", props, user_id="ü", email="zoë@example.com")
    assert event is not None, tracker.stats()
    assert encodes(event)
    assert json.loads(dumps(event.to_dict()))["properties"]["when"] == (
        "2024-01-01T00:00:00+02:00"
    )


def nested(levels: int) -> dict[str, t.Any]:
    value: dict[str, t.Any] = {}
    for _ in range(levels):
        value = {"x": value}
    return value


def cycle() -> dict[str, t.Any]:
    value: dict[str, t.Any] = {"a": 1}
    value["self"] = value
    return value


def list_cycle() -> list[t.Any]:
    value: list[t.Any] = [1]
    value.append(value)
    return value


@pytest.mark.parametrize(
    "kwargs",
    [
        {"properties": {"deep": nested(10_000)}},
        {"properties": {"loop": cycle()}},
        {"properties": {"loop": list_cycle()}},
        {"properties": {"loop": {"token": 1, "again": cycle()}}},
        {"traits": {"deep": nested(10_000)}},
        {"traits": {"loop": cycle()}},
        {"context": {"deep": nested(10_000)}},
        {"context": {"loop": list_cycle()}},
    ],
    ids=[
        "deep",
        "cycle",
        "list_cycle",
        "cycle_beside_redacted",
        "deep_traits",
        "cycle_traits",
        "deep_context",
        "cycle_context",
    ],
)
def test_cycles_and_deep_nesting_count_as_invalid(
    tracker: trackware.Tracker, kwargs: dict[str, t.Any]
) -> None:
    reasons = dropped_reasons(tracker)
    kwargs = dict(kwargs)
    props = kwargs.pop("properties", None)
    assert tracker.track("e", props, **kwargs) is None
    assert tracker.stats()["dropped"] == {"invalid": 1}
    assert "nested more than 32 levels" in reasons[0], reasons


odd_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=8
) | st.sampled_from([SURROGATE, "a\udfffb", "\udc80", "ok", ""])
odd_zone = st.sampled_from(
    [None, dt.timezone.utc, dt.timezone(dt.timedelta(hours=-5)), FixedZone()]
    + [BrokenZone(), WrongZone()]
)
odd_scalar = st.one_of(
    odd_text,
    st.integers(),
    # (built lazily: hypothesis cannot even repr an int of 5,000 digits)
    st.sampled_from([5000, 4400, 1024, 309, 308, 63]).map(lambda d: 10**d),
    st.sampled_from([-(2**1024), 2**1024, 2**1024 - 1, True, None]),
    st.floats(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            decimal.Decimal("1e400"),
            decimal.Decimal("-1e309"),
            decimal.Decimal("1e-400"),
            decimal.Decimal("sNaN"),
        ]
    ),
    st.builds(
        dt.datetime,
        st.integers(1, 9999),
        st.integers(1, 12),
        st.integers(1, 28),
        tzinfo=odd_zone,
    ),
    st.dates(),
)
odd_value = st.recursive(
    odd_scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4)
    ),
    max_leaves=12,
)
odd_props = st.dictionaries(odd_text, odd_value, max_size=5)
odd_id = st.one_of(
    st.none(), odd_text, st.integers(), st.just(5000).map(lambda d: 10**d)
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=odd_text,
    props=odd_props,
    traits=odd_props,
    context=odd_props,
    user_id=odd_id,
    email=st.one_of(st.none(), odd_text),
    phone=st.one_of(st.none(), odd_text),
    timestamp=st.one_of(
        st.none(),
        st.floats(),
        st.integers(),
        st.builds(
            dt.datetime,
            st.integers(1, 9999),
            st.integers(1, 12),
            st.integers(1, 28),
            tzinfo=odd_zone,
        ),
    ),
    event_id=st.one_of(st.none(), odd_text, st.integers()),
)
def test_whatever_track_accepts_the_worker_can_encode(
    tracker: trackware.Tracker,
    name: str,
    props: dict[str, t.Any],
    traits: dict[str, t.Any],
    context: dict[str, t.Any],
    user_id: t.Any,
    email: str | None,
    phone: str | None,
    timestamp: t.Any,
    event_id: t.Any,
) -> None:
    """The caller never sees an exception; every accepted event encodes."""
    before = tracker.stats()["dropped"]
    event = tracker.track(
        name,
        props,
        user_id=user_id,
        email=email,
        phone=phone,
        traits=traits,
        context=context,
        timestamp=timestamp,
        event_id=event_id,
    )
    dropped = tracker.stats()["dropped"]
    assert "internal_error" not in dropped
    if event is not None:
        assert encodes(event)
    else:
        assert dropped.get("invalid", 0) == before.get("invalid", 0) + 1


def test_one_bad_value_never_stalls_a_destination(sink: Sink) -> None:
    """The issue's repro, end to end: the good events arrive in one try, the
    bad one is counted as invalid."""
    dead = MemoryDeadLetter()
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)],
        dead_letter=dead,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.02),
        flush_interval=60,
    )
    first = tracker.track("g", {})
    bad = tracker.track("b", {"v": json.loads('"\\ud800"')})
    second = tracker.track("g", {})
    assert bad is None and first is not None and second is not None
    assert tracker.flush(10)
    assert sorted(sink.ids) == sorted([first.event_id, second.event_id])
    stats = tracker.stats()
    assert stats["dropped"] == {"invalid": 1}
    http = stats["destinations"]["http"]
    assert http["sent"] == 2 and http["retried"] == 0 and http["rejected"] == 0
    assert not dead.records
    tracker.shutdown()


# --- item 10: properties= as a keyword ----------------------------------------------


def test_properties_may_be_passed_by_keyword() -> None:
    tracker, exporter = make()
    event = tracker.track("e", properties={"a": 1})
    assert event is not None and event.properties == {"a": 1}
    trackware.set_tracker(tracker)
    event = trackware.track("m", properties={"b": 2}, user_id="u")
    assert event is not None and event.properties == {"b": 2}
    assert event.user_id == "u"
    positional = trackware.track("p", {"c": 3})
    assert positional is not None and positional.properties == {"c": 3}
    assert tracker.stats()["dropped"] == {}
    tracker.shutdown(timeout=1)


def test_properties_both_positional_and_by_keyword_is_invalid() -> None:
    tracker, _ = make()
    trackware.set_tracker(tracker)
    reasons = dropped_reasons(tracker)
    assert tracker.track("e", {"a": 1}, properties={"a": 2}) is None  # type: ignore[call-arg]
    assert trackware.track("e", {"a": 1}, properties={"a": 2}) is None
    assert tracker.stats()["dropped"] == {"invalid": 2}
    assert "properties" in reasons[0]
    strict, _ = make(strict=True)
    with pytest.raises(InvalidEventError):
        strict.track("e", {"a": 1}, properties={"a": 2})  # type: ignore[call-arg]
    strict.shutdown(timeout=1)
    tracker.shutdown(timeout=1)


def test_tracked_properties_callable_returning_a_non_dict_is_counted() -> None:
    """@tracked's properties= callable returning a list: counted as invalid
    (it was logged but counted nowhere), never raised into the call."""
    tracker, _ = make()
    reasons = dropped_reasons(tracker)

    @trackware.tracked("job", tracker=tracker, properties=lambda result: [result])
    def job() -> int:
        return 1

    assert job() == 1
    assert tracker.stats()["dropped"] == {"invalid": 1}
    assert "returned list" in reasons[0]
    tracker.shutdown(timeout=1)


def test_module_track_with_an_unknown_keyword_is_counted_not_raised() -> None:
    tracker, _ = make()
    trackware.set_tracker(tracker)
    reasons = dropped_reasons(tracker)
    assert trackware.track("e", propertes={"a": 1}) is None
    assert tracker.stats()["dropped"] == {"invalid": 1}
    assert "propertes" in reasons[0]
    tracker.shutdown(timeout=1)


# --- item 13: no tracker configured -------------------------------------------------


def test_track_without_a_tracker_returns_none_counts_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="trackware"):
        assert trackware.track("lonely") is None
        assert trackware.track("lonely", {"a": 1}) is None
    stats = trackware.stats()
    assert stats["dropped"] == {"no_tracker": 2}
    assert stats["tracked"] == 0
    hints = [r for r in caplog.records if "set_tracker" in r.getMessage()]
    assert len(hints) == 1, caplog.records
    # Configuring a tracker later takes over.
    tracker, exporter = make()
    trackware.set_tracker(tracker)
    assert trackware.track("found") is not None
    tracker.shutdown(timeout=1)


# --- item 17: identity fields, ids, timestamps, hooks, Event() ----------------------

BAD_FIELDS: list[tuple[str, dict[str, t.Any], str]] = [
    ("email_int", {"email": 42}, "email"),
    ("email_object", {"email": object()}, "email"),
    ("email_surrogate", {"email": "a" + SURROGATE + "@x.com"}, "email"),
    ("email_too_long", {"email": "a" * 400 + "@x.com"}, "email"),
    ("phone_int", {"phone": 14155550100}, "phone"),
    ("phone_surrogate", {"phone": SURROGATE}, "phone"),
    ("phone_too_long", {"phone": "1" * 100}, "phone"),
    ("user_id_too_long", {"user_id": "u" * 10_000}, "user_id"),
    ("user_id_huge_int", {"user_id": 10**5000}, "user_id"),
    ("event_id_object", {"event_id": object()}, "event_id"),
    ("event_id_int", {"event_id": 42}, "event_id"),
    ("event_id_empty", {"event_id": ""}, "event_id"),
    ("event_id_surrogate", {"event_id": "id" + SURROGATE}, "event_id"),
    ("event_id_too_long", {"event_id": "x" * 1000}, "event_id"),
    ("timestamp_far_future", {"timestamp": 1e18}, "timestamp"),
    ("timestamp_negative", {"timestamp": -1.0}, "timestamp"),
    ("timestamp_int_far", {"timestamp": 10**20}, "timestamp"),
    ("timestamp_nan", {"timestamp": float("nan")}, "timestamp"),
    (
        "timestamp_broken_zone",
        {"timestamp": dt.datetime(2024, 1, 1, tzinfo=BrokenZone())},
        "timestamp",
    ),
    (
        "timestamp_before_1970",
        {"timestamp": dt.datetime(1900, 1, 1, tzinfo=dt.timezone.utc)},
        "timestamp",
    ),
]


@pytest.mark.parametrize(
    ("label", "kwargs", "why"), BAD_FIELDS, ids=[b[0] for b in BAD_FIELDS]
)
def test_identity_ids_and_timestamps_are_checked(
    tracker: trackware.Tracker, label: str, kwargs: dict[str, t.Any], why: str
) -> None:
    reasons = dropped_reasons(tracker)
    assert tracker.track("e", {"a": 1}, **kwargs) is None
    assert tracker.stats()["dropped"] == {"invalid": 1}
    assert len(reasons) == 1 and why in reasons[0], reasons
    # Identity is personal data: the reason never quotes it.
    assert "@x.com" not in reasons[0] and SURROGATE not in reasons[0]
    with pytest.raises(InvalidEventError):
        Event("e", {"a": 1}, **kwargs)


def test_good_identity_ids_and_timestamps_are_kept(
    tracker: trackware.Tracker,
) -> None:
    event = tracker.track(
        "e",
        user_id=42,  # type: ignore[arg-type]  # ids are converted, as before
        anonymous_id="anon",
        email="a@example.com",
        phone="+14155550100",
        event_id="order-17/line-2",
        timestamp=1_700_000_000,
    )
    assert event is not None
    assert event.user_id == "42" and event.event_id == "order-17/line-2"
    assert encodes(event)
    last = tracker.track(
        "e", timestamp=dt.datetime(9999, 12, 31, tzinfo=dt.timezone.utc)
    )
    assert last is not None and encodes(last)


def test_an_invalid_identity_from_the_scope_is_caught_too(
    tracker: trackware.Tracker,
) -> None:
    """Scopes carry what integrations bound; track() checks the final event."""
    with trackware.request_scope(tracker=tracker) as scope:
        scope.email = "x" + SURROGATE  # as an identity callback might
        assert trackware.track("e") is None
    assert tracker.stats()["dropped"] == {"invalid": 1}


def test_a_scope_identity_changed_after_an_event_is_checked_again(
    tracker: trackware.Tracker,
) -> None:
    """track() remembers the identity it checked per scope; a new value in
    the scope (or given to track()) is checked again."""
    with trackware.request_scope(tracker=tracker, user_id="u-1") as scope:
        assert trackware.track("e") is not None
        scope.user_id = "u" + SURROGATE
        assert trackware.track("e") is None
        scope.user_id = "u-2"
        event = trackware.track("e")
        assert event is not None and event.user_id == "u-2"
        assert trackware.track("e", phone=SURROGATE) is None
        assert trackware.track("e", user_id=7) is not None
    assert tracker.stats()["dropped"] == {"invalid": 2}


def test_identify_leaves_out_what_cannot_be_sent(tracker: trackware.Tracker) -> None:
    """identify() never raises: bad values are left out with a warning."""
    with trackware.request_scope(tracker=tracker) as scope:
        trackware.identify(
            "u" + SURROGATE, email=42, phone="1" * 100, traits={"t": SURROGATE}
        )  # type: ignore[arg-type]
        assert scope.user_id is None and scope.email is None and scope.phone is None
        assert scope.traits == {}
        trackware.identify("u-1", email="a@example.com", traits={"tier": "gold"})
        event = trackware.track("e")
    assert event is not None and event.user_id == "u-1"
    assert event.email == "a@example.com" and event.traits == {"tier": "gold"}


HOOK_CHANGES: list[tuple[str, dict[str, t.Any]]] = [
    ("name_surrogate", {"name": "n" + SURROGATE}),
    ("name_empty", {"name": ""}),
    ("email_int", {"email": 42}),
    ("email_surrogate", {"email": SURROGATE}),
    ("phone_object", {"phone": object()}),
    ("user_id_surrogate", {"user_id": SURROGATE}),
    ("anonymous_id_int", {"anonymous_id": 7}),
    ("properties", {"properties": {"v": SURROGATE}}),
    ("traits", {"traits": {"v": 10**5000}}),
    ("context", {"context": {"v": decimal.Decimal("1e400")}}),
    ("timestamp", {"timestamp": 1e18}),
    ("event_id", {"event_id": "x" * 1000}),
]


@pytest.mark.parametrize(
    ("label", "changes"), HOOK_CHANGES, ids=[h[0] for h in HOOK_CHANGES]
)
def test_what_a_before_send_hook_returns_is_rechecked(
    label: str, changes: dict[str, t.Any]
) -> None:
    """Every field a hook can change is checked again: the hook builds its
    event the way the app would (Event(...)), or bypasses Event's own checks."""

    def hook(event: Event) -> Event:
        fields = {**dict(zip(FIELDS, tuple(event), strict=False)), **changes}
        raw = tuple(fields[f] for f in FIELDS)
        return tuple.__new__(Event, raw)  # type: ignore[no-any-return]

    tracker, exporter = make(before_send=hook)
    assert tracker.track("e", {"a": 1}) is None
    assert tracker.stats()["dropped"] == {"invalid": 1}
    assert tracker.flush(5) and exporter.events == []
    tracker.shutdown(timeout=1)


FIELDS = [
    "event_id",
    "name",
    "properties",
    "user_id",
    "anonymous_id",
    "email",
    "phone",
    "traits",
    "context",
    "timestamp",
    "size",
]


def test_a_hook_replacing_with_bad_values_is_counted_not_raised() -> None:
    """Event.replace() validates: a hook that makes a bad event has it
    refused inside the hook; that costs the event only, counted as invalid
    with the rule."""
    tracker, exporter = make(before_send=lambda e: e.replace(email=42))
    reasons = dropped_reasons(tracker)
    assert tracker.track("e") is None
    assert tracker.stats()["dropped"] == {"invalid": 1}
    assert "email must be a string" in reasons[0]
    strict, _ = make(before_send=lambda e: e.replace(email=42), strict=True)
    with pytest.raises(InvalidEventError, match="email"):
        strict.track("e")
    strict.shutdown(timeout=1)
    tracker.shutdown(timeout=1)


def test_a_hook_mutating_the_event_in_place_is_rechecked() -> None:
    def hook(event: Event) -> Event:
        event.properties["v"] = SURROGATE
        return event

    tracker, exporter = make(before_send=hook)
    assert tracker.track("e", {"a": 1}) is None
    assert tracker.stats()["dropped"] == {"invalid": 1}
    tracker.shutdown(timeout=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": 42},
        {"name": "n" + SURROGATE},
        {"name": "e", "properties": {"v": SURROGATE}},
        {"name": "e", "properties": {"v": object()}},
        {"name": "e", "properties": {"deep": nested(100)}},
        {"name": "e", "traits": {"t": 10**5000}},
        {"name": "e", "context": {"c": float("nan")}},
        {"name": "e", "user_id": 42},
        {"name": "e", "properties": {str(i): i for i in range(MAX_ITEMS + 1)}},
    ],
    ids=[
        "empty_name",
        "int_name",
        "surrogate_name",
        "surrogate_prop",
        "object_prop",
        "deep",
        "huge_trait",
        "nan_context",
        "int_user_id",
        "too_many_keys",
    ],
)
def test_event_built_directly_is_validated(kwargs: dict[str, t.Any]) -> None:
    """Event(...) is a constructor the app calls: it raises on bad input."""
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    properties = kwargs.pop("properties", None)
    with pytest.raises(InvalidEventError):
        Event(name, properties, **kwargs)


def test_event_built_directly_is_sized_and_encodes() -> None:
    small = Event("e", {"a": 1})
    big = Event("e", {"blob": "x" * 100_000})
    assert small.size < 1000 < 100_000 < big.size
    assert encodes(big)
    again = Event.from_dict(json.loads(dumps(big.to_dict())))
    assert again.event_id == big.event_id and again.properties == big.properties


# --- item 18: redaction applies to what a hook returns ------------------------------


def test_a_hooks_context_properties_and_traits_are_redacted() -> None:
    def hook(event: Event) -> Event:
        return event.replace(
            context={"password": "hunter2", "page": {"api_key": "k-1234"}},
            properties={"token": "t-5678", "ok": 1},
            traits={"ssn": "123-45-6789"},
        )

    tracker, exporter = make(before_send=hook)
    event = tracker.track("e")
    assert event is not None
    assert event.context == {
        "password": "[redacted]",
        "page": {"api_key": "[redacted]"},
    }
    assert event.properties == {"token": "[redacted]", "ok": 1}
    assert event.traits == {"ssn": "[redacted]"}
    assert tracker.flush(5)
    sent = dumps([e.to_dict() for e in exporter.events])
    assert "hunter2" not in sent and "k-1234" not in sent and "t-5678" not in sent
    assert "123-45-6789" not in sent
    tracker.shutdown(timeout=1)


# --- item 19: bounded work on the caller's thread -----------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"properties": {str(i): i for i in range(1_000_000)}},
        {"properties": {"blob": "x" * 100_000_000}},
        {"properties": {"blob": "é" * 50_000_000}},
        {"properties": {"list": list(range(1_000_000))}},
        {"properties": {"nested": {str(i): [i] for i in range(1_000_000)}}},
        {"properties": {"many": ["é" * 1000] * 5000}},
        {"traits": {str(i): i for i in range(1_000_000)}},
        {"context": {"blob": "x" * 100_000_000}},
        {"name": "x" * 100_000_000},
        {"name": "é" * 50_000_000},
    ],
    ids=[
        "million_keys",
        "100mb_string",
        "100mb_non_ascii",
        "million_items",
        "million_nested",
        "5mb_of_non_ascii_strings",
        "million_traits",
        "100mb_context",
        "100mb_name",
        "100mb_non_ascii_name",
    ],
)
def test_oversized_input_is_rejected_as_invalid(
    tracker: trackware.Tracker, kwargs: dict[str, t.Any]
) -> None:
    reasons = dropped_reasons(tracker)
    kwargs = dict(kwargs)
    name = kwargs.pop("name", "e")
    props = kwargs.pop("properties", None)
    assert tracker.track(name, props, **kwargs) is None
    stats = tracker.stats()
    assert stats["dropped"] == {"invalid": 1}
    assert stats["destinations"]["memory"]["enqueued"] == 0
    assert "too many" in reasons[0] or "too large" in reasons[0], reasons


def test_identify_with_a_million_traits_leaves_them_out(
    tracker: trackware.Tracker,
) -> None:
    with trackware.request_scope(tracker=tracker) as scope:
        trackware.identify("u", traits={str(i): i for i in range(1_000_000)})
        assert scope.user_id == "u" and scope.traits == {}
        assert trackware.track("e") is not None


def test_the_size_bound_follows_max_batch_bytes() -> None:
    """An event bigger than a batch may be is rejected; a tracker configured
    for bigger batches takes it."""
    small, _ = make(max_batch_bytes=10_000)
    assert small.track("e", {"blob": "x" * 20_000}) is None
    assert small.stats()["dropped"] == {"invalid": 1}
    assert small.track("e", {"blob": "x" * 5_000}) is not None
    small.shutdown(timeout=1)
    big, _ = make(max_batch_bytes=4 * 1024 * 1024)
    assert big.track("e", {"blob": "x" * 2_000_000}) is not None
    big.shutdown(timeout=1)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(props=odd_props, user_id=st.one_of(st.none(), odd_text))
def test_odd_values_past_track_never_cost_their_batch_mates(
    sink: Sink, props: dict[str, t.Any], user_id: str | None
) -> None:
    """The worker side of item 1, under hypothesis: an event carrying odd
    values that skipped track()'s checks (built as the raw tuple, as the
    integrations' page events are) sits in one batch between two good ones,
    sent over real HTTP. The good ones are delivered on the first attempt
    (nothing is retried, so the destination never stalls), and the odd one
    ends sent or rejected alone, never retried."""
    fields = list(Event("odd"))
    fields[2] = props
    fields[3] = user_id
    odd = t.cast(Event, tuple.__new__(Event, tuple(fields)))
    dead = MemoryDeadLetter()
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)],
        dead_letter=dead,
        retry=RetryPolicy(base_delay=5.0, max_delay=5.0),
        flush_interval=60,
        register_atexit=False,
    )
    try:
        sink.ids.clear()
        first = tracker.track("g", {"n": 1})
        tracker._route(odd)
        second = tracker.track("g", {"n": 2})
        assert first is not None and second is not None
        assert tracker.flush(10)
        assert first.event_id in sink.ids and second.event_id in sink.ids
        row = tracker.stats()["destinations"]["http"]
        assert row["retried"] == 0, row
        assert row["sent"] + row["rejected"] == 3, row
        if row["rejected"]:
            (record,) = dead.records
            assert record.event.event_id == odd.event_id
            assert odd.event_id not in sink.ids
    finally:
        tracker.shutdown(timeout=2)
