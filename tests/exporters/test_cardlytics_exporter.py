"""ClientEventExporter against the Cardlytics emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
import time
import typing as t
import uuid

import pytest

import trackware
from trackware import ConfigurationError, Event, MemoryDeadLetter, RetryPolicy
from trackware.exporters.cardlytics import ClientEventExporter
from trackware.testing import InMemoryExporter
from trackware.testing.emulators import EmulatorServer
from trackware.testing.emulators._cardlytics import CardlyticsAPI

CLIENT_ID = "cardlytics-test-client"
CLIENT_SECRET = "cardlytics-test-secret"
KEY = "hmac-key-5d1c0a9e7f3b"
USER = "customer-42"
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, max_attempts=5)
MAPPING = {
    "offer.viewed": "AdViewableImpression",
    "offer.activated": "ActivateOffer",
    "offer.hidden": "ParkOffer",
    "redemption.expanded": "ExpandRedemption",
    "reward_summary.clicked": "RewardSummaryLinkClicked",
    "faq.clicked": "FaqLinkClicked",
}
T0 = 1678521600.0  # 2023-03-11T08:00:00Z
AD_PROPS: dict[str, t.Any] = {
    "serveToken": "91e471aed3c04b81bee792f23ad4859d",
    "section": "LatestOffers",
    "channel": "OLB",
    "imageSlots": ["logo"],
    "categoryId": "1",
}


@pytest.fixture
def api() -> CardlyticsAPI:
    return CardlyticsAPI()


@pytest.fixture
def server(api: CardlyticsAPI) -> t.Iterator[EmulatorServer]:
    with EmulatorServer([api]) as emulator:
        yield emulator


@pytest.fixture
def dead() -> MemoryDeadLetter:
    return MemoryDeadLetter()


_OPEN: list[ClientEventExporter] = []


@pytest.fixture(autouse=True)
def _close_exporters() -> t.Iterator[None]:
    """Exporters used directly (without a Tracker) release their connections."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def make(server: EmulatorServer, **options: t.Any) -> ClientEventExporter:
    config: dict[str, t.Any] = {
        "base_url": server.url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "customer_id_key": KEY,
        "mapping": MAPPING,
        "retry": FAST,
    }
    config.update(options)
    exporter = ClientEventExporter(**config)
    _OPEN.append(exporter)
    return exporter


def tracker_for(
    *exporters: trackware.exporters.BaseExporter,
    dead: MemoryDeadLetter,
    **options: t.Any,
) -> trackware.Tracker:
    config: dict[str, t.Any] = {"flush_interval": 0.01, "retry": FAST}
    config.update(options)
    return trackware.Tracker(list(exporters), dead_letter=dead, **config)


def pseudonym(user_id: str) -> str:
    return hmac.new(KEY.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def ad_event(name: str = "offer.viewed", **props: t.Any) -> Event:
    return Event(name, {**AD_PROPS, **props}, user_id=USER, timestamp=T0)


# --- golden payloads: the seed's examples -------------------------------------------

SEED_ID = "2e08d638-04e2-4561-b56a-ca32cfff6203"
SEED_META = {
    "serveToken": "91e471aed3c04b81bee792f23ad4859d",
    "section": "LatestOffers",
    "channel": "OLB",
    "imageSlots": ["logo"],
    "categoryId": "1",
}

GOLDEN: list[tuple[str, list[Event], list[dict[str, t.Any]]]] = [
    (
        "viewable-impression",
        [
            Event(
                "offer.viewed",
                {**AD_PROPS, "displayPosition": 2},
                user_id=USER,
                timestamp=T0,
                event_id=SEED_ID,
            )
        ],
        [
            {
                "clientEventId": SEED_ID,
                "clientEventType": "AdImpression",
                "clientEvent": "AdViewableImpression",
                "clientEventTimestamp": "2023-03-11T08:00:00Z",
                "clientEventMetadata": {**SEED_META, "displayPosition": 2},
            }
        ],
    ),
    (
        "activate-offer",
        [
            Event(
                "offer.activated",
                {**AD_PROPS, "curationId": "22", "displayPosition": 2},
                user_id=USER,
                timestamp=T0,
                event_id=SEED_ID,
            )
        ],
        [
            {
                "clientEventId": SEED_ID,
                "clientEventType": "AdInteraction",
                "clientEvent": "ActivateOffer",
                "clientEventTimestamp": "2023-03-11T08:00:00Z",
                "clientEventMetadata": {
                    **SEED_META,
                    "curationId": "22",
                    "displayPosition": 2,
                },
            }
        ],
    ),
    (
        # snake_case properties, and the channel comes from default_channel.
        "park-offer",
        [
            Event(
                "offer.hidden",
                {
                    "serve_token": "91e471aed3c04b81bee792f23ad4859d",
                    "section": "LatestOffers",
                    "image_slots": ["logo"],
                    "category_id": 1,
                    "curation_id": "22",
                },
                user_id=USER,
                timestamp=T0,
                event_id=SEED_ID,
            )
        ],
        [
            {
                "clientEventId": SEED_ID,
                "clientEventType": "AdInteraction",
                "clientEvent": "ParkOffer",
                "clientEventTimestamp": "2023-03-11T08:00:00Z",
                "clientEventMetadata": {**SEED_META, "curationId": "22"},
            }
        ],
    ),
    (
        # Corrected per vendor-apis.md §1.7 (7): RewardSummaryLinkClicked is a
        # CustomerProfileAction in the reference table (the seed says SessionAction).
        "other-activity",
        [
            Event(
                "session_start",
                user_id=USER,
                timestamp=T0,
                event_id=SEED_ID,
            ),
            Event(
                "redemption.expanded",
                user_id=USER,
                timestamp=T0 + 300,
                event_id="7a26012c-8ede-4375-a956-8af1c27f5280",
            ),
            Event(
                "reward_summary.clicked",
                {"section": "Summary"},
                user_id=USER,
                timestamp=T0 + 420,
                event_id="ad664ef4-5bcb-4a54-b787-efa500e723fd",
            ),
        ],
        [
            {
                "clientEventId": SEED_ID,
                "clientEventType": "SessionAction",
                "clientEvent": "LogEnrollment",
                "clientEventTimestamp": "2023-03-11T08:00:00Z",
                "clientEventMetadata": None,
            },
            {
                "clientEventId": "7a26012c-8ede-4375-a956-8af1c27f5280",
                "clientEventType": "CustomerProfileAction",
                "clientEvent": "ExpandRedemption",
                "clientEventTimestamp": "2023-03-11T08:05:00Z",
                "clientEventMetadata": None,
            },
            {
                "clientEventId": "ad664ef4-5bcb-4a54-b787-efa500e723fd",
                "clientEventType": "CustomerProfileAction",
                "clientEvent": "RewardSummaryLinkClicked",
                "clientEventTimestamp": "2023-03-11T08:07:00Z",
                "clientEventMetadata": None,
            },
        ],
    ),
]


@pytest.mark.parametrize(
    ("events", "expected"), [g[1:] for g in GOLDEN], ids=[g[0] for g in GOLDEN]
)
def test_seed_examples_are_reproduced_exactly(
    server: EmulatorServer,
    api: CardlyticsAPI,
    events: list[Event],
    expected: list[dict[str, t.Any]],
) -> None:
    exporter = make(server)
    result = exporter.export(events)
    assert result.sent == events and not result.rejected and not result.retry
    (request,) = server.recorded("cardlytics.clientEvent")
    body = request.json()
    assert body == {"clientEvents": expected}
    # Same key order as the seed, too.
    for sent, seed in zip(body["clientEvents"], expected, strict=True):
        assert list(sent) == list(seed)
        if seed["clientEventMetadata"] is not None:
            assert list(sent["clientEventMetadata"]) == list(
                seed["clientEventMetadata"]
            )
    headers = {k.lower(): v for k, v in request.headers.items()}
    token = api.sessions[0]["token"]
    assert headers["authorization"] == f"Bearer {token}"
    assert headers["x-source-customer-id"] == pseudonym(USER)
    assert headers["content-type"] == "application/json"
    assert uuid.UUID(headers["x-cdlx-request-id"])
    assert request.status == 200
    assert request.reply == {"requestId": headers["x-cdlx-request-id"]}
    assert api.events == expected
    exporter.close()


def test_seed_events_end_to_end_through_a_tracker(
    server: EmulatorServer, api: CardlyticsAPI, dead: MemoryDeadLetter
) -> None:
    """The seed's events through a real Tracker (fresh ids: the seed reuses one
    clientEventId in several examples) are all accepted as golden payloads."""
    tracker = tracker_for(make(server), dead=dead)
    expected: dict[str, dict[str, t.Any]] = {}
    for _, events, messages in GOLDEN:
        for event, message in zip(events, messages, strict=True):
            tracked = tracker.track(
                event.name,
                event.properties,
                user_id=event.user_id,
                timestamp=event.unix_time,
            )
            assert tracked is not None
            expected[tracked.event_id] = {**message, "clientEventId": tracked.event_id}
    assert tracker.flush(10)
    dest = tracker.stats()["destinations"]["cardlytics"]
    assert dest["sent"] == 6 and dest["rejected"] == 0 and not dead.records
    assert api.events == list(expected.values())
    assert api.duplicates == []
    tracker.shutdown()


# --- mapping ------------------------------------------------------------------------


def test_unknown_enum_in_mapping_is_a_configuration_error(
    server: EmulatorServer,
) -> None:
    with pytest.raises(ConfigurationError, match="'Clicked' is not a Cardlytics"):
        make(server, mapping={"offer.clicked": "Clicked"})
    with pytest.raises(ConfigurationError, match="use one of ActivateOffer"):
        make(server, mapping={"offer.clicked": "adviewableimpression"})


def test_client_event_type_is_derived_from_the_enum(server: EmulatorServer) -> None:
    exporter = make(server)
    kinds = {
        name: exporter.message(ad_event(name))["clientEventType"] for name in MAPPING
    }
    assert kinds == {
        "offer.viewed": "AdImpression",
        "offer.activated": "AdInteraction",
        "offer.hidden": "AdInteraction",
        "redemption.expanded": "CustomerProfileAction",
        "reward_summary.clicked": "CustomerProfileAction",
        "faq.clicked": "CustomerProfileAction",
    }


def test_session_start_maps_to_log_enrollment_by_default(
    server: EmulatorServer,
) -> None:
    exporter = make(server, mapping={})
    assert exporter.mapping == {"session_start": "LogEnrollment"}
    renamed = make(server, mapping={}, session_event="session.begin")
    assert renamed.mapping == {"session.begin": "LogEnrollment"}
    assert make(server, mapping={}, session_event=None).mapping == {}
    overridden = make(server, mapping={"session_start": "UnParkAllOffers"})
    assert overridden.mapping["session_start"] == "UnParkAllOffers"


def test_unmapped_events_are_not_applicable(
    server: EmulatorServer, api: CardlyticsAPI, dead: MemoryDeadLetter
) -> None:
    exporter = make(server)
    assert not exporter.applies(Event("page", user_id=USER))
    tracker = tracker_for(exporter, dead=dead)
    tracker.track("page", user_id=USER)
    tracker.track("session_start", user_id=USER)
    assert tracker.flush(10)
    stats = tracker.stats()
    dest = stats["destinations"]["cardlytics"]
    # applies() said no: never queued for this destination, counted as unrouted.
    assert dest["sent"] == 1 and dest["enqueued"] == 1 and stats["unrouted"] == 1
    assert [e["clientEvent"] for e in api.events] == ["LogEnrollment"]
    tracker.shutdown()


def test_timestamps_are_utc_iso_with_z_and_ids_are_stable(
    server: EmulatorServer,
) -> None:
    exporter = make(server)
    with_ms = Event("session_start", timestamp=T0 + 0.25, event_id="order-17")
    first = exporter.message(with_ms)
    assert first["clientEventTimestamp"] == "2023-03-11T08:00:00.250Z"
    # A non-UUID event id becomes a stable UUID (the same on every retry).
    assert first["clientEventId"] == exporter.message(with_ms)["clientEventId"]
    assert uuid.UUID(first["clientEventId"]).version == 5
    plain = Event("session_start")
    assert exporter.message(plain)["clientEventId"] == plain.event_id


# --- contract violations: rejected for this vendor only ------------------------------


@pytest.mark.parametrize(
    ("props", "rule"),
    [
        ({"serveToken": None}, "serveToken is required for Ad events"),
        ({"serveToken": 17}, "serveToken must be a non-empty string"),
        ({"section": "Home"}, "section 'Home' is not a Cardlytics Section value"),
        ({"section": None}, "section is required"),
        ({"channel": "Web"}, "channel 'Web' is not a Cardlytics Channel value"),
        ({"imageSlots": "logo"}, "imageSlots must be a list of strings"),
        ({"categoryId": 1.5}, "categoryId must be a string"),
        ({"curationId": True}, "curationId must be a string"),
        ({"displayPosition": -1}, "displayPosition must be a zero-based integer"),
        ({"displayPosition": "2"}, "displayPosition must be a zero-based integer"),
    ],
)
def test_contract_violations_are_rejected_for_this_vendor_only(
    server: EmulatorServer,
    api: CardlyticsAPI,
    dead: MemoryDeadLetter,
    props: dict[str, t.Any],
    rule: str,
) -> None:
    memory = InMemoryExporter()
    tracker = tracker_for(make(server), memory, dead=dead)
    tracker.track("offer.viewed", {**AD_PROPS, "n": 1}, user_id=USER)
    bad = tracker.track("offer.viewed", {**AD_PROPS, **props}, user_id=USER)
    tracker.track("offer.activated", {**AD_PROPS, "n": 3}, user_id=USER)
    assert tracker.flush(10) and bad is not None
    (record,) = dead.read()
    assert record["destination"] == "cardlytics"
    assert rule in record["reason"] and record["status"] is None
    assert record["event"]["event_id"] == bad.event_id
    assert bad.event_id not in {e["clientEventId"] for e in api.events}
    assert len(api.events) == 2
    assert memory.wait_for(3)  # the other destination got all three
    tracker.shutdown()


def test_channel_is_required_without_a_default(server: EmulatorServer) -> None:
    exporter = make(server, default_channel=None)
    result = exporter.export([ad_event(channel=None)])
    assert "channel is required" in result.rejected[0].reason
    default = make(server).message(ad_event(channel=None))
    assert default["clientEventMetadata"]["channel"] == "OLB"
    mobile = make(server, default_channel="MobileApp", default_section="Dashboard")
    metadata = mobile.message(ad_event(channel=None, section=None))[
        "clientEventMetadata"
    ]
    assert (metadata["channel"], metadata["section"]) == ("MobileApp", "Dashboard")


def test_serve_token_can_be_optional(
    server: EmulatorServer, api: CardlyticsAPI
) -> None:
    api.strict = False
    exporter = make(server, require_serve_token=False)
    event = ad_event(serveToken=None)
    assert exporter.export([event]).sent == [event]
    assert "serveToken" not in api.events[0]["clientEventMetadata"]


# --- customers, sessions, pseudonyms -------------------------------------------------


def test_customer_ids_are_hmac_pseudonyms_and_never_raw(
    server: EmulatorServer, api: CardlyticsAPI
) -> None:
    exporter = make(server)
    assert exporter.customer_id(USER) == pseudonym(USER)
    exporter.export([ad_event()])
    assert api.sessions[0]["customer"] == pseudonym(USER)
    requests = server.recorded()
    assert [r.route for r in requests] == [
        "cardlytics.startSession",
        "cardlytics.clientEvent",
    ]
    for request in requests:
        assert USER not in str(request.headers) and USER.encode() not in request.body


def test_events_without_a_user_use_no_user_available(
    server: EmulatorServer, api: CardlyticsAPI, dead: MemoryDeadLetter
) -> None:
    tracker = tracker_for(make(server), dead=dead)
    tracker.track("session_start")
    assert tracker.flush(10)
    assert api.batches[0]["customer"] == "no-user-available"
    tracker.shutdown()
    quiet = make(server, send_anonymous=False)
    assert not quiet.applies(Event("session_start"))
    assert quiet.applies(Event("session_start", user_id=USER))
    tracker = tracker_for(quiet, dead=dead)
    tracker.track("session_start")
    assert tracker.flush(10)
    stats = tracker.stats()
    assert stats["unrouted"] == 1
    assert stats["destinations"]["cardlytics"]["enqueued"] == 0
    tracker.shutdown()


def test_customers_never_share_a_request_and_sessions_are_cached(
    server: EmulatorServer, api: CardlyticsAPI
) -> None:
    exporter = make(server)
    users = ["alice", "bob", "carol"]
    events = [Event("session_start", user_id=users[i % 3]) for i in range(9)]
    result = exporter.export(events)
    assert len(result.sent) == 9
    assert len(api.batches) == 3
    for batch in api.batches:
        assert len(batch["clientEvents"]) == 3
    by_customer = {b["customer"]: b for b in api.batches}
    for user in users:
        ids = {e["clientEventId"] for e in by_customer[pseudonym(user)]["clientEvents"]}
        assert ids == {e.event_id for e in events if e.user_id == user}
    assert len(api.sessions) == 3
    exporter.export([Event("session_start", user_id=u) for u in users])
    assert len(api.sessions) == 3  # cached per customer
    assert exporter.sessions.fetches == 3


def test_sessions_are_renewed_before_they_expire(
    server: EmulatorServer, api: CardlyticsAPI
) -> None:
    api.token_ttl = 1.0
    exporter = make(server)
    exporter.export([Event("session_start", user_id=USER)])
    expiry = api.claims(api.sessions[0]["token"])["exp"]
    assert server.wait_for(lambda: time.time() >= expiry, timeout=5)
    result = exporter.export([Event("session_start", user_id=USER)])
    assert len(result.sent) == 1
    assert len(api.sessions) == 2
    # Renewed from the JWT's exp, proactively: no 401 was ever needed.
    assert [r.status for r in server.recorded("cardlytics.clientEvent")] == [200, 200]


def test_a_401_starts_a_new_session_and_resends_once(
    server: EmulatorServer, api: CardlyticsAPI, dead: MemoryDeadLetter
) -> None:
    tracker = tracker_for(make(server), dead=dead)
    tracker.track("session_start", user_id=USER)
    assert tracker.flush(10)
    api.expire_sessions()
    tracker.track("faq.clicked", user_id=USER)
    assert tracker.flush(10)
    calls = [(r.route, r.status) for r in server.recorded()]
    assert calls == [
        ("cardlytics.startSession", 200),
        ("cardlytics.clientEvent", 200),
        ("cardlytics.clientEvent", 401),
        ("cardlytics.startSession", 200),
        ("cardlytics.clientEvent", 200),
    ]
    request_ids = [
        r.headers["X-CDLX-Request-Id"]
        for r in server.recorded("cardlytics.clientEvent")
    ]
    assert len(set(request_ids)) == 3  # a new request id per attempt
    assert len(api.events) == 2 and api.duplicates == []
    tracker.shutdown()


def test_bad_credentials_are_rejected_after_a_capped_number_of_500s(
    server: EmulatorServer, api: CardlyticsAPI, dead: MemoryDeadLetter
) -> None:
    tracker = tracker_for(make(server, client_secret="wrong-secret-4242"), dead=dead)
    tracker.track("session_start", user_id=USER)
    assert tracker.flush(10)
    assert [r.status for r in server.recorded()] == [500, 500]
    (record,) = dead.read()
    assert "authentication refused" in record["reason"]
    assert "invalid clientId/secret" in record["reason"]
    assert "TRACKWARE_CARDLYTICS_CLIENT_ID" in record["reason"]
    assert record["status"] == 500
    assert "wrong-secret-4242" not in str(record)
    assert api.events == []
    tracker.shutdown()


def test_one_transient_500_from_start_session_is_retried(
    server: EmulatorServer, api: CardlyticsAPI, dead: MemoryDeadLetter
) -> None:
    server.fault("cardlytics.startSession", status=500, times=1)
    tracker = tracker_for(make(server), dead=dead)
    tracker.track("session_start", user_id=USER)
    assert tracker.flush(10)
    assert len(api.events) == 1 and not dead.records
    tracker.shutdown()


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("not_enrolled", "User is not enrolled in the program"),
        ("no_accounts", "User has no accounts"),
    ],
)
def test_refused_customers_are_dead_lettered_others_delivered(
    server: EmulatorServer,
    api: CardlyticsAPI,
    dead: MemoryDeadLetter,
    fixture: str,
    reason: str,
) -> None:
    getattr(api, fixture).add(pseudonym("inactive"))
    exporter = make(server)
    result = exporter.export(
        [Event("session_start", user_id="inactive"), Event("faq.clicked", user_id=USER)]
    )
    assert len(result.sent) == 1 and len(result.rejected) == 1
    assert reason in result.rejected[0].reason
    assert result.rejected[0].status == 400


def test_openapi_session_body_needs_no_client_secret(
    server: EmulatorServer, api: CardlyticsAPI
) -> None:
    exporter = make(server, client_id=None, client_secret=None, session_body="customer")
    assert len(exporter.export([Event("session_start", user_id=USER)]).sent) == 1
    assert server.recorded("cardlytics.startSession")[0].json() == {
        "sourceCustomerId": pseudonym(USER),
        "scopes": ["api:customer"],
    }


def test_session_body_can_be_a_callable(
    server: EmulatorServer, api: CardlyticsAPI
) -> None:
    exporter = make(server, session_body=lambda cid: {"sourceCustomerId": cid})
    assert len(exporter.export([Event("session_start", user_id=USER)]).sent) == 1

    def broken(cid: str) -> dict[str, t.Any]:
        raise RuntimeError("boom")

    result = make(server, session_body=broken).export([Event("faq.clicked")])
    assert "could not build the startSession body" in result.rejected[0].reason


def test_session_token_header_style(server: EmulatorServer, api: CardlyticsAPI) -> None:
    api.auth_header = "session-token"
    exporter = make(server, header_style="session-token")
    assert len(exporter.export([Event("session_start", user_id=USER)]).sent) == 1
    (request,) = server.recorded("cardlytics.clientEvent")
    assert request.headers["X-CDLX-Session-Token"] == api.sessions[0]["token"]
    assert "Authorization" not in request.headers
    # The emulator configured for the other style refuses it, with its reason.
    api.auth_header = "bearer"
    rejected = exporter.export([Event("session_start", user_id=USER)]).rejected
    assert "Authorization: Bearer" in rejected[0].reason


def test_token_lifetime_is_read_from_the_jwt() -> None:
    """A session token states its expiry in ``exp`` or
    ``sessionExpirationTimestamp`` (seconds, milliseconds or ISO-8601)."""
    from trackware._auth import jwt_expiry
    from trackware.exporters.cardlytics._session import SESSION_EXPIRY_CLAIMS

    def _jwt_expiry(token: str) -> float | None:
        found = jwt_expiry(token, claims=SESSION_EXPIRY_CLAIMS)
        return None if found is None else found.expires_at

    def jwt(claims: str) -> str:
        import base64

        payload = base64.urlsafe_b64encode(claims.encode()).rstrip(b"=").decode()
        return f"eyJhbGciOiJIUzI1NiJ9.{payload}.sig"

    assert _jwt_expiry(jwt('{"exp": 1700000000}')) == 1700000000.0
    assert _jwt_expiry(jwt('{"sessionExpirationTimestamp": 1700000000000}')) == (
        1700000000.0
    )
    assert _jwt_expiry(
        jwt('{"sessionExpirationTimestamp": "2023-11-14T22:13:20Z"}')
    ) == (1700000000.0)
    assert _jwt_expiry("opaque-session-token") is None
    assert _jwt_expiry(jwt("not json")) is None


def test_an_opaque_token_falls_back_to_the_default_ttl(
    server: EmulatorServer, api: CardlyticsAPI
) -> None:
    """A token that is not a JWT is kept for session_ttl; a 401 replaces it."""
    server.fault(
        "cardlytics.startSession", status=200, body={"sessionToken": "opaque-tok-1"}
    )
    exporter = make(server, session_ttl=900.0)
    assert len(exporter.export([Event("session_start", user_id=USER)]).sent) == 1
    statuses = [(r.route, r.status) for r in server.recorded()]
    assert statuses == [
        ("cardlytics.startSession", 200),
        ("cardlytics.clientEvent", 401),
        ("cardlytics.startSession", 200),
        ("cardlytics.clientEvent", 200),
    ]


def test_a_forked_child_starts_with_fresh_sessions(
    server: EmulatorServer, api: CardlyticsAPI
) -> None:
    exporter = make(server)
    exporter.export([Event("session_start", user_id=USER)])
    before = exporter.sessions
    parent_client = exporter.client
    exporter.after_fork()
    parent_client.close()  # a real child would just forget it
    assert exporter.sessions is not before and exporter.sessions.fetches == 0
    assert len(exporter.export([Event("session_start", user_id=USER)]).sent) == 1
    assert len(api.sessions) == 2


# --- batching -----------------------------------------------------------------------


def test_batches_are_capped_at_50_by_default(
    server: EmulatorServer, api: CardlyticsAPI
) -> None:
    exporter = make(server)
    assert exporter.max_batch_size == 50
    events = [Event("session_start", user_id=USER) for _ in range(120)]
    assert len(exporter.export(events).sent) == 120
    assert [len(b["clientEvents"]) for b in api.batches] == [50, 50, 20]
    assert [e["clientEventId"] for e in api.events] == [e.event_id for e in events]


def test_batch_cap_is_configurable_through_a_tracker(
    server: EmulatorServer, api: CardlyticsAPI, dead: MemoryDeadLetter
) -> None:
    tracker = tracker_for(make(server, max_batch_size=7), dead=dead)
    for _ in range(30):
        tracker.track("session_start", user_id=USER)
    assert tracker.flush(10)
    assert len(api.events) == 30
    assert max(len(b["clientEvents"]) for b in api.batches) <= 7
    tracker.shutdown()


def test_the_same_event_twice_in_a_batch_is_sent_once(
    server: EmulatorServer, api: CardlyticsAPI
) -> None:
    event = Event("session_start", user_id=USER)
    result = make(server).export([event, event])
    assert len(result.sent) == 2 and len(api.events) == 1


# --- failures: 4xx, 5xx, 429, error bodies, retries ----------------------------------


def test_4xx_is_dead_lettered_with_the_emulators_reason(
    server: EmulatorServer, api: CardlyticsAPI, dead: MemoryDeadLetter
) -> None:
    api.max_events = 0
    tracker = tracker_for(make(server), dead=dead)
    for _ in range(4):
        tracker.track("session_start", user_id=USER, timestamp=T0)
    assert tracker.flush(10)
    records = dead.read()
    assert len(records) == 4
    assert all(r["status"] == 400 for r in records)
    assert "at most 0 events per request" in records[0]["reason"]
    assert "ValidationException" in records[0]["response"]
    dest = tracker.stats()["destinations"]["cardlytics"]
    assert dest["retried"] == 0 and dest["rejected"] == 4
    tracker.shutdown()


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried_without_duplicates(
    server: EmulatorServer, api: CardlyticsAPI, dead: MemoryDeadLetter, status: int
) -> None:
    server.fault("cardlytics.clientEvent", status=status, times=2)
    tracker = tracker_for(make(server), dead=dead)
    for _ in range(3):
        tracker.track("session_start", user_id=USER, timestamp=T0)
    assert tracker.flush(10)
    assert len(api.events) == 3 and api.duplicates == [] and not dead.records
    attempts = server.recorded("cardlytics.clientEvent")
    assert [r.status for r in attempts][-1] == 200
    request_ids = [r.headers["X-CDLX-Request-Id"] for r in attempts]
    assert len(set(request_ids)) == len(request_ids)
    tracker.shutdown()


@pytest.mark.parametrize("fault", [{"drop": True}, {"partial": True}])
def test_broken_connections_are_retried_without_duplicates(
    server: EmulatorServer,
    api: CardlyticsAPI,
    dead: MemoryDeadLetter,
    fault: dict[str, t.Any],
) -> None:
    server.fault("cardlytics.clientEvent", **fault)
    tracker = tracker_for(make(server), dead=dead)
    tracker.track("session_start", user_id=USER)
    assert tracker.flush(10)
    assert len(api.events) == 1 and api.duplicates == [] and not dead.records
    tracker.shutdown()


def test_a_lost_response_is_resent_with_the_same_client_event_id(
    server: EmulatorServer, api: CardlyticsAPI, dead: MemoryDeadLetter
) -> None:
    """At-least-once: the emulator processed the request but the answer was
    too late; the retry carries the same clientEventId, so Cardlytics can tell."""
    server.fault("cardlytics.clientEvent", delay=1.0)
    tracker = tracker_for(make(server, timeout=0.2), dead=dead)
    event = tracker.track("session_start", user_id=USER)
    assert tracker.flush(10) and event is not None
    assert server.wait_for(lambda: len(api.duplicates) == 1, timeout=10)
    assert [e["clientEventId"] for e in api.events] == [event.event_id]
    assert api.duplicates[0]["clientEventId"] == event.event_id
    tracker.shutdown()


def test_429_retry_after_is_honoured(
    server: EmulatorServer, api: CardlyticsAPI, dead: MemoryDeadLetter
) -> None:
    server.fault("cardlytics.clientEvent", status=429, headers={"Retry-After": "1"})
    tracker = tracker_for(make(server), dead=dead)
    tracker.track("session_start", user_id=USER)
    assert tracker.flush(10)
    first, second = server.recorded("cardlytics.clientEvent")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95
    assert len(api.events) == 1
    tracker.shutdown()


@pytest.mark.parametrize(
    "headers",
    [{"Retry-After": "7"}, {"RateLimit-Reset": "7"}, {}],
    ids=["retry-after", "ratelimit-reset", "none"],
)
def test_429_wait_hints_reach_the_retry_policy(
    server: EmulatorServer, headers: dict[str, str]
) -> None:
    server.fault("cardlytics.clientEvent", status=429, headers=headers)
    event = Event("session_start", user_id=USER)
    result = make(server).export([event])
    assert result.retry == [event] and result.status == 429
    assert result.retry_after == (7.0 if headers else None)


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (
            {
                "type": "ValidationException",
                "title": "Bad Request",
                "status": 400,
                "validationErrors": ["clientEvents[0]: rejected"],
                "requestId": "r-1",
            },
            "rejected",
        ),
        ({"type": "InternalServerError", "status": 503}, "retry"),
        ({"requestId": "r-2", "status": 422}, "rejected"),
        ({"requestId": "r-3"}, "sent"),
    ],
    ids=["type-400", "status-503", "status-only", "plain-success"],
)
def test_200_with_an_error_body_is_a_failure(
    server: EmulatorServer, body: dict[str, t.Any], outcome: str
) -> None:
    server.fault("cardlytics.clientEvent", status=200, body=body)
    event = Event("session_start", user_id=USER)
    result = make(server).export([event])
    if outcome == "rejected":
        assert [r.event for r in result.rejected] == [event]
        assert "with an error body" in result.rejected[0].reason
        assert result.rejected[0].status == body["status"]
    elif outcome == "retry":
        assert result.retry == [event] and result.status == 503
    else:
        assert result.sent == [event]


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"client_id": None}, "client_id and client_secret are required"),
        ({"client_secret": ""}, "TRACKWARE_CARDLYTICS_CLIENT_SECRET"),
        ({"customer_id_key": ""}, "customer_id_key is required"),
        ({"header_style": "cookie"}, "header_style must be"),
        ({"default_channel": "Web"}, "default_channel 'Web' is not a Cardlytics"),
        ({"default_section": "Home"}, "default_section 'Home' is not a Cardlytics"),
        ({"session_body": "oauth"}, "session_body must be"),
        ({"max_session_failures": 0}, "max_session_failures must be >= 1"),
        ({"base_url": "ftp://example.com"}, "base_url must start with https://"),
        ({"verify": False}, "verify=False is not allowed"),
        ({"mapping": {"": "FaqLinkClicked"}}, "non-empty event names"),
        ({"mapping": {"offer.viewed": ["ParkOffer"]}}, "is not a Cardlytics"),
        ({"max_batch_size": 0}, "max_batch_size"),
    ],
)
def test_misconfiguration_raises_naming_the_fix(
    server: EmulatorServer, changes: dict[str, t.Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        make(server, **changes)
    assert CLIENT_SECRET not in str(info.value) and KEY not in str(info.value)


def test_mutual_tls_certificates(tmp_path: t.Any) -> None:
    base = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "customer_id_key": KEY,
    }
    url = "https://publisher-rewards-api.cardlytics.com"
    with pytest.raises(ConfigurationError, match="requires mutual TLS"):
        ClientEventExporter(base_url=url, **base)
    with pytest.raises(ConfigurationError, match="does not exist"):
        ClientEventExporter(base_url=url, cert=str(tmp_path / "missing.pem"), **base)
    with pytest.raises(ConfigurationError, match="does not exist"):
        ClientEventExporter(
            base_url=url,
            cert=(str(tmp_path / "client.crt"), str(tmp_path / "missing.key")),
            **base,
        )
    (tmp_path / "client.crt").write_text("cert")
    (tmp_path / "client.key").write_text("key")
    exporter = ClientEventExporter(
        base_url=url,
        cert=(str(tmp_path / "client.crt"), str(tmp_path / "client.key")),
        **base,
    )
    assert exporter._cert == (
        str(tmp_path / "client.crt"),
        str(tmp_path / "client.key"),
    )
    proxied = ClientEventExporter(base_url=url, require_cert=False, **base)
    assert proxied._cert is None


def test_mutual_tls_end_to_end(pki: dict[str, str], api: CardlyticsAPI) -> None:
    """With cert= the exporter presents its client certificate; without it the
    server refuses the handshake and the events stay retryable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki["ca.crt"])
    context.load_cert_chain(pki["server.crt"], pki["server.key"])
    context.verify_mode = ssl.CERT_REQUIRED
    with EmulatorServer([api], ssl_context=context) as server:
        common = {
            "base_url": server.url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "customer_id_key": KEY,
            "verify": pki["ca.crt"],
        }
        good = ClientEventExporter(
            cert=(pki["client.crt"], pki["client.key"]), **common
        )
        _OPEN.append(good)
        event = Event("session_start", user_id=USER)
        assert good.export([event]).sent == [event]
        assert [e["clientEventId"] for e in api.events] == [event.event_id]
        anonymous = ClientEventExporter(require_cert=False, **common)
        _OPEN.append(anonymous)
        result = anonymous.export([Event("session_start", user_id=USER)])
        assert len(result.retry) == 1 and "connection error" in (result.error or "")
        assert len(api.events) == 1


def test_from_env(tmp_path: t.Any) -> None:
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    env = {
        "TRACKWARE_CARDLYTICS_BASE_URL": "https://pub-api-us.prod.cardlytics.com",
        "TRACKWARE_CARDLYTICS_CLIENT_ID": CLIENT_ID,
        "TRACKWARE_CARDLYTICS_CLIENT_SECRET": CLIENT_SECRET,
        "TRACKWARE_CARDLYTICS_CUSTOMER_ID_KEY": KEY,
        "TRACKWARE_CARDLYTICS_CERT": str(tmp_path / "c.pem"),
        "TRACKWARE_CARDLYTICS_CERT_KEY": str(tmp_path / "k.pem"),
        "TRACKWARE_CARDLYTICS_MAPPING": "offer.viewed=AdViewableImpression, "
        "offer.activated=ActivateOffer",
        "TRACKWARE_CARDLYTICS_DEFAULT_CHANNEL": "MobileApp",
        "TRACKWARE_CARDLYTICS_HEADER_STYLE": "session-token",
        "TRACKWARE_CARDLYTICS_SEND_ANONYMOUS": "false",
        "TRACKWARE_CARDLYTICS_MAX_BATCH_SIZE": "20",
    }
    exporter = ClientEventExporter.from_env(env)
    assert exporter.mapping == {
        "session_start": "LogEnrollment",
        "offer.viewed": "AdViewableImpression",
        "offer.activated": "ActivateOffer",
    }
    assert exporter.default_channel == "MobileApp"
    assert exporter.header_style == "session-token"
    assert exporter.send_anonymous is False and exporter.max_batch_size == 20
    assert exporter._cert == (str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert ClientEventExporter.from_env(env, max_batch_size=5).max_batch_size == 5


def test_from_env_names_every_missing_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientEventExporter.from_env({"TRACKWARE_CARDLYTICS_CLIENT_ID": CLIENT_ID})
    message = str(info.value)
    for name in ("BASE_URL", "CLIENT_SECRET", "CUSTOMER_ID_KEY"):
        assert f"TRACKWARE_CARDLYTICS_{name}" in message
    assert "TRACKWARE_CARDLYTICS_CLIENT_ID" not in message


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"TRACKWARE_CARDLYTICS_MAPPING": "offer.viewed"}, "must look like"),
        ({"TRACKWARE_CARDLYTICS_MAPPING": "a=Nope"}, "'Nope' is not a Cardlytics"),
        ({"TRACKWARE_CARDLYTICS_SEND_ANONYMOUS": "maybe"}, "must be true or false"),
        ({"TRACKWARE_CARDLYTICS_MAX_BATCH_SIZE": "lots"}, "must be an integer"),
        ({"TRACKWARE_CARDLYTICS_CERT_KEY": "/k.pem"}, "set both"),
    ],
)
def test_from_env_rejects_bad_values(
    server: EmulatorServer, extra: dict[str, str], message: str
) -> None:
    env = {
        "TRACKWARE_CARDLYTICS_BASE_URL": server.url,
        "TRACKWARE_CARDLYTICS_CLIENT_ID": CLIENT_ID,
        "TRACKWARE_CARDLYTICS_CLIENT_SECRET": CLIENT_SECRET,
        "TRACKWARE_CARDLYTICS_CUSTOMER_ID_KEY": KEY,
        **extra,
    }
    with pytest.raises(ConfigurationError, match=message):
        ClientEventExporter.from_env(env)


def test_from_env_exporter_delivers(
    server: EmulatorServer, api: CardlyticsAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKWARE_CARDLYTICS_BASE_URL", server.url)
    monkeypatch.setenv("TRACKWARE_CARDLYTICS_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("TRACKWARE_CARDLYTICS_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("TRACKWARE_CARDLYTICS_CUSTOMER_ID_KEY", KEY)
    exporter = ClientEventExporter.from_env()
    _OPEN.append(exporter)
    assert len(exporter.export([Event("session_start", user_id=USER)]).sent) == 1
    assert api.batches[0]["customer"] == pseudonym(USER)


# --- secrets ------------------------------------------------------------------------


def test_secrets_never_leak(
    server: EmulatorServer,
    api: CardlyticsAPI,
    dead: MemoryDeadLetter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Credentials, the HMAC key and session tokens appear in no log line, repr,
    dead letter or error, even when the vendor echoes them back."""
    caplog.set_level(logging.DEBUG)  # every logger, httpx's included
    exporter = make(server)
    tracker = tracker_for(exporter, dead=dead)
    tracker.track("session_start", user_id=USER)
    assert tracker.flush(10)
    token = api.sessions[0]["token"]
    echo = f"echo: secret={CLIENT_SECRET} key={KEY} token={token}"
    server.fault("cardlytics.clientEvent", status=503, body={"title": echo})
    server.fault("cardlytics.clientEvent", status=400, body={"title": echo})
    tracker.track("faq.clicked", user_id=USER)
    tracker.track("offer.viewed", {"section": "Home"}, user_id=USER)
    assert tracker.flush(10)
    records = dead.read()
    assert len(records) == 2
    assert any("***" in (r["response"] or "") for r in records)
    texts = [
        caplog.text,
        str(records),
        repr(exporter),
        repr(tracker),
        str(tracker.stats()),
        repr(exporter.sessions),
    ]
    for text in texts:
        for secret in (CLIENT_SECRET, KEY, token):
            assert secret not in text
    tracker.shutdown()
