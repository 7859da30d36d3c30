"""The Cardlytics emulator enforces every rule of its startSession/clientEvent rows."""

from __future__ import annotations

import copy
import time
import typing as t
import uuid

import httpx
import pytest

from trackware.testing.emulators import EmulatorServer
from trackware.testing.emulators._cardlytics import CardlyticsAPI

CLIENT = "cardlytics-test-client"
SECRET = "cardlytics-test-secret"
CUSTOMER = "c0ffee00c0ffee00c0ffee00c0ffee00"
SESSION = "/v2/session/startSession"
EVENTS = "/v2/events/clientEvent"

AD_ITEM: dict[str, t.Any] = {
    "clientEventId": "2e08d638-04e2-4561-b56a-ca32cfff6203",
    "clientEventType": "AdImpression",
    "clientEvent": "AdViewableImpression",
    "clientEventTimestamp": "2023-03-11T08:00:00Z",
    "clientEventMetadata": {
        "serveToken": "91e471aed3c04b81bee792f23ad4859d",
        "section": "LatestOffers",
        "channel": "OLB",
        "imageSlots": ["logo"],
        "categoryId": "1",
        "displayPosition": 2,
    },
}
SESSION_ITEM: dict[str, t.Any] = {
    "clientEventId": "7a26012c-8ede-4375-a956-8af1c27f5280",
    "clientEventType": "SessionAction",
    "clientEvent": "LogEnrollment",
    "clientEventTimestamp": "2023-03-11T08:05:00Z",
    "clientEventMetadata": None,
}


@pytest.fixture
def api() -> CardlyticsAPI:
    return CardlyticsAPI()


@pytest.fixture
def server(api: CardlyticsAPI) -> t.Iterator[EmulatorServer]:
    with EmulatorServer([api]) as emulator:
        yield emulator


@pytest.fixture
def client(server: EmulatorServer) -> t.Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as c:
        yield c


def start(
    client: httpx.Client,
    customer: str = CUSTOMER,
    body: t.Any = None,
    **headers: str,
) -> httpx.Response:
    return client.post(
        SESSION,
        json={"clientId": CLIENT, "secret": SECRET} if body is None else body,
        headers={"x-source-customer-id": customer, **headers},
    )


def token_for(client: httpx.Client, customer: str = CUSTOMER) -> str:
    response = start(client, customer)
    assert response.status_code == 200, response.text
    return t.cast(str, response.json()["sessionToken"])


def send(
    client: httpx.Client,
    items: t.Any,
    *,
    token: str | None = None,
    customer: str | None = CUSTOMER,
    headers: dict[str, str] | None = None,
    body: t.Any = None,
) -> httpx.Response:
    all_headers: dict[str, str] = {}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    if customer is not None:
        all_headers["x-source-customer-id"] = customer
    all_headers.update(headers or {})
    payload = {"clientEvents": items} if body is None else body
    return client.post(EVENTS, json=payload, headers=all_headers)


def item(base: dict[str, t.Any] = AD_ITEM, **changes: t.Any) -> dict[str, t.Any]:
    out = copy.deepcopy(base)
    out["clientEventId"] = str(uuid.uuid4())
    for key, value in changes.items():
        if value is _DELETE:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def meta(**changes: t.Any) -> dict[str, t.Any]:
    out = copy.deepcopy(AD_ITEM["clientEventMetadata"])
    for key, value in changes.items():
        if value is _DELETE:
            out.pop(key, None)
        else:
            out[key] = value
    return out


_DELETE = object()


def assert_envelope(response: httpx.Response, status: int, kind: str) -> list[str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "title", "status", "validationErrors", "requestId"}
    assert body["type"] == kind and body["status"] == status
    assert isinstance(body["validationErrors"], list) and body["validationErrors"]
    return t.cast("list[str]", body["validationErrors"])


# --- methods, content type, request id ----------------------------------------------


@pytest.mark.parametrize("path", [SESSION, EVENTS])
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_only_post_is_allowed(client: httpx.Client, path: str, method: str) -> None:
    response = client.request(method, path)
    errors = assert_envelope(response, 405, "HttpRequestMethodNotSupported")
    assert response.headers["Allow"] == "POST"
    assert "use POST" in errors[0]


@pytest.mark.parametrize("path", [SESSION, EVENTS])
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml"])
def test_content_type_must_be_json(
    client: httpx.Client, path: str, content_type: str | None
) -> None:
    headers = {"x-source-customer-id": CUSTOMER}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post(path, content=b"{}", headers=headers)
    errors = assert_envelope(response, 415, "HttpMediaTypeNotSupported")
    assert "application/json" in errors[0]


def test_json_with_charset_is_accepted(client: httpx.Client) -> None:
    response = client.post(
        SESSION,
        content=b'{"clientId": "%s", "secret": "%s"}'
        % (CLIENT.encode(), SECRET.encode()),
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "x-source-customer-id": CUSTOMER,
        },
    )
    assert response.status_code == 200


def test_request_id_is_echoed_or_generated(client: httpx.Client) -> None:
    token = token_for(client)
    rid = str(uuid.uuid4())
    ok = send(client, [item()], token=token, headers={"X-CDLX-Request-Id": rid})
    assert ok.status_code == 200 and ok.json() == {"requestId": rid}
    bad = send(client, [], token=token, headers={"X-CDLX-Request-Id": rid})
    assert bad.json()["requestId"] == rid
    generated = send(client, [item()], token=token).json()["requestId"]
    assert uuid.UUID(generated)


# --- startSession -------------------------------------------------------------------


def test_start_session_issues_a_jwt_bound_to_the_customer(
    client: httpx.Client, api: CardlyticsAPI
) -> None:
    before = time.time()
    response = start(client)
    assert response.status_code == 200
    token = response.json()["sessionToken"]
    assert set(response.json()) == {"sessionToken"}
    claims = api.claims(token)
    assert claims["customerId"] == CUSTOMER
    assert {"sessionId", "organizationId", "sessionExpirationTimestamp"} <= set(claims)
    # exp is rounded to the millisecond: allow that much either way.
    assert before + 900 - 0.001 <= claims["exp"] <= time.time() + 900 + 0.001
    assert api.sessions[0]["customer"] == CUSTOMER


def test_token_ttl_is_configurable(client: httpx.Client, api: CardlyticsAPI) -> None:
    api.token_ttl = 3600
    claims = api.claims(token_for(client))
    assert 3599 <= claims["exp"] - claims["iat"] <= 3601


def test_start_session_requires_the_customer_header(client: httpx.Client) -> None:
    response = client.post(SESSION, json={"clientId": CLIENT, "secret": SECRET})
    errors = assert_envelope(response, 400, "ValidationException")
    assert "x-source-customer-id" in errors[0]


def test_no_user_available_is_a_valid_customer(client: httpx.Client) -> None:
    token = token_for(client, "no-user-available")
    response = send(client, [item()], token=token, customer="no-user-available")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"clientId": CLIENT, "secret": "wrong"},
        {"clientId": "nobody", "secret": SECRET},
        {"clientId": CLIENT, "secret": 12345},
        {"clientId": CLIENT},
    ],
    ids=["wrong-secret", "unknown-client", "secret-not-string", "no-secret"],
)
def test_bad_credentials_are_answered_500(client: httpx.Client, body: t.Any) -> None:
    errors = assert_envelope(start(client, body=body), 500, "InternalServerError")
    assert "invalid credentials" in errors[0]


@pytest.mark.parametrize(
    ("raw", "rule"),
    [(b"{not json", "malformed JSON"), (b"[1, 2]", "JSON object")],
)
def test_unreadable_bodies_are_400(client: httpx.Client, raw: bytes, rule: str) -> None:
    for path in (SESSION, EVENTS):
        headers = {"Content-Type": "application/json", "x-source-customer-id": CUSTOMER}
        if path == EVENTS:
            headers["Authorization"] = f"Bearer {token_for(client)}"
        response = client.post(path, content=raw, headers=headers)
        errors = assert_envelope(response, 400, "HttpMessageNotReadable")
        assert rule in errors[0]


def test_start_session_body_must_carry_credentials(client: httpx.Client) -> None:
    errors = assert_envelope(start(client, body={}), 400, "ValidationException")
    assert "clientId and secret" in errors[0]


def test_openapi_body_is_accepted(client: httpx.Client, api: CardlyticsAPI) -> None:
    body = {"sourceCustomerId": CUSTOMER, "scopes": ["api:customer"]}
    response = start(client, body=body)
    assert response.status_code == 200
    token = response.json()["sessionToken"]
    assert send(client, [item()], token=token).status_code == 200


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ({"sourceCustomerId": "someone-else"}, "must equal the x-source-customer-id"),
        ({"sourceCustomerId": ""}, "non-empty string"),
        ({"sourceCustomerId": CUSTOMER, "scopes": ["api:admin"]}, "scopes"),
        ({"sourceCustomerId": CUSTOMER, "scopes": "api:customer"}, "scopes"),
    ],
)
def test_openapi_body_is_validated(
    client: httpx.Client, body: t.Any, rule: str
) -> None:
    errors = assert_envelope(start(client, body=body), 400, "ValidationException")
    assert rule in errors[0]


def test_lenient_allows_a_different_source_customer_id(
    client: httpx.Client, api: CardlyticsAPI
) -> None:
    api.strict = False
    assert start(client, body={"sourceCustomerId": "other"}).status_code == 200


def test_institution_scope_cannot_send_customer_events(client: httpx.Client) -> None:
    body = {"sourceCustomerId": CUSTOMER, "scopes": ["api:institution"]}
    token = start(client, body=body).json()["sessionToken"]
    errors = assert_envelope(
        send(client, [item()], token=token), 403, "SessionValidationException"
    )
    assert "api:customer" in errors[0]


@pytest.mark.parametrize(
    ("fixture", "title"),
    [
        ("no_accounts", "User has no accounts"),
        ("not_enrolled", "User is not enrolled in the program"),
    ],
)
def test_customer_fixtures_are_refused_with_400(
    client: httpx.Client, api: CardlyticsAPI, fixture: str, title: str
) -> None:
    getattr(api, fixture).add("blocked")
    response = start(client, "blocked")
    assert_envelope(response, 400, "ValidationException")
    assert response.json()["title"].startswith(title)
    assert start(client, CUSTOMER).status_code == 200


# --- clientEvent: sessions and headers ----------------------------------------------


def test_client_event_requires_a_session_token(client: httpx.Client) -> None:
    errors = assert_envelope(send(client, [item()]), 401, "SessionValidationException")
    assert "session token required" in errors[0]


def test_unknown_and_expired_tokens_get_the_same_401(
    client: httpx.Client, api: CardlyticsAPI
) -> None:
    unknown = send(client, [item()], token="not-a-session")
    api.token_ttl = -1  # issued already expired
    expired = send(client, [item()], token=token_for(client))
    api.token_ttl = 900
    revoked_token = token_for(client)
    api.expire_sessions()
    revoked = send(client, [item()], token=revoked_token)
    for response in (unknown, expired, revoked):
        errors = assert_envelope(response, 401, "SessionValidationException")
        assert errors == ["session token: unknown or expired"]
    assert api.events == []


@pytest.mark.parametrize(
    ("style", "header", "status"),
    [
        ("either", "bearer", 200),
        ("either", "session-token", 200),
        ("bearer", "bearer", 200),
        ("bearer", "session-token", 401),
        ("session-token", "session-token", 200),
        ("session-token", "bearer", 401),
    ],
)
def test_auth_header_style_is_configurable(
    client: httpx.Client, api: CardlyticsAPI, style: str, header: str, status: int
) -> None:
    api.auth_header = style
    token = token_for(client)
    headers = (
        {"Authorization": f"Bearer {token}"}
        if header == "bearer"
        else {"X-CDLX-Session-Token": token}
    )
    assert send(client, [item()], headers=headers).status_code == status


def test_client_event_requires_the_customer_header(client: httpx.Client) -> None:
    response = send(client, [item()], token=token_for(client), customer=None)
    errors = assert_envelope(response, 400, "ValidationException")
    assert "x-source-customer-id" in errors[0]


def test_customer_header_must_match_the_session(
    client: httpx.Client, api: CardlyticsAPI
) -> None:
    token = token_for(client, CUSTOMER)
    response = send(client, [item()], token=token, customer="someone-else")
    errors = assert_envelope(response, 401, "SessionValidationException")
    assert "does not match" in errors[0]
    api.strict = False
    assert send(client, [item()], token=token, customer="x").status_code == 200


# --- clientEvent: body ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ({}, "clientEvents: required array"),
        ({"clientEvents": {"a": 1}}, "clientEvents: required array"),
        ({"clientEvents": []}, "must not be empty"),
        ({"clientEvents": [item() for _ in range(101)]}, "at most 100 events"),
    ],
    ids=["missing", "not-array", "empty", "over-max"],
)
def test_client_events_array_rules(
    client: httpx.Client, body: t.Any, rule: str
) -> None:
    response = send(client, None, token=token_for(client), body=body)
    errors = assert_envelope(response, 400, "ValidationException")
    assert rule in errors[0]


def test_max_events_is_configurable(client: httpx.Client, api: CardlyticsAPI) -> None:
    token = token_for(client)
    assert send(client, [item() for _ in range(100)], token=token).status_code == 200
    api.max_events = 2
    errors = assert_envelope(
        send(client, [item() for _ in range(3)], token=token),
        400,
        "ValidationException",
    )
    assert "at most 2 events" in errors[0]


def _violations() -> list[tuple[str, t.Any, str]]:
    d = _DELETE
    return [
        ("not-object", "x", "must be an object"),
        ("id-missing", item(clientEventId=d), "clientEventId: must be a UUID"),
        ("id-not-uuid", item(clientEventId="evt-1"), "clientEventId: must be a UUID"),
        ("type-unknown", item(clientEventType="AdClick"), "clientEventType: must be"),
        ("type-missing", item(clientEventType=d), "clientEventType: must be"),
        ("event-unknown", item(clientEvent="Clicked"), "not a ClientEvent value"),
        (
            "pairing",
            item(clientEventType="AdImpression", clientEvent="ActivateOffer"),
            "ActivateOffer belongs to AdInteraction, not AdImpression",
        ),
        (
            "pairing-session",
            item(SESSION_ITEM, clientEventType="CustomerProfileAction"),
            "LogEnrollment belongs to SessionAction",
        ),
        ("ts-missing", item(clientEventTimestamp=d), "clientEventTimestamp"),
        ("ts-no-zone", item(clientEventTimestamp="2023-03-11T08:00:00"), "time zone"),
        ("ts-date-only", item(clientEventTimestamp="2023-03-11"), "time zone"),
        ("ts-bad-day", item(clientEventTimestamp="2023-02-30T08:00:00Z"), "RFC 3339"),
        ("ts-epoch", item(clientEventTimestamp=1678521600), "RFC 3339"),
        (
            "ad-meta-null",
            item(clientEventMetadata=None),
            "required object for AdImpression",
        ),
        ("ad-meta-missing", item(clientEventMetadata=d), "required object"),
        ("section-missing", item(clientEventMetadata=meta(section=d)), "section"),
        ("section-bad", item(clientEventMetadata=meta(section="Home")), "Section"),
        (
            "section-numeric",
            item(clientEventMetadata=meta(section=5)),
            "required Section value",
        ),
        ("channel-missing", item(clientEventMetadata=meta(channel=d)), "channel"),
        ("channel-bad", item(clientEventMetadata=meta(channel="Web")), "Channel"),
        (
            "serve-token-missing",
            item(clientEventMetadata=meta(serveToken=d)),
            "serveToken: required (strict)",
        ),
        (
            "serve-token-empty",
            item(clientEventMetadata=meta(serveToken="")),
            "serveToken: must be a non-empty string",
        ),
        (
            "image-slots-string",
            item(clientEventMetadata=meta(imageSlots="logo")),
            "imageSlots: must be an array of strings",
        ),
        (
            "image-slots-ints",
            item(clientEventMetadata=meta(imageSlots=[1])),
            "imageSlots: must be an array of strings",
        ),
        (
            "category-int",
            item(clientEventMetadata=meta(categoryId=1)),
            "categoryId: must be a string",
        ),
        (
            "curation-int",
            item(clientEventMetadata=meta(curationId=22)),
            "curationId: must be a string",
        ),
        (
            "position-negative",
            item(clientEventMetadata=meta(displayPosition=-1)),
            "displayPosition: must be an integer >= 0",
        ),
        (
            "position-string",
            item(clientEventMetadata=meta(displayPosition="2")),
            "displayPosition",
        ),
        (
            "position-bool",
            item(clientEventMetadata=meta(displayPosition=True)),
            "displayPosition",
        ),
        (
            "meta-unknown-key",
            item(clientEventMetadata=meta(sectionId=5)),
            "unknown keys ['sectionId']",
        ),
        ("price-not-null", item(clientEventMetadata=meta(price=3)), "price"),
        (
            "session-meta-object",
            item(SESSION_ITEM, clientEventMetadata={"section": "Summary"}),
            "must be null for SessionAction",
        ),
        (
            "session-meta-missing",
            item(SESSION_ITEM, clientEventMetadata=d),
            "required (null for SessionAction events)",
        ),
        ("item-unknown-key", item(clientEventName="x"), "unknown keys"),
    ]


@pytest.mark.parametrize(
    ("bad", "rule"),
    [(v[1], v[2]) for v in _violations()],
    ids=[v[0] for v in _violations()],
)
def test_client_event_item_rules(
    client: httpx.Client, api: CardlyticsAPI, bad: t.Any, rule: str
) -> None:
    """Each rule rejects the whole request (all-or-nothing) and names the item."""
    good = item(SESSION_ITEM)
    response = send(client, [good, bad], token=token_for(client))
    errors = assert_envelope(response, 400, "ValidationException")
    assert any(rule in e for e in errors), errors
    assert all(e.startswith("clientEvents[1]") for e in errors), errors
    assert api.events == [] and api.batches == []


def test_every_violation_is_listed(client: httpx.Client) -> None:
    bad = item(
        clientEventId="x",
        clientEventTimestamp="yesterday",
        clientEventMetadata=meta(section="Nope", channel="Nope"),
    )
    errors = assert_envelope(
        send(client, [bad], token=token_for(client)), 400, "ValidationException"
    )
    assert len(errors) == 4


def test_duplicate_id_within_a_request_is_rejected(client: httpx.Client) -> None:
    first = item()
    second = item(SESSION_ITEM, clientEventId=first["clientEventId"])
    errors = assert_envelope(
        send(client, [first, second], token=token_for(client)),
        400,
        "ValidationException",
    )
    assert errors == [
        f"clientEvents[1].clientEventId: duplicate {first['clientEventId']} "
        "within the request"
    ]


@pytest.mark.parametrize(
    "good",
    [
        item(
            SESSION_ITEM,
            clientEventType="CustomerProfileAction",
            clientEvent="FaqLinkClicked",
        ),
        item(
            SESSION_ITEM,
            clientEventType="SessionAction",
            clientEvent="RewardSummaryLinkClicked",
        ),
        item(
            SESSION_ITEM,
            clientEventType="CustomerProfileAction",
            clientEvent="RewardSummaryLinkClicked",
        ),
        item(
            SESSION_ITEM,
            clientEventType="CustomerProfileAction",
            clientEvent="ExpandRedemption",
        ),
        item(clientEventTimestamp="2023-03-11T09:00:00.123+01:00"),
        item(clientEventTimestamp="2023-03-11T08:00:00.123456Z"),
        item(clientEventType="AdInteraction", clientEvent="ActivateOffer"),
        item(clientEventMetadata=meta(imageSlots=[], price=None)),
    ],
    ids=[
        "profile-action",
        "seed-variant-session-reward-summary",
        "reference-reward-summary",
        "expand-redemption",
        "offset-and-fraction",
        "microseconds",
        "activate-offer",
        "empty-slots-null-price",
    ],
)
def test_documented_variants_are_accepted(
    client: httpx.Client, api: CardlyticsAPI, good: dict[str, t.Any]
) -> None:
    response = send(client, [good], token=token_for(client))
    assert response.status_code == 200, response.text
    assert api.events == [good]


def test_lenient_mode_relaxes_the_strict_rules(
    client: httpx.Client, api: CardlyticsAPI
) -> None:
    api.strict = False
    items = [
        item(clientEventMetadata=meta(serveToken=_DELETE, sectionId=5)),
        item(SESSION_ITEM, clientEventMetadata=_DELETE),
        item(extra="ignored"),
    ]
    assert send(client, items, token=token_for(client)).status_code == 200
    assert len(api.events) == 3


# --- clientEvent: recorded state -----------------------------------------------------


def test_events_batches_and_cross_request_duplicates(
    client: httpx.Client, api: CardlyticsAPI, server: EmulatorServer
) -> None:
    token = token_for(client)
    first, second = item(), item(SESSION_ITEM)
    assert send(client, [first, second], token=token).status_code == 200
    again = send(client, [first], token=token)
    assert again.status_code == 200  # recorded, not rejected
    assert api.events == [first, second]
    assert api.duplicates == [first]
    assert [b["customer"] for b in api.batches] == [CUSTOMER, CUSTOMER]
    assert len(server.recorded("cardlytics.clientEvent")) == 2
    assert len(server.recorded("cardlytics.startSession")) == 1
    server.reset()
    assert api.events == api.duplicates == api.batches == api.sessions == []
    # Tokens are forgotten too.
    assert send(client, [item()], token=token).status_code == 401


def test_faults_can_be_injected(client: httpx.Client, server: EmulatorServer) -> None:
    token = token_for(client)
    server.fault("cardlytics.clientEvent", status=429, times=1)
    limited = send(client, [item()], token=token)
    assert limited.status_code == 429 and "Retry-After" not in limited.headers
    assert send(client, [item()], token=token).status_code == 200
