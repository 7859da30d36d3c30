"""The Synerise emulator enforces each vendor-apis.md §7 Synerise rule over HTTP."""

from __future__ import annotations

import base64
import json
import time
import typing as t

import httpx
import pytest

from trackware.testing.emulators import EmulatorServer
from trackware.testing.emulators._synerise import SyneriseAPI, parse_time

API_KEY = "test-synerise-api-key"
GUID = "6f1c1e36-1d5b-4b8e-9d3a-5d2f0c9b7a11"
TRACKER_KEY = "test-tracker-key-0001"
UUID = "e0097757-d1e2-44ac-ba3c-d97979a354c1"

DOG_BARK: dict[str, t.Any] = {
    "action": "dog.bark",
    "client": {"id": 5092159999},
    "time": "2022-11-28T12:18:27Z",
    "params": {"loudness": 3, "mood": "happy", "mailmanScared": True},
    "label": "bark",
}
HIT_TIMER: dict[str, t.Any] = {
    "type": "hit-timer",
    "time": "2022-11-26T13:13:48Z",
    "client": {"id": 267498412},
    "label": "string",
}
AI_VIEW: dict[str, t.Any] = {
    "correlationId": "5b0a0fcd-e76b-425c-b9e8-7d6d7bd4a79b",
    "clientUUID": UUID,
    "items": ["89435879453"],
    "eventTimestamp": 1670505802000,
}
TRANSACTION: dict[str, t.Any] = {
    "client": {"customId": "c-42"},
    "orderId": "o-1001",
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
    "eventSalt": "salt-1",
}


class Client:
    """A thin httpx wrapper that knows the emulator's URL and a valid JWT."""

    def __init__(self, server: EmulatorServer, api: SyneriseAPI) -> None:
        self.server = server
        self.api = api
        self.http = httpx.Client(base_url=server.url, timeout=5.0)
        self._token: str | None = None

    def login(self, key: str = API_KEY) -> httpx.Response:
        return self.http.post(
            "/uauth/v2/auth/login/profile",
            json={"apiKey": key},
            headers={"Api-Version": "4.4"},
        )

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.login().json()["token"]
        return self._token

    def v4(
        self,
        path: str,
        body: t.Any,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> httpx.Response:
        h = {
            "Authorization": f"Bearer {self.token}",
            "Api-Version": "4.4",
            "Content-Type": "application/json",
        }
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v}
        content = raw if raw is not None else json.dumps(body).encode()
        return self.http.post(path, content=content, headers=h)

    def ai(
        self,
        path: str,
        body: t.Any,
        *,
        token: str | None = TRACKER_KEY,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        params = {"token": token} if token is not None else None
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return self.http.post(
            path, content=json.dumps(body).encode(), headers=h, params=params
        )


@pytest.fixture
def api() -> SyneriseAPI:
    return SyneriseAPI()


@pytest.fixture
def client(api: SyneriseAPI) -> t.Iterator[Client]:
    with EmulatorServer([api]) as server:
        c = Client(server, api)
        yield c
        c.http.close()


def errors_of(response: httpx.Response) -> str:
    return " | ".join(response.json()["errors"])


# --- login ---------------------------------------------------------------------------


def jwt_claims(token: str) -> dict[str, t.Any]:
    payload = token.split(".")[1]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return t.cast("dict[str, t.Any]", json.loads(raw))


def test_login_issues_a_jwt_with_the_configured_ttl(client: Client) -> None:
    response = client.login()
    assert response.status_code == 200
    claims = jwt_claims(response.json()["token"])
    assert claims["exp"] - claims["iat"] == 3600
    client.api.token_ttl = 60
    claims = jwt_claims(client.login().json()["token"])
    assert claims["exp"] - claims["iat"] == 60
    assert client.api.logins == 2


def test_login_rejects_an_unknown_api_key(client: Client) -> None:
    response = client.login("nope-not-a-key")
    assert response.status_code == 401
    assert "apiKey" in errors_of(response)


@pytest.mark.parametrize(
    ("body", "headers", "status", "rule"),
    [
        ({"apiKey": API_KEY}, {"Api-Version": ""}, 400, "Api-Version"),
        ({"apiKey": API_KEY}, {"Content-Type": "text/plain"}, 415, "Content-Type"),
        ({"key": API_KEY}, {}, 400, "apiKey"),
        ([API_KEY], {}, 400, "apiKey"),
    ],
)
def test_login_validates_headers_and_body(
    client: Client, body: t.Any, headers: dict[str, str], status: int, rule: str
) -> None:
    h = {"Api-Version": "4.4", "Content-Type": "application/json"}
    h.update(headers)
    h = {k: v for k, v in h.items() if v}
    response = client.http.post(
        "/uauth/v2/auth/login/profile", content=json.dumps(body), headers=h
    )
    assert response.status_code == status
    assert rule in errors_of(response)


def test_wrong_method_is_405(client: Client) -> None:
    for path in (
        "/uauth/v2/auth/login/profile",
        "/v4/events/custom",
        "/v4/events/batch",
        "/v4/transactions",
        "/events/v1/batch",
        "/events/v1/single/recommendation.view",
    ):
        assert client.http.get(path).status_code == 405, path


# --- auth and headers on v4 -----------------------------------------------------------


def test_custom_event_accepted_with_202_and_empty_body(client: Client) -> None:
    response = client.v4("/v4/events/custom", DOG_BARK)
    assert response.status_code == 202
    assert response.content == b""
    (stored,) = client.api.events
    assert stored["action"] == "dog.bark" and stored["kind"] == "event"
    assert stored["storedTime"] == 1669637907000


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer not-a-token", "Token abc", "Basic " + "x" * 8],
)
def test_v4_requires_valid_authorization(client: Client, authorization: str) -> None:
    response = client.v4(
        "/v4/events/custom", DOG_BARK, headers={"Authorization": authorization}
    )
    assert response.status_code == 401
    assert "Authorization" in errors_of(response)


@pytest.mark.parametrize("status", [401, 403])
def test_expired_jwt_is_answered_with_the_configured_status(
    client: Client, status: int
) -> None:
    client.api.expired_status = status
    token = client.token
    assert client.v4("/v4/events/custom", DOG_BARK).status_code == 202
    base = time.time()
    client.api.clock = lambda: base + 3601  # the token's lifetime has passed
    response = client.v4(
        "/v4/events/custom", DOG_BARK, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == status
    assert "expired" in errors_of(response)


def test_basic_auth_only_when_enabled_for_the_key(client: Client) -> None:
    basic = "Basic " + base64.b64encode(f"{GUID}:{API_KEY}".encode()).decode()
    response = client.v4(
        "/v4/events/custom", DOG_BARK, headers={"Authorization": basic}
    )
    assert response.status_code == 401
    assert "not enabled" in errors_of(response)
    client.api.basic_auth_keys.add(API_KEY)
    response = client.v4(
        "/v4/events/custom", DOG_BARK, headers={"Authorization": basic}
    )
    assert response.status_code == 202
    wrong = "Basic " + base64.b64encode(f"{GUID}:other-key".encode()).decode()
    response = client.v4(
        "/v4/events/custom", DOG_BARK, headers={"Authorization": wrong}
    )
    assert response.status_code == 401


@pytest.mark.parametrize("value", ["", "4.3", "v4.4"])
def test_api_version_is_required_on_v4(client: Client, value: str) -> None:
    response = client.v4("/v4/events/custom", DOG_BARK, headers={"Api-Version": value})
    assert response.status_code == 400
    assert "Api-Version" in errors_of(response)
    client.api.api_version_status = 415
    response = client.v4("/v4/events/custom", DOG_BARK, headers={"Api-Version": value})
    assert response.status_code == 415


@pytest.mark.parametrize(
    "path", ["/v4/events/custom", "/v4/events/batch", "/v4/transactions"]
)
def test_content_type_must_be_json(client: Client, path: str) -> None:
    response = client.v4(path, DOG_BARK, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


def test_malformed_json_is_400(client: Client) -> None:
    response = client.v4("/v4/events/custom", None, raw=b'{"action": ')
    assert response.status_code == 400
    assert "malformed JSON" in response.text


# --- custom event body ----------------------------------------------------------------


def _with(base: dict[str, t.Any], **changes: t.Any) -> dict[str, t.Any]:
    out = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


_DROP = object()


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"action": _DROP}, "action: required"),
        ({"action": ""}, "action: required"),
        ({"action": 5}, "action: required"),
        ({"action": "Dog.Bark"}, "dot-separated lowercase"),
        ({"action": "dogbark"}, "dot-separated lowercase"),
        ({"action": "dog bark"}, "dot-separated lowercase"),
        ({"action": "transaction.charge"}, "/v4/transactions"),
        ({"action": "recommendation.view"}, "AI events API"),
        ({"action": "recommendation.click"}, "AI events API"),
        ({"action": "item.search.click"}, "AI events API"),
        ({"label": _DROP}, "label: required"),
        ({"label": ""}, "label: required"),
        ({"client": _DROP}, "client: required"),
        ({"client": {}}, "at least one of id, customId, uuid, email"),
        ({"client": {"name": "x"}}, "at least one of id, customId, uuid, email"),
        ({"client": {"id": "5092159999"}}, "client.id: must be an integer"),
        ({"client": {"id": 1.5}}, "client.id: must be an integer"),
        ({"client": {"uuid": UUID.upper()}}, "client.uuid: must be a lowercase UUID"),
        ({"client": {"uuid": "not-a-uuid"}}, "client.uuid"),
        ({"client": {"customId": 42}}, "client.customId"),
        ({"client": {"email": ""}}, "client.email"),
        ({"params": [1, 2]}, "params: must be an object"),
        ({"time": "28/11/2022 12:18"}, "time: must be an ISO-8601"),
        ({"time": 1669637907000}, "time: must be an ISO-8601"),
        ({"time": "2022-13-28T12:18:27Z"}, "time: must be an ISO-8601"),
        ({"eventSalt": 7}, "eventSalt: must be a string"),
    ],
)
def test_custom_event_rules(
    client: Client, changes: dict[str, t.Any], rule: str
) -> None:
    response = client.v4("/v4/events/custom", _with(DOG_BARK, **changes))
    assert response.status_code == 400
    assert rule in errors_of(response)
    assert client.api.events == []


def test_custom_event_body_must_be_an_object(client: Client) -> None:
    response = client.v4("/v4/events/custom", [DOG_BARK])
    assert response.status_code == 400


@pytest.mark.parametrize(
    "value",
    [
        "2022-05-23T13:00:00Z",
        "2022-05-23T09:00:00-04:00",
        "2022-05-23T07:00:00-06:00",
        "2022-05-23T13:00:00.176Z",
        "2022-05-23T13:00:00",
    ],
)
def test_documented_time_formats_are_accepted(client: Client, value: str) -> None:
    assert (
        client.v4("/v4/events/custom", _with(DOG_BARK, time=value)).status_code == 202
    )


def test_time_formats_mean_the_same_instant() -> None:
    assert (
        parse_time("2022-05-23T13:00:00Z")
        == parse_time("2022-05-23T09:00:00-04:00")
        == parse_time("2022-05-23T07:00:00-06:00")
    )


def test_lenient_mode_relaxes_the_strict_rules(client: Client) -> None:
    client.api.strict = False
    body = _with(DOG_BARK, action="Dog.Bark", client={"id": "5092159999"})
    assert client.v4("/v4/events/custom", body).status_code == 202
    batch = [_with(HIT_TIMER, action="client.hitTimer")]
    assert client.v4("/v4/events/batch", batch).status_code == 202


# --- semantics: future time, overwrite ------------------------------------------------


def test_future_time_is_stored_as_receive_time(client: Client) -> None:
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7200))
    before = time.time()
    response = client.v4("/v4/events/custom", _with(DOG_BARK, time=future))
    assert response.status_code == 202
    (stored,) = client.api.events
    assert stored["snr-original-time"] == future
    assert before * 1000 - 1 <= stored["storedTime"] <= time.time() * 1000 + 1
    assert stored["time"] != future


def test_event_salt_overwrites_and_a_missing_salt_duplicates(client: Client) -> None:
    # Without eventSalt, a retry of the same event is a second event.
    assert client.v4("/v4/events/custom", DOG_BARK).status_code == 202
    assert client.v4("/v4/events/custom", DOG_BARK).status_code == 202
    assert len(client.api.events) == 2
    client.api.reset()
    client._token = None
    salted = _with(DOG_BARK, eventSalt="e-1")
    assert client.v4("/v4/events/custom", salted).status_code == 202
    changed = _with(salted, params={"loudness": 9})
    assert client.v4("/v4/events/custom", changed).status_code == 202
    assert len(client.api.events) == 1
    assert client.api.events[0]["params"] == {"loudness": 9}
    assert client.api.overwrites == 1
    # Any difference in action, profile, time or salt makes a new event.
    for other in (
        _with(salted, eventSalt="e-2"),
        _with(salted, client={"id": 1}),
        _with(salted, time="2022-11-28T12:18:28Z"),
        _with(salted, action="dog.howl"),
    ):
        assert client.v4("/v4/events/custom", other).status_code == 202
    assert len(client.api.events) == 5


def test_same_instant_in_another_zone_overwrites(client: Client) -> None:
    salted = _with(DOG_BARK, eventSalt="e-1")
    assert client.v4("/v4/events/custom", salted).status_code == 202
    shifted = _with(salted, time="2022-11-28T13:18:27.000+01:00")
    assert client.v4("/v4/events/custom", shifted).status_code == 202
    assert len(client.api.events) == 1


def test_future_time_defeats_the_salt(client: Client) -> None:
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7200))
    body = _with(DOG_BARK, time=future, eventSalt="e-1")
    base = time.time()
    client.api.clock = lambda: base
    assert client.v4("/v4/events/custom", body).status_code == 202
    client.api.clock = lambda: base + 1
    assert client.v4("/v4/events/custom", body).status_code == 202
    assert len(client.api.events) == 2


# --- batch ----------------------------------------------------------------------------


def test_seed_batch_is_accepted(client: Client) -> None:
    response = client.v4(
        "/v4/events/batch", [{"type": "custom", **DOG_BARK}, HIT_TIMER]
    )
    assert response.status_code == 202 and response.content == b""
    assert [e["type"] for e in client.api.events] == ["custom", "hit-timer"]


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ({"events": []}, "JSON array"),
        ([], "1..1000"),
        ([_with(HIT_TIMER, type=_DROP)], "type: required"),
        ([_with(HIT_TIMER, type="")], "type: required"),
        ([_with(HIT_TIMER, type="hitTimer")], "kebab-case"),
        ([_with(HIT_TIMER, type="hit_timer")], "kebab-case"),
        ([{"type": "custom", **_with(DOG_BARK, action=_DROP)}], "action: required"),
        ([_with(HIT_TIMER, action="client.hitTimer")], "must be absent"),
        ([{"type": "custom", **_with(DOG_BARK, action="transaction.charge")}], "[0]"),
        ([_with(HIT_TIMER, label="")], "[0].label"),
        ([_with(HIT_TIMER, client={})], "[0].client"),
        (["not an object"], "must be an object"),
    ],
)
def test_batch_rules(client: Client, body: t.Any, rule: str) -> None:
    response = client.v4("/v4/events/batch", body)
    assert response.status_code == 400
    assert rule in errors_of(response)


def test_batch_size_limit_is_configurable(client: Client) -> None:
    client.api.max_batch = 2
    assert client.v4("/v4/events/batch", [HIT_TIMER] * 2).status_code == 202
    response = client.v4("/v4/events/batch", [HIT_TIMER] * 3)
    assert response.status_code == 400
    assert "1..2" in errors_of(response)


def test_batch_is_all_or_nothing(client: Client) -> None:
    """Our choice (undocumented): one invalid element rejects the whole request."""
    bad = _with(HIT_TIMER, client={})
    response = client.v4("/v4/events/batch", [HIT_TIMER, bad, HIT_TIMER])
    assert response.status_code == 400
    assert "[1].client" in errors_of(response)
    assert client.api.events == []


def test_dedicated_endpoint(client: Client) -> None:
    body = _with(HIT_TIMER, type=_DROP)
    assert client.v4("/v4/events/hit-timer", body).status_code == 202
    assert client.api.events[0]["type"] == "hit-timer"
    response = client.v4("/v4/events/hit-timer", _with(body, action="client.hitTimer"))
    assert response.status_code == 400
    assert client.v4("/v4/events/hit-timer", _with(body, label="")).status_code == 400


# --- transactions ---------------------------------------------------------------------


def test_transaction_accepted_and_overwritten_by_salt(client: Client) -> None:
    assert client.v4("/v4/transactions", TRANSACTION).status_code == 202
    assert client.v4("/v4/transactions", TRANSACTION).status_code == 202
    assert len(client.api.of_kind("transaction")) == 1
    assert client.api.overwrites == 1
    unsalted = _with(TRANSACTION, eventSalt=_DROP)
    assert client.v4("/v4/transactions/batch", [unsalted, unsalted]).status_code == 202
    assert len(client.api.of_kind("transaction")) == 3


def _product(**changes: t.Any) -> dict[str, t.Any]:
    return _with(TRANSACTION, products=[_with(TRANSACTION["products"][0], **changes)])


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (_with(TRANSACTION, client={}), "client: at least one"),
        (_with(TRANSACTION, orderId=_DROP), "orderId: required"),
        (_with(TRANSACTION, orderId=""), "orderId: required"),
        (_with(TRANSACTION, revenue=_DROP), "revenue: required"),
        (_with(TRANSACTION, value={"amount": "1", "currency": "PLN"}), "value.amount"),
        (_with(TRANSACTION, revenue={"amount": 1, "currency": "PL"}), "currency"),
        (_with(TRANSACTION, discountAmount={"amount": 1}), "discountAmount.currency"),
        (_with(TRANSACTION, products=_DROP), "products: required"),
        (_product(sku=_DROP), "products[0].sku"),
        (_product(name=""), "products[0].name"),
        (_product(finalUnitPrice=_DROP), "products[0].finalUnitPrice"),
        (_product(quantity=0), "products[0].quantity"),
        (_product(regularPrice={"amount": 1, "currency": 1}), "regularPrice.currency"),
        (_with(TRANSACTION, recordedAt="yesterday"), "recordedAt: must be an ISO"),
        (_with(TRANSACTION, paymentInfo="CARD"), "paymentInfo"),
        (_with(TRANSACTION, source=1), "source"),
        (_with(TRANSACTION, metadata=[]), "metadata"),
        (_with(TRANSACTION, eventSalt=1), "eventSalt"),
    ],
)
def test_transaction_rules(client: Client, body: dict[str, t.Any], rule: str) -> None:
    response = client.v4("/v4/transactions", body)
    assert response.status_code == 400
    assert rule in errors_of(response)
    response = client.v4("/v4/transactions/batch", [TRANSACTION, body])
    assert response.status_code == 400
    assert client.api.events == []


# --- AI events ------------------------------------------------------------------------


def test_ai_single_with_tracker_key_or_jwt(client: Client) -> None:
    path = "/events/v1/single/recommendation.view"
    assert client.ai(path, AI_VIEW).status_code == 202
    bearer = {"Authorization": f"Bearer {client.token}"}
    assert client.ai(path, AI_VIEW, token=None, headers=bearer).status_code == 202
    assert client.ai(path, AI_VIEW, token=client.token).status_code == 202
    stored = client.api.of_kind("ai")
    assert len(stored) == 3 and stored[0]["eventType"] == "recommendation.view"


@pytest.mark.parametrize("token", [None, "unknown-key"])
def test_ai_requires_a_token_or_bearer(client: Client, token: str | None) -> None:
    response = client.ai("/events/v1/single/recommendation.view", AI_VIEW, token=token)
    assert response.status_code == 401
    response = client.ai(
        "/events/v1/batch", {"eventType": "x", "items": []}, token=token
    )
    assert response.status_code == 401


def test_ai_does_not_require_api_version_but_needs_json(client: Client) -> None:
    path = "/events/v1/single/item.search.click"
    assert client.ai(path, AI_VIEW, headers={}).status_code == 202
    response = client.ai(path, AI_VIEW, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


@pytest.mark.parametrize(
    "path",
    [
        "/events/v1/single/recommendation.click",
        "/v4/events/ai-compat/recommendation.click",
        "/ai/v4/events/ai-compat/recommendation.click",
    ],
)
def test_ai_routes(client: Client, path: str) -> None:
    assert client.ai(path, AI_VIEW).status_code == 202


@pytest.mark.parametrize(
    "path", ["/events/v1/single/page.visit", "/v4/events/ai-compat/dog.bark"]
)
def test_ai_event_type_enum(client: Client, path: str) -> None:
    response = client.ai(path, AI_VIEW)
    assert response.status_code == 400
    assert "eventType" in errors_of(response)


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"correlationId": _DROP}, "correlationId: required"),
        ({"correlationId": ""}, "correlationId: required"),
        ({"clientUUID": _DROP}, "clientUUID: required"),
        ({"clientUUID": "c-42"}, "clientUUID: required, a UUID"),
        ({"items": _DROP}, "items: required"),
        ({"items": [89435879453]}, "items: required, an array of item-ID strings"),
        ({"items": "89435879453"}, "items"),
        ({"eventTimestamp": "2022-12-08T13:23:22Z"}, "eventTimestamp: must be an int"),
        ({"eventTimestamp": -1}, "eventTimestamp"),
        ({"eventTimestamp": 1670505802000.5}, "eventTimestamp"),
        ({"eventTimestamp": True}, "eventTimestamp"),
        ({"campaignId": 5}, "campaignId: must be a string"),
    ],
)
def test_ai_item_rules(client: Client, changes: dict[str, t.Any], rule: str) -> None:
    body = _with(AI_VIEW, **changes)
    response = client.ai("/events/v1/single/recommendation.view", body)
    assert response.status_code == 400
    assert rule in errors_of(response)
    batch = {"eventType": "recommendation.view", "items": [AI_VIEW, body]}
    response = client.ai("/events/v1/batch", batch)
    assert response.status_code == 400
    assert "items[1]." in errors_of(response)
    assert client.api.events == []


def test_ai_items_may_be_empty_and_future_timestamps_are_kept(client: Client) -> None:
    future = int((time.time() + 86400) * 1000)
    body = _with(AI_VIEW, items=[], eventTimestamp=future, campaignId="camp-1")
    assert client.ai("/events/v1/single/recommendation.view", body).status_code == 202
    assert client.api.events[0]["eventTimestamp"] == future


def test_ai_lenient_mode_accepts_iso_timestamps_with_a_warning(client: Client) -> None:
    client.api.strict = False
    body = _with(AI_VIEW, eventTimestamp="2022-12-08T13:23:22Z")
    assert client.ai("/events/v1/single/recommendation.view", body).status_code == 202
    assert client.api.warnings and "lenient" in client.api.warnings[0]


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ([AI_VIEW], "body: must be an object"),
        ({"eventType": "page.visit", "items": [AI_VIEW]}, "eventType"),
        ({"items": [AI_VIEW]}, "eventType"),
        ({"eventType": "recommendation.view", "items": []}, "items: required"),
        ({"eventType": "recommendation.view"}, "items: required"),
    ],
)
def test_ai_batch_rules(client: Client, body: t.Any, rule: str) -> None:
    response = client.ai("/events/v1/batch", body)
    assert response.status_code == 400
    assert rule in errors_of(response)


def test_ai_batch_mixed_profiles_and_size_limit(client: Client) -> None:
    other = _with(AI_VIEW, clientUUID="11111111-2222-4333-8444-555555555555")
    body = {"eventType": "recommendation.view", "items": [AI_VIEW, other]}
    assert client.ai("/events/v1/batch", body).status_code == 202
    assert len(client.api.of_kind("ai")) == 2
    client.api.max_ai_batch = 1
    response = client.ai("/events/v1/batch", body)
    assert response.status_code == 400
    assert "1..1" in errors_of(response)


def test_seed_ai_examples_need_integer_timestamps_in_strict_mode(
    client: Client,
) -> None:
    """The seed's ISO eventTimestamp contradicts its prose (vendor-apis §3.7.1)."""
    seed = _with(AI_VIEW, eventTimestamp="2022-12-08T13:23:22Z")
    path = "/events/v1/single/recommendation.view"
    assert client.ai(path, seed).status_code == 400
    assert client.ai(path, AI_VIEW).status_code == 202


def test_reset_forgets_state_but_not_configuration(client: Client) -> None:
    client.api.max_batch = 5
    assert client.v4("/v4/events/custom", DOG_BARK).status_code == 202
    client.server.reset()
    assert client.api.events == [] and client.api.tokens == {}
    assert client.api.max_batch == 5
    assert client.v4("/v4/events/custom", DOG_BARK).status_code == 401
