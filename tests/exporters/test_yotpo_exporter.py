"""The Yotpo CustomEventExporter against the Yotpo emulator over real HTTP."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import logging
import typing as t
import uuid

import pytest

import trackware
from trackware import AuthError, ConfigurationError, MemoryDeadLetter, RetryPolicy
from trackware._event import Event
from trackware.exporters.yotpo import (
    DEFAULT_FIELD_MAP,
    CustomEventExporter,
    YotpoFieldMap,
    normalize_phone,
    snake_case,
)
from trackware.testing.emulators import EmulatorServer
from trackware.testing.emulators._yotpo import YotpoAPI

SECRET = "yotpo-sk-5f4e3d2c1b0a99887766"
EVENT_ID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
WHEN = dt.datetime(2026, 11, 24, 6, 0, tzinfo=dt.timezone.utc)
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_attempts=8)


@pytest.fixture
def store() -> str:
    # A store of its own per test: the client-side limiter is shared per store
    # across the process, so tests must not pace each other.
    return f"store-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def api(store: str) -> YotpoAPI:
    return YotpoAPI(stores={store: SECRET})


@pytest.fixture
def emu(api: YotpoAPI) -> t.Iterator[EmulatorServer]:
    with EmulatorServer([api]) as server:
        yield server


def exporter_for(
    emu: EmulatorServer, store: str, **options: t.Any
) -> CustomEventExporter:
    options.setdefault("all_events", True)
    options.setdefault("base_url", emu.url)
    options.setdefault("secret", SECRET)
    return CustomEventExporter(store, **options)


@contextlib.contextmanager
def tracking(
    *exporters: CustomEventExporter, retry: RetryPolicy = FAST
) -> t.Iterator[tuple[trackware.Tracker, MemoryDeadLetter]]:
    dead = MemoryDeadLetter()
    tracker = trackware.Tracker(
        list(exporters),
        dead_letter=dead,
        retry=retry,
        flush_interval=0.01,
        register_atexit=False,
    )
    try:
        yield tracker, dead
    finally:
        tracker.shutdown(timeout=5)


def statuses(emu: EmulatorServer, route: str = "yotpo.event") -> list[int]:
    return [r.status for r in emu.recorded(route)]


# --- golden payloads -----------------------------------------------------------------
# The seed (004) documents fields and rules but contains no example request:
# its "Choose an example" block is empty and it names no JSON fields. The
# goldens below are the §5.4 placeholder shape filled from trackware events.

GOLDEN_FULL = {
    "source": "trackware",
    "event_name": "order_shipped",
    "timestamp": "2026-11-24T06:00:00.000Z",
    "id": EVENT_ID,
    "customer": {
        "external_id": "c-42",
        "email": "ann@example.com",
        "phone_number": "+447700900123",
        "properties": {"tier": "gold", "signup_date": "2024-01-02"},
    },
    "properties": {
        "order_id": "o-1001",
        "total": 59.9,
        "gift_wrap": True,
        "shipped_at": "2026-11-24T05:30:00Z",
        "items": 3,
    },
}


def test_golden_full_payload_is_sent_exactly(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """A mapped event with user, contacts, traits and rich values gives the golden
    body byte for byte, and the emulator accepts it."""
    exporter = exporter_for(
        emu,
        store,
        all_events=False,
        event_names={"order.shipped": "order_shipped"},
        default_country_code="44",
    )
    with tracking(exporter) as (tracker, dead):
        tracker.track(
            "order.shipped",
            {
                "order_id": "o-1001",
                "total": decimal.Decimal("59.90"),
                "gift wrap": True,
                "shipped_at": dt.datetime(2026, 11, 24, 5, 30, tzinfo=dt.timezone.utc),
                "items": 3,
                "coupon": None,
            },
            user_id="c-42",
            email="ann@example.com",
            phone="07700 900-123",
            traits={"tier": "gold", "signup date": dt.date(2024, 1, 2)},
            timestamp=WHEN.timestamp(),
            event_id=EVENT_ID,
        )
        assert tracker.flush(20)
    assert dead.read() == []
    (request,) = emu.recorded("yotpo.event")
    assert request.method == "POST"
    assert request.path == f"/core/v3/stores/{store}/custom_events"
    assert request.body == json.dumps(GOLDEN_FULL, separators=(",", ":")).encode()
    assert request.status == 200
    assert api.events == [GOLDEN_FULL]


@pytest.mark.parametrize(
    ("identity", "options", "customer"),
    [
        ({"email": "ann@example.com"}, {}, {"email": "ann@example.com"}),
        (
            {"phone": "(020) 7946-0018"},
            {"default_country_code": "+44"},
            {"phone_number": "+442079460018"},
        ),
        ({"phone": "0044.20.7946.0018"}, {}, {"phone_number": "+442079460018"}),
        (
            {"email": "ann@example.com", "phone": "+1 555 123 4567"},
            {},
            {"email": "ann@example.com"},
        ),
        (
            {"email": "ann@example.com", "phone": "+1 555 123 4567"},
            {"identity_preference": "phone"},
            {"phone_number": "+15551234567"},
        ),
        (
            {"email": "not-an-email", "phone": "+1 555 123 4567"},
            {},
            {"phone_number": "+15551234567"},
        ),
        (
            {"traits": {"email": "ann@example.com", "plan": "pro"}},
            {},
            {"email": "ann@example.com", "properties": {"plan": "pro"}},
        ),
    ],
)
def test_golden_identity_without_user_id(
    emu: EmulatorServer,
    api: YotpoAPI,
    store: str,
    identity: dict[str, t.Any],
    options: dict[str, t.Any],
    customer: dict[str, t.Any],
) -> None:
    """Without user_id exactly one of email / E.164 phone is sent (preference
    decides, an invalid one gives way), and the emulator accepts it."""
    exporter = exporter_for(emu, store, **options)
    with tracking(exporter) as (tracker, dead):
        tracker.track(
            "Cart Viewed",
            timestamp=WHEN.timestamp(),
            event_id=EVENT_ID,
            **identity,
        )
        assert tracker.flush(20)
    assert dead.read() == []
    assert api.events == [
        {
            "source": "trackware",
            "event_name": "cart_viewed",
            "timestamp": "2026-11-24T06:00:00.000Z",
            "id": EVENT_ID,
            "customer": customer,
        }
    ]


def test_custom_field_map_is_shared_with_the_emulator(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """Overriding path, method, envelope and names in one map moves both sides."""
    field_map = DEFAULT_FIELD_MAP.replace(
        path="/core/v3/stores/{store_id}/customer_events",
        method="PATCH",
        envelope="event",
        event_name="type",
        properties="metadata",
        version="test",
    )
    api.field_map = field_map
    exporter = exporter_for(emu, store, field_map=field_map, source="quiz_app")
    with tracking(exporter) as (tracker, dead):
        tracker.track(
            "quiz.done",
            {"score": 7},
            user_id="u-1",
            timestamp=WHEN.timestamp(),
            event_id=EVENT_ID,
        )
        assert tracker.flush(20)
    assert dead.read() == []
    (request,) = emu.recorded("yotpo.event")
    assert (request.method, request.path) == (
        "PATCH",
        f"/core/v3/stores/{store}/customer_events",
    )
    assert request.json() == {
        "event": {
            "source": "quiz_app",
            "type": "quiz_done",
            "timestamp": "2026-11-24T06:00:00.000Z",
            "id": EVENT_ID,
            "customer": {"external_id": "u-1"},
            "metadata": {"score": 7},
        }
    }
    assert len(api.events) == 1


# --- names and mapping ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("order_shipped", "order_shipped"),
        ("Order Shipped", "order_shipped"),
        ("checkout.Started!", "checkout_started"),
        ("  --a..b__c--  ", "a_b_c"),
        ("Quizapp", "quizapp"),
        ("ünïcode ok", "n_code_ok"),
        ("!!!", ""),
    ],
)
def test_snake_case(name: str, expected: str) -> None:
    """Lowercase; other characters become _; runs collapse; edges trimmed."""
    assert snake_case(name) == expected


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+44 7700 900123", None, "+447700900123"),
        ("0044 (7700) 900-123", None, "+447700900123"),
        ("07700.900.123", "44", "+447700900123"),
        ("(555) 123-4567", "1", "+15551234567"),
        ("07700 900123", None, None),
        ("+0 123", None, None),
        ("+1234567890123456", None, None),
        ("call me", "44", None),
    ],
)
def test_normalize_phone(raw: str, country: str | None, expected: str | None) -> None:
    """Spaces, dashes, dots, parentheses stripped; 00 -> +; national numbers need
    the default country code; the result is E.164 or None."""
    assert normalize_phone(raw, country) == expected


def test_only_mapped_events_apply(emu: EmulatorServer, store: str) -> None:
    """With a mapping and no all_events, other events are not routed to Yotpo."""
    exporter = exporter_for(
        emu, store, all_events=False, event_names={"a.b": "renamed_event"}
    )
    assert exporter.applies(Event("a.b"))
    assert not exporter.applies(Event("c.d"))
    with tracking(exporter) as (tracker, _):
        tracker.track("c.d", user_id="u")
        tracker.track("a.b", user_id="u")
        assert tracker.flush(20)
        stats = tracker.stats()
    assert stats["unrouted"] == 1
    assert stats["destinations"]["yotpo"]["sent"] == 1
    assert [r.json()["event_name"] for r in emu.recorded("yotpo.event")] == [
        "renamed_event"
    ]


def test_all_events_with_a_mapping_renames_mapped_ones(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """all_events=True plus a mapping: mapped names win, others are snake-cased."""
    exporter = exporter_for(emu, store, event_names={"Signup": "account_created"})
    with tracking(exporter) as (tracker, _):
        tracker.track("Signup", user_id="u")
        tracker.track("Page.View", user_id="u")
        assert tracker.flush(20)
    assert [e["event_name"] for e in api.events] == ["account_created", "page_view"]


# --- contract violations -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "properties", "identity", "options", "rule"),
    [
        ("e", {}, {"phone": "07700 900123"}, {}, "set default_region"),
        ("e", {}, {"email": "bad@@example.com"}, {}, "email is not a valid"),
        ("!!!", {}, {"user_id": "u"}, {}, "event_name:"),
        ("n" * 256, {}, {"user_id": "u"}, {}, "at most 255"),
        (
            "e",
            {"address": {"city": "X"}},
            {"user_id": "u"},
            {},
            "'address' is an object",
        ),
        ("e", {"skus": ["a"]}, {"user_id": "u"}, {}, "'skus' is an array"),
        ("e", {"a b": 1, "a_b": 2}, {"user_id": "u"}, {}, "both become 'a_b'"),
        (
            "e",
            {},
            {"user_id": "u", "traits": {"prefs": {"sms": True}}},
            {},
            "customer properties: 'prefs' is an object",
        ),
    ],
)
def test_contract_violation_is_rejected_for_yotpo_with_the_rule(
    emu: EmulatorServer,
    api: YotpoAPI,
    store: str,
    name: str,
    properties: dict[str, t.Any],
    identity: dict[str, t.Any],
    options: dict[str, t.Any],
    rule: str,
) -> None:
    """A breach is dead-lettered with the rule; the batch's good events still go."""
    exporter = exporter_for(emu, store, **options)
    with tracking(exporter) as (tracker, dead):
        tracker.track("before", user_id="u")
        tracker.track(name, properties, **identity)
        tracker.track("after", user_id="u")
        assert tracker.flush(20)
    records = dead.read()
    assert len(records) == 1
    assert records[0]["reason"].startswith("yotpo contract: ")
    assert rule in records[0]["reason"]
    assert records[0]["status"] is None
    assert [e["event_name"] for e in api.events] == ["before", "after"]


def test_rules_checked_on_the_worker_for_events_built_directly(
    emu: EmulatorServer, store: str
) -> None:
    """Events built without a Tracker (replays, hooks) get the same checks:
    non-finite numbers and unsupported types are rejected per event."""
    exporter = exporter_for(emu, store)

    def unchecked(properties: dict[str, t.Any]) -> Event:
        # Event() refuses these too; the exporter must not rely on it.
        fields = list(Event("e", user_id="u"))
        fields[2] = properties
        return t.cast(Event, tuple.__new__(Event, tuple(fields)))

    good = Event("ok", {"n": 1}, user_id="u")
    bad_nan = unchecked({"ratio": float("inf")})
    bad_type = unchecked({"blob": b"raw"})
    requests, result = exporter.build_requests([bad_nan, good, bad_type])
    assert [r.events for r in requests] == [[good]]
    reasons = {r.event.event_id: r.reason for r in result.rejected}
    assert "'ratio' is not a finite number" in reasons[bad_nan.event_id]
    assert "'blob' has type bytes" in reasons[bad_type.event_id]
    exporter.close()


def test_flatten_mode_flattens_nested_properties(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """nested_properties='flatten': objects join keys with _, lists use indexes."""
    exporter = exporter_for(emu, store, nested_properties="flatten")
    with tracking(exporter) as (tracker, dead):
        tracker.track(
            "e",
            {"address": {"city": "Leeds", "post code": None}, "skus": ["a", "b"]},
            user_id="u",
            traits={"prefs": {"sms": True}},
        )
        assert tracker.flush(20)
    assert dead.read() == []
    (event,) = api.events
    assert event["properties"] == {
        "address_city": "Leeds",
        "skus_0": "a",
        "skus_1": "b",
    }
    assert event["customer"]["properties"] == {"prefs_sms": True}


def test_naive_and_offset_datetimes_become_utc_iso(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """Datetimes are sent as ISO strings in UTC with Z (naive ones taken as UTC)."""
    exporter = exporter_for(emu, store)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    with tracking(exporter) as (tracker, _):
        tracker.track(
            "e",
            {
                "naive": dt.datetime(2026, 1, 1, 12, 0),
                "offset": dt.datetime(2026, 1, 1, 12, 0, tzinfo=plus2),
                "id": uuid.UUID(EVENT_ID),
            },
            user_id="u",
        )
        assert tracker.flush(20)
    assert api.events[0]["properties"] == {
        "naive": "2026-01-01T12:00:00Z",
        "offset": "2026-01-01T10:00:00Z",
        "id": EVENT_ID,
    }


def test_anonymous_events_are_not_applicable_not_rejected(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """Yotpo keeps no anonymous customers: an event that names nobody (a page
    view of a new visitor) is not_applicable, never a dead letter."""
    exporter = exporter_for(emu, store)
    with tracking(exporter) as (tracker, dead):
        tracker.track("before", user_id="u")
        tracker.track("page")
        tracker.track("page", anonymous_id="anon-1", traits={"tier": "gold"})
        tracker.track("after", user_id="u")
        assert tracker.flush(20)
        stats = tracker.stats()["destinations"]["yotpo"]
    assert dead.read() == []
    assert stats["not_applicable"] == 2 and stats["rejected"] == 0
    assert [e["event_name"] for e in api.events] == ["before", "after"]


def test_vendor_4xx_is_dead_lettered_with_the_emulators_reason(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """A field map the vendor does not share (here the emulator expects the
    id under another name) passes the exporter but the strict emulator answers
    400; the dead letter has its rule."""
    api.field_map = DEFAULT_FIELD_MAP.replace(id="event_id")
    exporter = exporter_for(emu, store)
    with tracking(exporter) as (tracker, dead):
        tracker.track("e", user_id="u")
        assert tracker.flush(20)
    (record,) = dead.read()
    assert record["status"] == 400
    assert record["reason"].startswith("HTTP 400")
    assert '"rule": "id"' in record["response"]
    assert "required" in record["reason"]
    assert api.events == []


# --- one event per request -----------------------------------------------------------


def test_one_event_per_request_and_batch_cap(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """Each event is its own request; export batches are capped at max_batch_size."""
    exporter = exporter_for(emu, store, max_batch_size=3)
    assert exporter.max_batch_size == 3
    assert exporter_for(emu, store).max_batch_size == 10
    with tracking(exporter) as (tracker, _):
        events = [tracker.track("e", {"i": i}, user_id="u") for i in range(7)]
        assert tracker.flush(30)
        assert tracker.stats()["destinations"]["yotpo"]["batches"] >= 3
    bodies = [r.json() for r in emu.recorded("yotpo.event")]
    assert len(bodies) == 7
    assert [b["id"] for b in bodies] == [e.event_id for e in events if e]
    assert all(isinstance(b["properties"]["i"], int) for b in bodies)


# --- auth ----------------------------------------------------------------------------


def test_token_is_fetched_once_and_reused(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """One token request serves many events; it goes in X-Yotpo-Token."""
    exporter = exporter_for(emu, store)
    with tracking(exporter) as (tracker, _):
        for i in range(4):
            tracker.track("e", {"i": i}, user_id="u")
        assert tracker.flush(20)
    assert api.tokens_issued == 1
    (token_request,) = emu.recorded("yotpo.token")
    assert token_request.json() == {"secret": SECRET}
    token = token_request.reply["access_token"]
    assert {r.headers["X-Yotpo-Token"] for r in emu.recorded("yotpo.event")} == {token}
    assert len(api.events) == 4


def test_expired_token_is_refreshed_on_401(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """A 401 drops the token, fetches a new one and resends once."""
    exporter = exporter_for(emu, store)
    with tracking(exporter) as (tracker, dead):
        tracker.track("first", user_id="u")
        assert tracker.flush(20)
        api.expire_tokens()
        tracker.track("second", user_id="u")
        assert tracker.flush(20)
    assert dead.read() == []
    assert statuses(emu) == [200, 401, 200]
    assert api.tokens_issued == 2
    assert [e["event_name"] for e in api.events] == ["first", "second"]


def test_token_expired_at_the_vendor_is_refreshed(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """With a short emulator TTL, a token that expired at Yotpo (but not in the
    exporter's cache) is replaced after the 401 and the event goes through."""
    api.token_ttl = 1.0
    exporter = exporter_for(emu, store)
    with tracking(exporter) as (tracker, dead):
        tracker.track("a", user_id="u")
        assert tracker.flush(20)
        # Wait for the emulator to expire the token.
        assert emu.wait_for(lambda: not api.tokens_valid(), timeout=20)
        tracker.track("b", user_id="u")
        assert tracker.flush(20)
    assert dead.read() == []
    assert statuses(emu) == [200, 401, 200]
    assert api.tokens_issued == 2


def test_tokens_that_are_stale_on_arrival_end_in_one_reauth(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """With an emulator TTL of 0 every token is stale on use: the exporter
    re-authenticates once, then gives up on the event with the 401 (no loop)."""
    api.token_ttl = 0.0
    exporter = exporter_for(emu, store)
    with tracking(exporter) as (tracker, dead):
        tracker.track("e", user_id="u")
        assert tracker.flush(20)
    records = dead.read()
    assert len(records) == 1
    assert records[0]["status"] == 401
    assert api.tokens_issued == 2  # first token, then exactly one refresh


def test_token_is_refreshed_proactively_after_max_age(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """Past token_max_age (13 days by default) a new token is fetched before
    sending, so no 401 is needed."""
    assert exporter_for(emu, store).token_max_age == 13 * 86400
    exporter = exporter_for(emu, store, token_max_age=1e-9)
    with tracking(exporter) as (tracker, _):
        tracker.track("a", user_id="u")
        assert tracker.flush(20)
        tracker.track("b", user_id="u")
        assert tracker.flush(20)
    assert api.tokens_issued == 2
    assert 401 not in statuses(emu)
    tokens = [r.headers["X-Yotpo-Token"] for r in emu.recorded("yotpo.event")]
    assert len(set(tokens)) == 2


def test_token_endpoint_5xx_is_retried(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """A failing token endpoint makes the events retry, not fail."""
    emu.fault("yotpo.token", status=503, times=2)
    exporter = exporter_for(emu, store)
    with tracking(exporter) as (tracker, dead):
        tracker.track("e", user_id="u")
        assert tracker.flush(20)
    assert dead.read() == []
    assert statuses(emu, "yotpo.token") == [503, 503, 200]
    assert len(api.events) == 1


def test_wrong_secret_is_rejected_with_the_token_answer(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """Bad credentials are not retried: events are dead-lettered with the 401."""
    exporter = exporter_for(emu, store, secret="wrong-secret-value-0001")
    with tracking(exporter) as (tracker, dead):
        tracker.track("e", user_id="u")
        assert tracker.flush(20)
    (record,) = dead.read()
    assert record["status"] == 401
    assert "authentication refused" in record["reason"]
    assert "check the store id and API secret" in record["reason"]
    assert "credentials" in record["response"]
    assert statuses(emu, "yotpo.event") == []


# --- rate limiting -------------------------------------------------------------------


def test_client_limiter_keeps_the_emulator_from_answering_429(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """N events at the default 5 req/s per store produce zero 429s."""
    exporter = exporter_for(emu, store)
    n = 16
    with tracking(exporter) as (tracker, dead):
        for i in range(n):
            tracker.track("e", {"i": i}, user_id="u")
        assert tracker.flush(60)
    assert dead.read() == []
    assert api.rate_limited == 0
    assert 429 not in statuses(emu)
    assert len(api.events) == n


def test_limiter_is_shared_by_exporters_of_the_same_store(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """Two exporters (two workers) of one store share the 5 req/s budget."""
    first = exporter_for(emu, store, name="yotpo_a")
    second = exporter_for(emu, store, name="yotpo_b", source="second_app")
    with tracking(first, second) as (tracker, dead):
        for i in range(8):
            tracker.track("e", {"i": i}, user_id="u")
        assert tracker.flush(60)
    assert dead.read() == []
    assert api.rate_limited == 0
    assert len(api.events) == 8  # both destinations upsert the same event ids
    assert api.upserts == 8


def test_lower_vendor_limit_is_obeyed_via_ratelimit_headers(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """With the emulator at 2 req/s the exporter follows RateLimit-Remaining: 0 and
    RateLimit-Reset, delivering everything once."""
    api.rate_limit = 2
    exporter = exporter_for(emu, store)
    n = 6
    with tracking(exporter) as (tracker, dead):
        sent = [tracker.track("e", {"i": i}, user_id="u") for i in range(n)]
        assert tracker.flush(60)
    assert dead.read() == []
    accepted = [r.json()["id"] for r in emu.recorded("yotpo.event") if r.status == 200]
    assert sorted(accepted) == sorted(e.event_id for e in sent if e)
    assert api.upserts == 0
    assert api.rate_limited == 0


def test_429_with_ratelimit_reset_is_retried_after_the_reset(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """A 429 makes the event retry with RateLimit-Reset as the floor and pauses
    the store's limiter."""
    emu.fault(
        "yotpo.event",
        status=429,
        headers={"RateLimit-Remaining": "0", "RateLimit-Reset": "2"},
        body={"status": 429, "errors": [{"rule": "rate_limit"}]},
    )
    exporter = exporter_for(emu, store)
    event = Event("e", user_id="u")
    result = exporter.export([event])
    assert result.retry == [event]
    assert result.retry_after == 2.0
    assert result.status == 429
    assert 1.0 < exporter.rate_limit_wait() <= 2.0
    exporter.close()


def test_429_without_headers_waits_the_recommended_second(
    emu: EmulatorServer, store: str
) -> None:
    """A bare 429 is retried after Yotpo's recommended 1 s back-off."""
    emu.fault("yotpo.event", status=429)
    exporter = exporter_for(emu, store)
    result = exporter.export([Event("e", user_id="u")])
    assert result.retry_after == 1.0
    assert exporter.rate_limit_wait() > 0
    exporter.close()


def test_long_vendor_pause_becomes_a_retry_instead_of_a_sleep(
    emu: EmulatorServer, store: str
) -> None:
    """A pause longer than max_rate_limit_sleep is handed to the retry machinery
    without calling Yotpo."""
    emu.fault("yotpo.event", status=429, headers={"RateLimit-Reset": "30"})
    exporter = exporter_for(emu, store, max_rate_limit_sleep=5.0)
    exporter.export([Event("e", user_id="u")])
    calls = len(emu.recorded("yotpo.event"))
    result = exporter.export([Event("e2", user_id="u"), Event("e3", user_id="u")])
    assert len(result.retry) == 2
    assert result.retry_after is not None and result.retry_after > 5.0
    assert "RateLimit-Reset" in (result.error or "")
    assert len(emu.recorded("yotpo.event")) == calls
    exporter.close()


def test_429_via_the_tracker_is_delivered_once(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """A 429 with Retry-After: 1 (the floor) ends in one delivery, no duplicate."""
    emu.fault("yotpo.event", status=429, headers={"Retry-After": "1"})
    exporter = exporter_for(emu, store)
    with tracking(exporter) as (tracker, dead):
        tracker.track("e", user_id="u")
        assert tracker.flush(30)
    assert dead.read() == []
    assert statuses(emu) == [429, 200]
    assert len(api.events) == 1 and api.upserts == 0


# --- retries -------------------------------------------------------------------------


def test_5xx_is_retried_until_delivered(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """503s are retried with backoff; the event lands once."""
    emu.fault("yotpo.event", status=503, times=2)
    exporter = exporter_for(emu, store)
    with tracking(exporter) as (tracker, dead):
        tracker.track("e", user_id="u")
        assert tracker.flush(30)
    assert dead.read() == []
    assert statuses(emu) == [503, 503, 200]
    assert len(api.events) == 1


def test_retry_after_a_lost_response_upserts_instead_of_duplicating(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """Yotpo got the event but the answer timed out: the retry reuses the event id,
    so the vendor overwrites instead of storing a second copy."""
    emu.fault("yotpo.event", delay=1.0)
    exporter = exporter_for(emu, store, timeout=0.3)
    with tracking(exporter) as (tracker, dead):
        event = tracker.track("e", user_id="u")
        assert tracker.flush(30)
    assert event is not None
    assert emu.wait_for(lambda: len(emu.recorded("yotpo.event")) == 2, timeout=10)
    assert dead.read() == []
    assert statuses(emu) == [200, 200]
    assert [e["id"] for e in api.events] == [event.event_id]
    assert api.upserts == 1


def test_dropped_connection_is_retried(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """A connection closed without an answer is retried."""
    emu.fault("yotpo.event", drop=True)
    exporter = exporter_for(emu, store)
    with tracking(exporter) as (tracker, dead):
        tracker.track("e", user_id="u")
        assert tracker.flush(30)
    assert dead.read() == []
    assert len(api.events) == 1


# --- secrets -------------------------------------------------------------------------


def test_secret_and_token_never_leak(
    emu: EmulatorServer,
    api: YotpoAPI,
    store: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Secret and access token appear in no log line, repr, dead letter or error,
    even when the vendor echoes them."""
    caplog.set_level(logging.DEBUG, logger="trackware")
    emu.fault("yotpo.token", status=500, body={"echo": {"secret": SECRET}}, times=1)
    exporter = exporter_for(emu, store)
    with tracking(exporter) as (tracker, dead):
        tracker.track("first", user_id="u")
        assert tracker.flush(20)
        (token,) = [r.reply["access_token"] for r in emu.recorded("yotpo.token")[1:]]
        emu.fault("yotpo.event", status=400, body={"echo": {"X-Yotpo-Token": token}})
        tracker.track("second", user_id="u")
        assert tracker.flush(20)
        texts = [caplog.text, repr(tracker), repr(exporter), str(tracker.stats())]
    records = dead.read()
    assert len(records) == 1 and "***" in records[0]["response"]
    texts.append(json.dumps(records))
    bad = exporter_for(emu, store, secret=SECRET + "-wrong")
    with pytest.raises(AuthError) as info:
        bad._fetch_token(store)
    texts += [str(info.value), repr(info.value), str(info.value.body)]
    bad.close()
    for text in texts:
        assert SECRET not in text
        assert token not in text


def test_configuration_errors_do_not_show_the_secret() -> None:
    """A ConfigurationError about other arguments never includes the secret."""
    with pytest.raises(ConfigurationError) as info:
        CustomEventExporter("store", SECRET, all_events=True, base_url="ftp://x")
    assert SECRET not in str(info.value)


# --- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "fix"),
    [
        (("", SECRET), {"all_events": True}, "store_id"),
        (("store", ""), {"all_events": True}, "TRACKWARE_YOTPO_SECRET"),
        (("store", SECRET), {}, "all_events=True"),
        (("store", SECRET), {"event_names": {"a": "Order Shipped"}}, "'order_shipped'"),
        (("store", SECRET), {"event_names": {"a": "x" * 256}}, "snake_case"),
        (("store", SECRET), {"all_events": True, "source": "My App"}, "'my_app'"),
        (
            ("store", SECRET),
            {"all_events": True, "identity_preference": "sms"},
            "'email' or 'phone'",
        ),
        (
            ("store", SECRET),
            {"all_events": True, "default_country_code": "044"},
            "calling code",
        ),
        (
            ("store", SECRET),
            {"all_events": True, "nested_properties": "json"},
            "'reject' or 'flatten'",
        ),
        (("store", SECRET), {"all_events": True, "rate_limit": 0}, "rate_limit"),
        (
            ("store", SECRET),
            {"all_events": True, "base_url": "api.yotpo.com"},
            "https://",
        ),
        (("store", SECRET), {"all_events": True, "verify": False}, "verify=False"),
        (
            ("store", SECRET),
            {"all_events": True, "field_map": {"path": "/x"}},
            "YotpoFieldMap",
        ),
    ],
)
def test_configuration_errors_name_the_fix(
    args: tuple[str, str], kwargs: dict[str, t.Any], fix: str
) -> None:
    """Bad configuration raises ConfigurationError at construction, naming the fix."""
    with pytest.raises(ConfigurationError, match=None) as info:
        CustomEventExporter(*args, **kwargs)
    assert fix in str(info.value)


@pytest.mark.parametrize(
    ("changes", "fix"),
    [
        ({"path": "core/v3/events"}, "start with '/'"),
        ({"path": "/core/v3/events"}, "{store_id}"),
        ({"method": "GET"}, "method"),
        ({"event_name": "source"}, "distinct"),
        ({"email": ""}, "non-empty"),
        ({"envelope": ""}, "envelope"),
    ],
)
def test_field_map_is_validated(changes: dict[str, t.Any], fix: str) -> None:
    """An inconsistent field map is a ConfigurationError."""
    with pytest.raises(ConfigurationError) as info:
        DEFAULT_FIELD_MAP.replace(**changes)
    assert fix in str(info.value)
    assert isinstance(DEFAULT_FIELD_MAP, YotpoFieldMap)


def test_from_env_names_the_missing_variables() -> None:
    """from_env without credentials names both variables."""
    with pytest.raises(ConfigurationError) as info:
        CustomEventExporter.from_env({})
    assert "TRACKWARE_YOTPO_STORE_ID" in str(info.value)
    assert "TRACKWARE_YOTPO_SECRET" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        CustomEventExporter.from_env({"TRACKWARE_YOTPO_STORE_ID": "s"})
    assert "TRACKWARE_YOTPO_SECRET" in str(info.value)
    assert "STORE_ID" not in str(info.value)


def test_from_env_builds_the_exporter() -> None:
    """Every documented variable is read; overrides win."""
    exporter = CustomEventExporter.from_env(
        {
            "TRACKWARE_YOTPO_STORE_ID": "store-9",
            "TRACKWARE_YOTPO_SECRET": SECRET,
            "TRACKWARE_YOTPO_BASE_URL": "https://yotpo.example.com",
            "TRACKWARE_YOTPO_SOURCE": "shop",
            "TRACKWARE_YOTPO_EVENTS": "order.shipped=order_shipped, b=b_event",
            "TRACKWARE_YOTPO_IDENTITY_PREFERENCE": "phone",
            "TRACKWARE_YOTPO_DEFAULT_COUNTRY_CODE": "44",
            "TRACKWARE_YOTPO_NESTED_PROPERTIES": "flatten",
            "TRACKWARE_YOTPO_EVENT_PATH": "/core/v3/stores/{store_id}/events",
            "TRACKWARE_YOTPO_EVENT_METHOD": "put",
        },
        name="yotpo_env",
    )
    assert exporter.store_id == "store-9"
    assert exporter.base_url == "https://yotpo.example.com"
    assert exporter.source == "shop"
    assert exporter.event_names == {
        "order.shipped": "order_shipped",
        "b": "b_event",
    }
    assert exporter.all_events is False
    assert exporter.identity_preference == "phone"
    assert exporter.default_country_code == "44"
    assert exporter.nested_properties == "flatten"
    assert exporter.field_map.path == "/core/v3/stores/{store_id}/events"
    assert exporter.field_map.method == "PUT"
    assert exporter.name == "yotpo_env"
    assert SECRET not in repr(exporter)
    exporter.close()


def test_from_env_defaults_to_all_events_and_rejects_bad_mappings() -> None:
    """Without TRACKWARE_YOTPO_EVENTS every event goes; a malformed entry raises."""
    env = {"TRACKWARE_YOTPO_STORE_ID": "s", "TRACKWARE_YOTPO_SECRET": SECRET}
    exporter = CustomEventExporter.from_env(env)
    assert exporter.all_events is True
    assert exporter.base_url == "https://api.yotpo.com"
    exporter.close()
    with pytest.raises(ConfigurationError) as info:
        CustomEventExporter.from_env({**env, "TRACKWARE_YOTPO_EVENTS": "order.shipped"})
    assert "order.shipped=order_shipped" in str(info.value)


def test_after_fork_starts_with_fresh_limiter_and_tokens(
    emu: EmulatorServer, api: YotpoAPI, store: str
) -> None:
    """after_fork() drops the parent's client, limiter state and token; the
    exporter then works again (fetching a new token)."""
    exporter = exporter_for(emu, store)
    assert exporter.export([Event("a", user_id="u")]).sent
    # In a real child the parent's sockets are abandoned; here close them so
    # the test process does not warn about them.
    exporter.client.close()
    exporter.after_fork()
    assert exporter.export([Event("b", user_id="u")]).sent
    assert api.tokens_issued == 2
    assert len(api.events) == 2
    exporter.close()


def test_a_mapping_bug_costs_only_that_event(
    emu: EmulatorServer, store: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception while mapping one event rejects that event only."""

    class Broken(CustomEventExporter):
        def payload(self, event: Event) -> dict[str, t.Any]:
            if event.name == "boom":
                raise RuntimeError("mapping bug")
            return super().payload(event)

    exporter = Broken(store, SECRET, all_events=True, base_url=emu.url)
    good = Event("fine", user_id="u")
    boom = Event("boom", user_id="u")
    requests, result = exporter.build_requests([boom, good])
    assert [r.events for r in requests] == [[good]]
    (rejection,) = result.rejected
    assert rejection.event is boom
    assert rejection.reason == "yotpo mapping error: RuntimeError: mapping bug"
    assert "could not map event 'boom'" in caplog.text
    exporter.close()
