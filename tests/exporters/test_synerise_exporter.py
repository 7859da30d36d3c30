"""SyneriseExporter against the strict Synerise emulator, over real HTTP."""

from __future__ import annotations

import calendar
import logging
import time
import typing as t

import pytest
from _support import free_port

import trackware
from trackware import Event, MemoryDeadLetter, RetryPolicy
from trackware._auth import jwt_expiry
from trackware.exceptions import ConfigurationError
from trackware.exporters.synerise import SyneriseExporter
from trackware.testing.emulators import EmulatorServer
from trackware.testing.emulators._synerise import SyneriseAPI

API_KEY = "test-synerise-api-key"
GUID = "6f1c1e36-1d5b-4b8e-9d3a-5d2f0c9b7a11"
TRACKER_KEY = "test-tracker-key-0001"
UUID = "e0097757-d1e2-44ac-ba3c-d97979a354c1"
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_attempts=5)


def epoch(iso: str) -> float:
    return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))


@pytest.fixture
def api() -> SyneriseAPI:
    return SyneriseAPI()


@pytest.fixture
def server(api: SyneriseAPI) -> t.Iterator[EmulatorServer]:
    with EmulatorServer([api]) as s:
        yield s


@pytest.fixture
def dead() -> MemoryDeadLetter:
    return MemoryDeadLetter()


def exporter(server: EmulatorServer, **kw: t.Any) -> SyneriseExporter:
    options: dict[str, t.Any] = {"base_url": server.url, "timeout": 5.0}
    options.update(kw)
    return SyneriseExporter(API_KEY, **options)


def tracker(
    exp: SyneriseExporter, dead: MemoryDeadLetter, **kw: t.Any
) -> trackware.Tracker:
    options: dict[str, t.Any] = {"flush_interval": 10.0, "retry": FAST}
    options.update(kw)
    return trackware.Tracker([exp], dead_letter=dead, **options)


def stats(tr: trackware.Tracker) -> dict[str, t.Any]:
    return t.cast("dict[str, t.Any]", tr.stats()["destinations"]["synerise"])


# --- golden payloads: every example request of seed 002 ---------------------------

SEED_EXPORTER: dict[str, t.Any] = {
    "client_id_trait": "synerise_id",
    "labels": {"dog.bark": "bark", "client.hitTimer": "string"},
    "dedicated": {"client.hitTimer": "hit-timer"},
}
BARK = {"loudness": 3, "mood": "happy", "mailmanScared": True}
BEANS = {"sku": "p-1", "name": "Beans", "price": 1}


def test_golden_custom_event(server: EmulatorServer, dead: MemoryDeadLetter) -> None:
    """Seed "Send custom event", plus eventSalt and a millisecond time (§3.5)."""
    tr = tracker(exporter(server, batch_endpoint=False, **SEED_EXPORTER), dead)
    event = tr.track(
        "dog.bark",
        BARK,
        traits={"synerise_id": 5092159999},
        timestamp=epoch("2022-11-28T12:18:27Z"),
    )
    assert event is not None and tr.flush(10)
    (request,) = server.recorded("synerise.custom")
    assert request.status == 202
    assert request.json() == {
        "action": "dog.bark",
        "client": {"id": 5092159999},
        "time": "2022-11-28T12:18:27.000Z",
        "params": {"loudness": 3, "mood": "happy", "mailmanScared": True},
        "label": "bark",
        "eventSalt": event.event_id,
    }
    assert request.headers["Api-Version"] == "4.4"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"].startswith("Bearer ey")
    tr.shutdown()


def test_golden_batch(server: EmulatorServer) -> None:
    """Seed "Sending a batch of events": a custom and a dedicated (hit-timer) event.

    (Exported directly: the tracker would send these two-year-old events as
    soon as the first is queued, in two requests.)
    """
    exp = exporter(server, **SEED_EXPORTER)
    bark = Event(
        "dog.bark",
        BARK,
        traits={"synerise_id": 5092159999},
        timestamp=epoch("2022-11-28T12:18:27Z"),
    )
    timer = Event(
        "client.hitTimer",
        traits={"synerise_id": 267498412},
        timestamp=epoch("2022-11-26T13:13:48Z"),
    )
    assert exp.export([bark, timer]).sent == [bark, timer]
    (request,) = server.recorded("synerise.batch")
    assert request.status == 202
    assert request.json() == [
        {
            "action": "dog.bark",
            "type": "custom",
            "client": {"id": 5092159999},
            "time": "2022-11-28T12:18:27.000Z",
            "params": {"loudness": 3, "mood": "happy", "mailmanScared": True},
            "label": "bark",
            "eventSalt": bark.event_id,
        },
        {
            "type": "hit-timer",
            "time": "2022-11-26T13:13:48.000Z",
            "client": {"id": 267498412},
            "label": "string",
            "eventSalt": timer.event_id,
        },
    ]
    for header in ("Accept", "Content-Type"):
        assert request.headers[header] == "application/json"
    assert request.headers["Api-Version"] == "4.4"
    exp.close()


def test_golden_ai_single(server: EmulatorServer, dead: MemoryDeadLetter) -> None:
    """Seed AI "one event", with eventTimestamp as epoch ms (vendor-apis §3.7.1)."""
    tr = tracker(exporter(server, tracker_key=TRACKER_KEY), dead)
    tr.track(
        "recommendation.view",
        {
            "correlationId": "5b0a0fcd-e76b-425c-b9e8-7d6d7bd4a79b",
            "clientUUID": UUID,
            "items": ["89435879453"],
        },
        timestamp=epoch("2022-12-08T13:23:22Z"),
    )
    assert tr.flush(10)
    (request,) = server.recorded("synerise.ai_single")
    assert request.status == 202
    assert request.path == "/events/v1/single/recommendation.view"
    assert request.query == {"token": TRACKER_KEY}
    assert "Authorization" not in request.headers
    assert request.json() == {
        "correlationId": "5b0a0fcd-e76b-425c-b9e8-7d6d7bd4a79b",
        "clientUUID": "e0097757-d1e2-44ac-ba3c-d97979a354c1",
        "items": ["89435879453"],
        "eventTimestamp": 1670505802000,
    }
    tr.shutdown()


def test_golden_ai_batch(server: EmulatorServer) -> None:
    """Seed AI "batch of events": two views of one profile, one request."""
    exp = exporter(server, tracker_key=TRACKER_KEY)
    events = [
        Event(
            "recommendation.view",
            {"correlation_id": correlation, "items": [int(item)]},
            anonymous_id=UUID,
            timestamp=epoch(f"2022-12-08T{when}Z"),
        )
        for correlation, item, when in (
            ("5b0a0fcd-e76b-425c-b9e8-7d6d7bd4a79b", "89435879453", "13:49:00"),
            ("2232d7f8-611b-451b-a1f1-8134f73a04f0", "475677345", "13:51:00"),
        )
    ]
    assert exp.export(events).sent == events
    (request,) = server.recorded("synerise.ai_batch")
    assert request.status == 202
    assert request.query == {"token": TRACKER_KEY}
    assert request.json() == {
        "eventType": "recommendation.view",
        "items": [
            {
                "correlationId": "5b0a0fcd-e76b-425c-b9e8-7d6d7bd4a79b",
                "clientUUID": "e0097757-d1e2-44ac-ba3c-d97979a354c1",
                "items": ["89435879453"],
                "eventTimestamp": 1670507340000,
            },
            {
                "correlationId": "2232d7f8-611b-451b-a1f1-8134f73a04f0",
                "clientUUID": "e0097757-d1e2-44ac-ba3c-d97979a354c1",
                "items": ["475677345"],
                "eventTimestamp": 1670507460000,
            },
        ],
    }
    exp.close()


def test_transaction_body_from_properties(
    server: EmulatorServer, api: SyneriseAPI, dead: MemoryDeadLetter
) -> None:
    exp = exporter(
        server,
        actions={"order.placed": "transaction.charge"},
        transaction_source="WEB_DESKTOP",
    )
    tr = tracker(exp, dead)
    event = tr.track(
        "order.placed",
        {
            "order_id": 1001,
            "currency": "PLN",
            "revenue": 59.98,
            "value": 48.77,
            "payment_method": "CARD",
            "products": [
                {"sku": "sku-1", "name": "Dog bowl", "quantity": 2, "price": 29.99}
            ],
            "coupon": "WOOF",
        },
        user_id="c-42",
        timestamp=epoch("2022-11-28T12:18:27Z"),
    )
    assert event is not None and tr.flush(10)
    assert stats(tr)["sent"] == 1
    (request,) = server.recorded("synerise.transaction")
    assert request.status == 202
    assert request.headers["Api-Version"] == "4.4"
    assert request.json() == {
        "client": {"customId": "c-42"},
        "orderId": "1001",
        "recordedAt": "2022-11-28T12:18:27.000Z",
        "revenue": {"amount": 59.98, "currency": "PLN"},
        "value": {"amount": 48.77, "currency": "PLN"},
        "products": [
            {
                "sku": "sku-1",
                "name": "Dog bowl",
                "quantity": 2,
                "finalUnitPrice": {"amount": 29.99, "currency": "PLN"},
            }
        ],
        "paymentInfo": {"method": "CARD"},
        "source": "WEB_DESKTOP",
        "metadata": {"coupon": "WOOF"},
        "eventSalt": event.event_id,
    }
    assert len(api.of_kind("transaction")) == 1
    # A retry of the same transaction overwrites it.
    assert len(exp.export([event]).sent) == 1
    assert len(api.of_kind("transaction")) == 1 and api.overwrites == 1
    tr.shutdown()


def test_identity_and_params_mapping(server: EmulatorServer, api: SyneriseAPI) -> None:
    exp = exporter(server, client_id_trait="sid", label_property="label")
    event = Event(
        "page.visit",
        {"label": "Home", "path": "/"},
        user_id="c-42",
        email="a@example.com",
        anonymous_id=UUID.upper(),
        traits={"sid": "77"},
    )
    bare = Event("page.visit", anonymous_id="not-a-uuid", email="b@example.com")
    assert len(exp.export([event, bare]).sent) == 2
    first, second = server.recorded("synerise.batch")[0].json()
    assert first["client"] == {
        "id": 77,
        "customId": "c-42",
        "uuid": UUID,
        "email": "a@example.com",
    }
    assert first["label"] == "Home" and first["params"] == {"path": "/"}
    assert second["client"] == {"email": "b@example.com"}
    assert second["label"] == "page.visit" and "params" not in second
    exp.close()


def test_integration_visitor_ids_become_dashed_uuids(server: EmulatorServer) -> None:
    # The Flask/ASGI integrations' visitor ids are 32 hex digits.
    exp = exporter(server)
    hex_id = UUID.replace("-", "").upper()
    page = Event("page.visit", anonymous_id=hex_id)
    rec = Event(
        "recommendation.view",
        {"correlationId": "frame-1", "items": ["p-1"]},
        anonymous_id=hex_id,
    )
    assert len(exp.export([page, rec]).sent) == 2
    assert server.recorded("synerise.batch")[0].json()[0]["client"] == {"uuid": UUID}
    assert server.recorded("synerise.ai_single")[0].json()["clientUUID"] == UUID
    exp.close()


# --- routing ------------------------------------------------------------------------


def test_mixed_batch_is_routed_per_event(
    server: EmulatorServer, api: SyneriseAPI, dead: MemoryDeadLetter
) -> None:
    tr = tracker(exporter(server), dead)
    reco = {"correlationId": "c-1", "items": ["1"]}
    tr.track("page.visit", {"path": "/"}, user_id="c-1")
    tr.track("recommendation.view", reco, anonymous_id=UUID)
    tr.track("recommendation.view", reco, anonymous_id=UUID)
    tr.track("recommendation.click", reco, anonymous_id=UUID)
    tx = {"order_id": "o", "revenue": 1, "currency": "EUR", "products": [BEANS]}
    tr.track("transaction.charge", tx, user_id="c-1")
    tr.track("transaction.charge", tx, user_id="c-2")
    assert tr.flush(10)
    assert stats(tr)["sent"] == 6
    routes = sorted(r.route or "" for r in server.recorded() if r.status == 202)
    assert routes == [
        "synerise.ai_batch",
        "synerise.ai_single",
        "synerise.batch",
        "synerise.transaction_batch",
    ]
    # Without a tracker key the AI calls carry the workspace JWT.
    for request in server.recorded("synerise.ai_batch"):
        assert request.headers["Authorization"].startswith("Bearer ")
        assert "token" not in request.query
    assert len(api.events) == 6
    tr.shutdown()


def test_ai_compat_route_with_prefix(server: EmulatorServer, api: SyneriseAPI) -> None:
    exp = exporter(
        server, tracker_key=TRACKER_KEY, ai_endpoint="ai-compat", ai_path_prefix="/ai"
    )
    reco = {"correlationId": "c-1", "clientUUID": UUID, "campaignId": 12}
    result = exp.export([Event("item.search.click", reco)] * 2)
    assert len(result.sent) == 2
    requests = server.recorded("synerise.ai_single")
    assert [r.path for r in requests] == [
        "/ai/v4/events/ai-compat/item.search.click"
    ] * 2
    assert requests[0].json()["campaignId"] == "12"
    assert requests[0].json()["items"] == []
    exp.close()


def test_applies_is_a_name_check(server: EmulatorServer) -> None:
    exp = exporter(server, send_unmapped=False, actions={"signup": "user.signup"})
    assert exp.applies(Event("signup"))
    assert exp.applies(Event("recommendation.click"))
    assert exp.applies(Event("transaction.charge"))
    assert not exp.applies(Event("page.visit"))
    assert exporter(server).applies(Event("page.visit"))
    only = exporter(server, events=["page.visit"])
    assert only.applies(Event("page.visit")) and not only.applies(Event("x.y"))


def test_unmapped_events_are_not_applicable(
    server: EmulatorServer, dead: MemoryDeadLetter
) -> None:
    tr = tracker(exporter(server, send_unmapped=False), dead)
    tr.track("page.visit", user_id="c-1")
    assert tr.flush(10)
    assert stats(tr)["sent"] == 0 and server.recorded() == []
    tr.shutdown()


# --- auth -----------------------------------------------------------------------------


def test_token_is_acquired_once_and_cached(
    server: EmulatorServer, api: SyneriseAPI, dead: MemoryDeadLetter
) -> None:
    exp = exporter(server)
    tr = tracker(exp, dead)
    for i in range(3):
        tr.track("page.visit", {"i": i}, user_id="c-1")
        assert tr.flush(10)
    assert api.logins == 1 and exp.logins == 1
    auth = {r.headers["Authorization"] for r in server.recorded("synerise.batch")}
    assert len(auth) == 1
    (login,) = server.recorded("synerise.login")
    assert login.headers["Api-Version"] == "4.4"
    assert login.json() == {"apiKey": API_KEY}
    assert stats(tr)["sent"] == 3
    tr.shutdown()


def test_token_is_refreshed_before_it_expires(
    server: EmulatorServer, api: SyneriseAPI, dead: MemoryDeadLetter
) -> None:
    """A JWT living less than the 60 s refresh margin is renewed for every call."""
    api.token_ttl = 30
    tr = tracker(exporter(server), dead)
    for i in range(2):
        tr.track("page.visit", {"i": i}, user_id="c-1")
        assert tr.flush(10)
    assert api.logins == 2
    assert [r.status for r in server.recorded("synerise.batch")] == [202, 202]
    tr.shutdown()


def test_token_without_exp_uses_the_fallback_ttl(
    server: EmulatorServer, api: SyneriseAPI
) -> None:
    api.token_exp_claim = False
    exp = exporter(server)
    for _ in range(2):
        assert len(exp.export([Event("page.visit", user_id="c-1")]).sent) == 1
    assert api.logins == 1
    exp.close()


@pytest.mark.parametrize("status", [401, 403])
def test_token_is_refreshed_on_401_and_403(
    server: EmulatorServer, api: SyneriseAPI, dead: MemoryDeadLetter, status: int
) -> None:
    api.expired_status = status
    tr = tracker(exporter(server), dead)
    tr.track("page.visit", user_id="c-1")
    assert tr.flush(10)
    api.expire_tokens()
    tr.track("page.visit", user_id="c-2")
    assert tr.flush(10)
    assert [r.status for r in server.recorded("synerise.batch")] == [202, status, 202]
    assert api.logins == 2
    assert stats(tr)["sent"] == 2 and not dead.records
    tr.shutdown()


def test_basic_auth_needs_no_login(server: EmulatorServer, api: SyneriseAPI) -> None:
    api.basic_auth_keys.add(API_KEY)
    exp = exporter(server, workspace_guid=GUID)
    assert len(exp.export([Event("page.visit", user_id="c-1")]).sent) == 1
    assert api.logins == 0
    assert (
        server.recorded("synerise.batch")[0]
        .headers["Authorization"]
        .startswith("Basic ")
    )
    assert "Basic" not in repr(exp) and API_KEY not in repr(exp)
    exp.close()


def test_bad_api_key_dead_letters_without_leaking(
    server: EmulatorServer,
    dead: MemoryDeadLetter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trackware")
    wrong = "wrong-key-5d9c0e1f2a3b"
    exp = SyneriseExporter(wrong, base_url=server.url)
    tr = tracker(exp, dead)
    tr.track("page.visit", user_id="c-1")
    assert tr.flush(10)
    (record,) = dead.read()
    assert record["status"] == 401
    assert "authentication refused" in record["reason"]
    assert "invalid API key" in record["reason"]
    assert server.recorded("synerise.batch") == []
    for text in (caplog.text, str(record), repr(exp), repr(tr), str(tr.stats())):
        assert wrong not in text
    tr.shutdown()


def jwt_lifetime(token: str) -> float | None:
    """The lifetime the exporter caches a workspace JWT for (before the margin)."""
    found = jwt_expiry(token)
    return None if found is None else found.lifetime()


def test_jwt_lifetime_decoding() -> None:
    assert jwt_lifetime("a.eyJleHAiOjEwMDAsImlhdCI6NDAwfQ.c") == 600  # exp-iat
    assert jwt_lifetime("no-dots") is None
    assert jwt_lifetime("a.bm90IGpzb24.c") is None  # "not json"
    assert jwt_lifetime("a.eyJpYXQiOjF9.c") is None  # no exp


# --- batching, retries, rate limits ---------------------------------------------------


def test_batch_cap(
    server: EmulatorServer, api: SyneriseAPI, dead: MemoryDeadLetter
) -> None:
    tr = tracker(exporter(server, max_batch_size=7), dead)
    for i in range(20):
        tr.track("page.visit", {"i": i}, user_id="c-1")
    assert tr.flush(10)
    sizes = [len(r.json()) for r in server.recorded("synerise.batch")]
    assert sum(sizes) == 20 and max(sizes) == 7
    assert len(api.events) == 20
    tr.shutdown()


def test_429_retry_after_and_ratelimit_reset_are_honoured(
    server: EmulatorServer,
) -> None:
    exp = exporter(server)
    event = Event("page.visit", user_id="c-1")
    server.fault("synerise.batch", status=429, headers={"Retry-After": "7"})
    result = exp.export([event])
    assert result.retry == [event] and result.retry_after == 7
    server.fault("synerise.batch", status=429, headers={"RateLimit-Reset": "3"})
    result = exp.export([event])
    assert result.retry == [event] and result.retry_after == 3
    exp.close()


def test_429_then_delivered_after_the_floor(
    server: EmulatorServer, api: SyneriseAPI, dead: MemoryDeadLetter
) -> None:
    server.fault("synerise.batch", status=429, headers={"Retry-After": "1"})
    tr = tracker(exporter(server), dead)
    tr.track("page.visit", user_id="c-1")
    assert tr.flush(15)
    first, second = server.recorded("synerise.batch")
    assert (first.status, second.status) == (429, 202)
    assert second.at - first.at >= 0.9  # the Retry-After floor was respected
    assert len(api.events) == 1 and stats(tr)["sent"] == 1
    tr.shutdown()


def test_5xx_is_retried_without_duplicates(
    server: EmulatorServer, api: SyneriseAPI, dead: MemoryDeadLetter
) -> None:
    server.fault("synerise.batch", status=503, times=2)
    tr = tracker(exporter(server), dead)
    for i in range(5):
        tr.track("page.visit", {"i": i}, user_id="c-1")
    assert tr.flush(10)
    statuses = [r.status for r in server.recorded("synerise.batch")]
    assert statuses == [503, 503, 202]
    assert len(api.events) == 5 and stats(tr)["sent"] == 5 and not dead.records
    tr.shutdown()


def test_a_retry_after_a_lost_response_overwrites_instead_of_duplicating(
    server: EmulatorServer, api: SyneriseAPI, dead: MemoryDeadLetter
) -> None:
    """The first request is stored after we gave up on it; the retry overwrites it."""
    server.fault("synerise.batch", delay=1.0)
    tr = tracker(exporter(server, timeout=0.3), dead)
    for i in range(3):
        tr.track("page.visit", {"i": i}, user_id="c-1")
    assert tr.flush(10)
    assert server.wait_for(lambda: len(server.recorded("synerise.batch")) == 2, 10)
    assert [r.status for r in server.recorded("synerise.batch")] == [202, 202]
    assert len(api.events) == 3
    assert api.overwrites == 3
    tr.shutdown()


def test_4xx_is_rejected_with_the_emulator_reason(
    server: EmulatorServer, dead: MemoryDeadLetter
) -> None:
    tr = tracker(exporter(server, strict=False), dead)
    tr.track("Dog.Bark", user_id="c-1")
    assert tr.flush(10)
    (record,) = dead.read()
    assert record["status"] == 400
    assert "dot-separated lowercase" in record["reason"]
    assert stats(tr)["rejected"] == 1
    tr.shutdown()


# --- contract violations: rejected for this vendor only -------------------------------


def test_contract_violations_are_rejected_per_event(
    server: EmulatorServer, api: SyneriseAPI, dead: MemoryDeadLetter
) -> None:
    tr = tracker(exporter(server, client_id_trait="sid"), dead)
    tr.track("page.visit", user_id="c-1")
    tr.track("page.visit", anonymous_id="visitor-7")  # no usable identifier
    tr.track("page.visit")  # nobody at all: not applicable, not a rejection
    tr.track("Page Visit", user_id="c-1")
    tr.track("page.visit", traits={"sid": "abc"})
    tr.track("recommendation.view", {"items": ["1"]}, anonymous_id=UUID)
    tr.track("recommendation.click", {"correlationId": "c"}, user_id="c-1")
    tr.track(
        "recommendation.click", {"correlationId": "c", "items": [{}]}, anonymous_id=UUID
    )
    tr.track("transaction.charge", {"revenue": 1, "currency": "EUR"}, user_id="c")
    tr.track("transaction.charge", {"order_id": "o", "revenue": 1}, user_id="c")
    tr.track(
        "transaction.charge",
        {"order_id": "o", "revenue": 1, "currency": "EUR", "products": [{"sku": "s"}]},
        user_id="c",
    )
    assert tr.flush(10)
    reasons = sorted(r["reason"] for r in dead.read())
    expected = [
        "client.id: trait 'sid' must be an integer",
        "client: at least one of id, customId, uuid, email is required",
        "action: 'Page Visit' is not dot-separated lowercase",
        "correlationId: required",
        "clientUUID: required",
        "items: must be a list of item IDs",
        "orderId: required",
        "revenue.currency: required",
        "products[0].name: required",
    ]
    assert len(reasons) == len(expected)
    for rule in expected:
        assert any(rule in r for r in reasons), rule
    assert all(r.startswith("synerise contract: ") for r in reasons)
    assert all(r["status"] is None for r in dead.read())
    assert len(api.events) == 1 and stats(tr)["sent"] == 1
    assert stats(tr)["not_applicable"] == 1
    tr.shutdown()


def test_unencodable_property_is_rejected_alone(server: EmulatorServer) -> None:
    exp = exporter(server)
    good = Event("page.visit", user_id="c-1")
    # Event() refuses NaN; an exporter must not rely on it: the unchecked tuple.
    fields = list(Event("page.visit", user_id="c-1"))
    fields[2] = {"ratio": float("nan")}
    bad = t.cast(Event, tuple.__new__(Event, tuple(fields)))
    result = exp.export([good, bad])
    assert result.sent == [good]
    (rejection,) = result.rejected
    assert "json: every event must be encodable as JSON" in rejection.reason
    exp.close()


def test_future_time_is_clamped_before_the_salt_and_kept_for_retries(
    server: EmulatorServer, api: SyneriseAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trackware")
    exp = exporter(server)
    event = Event("page.visit", user_id="c-1", timestamp=time.time() + 3600)
    first, _ = exp.build_requests([event])
    second, _ = exp.build_requests([event])
    assert first[0].content == second[0].content
    server.fault("synerise.batch", status=503)
    assert exp.export([event]).retry == [event]
    assert len(exp.export([event]).sent) == 1
    (stored,) = api.events
    assert "snr-original-time" not in stored
    assert stored["storedTime"] <= time.time() * 1000
    assert "in the future" in caplog.text
    # A retry after the clamp still overwrites (same time, same salt).
    assert len(exp.export([event]).sent) == 1
    assert len(api.events) == 1 and api.overwrites == 1
    exp.close()


# --- secrets --------------------------------------------------------------------------


def test_secrets_never_leak(
    server: EmulatorServer,
    api: SyneriseAPI,
    dead: MemoryDeadLetter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx's request lines too
    port = free_port()
    down = SyneriseExporter(
        API_KEY,
        base_url=f"http://127.0.0.1:{port}",
        tracker_key=TRACKER_KEY,
        name="synerise-down",
        timeout=1.0,
    )
    exp = exporter(server, tracker_key=TRACKER_KEY)
    tr = trackware.Tracker(
        [exp, down],
        dead_letter=dead,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.02, max_attempts=2),
        flush_interval=10.0,
    )
    server.fault("synerise.batch", status=500, body={"error": f"echo {API_KEY}"})
    tr.track("page.visit", user_id="c-1")
    tr.track("recommendation.view", {"correlationId": "c", "clientUUID": UUID})
    assert tr.flush(15)
    api.expire_tokens()
    tr.track("page.visit", user_id="c-2")
    tr.track("Bad Name", user_id="c-2")
    assert tr.flush(15)
    assert dead.records  # the unreachable destination gave up, one was invalid
    tokens = list(api.tokens)
    assert tokens
    texts = [
        caplog.text,
        str(dead.read()),
        repr(exp),
        repr(down),
        repr(tr),
        str(tr.stats()),
    ]
    for text in texts:
        for secret in [API_KEY, TRACKER_KEY, *tokens]:
            assert secret not in text
    tr.shutdown()


# --- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"api_key": ""}, "TRACKWARE_SYNERISE_API_KEY"),
        ({"ai_endpoint": "v2"}, "ai_endpoint must be one of"),
        ({"ai_path_prefix": "ai"}, "like '/ai'"),
        ({"dedicated": {"x": "Hit_Timer"}}, "kebab-case"),
        ({"dedicated": {"x": "custom"}}, "actions="),
        ({"actions": {"x": "Dog.Bark"}}, "strict=False"),
        ({"labels": {"x": ""}}, "non-empty"),
        ({"base_url": "api.synerise.com"}, "https://"),
        ({"verify": False}, "CA bundle"),
        ({"tracker_key": ""}, "tracker_key"),
        ({"token_ttl": 0}, "token_ttl"),
    ],
)
def test_configuration_errors_name_the_fix(kwargs: dict[str, t.Any], fix: str) -> None:
    options: dict[str, t.Any] = {"api_key": "cfg-key-9f8e7d6c"}
    options.update(kwargs)
    with pytest.raises(ConfigurationError) as info:
        SyneriseExporter(**options)
    assert fix in str(info.value)
    assert "cfg-key-9f8e7d6c" not in str(info.value)


def test_from_env() -> None:
    with pytest.raises(ConfigurationError, match="TRACKWARE_SYNERISE_API_KEY"):
        SyneriseExporter.from_env({})
    exp = SyneriseExporter.from_env(
        {
            "TRACKWARE_SYNERISE_API_KEY": "env-key-1234",
            "TRACKWARE_SYNERISE_BASE_URL": "https://api.azu.synerise.com",
            "TRACKWARE_SYNERISE_TRACKER_KEY": "env-tracker-5678",
            "TRACKWARE_SYNERISE_CLIENT_ID_TRAIT": "sid",
            "TRACKWARE_SYNERISE_AI_ENDPOINT": "ai-compat",
            "TRACKWARE_SYNERISE_MAX_BATCH_SIZE": "50",
        },
        name="syn-eu",
    )
    assert exp.base_url == "https://api.azu.synerise.com"
    assert exp.client_id_trait == "sid" and exp.ai_endpoint == "ai-compat"
    assert exp.max_batch_size == 50 and exp.name == "syn-eu"
    assert "env-key-1234" not in repr(exp)
    with pytest.raises(ConfigurationError, match="MAX_BATCH_SIZE"):
        SyneriseExporter.from_env(
            {
                "TRACKWARE_SYNERISE_API_KEY": "k" * 8,
                "TRACKWARE_SYNERISE_MAX_BATCH_SIZE": "x",
            }
        )
    assert SyneriseExporter.from_env({}, api_key="override-key").base_url == (
        "https://api.synerise.com"
    )


def test_single_event_endpoints(server: EmulatorServer, api: SyneriseAPI) -> None:
    exp = exporter(server, batch_endpoint=False, dedicated={"timer.hit": "hit-timer"})
    events = [Event("timer.hit", user_id="c-1"), Event("page.visit", user_id="c-1")]
    assert exp.export(events).sent == events
    paths = [r.path for r in server.recorded() if r.route != "synerise.login"]
    assert paths == ["/v4/events/hit-timer", "/v4/events/custom"]
    assert [e["type"] for e in api.events] == ["hit-timer", "custom"]
    exp.close()


def test_ai_and_transaction_batches_respect_the_cap(
    server: EmulatorServer, api: SyneriseAPI
) -> None:
    exp = exporter(server, tracker_key=TRACKER_KEY, max_batch_size=2)
    reco = {"correlationId": "c-1", "clientUUID": UUID, "items": ["1"]}
    tx = {"order_id": "o", "revenue": 1, "currency": "EUR", "products": [BEANS]}
    events = [Event("recommendation.view", reco) for _ in range(5)]
    events += [Event("transaction.charge", tx, user_id="c") for _ in range(3)]
    assert len(exp.export(events).sent) == 8
    ai = [len(r.json()["items"]) for r in server.recorded("synerise.ai_batch")]
    assert ai == [2, 2] and len(server.recorded("synerise.ai_single")) == 1
    txs = [len(r.json()) for r in server.recorded("synerise.transaction_batch")]
    assert txs == [2] and len(server.recorded("synerise.transaction")) == 1
    assert len(api.events) == 8
    exp.close()
