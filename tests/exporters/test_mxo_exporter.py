"""MXO exporters against the MXO emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import time
import typing as t

import pytest

import trackware
from trackware import ConfigurationError, MemoryDeadLetter, RetryPolicy
from trackware.exporters.mxo import (
    InteractionExporter,
    InteractionResult,
    LightweightExporter,
)
from trackware.testing.emulators import EmulatorServer, HTTPError, Reply, Request
from trackware.testing.emulators._mxo import MXOAPI

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_attempts=5)
CLIENT_ID = "mxo-client-id"
SECRET = "mxo-s3cret-7f9e2d1c0b"
SK = "ONE-NX8P2RSAAU-1813"
LW_SK = "ONE-5BTO1FBU1O-1109"
TID = "dedc2983-4666-4641-8047-61250a878f89"
TOUCHPOINT = "api://my.touchpoint/customer/interaction"
RT = "/one/oauth2/rt/api/2.0/interaction"
BATCH = "/one/oauth2/rt/api/2.0/interactions/offline"
MAY_1 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def api() -> MXOAPI:
    return MXOAPI(client_id=CLIENT_ID, client_secret=SECRET)


@pytest.fixture
def emu(api: MXOAPI) -> t.Iterator[EmulatorServer]:
    with EmulatorServer([api]) as server:
        yield server


@pytest.fixture
def dead() -> MemoryDeadLetter:
    return MemoryDeadLetter()


def interaction(url: str, **kw: t.Any) -> InteractionExporter:
    options: dict[str, t.Any] = {
        "base_url": url,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "site_key": SK,
        "default_touchpoint": "api://shop",
        "timeout": 5.0,
    }
    options.update(kw)
    return InteractionExporter(**options)


def lightweight(url: str, **kw: t.Any) -> LightweightExporter:
    options: dict[str, t.Any] = {
        "base_url": url,
        "site_key": LW_SK,
        "default_touchpoint": "api://shop",
        "timeout": 5.0,
    }
    options.update(kw)
    return LightweightExporter(**options)


def tracker(exporter: t.Any, dead: MemoryDeadLetter, **kw: t.Any) -> trackware.Tracker:
    options: dict[str, t.Any] = {"flush_interval": 0.01, "retry": FAST}
    options.update(kw)
    return trackware.Tracker([exporter], dead_letter=dead, **options)


def bodies(emu: EmulatorServer, route: str) -> list[t.Any]:
    return [r.json() for r in emu.recorded(route) if r.status == 200]


def statuses(emu: EmulatorServer, route: str) -> list[int]:
    return [r.status for r in emu.recorded(route)]


# --- golden payloads: seed 001 (Interaction API) --------------------------------------


def test_seed_001_token_request_is_reproduced(emu: EmulatorServer, api: MXOAPI) -> None:
    """The seed's Basic header (its real place: the token call) is sent exactly."""
    api.client_id = "2e8fec0e-34fb-4851-800e-9989331e55d2"
    api.client_secret = "d7f4484f-9817-4778-9161-6eb06d1f6cf7"
    exp = interaction(emu.url, client_id=api.client_id, client_secret=api.client_secret)
    result = exp.interact(TOUCHPOINT)
    assert result.ok, result.error
    (token_call,) = emu.recorded("mxo.token")
    # The seed prints this value wrapped over two lines ("...NWQ yOmQ..."); the
    # space is a rendering artefact, not part of the credential.
    assert token_call.headers["Authorization"] == (
        "Basic MmU4ZmVjMGUtMzRmYi00ODUxLTgwMGUtOTk4OTMzMWU1NWQyOmQ3ZjQ0ODRm"
        "LTk4MTctNDc3OC05MTYxLTZlYjA2ZDFmNmNmNw=="
    )
    assert token_call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert token_call.body == b"grant_type=client_credentials"
    assert token_call.method == "POST" and token_call.path == "/one/oauth2token"
    exp.close()


def test_seed_001_example_via_interact(emu: EmulatorServer, api: MXOAPI) -> None:
    """POST /interaction?sk=ONE-NX8P2RSAAU-1813 for my-customer-id, then with tid."""
    api.tid_factory = lambda: TID
    exp = interaction(emu.url)
    first = exp.interact(TOUCHPOINT, customer_key="my-customer-id", visitor_id="v1")
    assert first.ok and first.tid == TID and first.status == 200
    assert first.optimizations and first.optimizations[0]["directives"] == "REPLACE"
    assert json.loads(first.decoded()[0] or "")["offer"] == "demo-offer"
    second = exp.interact(TOUCHPOINT, customer_key="my-customer-id", visitor_id="v1")
    assert second.tid == TID
    calls = emu.recorded("mxo.interaction")
    assert [c.status for c in calls] == [200, 200]
    for call in calls:
        assert call.method == "POST"
        assert call.path == RT  # no trailing slash, as in the example
        assert call.headers["Authorization"].startswith("Bearer ")
        assert call.headers["Content-Type"] == "application/json"
        assert call.headers["dataMimeType"] == "application/json"
        assert call.json() == {"uri": TOUCHPOINT, "customerKey": "my-customer-id"}
    assert calls[0].query == {"sk": SK}
    assert calls[1].query == {"sk": SK, "tid": TID}
    assert calls[0].reply["tid"] == TID and calls[0].reply["statusCode"] == 200
    assert not api.unknown_tids
    exp.close()


def test_seed_001_example_from_tracked_events(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """The same request, built from trackware events routed in real time."""
    api.tid_factory = lambda: TID
    exp = interaction(
        emu.url,
        touchpoints={"customer.interaction": TOUCHPOINT},
        default_touchpoint=None,
        realtime_events={"customer.interaction"},
    )
    tr = tracker(exp, dead)
    tr.track("customer.interaction", user_id="my-customer-id", anonymous_id="v1")
    assert tr.flush(10)
    tr.track("customer.interaction", user_id="my-customer-id", anonymous_id="v1")
    assert tr.flush(10)
    calls = emu.recorded("mxo.interaction")
    assert [(c.method, c.path, c.query) for c in calls] == [
        ("POST", RT, {"sk": SK}),
        ("POST", RT, {"sk": SK, "tid": TID}),
    ]
    for call in calls:
        assert call.json() == {"uri": TOUCHPOINT, "customerKey": "my-customer-id"}
        assert call.headers["dataMimeType"] == "application/json"
    assert exp.tid_for("v1") == TID
    assert not dead.records
    tr.shutdown()


def test_offline_batch_payload(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """Historic events go as a JSON array with millisecond UTC timestamps."""
    exp = interaction(
        emu.url,
        touchpoints={"offer.activated": "api://bank/offers/activate"},
        default_touchpoint=None,
        customer_key_name="email",
        customer_key="email",
    )
    tr = tracker(exp, dead)
    tr.track(
        "offer.activated",
        {"offer_id": "o-1", "amount": 12.5, "first": True, "tags": ["a", "b"]},
        email="ann@example.com",
        timestamp=MAY_1,
    )
    tr.track("not.mapped", {"x": 1}, email="ann@example.com")
    assert tr.flush(10)
    (call,) = emu.recorded("mxo.offline_batch")
    assert call.method == "PUT" and call.query == {"sk": SK}
    assert call.headers["dataMimeType"] == "application/json"
    assert call.json() == [
        {
            "uri": "api://bank/offers/activate",
            "customerKey": "ann@example.com",
            "customerKeyName": "email",
            "properties": [
                {"name": "offer_id", "value": "o-1"},
                {"name": "amount", "value": "12.5"},
                {"name": "first", "value": "true"},
                {"name": "tags", "value": '["a","b"]'},
            ],
            "timestamp": "2024-05-01T12:00:00.000Z",
        }
    ]
    assert api.events[0]["endpoint"] == "mxo.offline_batch"
    stats = tr.stats()["destinations"]["mxo"]
    assert stats["sent"] == 1 and stats["enqueued"] == 1
    tr.shutdown()


def test_profile_events_use_put_interaction(
    emu: EmulatorServer, dead: MemoryDeadLetter
) -> None:
    """Profile updates go through PUT /interaction, one per event, no timestamp."""
    exp = interaction(emu.url)
    tr = tracker(exp, dead)
    tr.track("profile.updated", {"tier": "gold"}, user_id="c-1", anonymous_id="v1")
    assert tr.flush(10)
    (call,) = emu.recorded("mxo.interaction")
    assert call.method == "PUT"
    assert call.json() == {
        "uri": "api://shop/profile.updated",
        "customerKey": "c-1",
        "properties": [{"name": "tier", "value": "gold"}],
    }
    assert call.reply["optimizations"] == []
    tr.shutdown()


def test_timestamp_field_is_configurable() -> None:
    """The offline timestamp's field name is configuration."""
    exp = interaction("https://mxo.example", timestamp_field="occurredAt")
    event = trackware.Event("page", user_id="c", timestamp=MAY_1)
    (request,), result = exp.build_requests([event])
    assert not result.rejected
    assert json.loads(request.content or b"")[0]["occurredAt"] == (
        "2024-05-01T12:00:00.000Z"
    )


# --- golden payloads: seed 003 (Lightweight API) --------------------------------------


def test_seed_003_example(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """POST /one/rt/track/ONE-5BTO1FBU1O-1109/events, then ...?tid=dedc2983-..."""
    api.tid_factory = lambda: TID
    exp = lightweight(emu.url, touchpoints={"promo.signup": "api://callcentre/promo"})
    tr = tracker(exp, dead)
    tr.track("promo.signup", {"promo": "spring"}, user_id="c-42", anonymous_id="v1")
    assert tr.flush(10)
    tr.track("promo.signup", {"promo": "spring"}, user_id="c-42", anonymous_id="v1")
    assert tr.flush(10)
    calls = emu.recorded("mxo.lightweight")
    assert [(c.method, c.path, c.query) for c in calls] == [
        ("POST", "/one/rt/track/ONE-5BTO1FBU1O-1109/events", {}),
        ("POST", "/one/rt/track/ONE-5BTO1FBU1O-1109/events", {"tid": TID}),
    ]
    for call in calls:
        assert call.headers["Content-Type"] == "application/json; charset=utf-8"
        assert "Authorization" not in call.headers
        assert call.json() == {
            "uri": "api://callcentre/promo",
            "properties": [{"name": "promo", "value": "spring"}],
            "ck": "c-42",
        }
        assert call.reply == {"statusCode": 200, "tid": TID}
    assert exp.tid_for("v1") == TID
    tr.shutdown()


def test_lightweight_flat_properties_and_query_parameters(
    emu: EmulatorServer, dead: MemoryDeadLetter
) -> None:
    """properties_format='object' sends an object; query_properties go to the URL."""
    exp = lightweight(
        emu.url, properties_format="object", query_properties={"campaign"}
    )
    tr = tracker(exp, dead)
    tr.track("beacon", {"campaign": "c-7", "branch": 12, "vip": False, "note": None})
    assert tr.flush(10)
    (call,) = emu.recorded("mxo.lightweight")
    assert call.query == {"campaign": "c-7"}
    assert call.json() == {
        "uri": "api://shop/beacon",
        "properties": {"branch": 12, "vip": False},
    }
    tr.shutdown()


def test_lightweight_sends_no_credentials_and_never_customer_key(
    emu: EmulatorServer, dead: MemoryDeadLetter
) -> None:
    """ck carries the customer key; no Authorization header, no customerKey."""
    exp = lightweight(emu.url, customer_key="email")
    tr = tracker(exp, dead)
    tr.track("e", email="ann@example.com")
    assert tr.flush(10)
    (call,) = emu.recorded("mxo.lightweight")
    assert "Authorization" not in call.headers
    assert call.json() == {"uri": "api://shop/e", "ck": "ann@example.com"}
    tr.shutdown()


# --- auth -----------------------------------------------------------------------------


def test_token_is_cached_across_batches(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """Without expires_in the token is reused until MXO refuses it."""
    tr = tracker(interaction(emu.url), dead)
    for i in range(3):
        tr.track("page", {"i": i}, user_id="c")
        assert tr.flush(10)
    assert api.token_requests == 1
    assert len(emu.recorded("mxo.offline_batch")) == 3
    tr.shutdown()


def test_token_refreshed_on_expiry_when_expires_in_is_given(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """expires_in is honoured: an expired token is replaced before any 401."""
    api.report_expires_in = True
    api.token_ttl = 0.4
    tr = tracker(interaction(emu.url), dead)
    tr.track("page", user_id="c")
    assert tr.flush(10)
    (first,) = api.tokens.values()
    # Wait for the condition itself: the emulator's token has expired.
    assert emu.wait_for(lambda: time.monotonic() >= first, timeout=10)
    tr.track("page", user_id="c")
    assert tr.flush(10)
    assert api.token_requests == 2
    assert statuses(emu, "mxo.offline_batch") == [200, 200]
    tr.shutdown()


def test_token_refreshed_once_on_401(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """A 401 fetches a new token and resends the call once."""
    tr = tracker(interaction(emu.url), dead)
    tr.track("page", user_id="c")
    assert tr.flush(10)
    api.revoke_tokens()
    tr.track("page", user_id="c")
    assert tr.flush(10)
    assert statuses(emu, "mxo.offline_batch") == [200, 401, 200]
    assert api.token_requests == 2
    assert len(api.events) == 2 and not dead.records
    tr.shutdown()


def test_bad_credentials_are_rejected_not_retried(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """A 401 from the token endpoint dead-letters the events with the reason."""
    api.client_secret = "another-secret"
    tr = tracker(interaction(emu.url), dead)
    tr.track("page", user_id="c")
    assert tr.flush(10)
    (record,) = dead.records
    assert "authentication refused" in record.reason
    assert record.status == 401 and "invalid_client" in (record.response or "")
    assert len(emu.recorded("mxo.token")) == 1
    assert not emu.recorded("mxo.offline_batch")
    tr.shutdown()


def test_token_endpoint_5xx_is_retried(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """A 503 from the token endpoint is a retryable failure."""
    emu.fault("mxo.token", status=503, times=2)
    tr = tracker(interaction(emu.url), dead)
    tr.track("page", user_id="c")
    assert tr.flush(10)
    assert statuses(emu, "mxo.token") == [503, 503, 200]
    assert len(api.events) == 1 and not dead.records
    tr.shutdown()


# --- batching and grouping ------------------------------------------------------------


@pytest.mark.parametrize("cap", [100, 40])
def test_offline_batches_never_exceed_the_cap(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter, cap: int
) -> None:
    """250 events of one visitor go in calls of at most max_batch_size (<= 100)."""
    tr = tracker(
        interaction(emu.url, max_batch_size=cap, event_id_property="event_id"),
        dead,
        flush_interval=0.2,
    )
    events = [tr.track("page", {"i": i}, anonymous_id="v1") for i in range(250)]
    assert tr.flush(20)
    sizes = [len(b) for b in bodies(emu, "mxo.offline_batch")]
    assert max(sizes) <= cap and sum(sizes) == 250
    ids = [e["interaction"]["properties"][-1]["value"] for e in api.events]
    assert sorted(ids) == sorted(e.event_id for e in events if e)
    tr.shutdown()


def test_101_events_make_two_requests(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """The documented cap: 101 offline interactions need two calls (100 + 1)."""
    tr = tracker(interaction(emu.url), dead, flush_interval=10.0)
    for i in range(101):
        tr.track("page", {"i": i}, anonymous_id="v1")
    assert tr.flush(20)
    assert sorted(len(b) for b in bodies(emu, "mxo.offline_batch")) == [1, 100]
    assert len(api.events) == 101 and not dead.records
    tr.shutdown()


def test_max_batch_size_above_100_is_a_configuration_error() -> None:
    """MXO takes at most 100 offline interactions per call."""
    with pytest.raises(ConfigurationError, match="max_batch_size must be <= 100"):
        interaction("https://mxo.example", max_batch_size=101)


def test_each_call_carries_one_visitor(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """Events are grouped per visitor so each call's tid is that visitor's."""
    tr = tracker(interaction(emu.url), dead, flush_interval=0.2)
    for i in range(3):
        for visitor in ("v1", "v2"):
            tr.track("page", {"i": i}, anonymous_id=visitor)
    tr.track("job.done")  # no identity at all: its own call
    tr.track("job.done")
    assert tr.flush(10)
    calls = emu.recorded("mxo.offline_batch")
    assert sorted(len(c.json()) for c in calls) == [1, 1, 3, 3]
    exp = t.cast(InteractionExporter, tr.destinations[0].exporter)
    v1, v2 = exp.tid_for("v1"), exp.tid_for("v2")
    assert v1 is not None and v2 is not None and v1 != v2
    assert len({e["tid"] for e in api.events}) == 4
    tr.shutdown()


def test_tid_from_context_and_remembered_tid(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """context['mxo_tid'] wins; otherwise the remembered tid is sent; junk ignored."""
    exp = interaction(emu.url)
    tr = tracker(exp, dead)
    tr.track("page", anonymous_id="v1")
    assert tr.flush(10)
    remembered = exp.tid_for("v1")
    assert remembered
    tr.track("page", anonymous_id="v1")
    assert tr.flush(10)
    with trackware.request_scope(anonymous_id="v2", context={"mxo_tid": TID}):
        tr.track("page")
    assert tr.flush(10)
    with trackware.request_scope(anonymous_id="v3", context={"mxo_tid": "junk!"}):
        tr.track("page")
    assert tr.flush(10)
    queries = [c.query.get("tid") for c in emu.recorded("mxo.offline_batch")]
    assert queries == [None, remembered, TID, None]
    assert exp.tid_for("v2") == TID
    assert not dead.records
    tr.shutdown()


def test_tid_map_is_bounded() -> None:
    """Only max_visitors tids are kept; the least recently seen go first."""
    exp = lightweight("https://mxo.example", max_visitors=2)
    tids = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(3)]
    exp.remember_tid("a", tids[0])
    exp.remember_tid("b", tids[1])
    exp.remember_tid("a", tids[0])
    exp.remember_tid("c", tids[2])
    assert exp.tid_for("b") is None
    assert exp.tid_for("a") == tids[0] and exp.tid_for("c") == tids[2]
    exp.remember_tid("d", "not-a-tid")
    assert exp.tid_for("d") is None


# --- failures, retries, duplicates ----------------------------------------------------


def test_429_retry_after_is_honoured(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """A 429 with Retry-After: 1 is retried no sooner than asked."""
    emu.fault("mxo.offline_batch", status=429, headers={"Retry-After": "1"})
    tr = tracker(interaction(emu.url), dead)
    tr.track("page", user_id="c")
    assert tr.flush(10)
    calls = emu.recorded("mxo.offline_batch")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.95
    assert len(api.events) == 1
    tr.shutdown()


def test_ratelimit_reset_is_reported_as_the_wait(emu: EmulatorServer) -> None:
    """RateLimit-Reset (seconds) becomes the retry floor of the outcome."""
    emu.fault("mxo.lightweight", status=429, headers={"RateLimit-Reset": "7"})
    exp = lightweight(emu.url)
    result = exp.export([trackware.Event("e", user_id="c")])
    assert len(result.retry) == 1 and result.retry_after == 7.0
    exp.close()


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_without_duplicates(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter, status: int
) -> None:
    """5xx answers are retried; the emulator ends with each event exactly once."""
    emu.fault("mxo.offline_batch", status=status, times=2)
    # One batch of ten (flush() sends it): a short flush interval on a busy
    # machine could split it, and the retry count with it.
    tr = tracker(interaction(emu.url, event_id_property="eid"), dead, flush_interval=60)
    events = [tr.track("page", {"i": i}, user_id="c") for i in range(10)]
    assert tr.flush(10)
    ids = [e["interaction"]["properties"][-1]["value"] for e in api.events]
    assert sorted(ids) == sorted(e.event_id for e in events if e)
    dest = tr.stats()["destinations"]["mxo"]
    assert dest["sent"] == 10 and dest["retried"] == 20 and not dead.records
    tr.shutdown()


class FlakyMXO(MXOAPI):
    """Answers 503 to the second offline-batch call it receives (once)."""

    def __init__(self) -> None:
        super().__init__(client_id=CLIENT_ID, client_secret=SECRET)
        self.batch_calls = 0

    def _offline_batch(self, request: Request) -> Reply:
        self.batch_calls += 1
        if self.batch_calls == 2:
            raise HTTPError(503, {"statusCode": 503, "error": "unavailable"})
        return super()._offline_batch(request)


def test_an_accepted_call_is_never_resent(caplog: pytest.LogCaptureFixture) -> None:
    """When a later call of an export fails, only the unaccepted events come back."""
    caplog.set_level(logging.WARNING, logger="trackware")
    flaky = FlakyMXO()
    with EmulatorServer([flaky]) as emu:
        exp = interaction(emu.url, event_id_property="eid")
        events = [
            trackware.Event("page", {"i": i}, anonymous_id=f"v{i % 3}")
            for i in range(9)
        ]
        first = exp.export(events)
        # Call 1 (visitor v0) accepted; call 2 failed; call 3 not attempted.
        assert len(first.sent) == 3 and len(first.retry) == 6
        assert {e.anonymous_id for e in first.sent} == {"v0"}
        second = exp.export(first.retry)
        assert len(second.sent) == 6
        ids = [e["interaction"]["properties"][-1]["value"] for e in flaky.events]
        assert sorted(ids) == sorted(e.event_id for e in events)
        assert "no deduplication key" in caplog.text
        exp.close()


def test_mxo_rejection_reason_reaches_the_dead_letter(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """A 4xx is not retried; the emulator's reason is in the dead letter."""
    exp = interaction(emu.url, site_key="mysite")
    tr = tracker(exp, dead)
    tr.track("page", user_id="c")
    assert tr.flush(10)
    (record,) = dead.records
    assert record.status == 400
    assert "site key does not look like" in record.reason
    assert len(emu.recorded("mxo.offline_batch")) == 1
    tr.shutdown()


@pytest.mark.parametrize(
    ("code", "outcome"), [(500, "retry"), (400, "rejected"), (None, "rejected")]
)
def test_status_code_in_body_must_be_2xx(
    emu: EmulatorServer, code: int | None, outcome: str
) -> None:
    """HTTP 200 with a non-2xx (or no) statusCode in the body is not success."""
    body = {"tid": TID} if code is None else {"statusCode": code, "tid": TID}
    emu.fault("mxo.lightweight", status=200, body=body)
    exp = lightweight(emu.url)
    result = exp.export([trackware.Event("e", user_id="c")])
    assert len(getattr(result, outcome)) == 1
    if outcome == "rejected":
        assert "statusCode" in result.rejected[0].reason
    exp.close()


# --- contract violations and mapping --------------------------------------------------


def test_contract_violations_are_rejected_for_this_event_only(
    emu: EmulatorServer, api: MXOAPI, dead: MemoryDeadLetter
) -> None:
    """A bad event is rejected with the rule; the rest of the batch is delivered."""

    def touchpoint(event: trackware.Event) -> str | None:
        if event.name == "skip":
            return None
        return "" if event.name == "bad.uri" else f"api://shop/{event.name}"

    def key(event: trackware.Event) -> str | None:
        if event.name == "bad.key":
            raise KeyError("no customer")
        return event.user_id

    exp = interaction(emu.url, touchpoints=touchpoint, customer_key=key)
    tr = tracker(exp, dead, flush_interval=0.2)
    tr.track("good", {"a": 1}, user_id="c")
    tr.track("bad.props", {"": "empty name"}, user_id="c")
    tr.track("bad.uri", user_id="c")
    tr.track("bad.key", user_id="c")
    tr.track("skip", user_id="c")
    tr.track("good", {"a": 2}, user_id="c")
    assert tr.flush(10)
    reasons = {r.event.name: r.reason for r in dead.records}
    assert set(reasons) == {"bad.props", "bad.uri", "bad.key"}
    assert reasons["bad.props"].startswith("properties:")
    assert reasons["bad.uri"].startswith("uri:")
    assert "mapping error: KeyError" in reasons["bad.key"]
    assert all(r.status is None for r in dead.records)
    assert [e["interaction"]["uri"] for e in api.events] == ["api://shop/good"] * 2
    dest = tr.stats()["destinations"]["mxo"]
    assert dest["sent"] == 2 and dest["rejected"] == 3 and dest["not_applicable"] == 1
    tr.shutdown()


def test_unencodable_value_is_rejected_for_this_vendor(
    emu: EmulatorServer, dead: MemoryDeadLetter
) -> None:
    """A value JSON cannot carry (NaN) rejects that event, naming the rule."""

    def props(event: trackware.Event) -> dict[str, t.Any]:
        return {"x": math.nan if event.name == "bad" else 1.0}

    exp = lightweight(emu.url, properties_format="object", properties_from=props)
    tr = tracker(exp, dead)
    tr.track("bad", user_id="c")
    tr.track("good", user_id="c")
    assert tr.flush(10)
    (record,) = dead.records
    assert record.event.name == "bad"
    assert record.reason.startswith("json: every event must be encodable as JSON")
    assert [c.json()["uri"] for c in emu.recorded("mxo.lightweight")] == [
        "api://shop/good"
    ]
    tr.shutdown()


def test_unmapped_events_do_not_apply(
    emu: EmulatorServer, dead: MemoryDeadLetter
) -> None:
    """Only mapped names apply (checked cheaply on the app thread)."""
    exp = interaction(emu.url, touchpoints={"a": "api://x/a"}, default_touchpoint=None)
    assert exp.applies(trackware.Event("a"))
    assert not exp.applies(trackware.Event("b"))
    only = interaction(emu.url, events=["a"])
    assert not only.applies(trackware.Event("b"))


# --- interact() -----------------------------------------------------------------------


def test_interact_uses_the_current_scope(emu: EmulatorServer, api: MXOAPI) -> None:
    """The scope's visitor and user are used; the tid is remembered and bound."""
    exp = interaction(emu.url)
    with trackware.request_scope(anonymous_id="v9", user_id="c-9") as scope:
        result = exp.interact("api://shop/home", properties={"page": "home", "n": 3})
        assert result.ok and result.tid
        assert scope.context["mxo_tid"] == result.tid
        again = exp.interact("api://shop/home")
    assert exp.tid_for("v9") == result.tid
    calls = emu.recorded("mxo.interaction")
    assert calls[0].json() == {
        "uri": "api://shop/home",
        "customerKey": "c-9",
        "properties": [
            {"name": "page", "value": "home"},
            {"name": "n", "value": "3"},
        ],
    }
    assert calls[1].query["tid"] == result.tid == again.tid
    exp.close()


def test_interact_reads_the_scope_the_front_layer_installs(
    emu: EmulatorServer, api: MXOAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """interact() asks trackware._ambient for the scope (exporters do not
    import the front layer): whatever source is installed there is used, and
    the tid MXO answers is bound to that scope."""
    from trackware import _ambient

    scope = trackware.Scope(anonymous_id="v-amb", email="amb@example.com")
    monkeypatch.setattr(_ambient, "_source", lambda: scope)
    assert _ambient.installed() and _ambient.current() is scope
    exp = interaction(emu.url, customer_key="email")
    result = exp.interact("api://shop/ambient")
    assert result.ok and result.tid
    assert scope.context["mxo_tid"] == result.tid
    assert exp.tid_for("v-amb") == result.tid
    (call,) = emu.recorded("mxo.interaction")
    assert call.json()["customerKey"] == "amb@example.com"
    exp.close()


def test_interact_refreshes_the_token_once_on_401(
    emu: EmulatorServer, api: MXOAPI
) -> None:
    """interact() re-authenticates after a 401."""
    exp = interaction(emu.url)
    assert exp.interact("api://x").ok
    api.revoke_tokens()
    assert exp.interact("api://x").ok
    assert statuses(emu, "mxo.interaction") == [200, 401, 200]
    exp.close()


@pytest.mark.parametrize("case", ["down", "bad-secret", "400", "timeout", "bad-uri"])
def test_interact_never_raises(emu: EmulatorServer, api: MXOAPI, case: str) -> None:
    """Every failure gives an empty result with the error, never an exception."""
    url = emu.url
    if case == "down":
        url = "http://127.0.0.1:9"  # discard port: nothing listens
    elif case == "bad-secret":
        api.client_secret = "other"
    elif case == "400":
        emu.fault("mxo.interaction", status=400, body={"statusCode": 400})
    elif case == "timeout":
        emu.fault("mxo.interaction", delay=1.0)
    exp = interaction(url)
    result = exp.interact("" if case == "bad-uri" else "api://x", timeout=0.2)
    assert isinstance(result, InteractionResult)
    assert not result.ok and result.error and result.optimizations == []
    if case == "timeout":
        assert "timeout" in result.error
    exp.close()
    assert exp.interact("api://x").error == "the exporter is closed"


# --- secrets --------------------------------------------------------------------------


def test_secrets_never_leak(
    emu: EmulatorServer,
    api: MXOAPI,
    dead: MemoryDeadLetter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Client secret and access token stay out of logs, reprs and dead letters."""
    caplog.set_level(logging.DEBUG, logger="trackware")
    exp = interaction(emu.url)
    tr = tracker(exp, dead)
    tr.track("page", user_id="c")
    assert tr.flush(10)
    (token,) = api.tokens
    basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    # A careless vendor echoes the credentials in its error bodies.
    emu.fault(
        "mxo.offline_batch",
        status=400,
        body={"error": f"bad token {token}", "secret": SECRET, "basic": basic},
    )
    tr.track("page", user_id="c")
    assert tr.flush(10)
    api.revoke_tokens()
    emu.fault("mxo.token", status=403, body={"echo": f"{SECRET} {basic}"})
    tr.track("page", user_id="c")
    assert tr.flush(10)
    assert len(dead.records) == 2
    texts = [
        caplog.text,
        repr(exp),
        repr(tr),
        str(tr.stats()),
        json.dumps([r.to_dict() for r in dead.records]),
    ]
    with pytest.raises(ConfigurationError) as info:
        interaction(emu.url, max_batch_size=500)
    texts.append(str(info.value))
    result = exp.interact("api://x")
    texts.append(str(result))
    for text in texts:
        assert SECRET not in text
        assert token not in text
        assert basic not in text
        assert CLIENT_ID not in text
    assert "***" in dead.records[0].to_dict()["response"]
    tr.shutdown()


# --- configuration and from_env -------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"client_secret": ""}, "client_secret is required"),
        ({"client_id": ""}, "client_id is required"),
        ({"site_key": "bad key"}, "site_key"),
        ({"default_touchpoint": None}, "touchpoints="),
        ({"touchpoints": {"a": ""}}, r"touchpoints\['a'\]"),
        ({"customer_key": "account"}, "customer_key must be one of"),
        ({"customer_key_name": ""}, "customer_key_name"),
        ({"timestamp_field": ""}, "timestamp_field"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"verify": False}, "verify=False"),
        ({"profile_events": ["a"], "realtime_events": ["a"]}, "both"),
        ({"token_ttl": 0}, "token_ttl"),
    ],
)
def test_interaction_configuration_errors(kwargs: dict[str, t.Any], match: str) -> None:
    """Misconfiguration raises ConfigurationError naming the fix."""
    with pytest.raises(ConfigurationError, match=match):
        interaction("https://mxo.example", **kwargs)


def test_lightweight_configuration_errors() -> None:
    """An unknown properties_format is refused."""
    with pytest.raises(ConfigurationError, match="properties_format"):
        lightweight("https://mxo.example", properties_format="csv")


def test_from_env_names_every_missing_variable() -> None:
    """from_env lists the missing TRACKWARE_MXO_* variables."""
    with pytest.raises(ConfigurationError) as info:
        InteractionExporter.from_env({"TRACKWARE_MXO_BASE_URL": "https://x"})
    message = str(info.value)
    for var in (
        "TRACKWARE_MXO_CLIENT_ID",
        "TRACKWARE_MXO_CLIENT_SECRET",
        "TRACKWARE_MXO_SITE_KEY",
        "TRACKWARE_MXO_TOUCHPOINT",
    ):
        assert var in message
    assert "TRACKWARE_MXO_BASE_URL" not in message
    with pytest.raises(ConfigurationError, match="TRACKWARE_MXO_SITE_KEY"):
        LightweightExporter.from_env({})


def test_from_env_needs_no_touchpoint_variable_when_touchpoints_are_given() -> None:
    """Both exporters: ``TRACKWARE_MXO_TOUCHPOINT`` is required unless
    ``touchpoints=`` maps the events."""
    env = {
        "TRACKWARE_MXO_BASE_URL": "https://mxo.example",
        "TRACKWARE_MXO_CLIENT_ID": CLIENT_ID,
        "TRACKWARE_MXO_CLIENT_SECRET": SECRET,
        "TRACKWARE_MXO_SITE_KEY": SK,
    }
    touchpoints = {"offer.viewed": "api://shop/offers"}
    for cls in (InteractionExporter, LightweightExporter):
        with pytest.raises(ConfigurationError, match="TRACKWARE_MXO_TOUCHPOINT"):
            cls.from_env(env)
        mapped = trackware.Event("offer.viewed")
        other = trackware.Event("page.viewed")
        exporter = cls.from_env(env, touchpoints=touchpoints)
        # Only the mapped events go to MXO: there is no default touchpoint.
        assert exporter.applies(mapped) and not exporter.applies(other)
        exporter.close()
        with_default = cls.from_env(
            {**env, "TRACKWARE_MXO_TOUCHPOINT": "api://shop"}, touchpoints=touchpoints
        )
        assert with_default.applies(mapped) and with_default.applies(other)
        with_default.close()


def test_from_env_builds_working_exporters(emu: EmulatorServer, api: MXOAPI) -> None:
    """Exporters built from the environment deliver (the send-test path)."""
    env = {
        "TRACKWARE_MXO_BASE_URL": emu.url,
        "TRACKWARE_MXO_CLIENT_ID": CLIENT_ID,
        "TRACKWARE_MXO_CLIENT_SECRET": SECRET,
        "TRACKWARE_MXO_SITE_KEY": SK,
        "TRACKWARE_MXO_TOUCHPOINT": "api://shop",
        "TRACKWARE_MXO_CUSTOMER_KEY_NAME": "customerkey",
    }
    exp = InteractionExporter.from_env(env, name="mxo-env")
    assert exp.name == "mxo-env"
    event = trackware.Event("trackware.test", {"source": "send-test"}, user_id="u")
    assert len(exp.export([event]).sent) == 1
    assert exp.last_response is not None and exp.last_response[0] == 200
    env["TRACKWARE_MXO_SITE_KEY"] = LW_SK
    env["TRACKWARE_MXO_PROPERTIES_FORMAT"] = "object"
    lw = LightweightExporter.from_env(env)
    assert len(lw.export([event]).sent) == 1
    assert api.events[-1]["interaction"]["properties"] == {"source": "send-test"}
    assert api.events[0]["interaction"]["customerKeyName"] == "customerkey"
    exp.close()
    lw.close()


def test_integration_tid_source_contract() -> None:
    """tid_for is a cheap (anonymous_id) -> tid | None callable for integrations."""
    exp = interaction("https://mxo.example")
    source: t.Callable[[str], str | None] = exp.tid_for
    assert source("nobody") is None
    exp.remember_tid("v1", TID)
    assert source("v1") == TID
