"""The Yotpo emulator enforces every rule of vendor-apis.md §7 (Yotpo rows)."""

from __future__ import annotations

import copy
import time
import typing as t

import httpx
import pytest

from trackware.exporters.yotpo import DEFAULT_FIELD_MAP
from trackware.testing.emulators import EmulatorServer
from trackware.testing.emulators._yotpo import (
    DEFAULT_SECRET,
    DEFAULT_STORE_ID,
    YotpoAPI,
)

STORE = DEFAULT_STORE_ID
EVENT_PATH = f"/core/v3/stores/{STORE}/custom_events"
TOKEN_PATH = f"/core/v3/stores/{STORE}/access_tokens"
EVENT_ID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"


def good_body() -> dict[str, t.Any]:
    return {
        "source": "trackware",
        "event_name": "order_shipped",
        "timestamp": "2026-11-24T06:00:00.000Z",
        "id": EVENT_ID,
        "customer": {
            "external_id": "c-42",
            "properties": {"tier": "gold", "vip": True},
        },
        "properties": {"order_id": "o-1", "total": 12.5, "items": 3},
    }


@pytest.fixture
def api() -> YotpoAPI:
    # The rate limit has its own tests; here it would only add noise.
    return YotpoAPI(rate_limit=None)


@pytest.fixture
def server(api: YotpoAPI) -> t.Iterator[EmulatorServer]:
    with EmulatorServer([api]) as srv:
        yield srv


@pytest.fixture
def client(server: EmulatorServer) -> t.Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as c:
        yield c


def get_token(
    client: httpx.Client, store: str = STORE, secret: str = DEFAULT_SECRET
) -> str:
    response = client.post(
        f"/core/v3/stores/{store}/access_tokens", json={"secret": secret}
    )
    assert response.status_code == 200, response.text
    return t.cast(str, response.json()["access_token"])


def send(
    client: httpx.Client,
    body: t.Any,
    token: str | None,
    *,
    path: str = EVENT_PATH,
    method: str = "POST",
    content_type: str = "application/json",
) -> httpx.Response:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["X-Yotpo-Token"] = token
    content = (
        body
        if isinstance(body, bytes)
        else httpx.Request("POST", "http://x", json=body).content
    )
    return client.request(method, path, content=content, headers=headers)


def rules(response: httpx.Response) -> set[str]:
    return {e["rule"] for e in response.json()["errors"]}


# --- token endpoint ------------------------------------------------------------------


def test_token_is_issued_for_a_known_store_and_secret(
    client: httpx.Client, api: YotpoAPI
) -> None:
    """POST access_tokens with the store's secret answers 200 {access_token}."""
    response = client.post(TOKEN_PATH, json={"secret": DEFAULT_SECRET})
    assert response.status_code == 200
    assert set(response.json()) == {"access_token"}
    assert api.tokens_issued == 1


@pytest.mark.parametrize(
    ("store", "body"),
    [
        (STORE, {"secret": "wrong"}),
        ("other-store", {"secret": DEFAULT_SECRET}),
        (STORE, {}),
        (STORE, {"secret": ""}),
    ],
)
def test_token_refused_without_the_right_secret(
    client: httpx.Client, store: str, body: dict[str, t.Any]
) -> None:
    """Unknown store, wrong or missing secret: 401 naming the credentials rule."""
    response = client.post(f"/core/v3/stores/{store}/access_tokens", json=body)
    assert response.status_code == 401
    assert rules(response) == {"credentials"}
    assert DEFAULT_SECRET not in response.text


def test_token_requires_json_content_type(client: httpx.Client) -> None:
    """A form-encoded token request is answered 415."""
    response = client.post(TOKEN_PATH, data={"secret": DEFAULT_SECRET})
    assert response.status_code == 415
    assert rules(response) == {"content_type"}


def test_token_endpoint_only_takes_post(client: httpx.Client) -> None:
    """GET on access_tokens is 405 with Allow: POST."""
    response = client.get(TOKEN_PATH)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    ("content", "rule"), [(b"{not json", "json"), (b'["secret"]', "body_object")]
)
def test_token_body_must_be_a_json_object(
    client: httpx.Client, content: bytes, rule: str
) -> None:
    """Malformed JSON or a non-object body is a 400 naming the rule."""
    response = client.post(
        TOKEN_PATH, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert rules(response) == {rule}


# --- event endpoint: transport rules -------------------------------------------------


def test_valid_event_is_accepted_and_echoed(
    client: httpx.Client, api: YotpoAPI
) -> None:
    """A valid event is answered 200 with a JSON echo and stored."""
    response = send(client, good_body(), get_token(client))
    assert response.status_code == 200, response.text
    assert response.json() == {"event": good_body(), "updated": False}
    assert api.events == [good_body()]
    assert api.events_for(STORE) == [good_body()]


@pytest.mark.parametrize("token", [None, "", "yt_not-a-token"])
def test_event_needs_an_issued_token(
    client: httpx.Client, api: YotpoAPI, token: str | None
) -> None:
    """Missing, empty or unknown X-Yotpo-Token: 401, nothing stored."""
    response = send(client, good_body(), token)
    assert response.status_code == 401
    assert rules(response) == {"auth"}
    assert api.events == []


def test_event_refuses_a_token_of_another_store(client: httpx.Client) -> None:
    """A token issued for store A does not open store B."""
    api = YotpoAPI(stores={STORE: DEFAULT_SECRET, "store-b": "secret-b"})
    with EmulatorServer([api]) as srv, httpx.Client(base_url=srv.url) as c:
        token_b = get_token(c, "store-b", "secret-b")
        response = send(c, good_body(), token_b)
        assert response.status_code == 401
        assert "another store" in response.json()["errors"][0]["message"]
        ok = send(c, good_body(), token_b, path="/core/v3/stores/store-b/custom_events")
        assert ok.status_code == 200
        assert api.events_for("store-b") == [good_body()]
        assert api.events_for(STORE) == []


def test_expired_token_is_refused(client: httpx.Client, api: YotpoAPI) -> None:
    """After its TTL a token is answered 401 (token expired)."""
    token = get_token(client)
    api.expire_tokens()
    response = send(client, good_body(), token)
    assert response.status_code == 401
    assert "expired" in response.json()["errors"][0]["message"]
    assert api.tokens_valid() == 0


def test_token_ttl_is_configurable(client: httpx.Client, api: YotpoAPI) -> None:
    """token_ttl=0 issues tokens that are already expired (14 days by default)."""
    assert api.token_ttl == 14 * 86400
    api.token_ttl = 0.0
    response = send(client, good_body(), get_token(client))
    assert response.status_code == 401


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded"]
)
def test_event_requires_json_content_type(
    client: httpx.Client, content_type: str
) -> None:
    """A non-JSON Content-Type is answered 415."""
    response = send(client, good_body(), get_token(client), content_type=content_type)
    assert response.status_code == 415
    assert rules(response) == {"content_type"}


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_event_endpoint_method_comes_from_the_field_map(
    client: httpx.Client, method: str
) -> None:
    """Any method but the field map's (POST) is 405 with Allow."""
    response = send(client, good_body(), get_token(client), method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert rules(response) == {"method"}


def test_unknown_path_under_the_store_is_404(client: httpx.Client) -> None:
    """A path the field map does not name is 404."""
    response = send(
        client,
        good_body(),
        get_token(client),
        path=f"/core/v3/stores/{STORE}/customer_events",
    )
    assert response.status_code == 404
    assert rules(response) == {"path"}


@pytest.mark.parametrize(
    ("content", "rule"), [(b"{oops", "json"), (b"[1, 2]", "body_object")]
)
def test_event_body_must_be_a_json_object(
    client: httpx.Client, content: bytes, rule: str
) -> None:
    """Malformed JSON or a non-object body is a 400 naming the rule."""
    response = send(client, content, get_token(client))
    assert response.status_code == 400
    assert rules(response) == {rule}


# --- event endpoint: body rules ------------------------------------------------------


def _set(path: str, value: t.Any) -> t.Callable[[dict[str, t.Any]], None]:
    def apply(body: dict[str, t.Any]) -> None:
        *parents, last = path.split(".")
        target = body
        for part in parents:
            target = target[part]
        target[last] = value

    return apply


def _drop(path: str) -> t.Callable[[dict[str, t.Any]], None]:
    def apply(body: dict[str, t.Any]) -> None:
        *parents, last = path.split(".")
        target = body
        for part in parents:
            target = target[part]
        del target[last]

    return apply


VIOLATIONS: list[tuple[str, t.Callable[[dict[str, t.Any]], None], str]] = [
    ("event name missing", _drop("event_name"), "event_name"),
    ("event name empty", _set("event_name", ""), "event_name"),
    ("event name not a string", _set("event_name", 7), "event_name"),
    ("event name too long", _set("event_name", "a" * 256), "event_name"),
    ("event name not snake_case", _set("event_name", "Order Shipped"), "event_name"),
    ("event name camelCase", _set("event_name", "orderShipped"), "event_name"),
    ("source missing", _drop("source"), "source"),
    ("source empty", _set("source", ""), "source"),
    ("source too long", _set("source", "s" * 256), "source"),
    ("source not snake_case", _set("source", "Quizapp"), "source"),
    ("id missing", _drop("id"), "id"),
    ("id empty", _set("id", ""), "id"),
    ("id not a string", _set("id", 12), "id"),
    ("id not a UUID", _set("id", "evt-1"), "id"),
    ("timestamp missing", _drop("timestamp"), "timestamp"),
    ("timestamp not ISO", _set("timestamp", "24/11/2026 06:00"), "timestamp"),
    ("timestamp epoch", _set("timestamp", 1790000000), "timestamp"),
    ("timestamp impossible", _set("timestamp", "2026-13-40T06:00:00Z"), "timestamp"),
    ("timestamp without zone", _set("timestamp", "2026-11-24T06:00:00"), "timestamp"),
    ("customer missing", _drop("customer"), "customer"),
    ("customer not an object", _set("customer", "c-42"), "customer"),
    ("no identity", _set("customer", {"properties": {"a": 1}}), "identity"),
    (
        "email and phone without external_id",
        _set("customer", {"email": "a@example.com", "phone_number": "+447700900123"}),
        "identity",
    ),
    ("external_id empty", _set("customer.external_id", ""), "external_id"),
    ("phone not E.164", _set("customer.phone_number", "07700 900123"), "phone_e164"),
    ("phone with leading zero", _set("customer.phone_number", "+0441"), "phone_e164"),
    (
        "phone too long",
        _set("customer.phone_number", "+1234567890123456"),
        "phone_e164",
    ),
    ("email without @", _set("customer.email", "a.example.com"), "email"),
    ("email with space", _set("customer.email", "a b@example.com"), "email"),
    ("property null", _set("properties.coupon", None), "property_null"),
    ("property object", _set("properties.address", {"city": "X"}), "property_nested"),
    ("property array", _set("properties.skus", ["a", "b"]), "property_nested"),
    ("property key with space", _set("properties.order id", "o"), "property_key"),
    ("properties not object", _set("properties", ["a"]), "properties_object"),
    ("customer property null", _set("customer.properties.x", None), "property_null"),
    (
        "customer property nested",
        _set("customer.properties.x", {"y": 1}),
        "property_nested",
    ),
    ("customer property key space", _set("customer.properties.a b", 1), "property_key"),
    (
        "customer properties not object",
        _set("customer.properties", 3),
        "properties_object",
    ),
    ("unknown top-level field", _set("event_type", "x"), "unknown_field"),
    ("unknown customer field", _set("customer.first_name", "Ann"), "unknown_field"),
]


@pytest.mark.parametrize(
    ("mutate", "rule"),
    [pytest.param(m, r, id=name) for name, m, r in VIOLATIONS],
)
def test_body_rule_violation_is_rejected_with_the_rule(
    client: httpx.Client,
    api: YotpoAPI,
    mutate: t.Callable[[dict[str, t.Any]], None],
    rule: str,
) -> None:
    """Each §7 body rule broken alone gives 400 naming exactly that rule."""
    body = good_body()
    mutate(body)
    response = send(client, body, get_token(client))
    assert response.status_code == 400, response.text
    assert rules(response) == {rule}
    assert api.events == []


def test_every_broken_rule_is_listed(client: httpx.Client) -> None:
    """The error body lists all the rules a body breaks, not just the first."""
    body = good_body()
    body["event_name"] = "Bad Name"
    body["id"] = "nope"
    body["properties"]["x"] = None
    response = send(client, body, get_token(client))
    assert response.status_code == 400
    assert rules(response) == {"event_name", "id", "property_null"}
    assert response.json()["status"] == 400


@pytest.mark.parametrize(
    "customer",
    [
        {
            "external_id": "c-1",
            "email": "a@example.com",
            "phone_number": "+15551234567",
        },
        {"email": "a@example.com"},
        {"phone_number": "+15551234567"},
    ],
)
def test_identity_forms_that_are_accepted(
    client: httpx.Client, customer: dict[str, str]
) -> None:
    """external_id (with any contacts), or exactly one of email / phone."""
    body = good_body()
    body["customer"] = customer
    assert send(client, body, get_token(client)).status_code == 200


def test_primitive_property_values_are_accepted(client: httpx.Client) -> None:
    """Strings, booleans, ints, floats and ISO date strings are fine."""
    body = good_body()
    body["properties"] = {
        "s": "x",
        "b": False,
        "i": 3,
        "f": 1.25,
        "d": "2026-11-24T06:00:00Z",
    }
    assert send(client, body, get_token(client)).status_code == 200


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_set("event_name", "Quizapp Finished"), "event_name"),
        (_set("source", "Quizapp"), "source"),
        (_set("id", "evt-1"), "id"),
        (_drop("timestamp"), "timestamp"),
        (_set("timestamp", "2026-11-24T06:00:00"), "timestamp"),
        (_set("timestamp", "2026-11-24"), "timestamp"),
        (_drop("source"), "source"),
        (_set("extra", 1), "extra"),
    ],
)
def test_lenient_mode_relaxes_the_contradictory_rules(
    client: httpx.Client,
    api: YotpoAPI,
    mutate: t.Callable[[dict[str, t.Any]], None],
    field: str,
) -> None:
    """strict=False accepts what the docs disagree on (names, id, timestamp, source)."""
    api.strict = False
    body = good_body()
    mutate(body)
    assert send(client, body, get_token(client)).status_code == 200


@pytest.mark.parametrize(
    ("mutate", "rule"),
    [
        (_set("properties.x", None), "property_null"),
        (
            _set("customer", {"email": "a@b.c", "phone_number": "+15551234567"}),
            "identity",
        ),
        (_set("timestamp", "yesterday"), "timestamp"),
        (_set("event_name", ""), "event_name"),
    ],
)
def test_lenient_mode_keeps_the_uncontested_rules(
    client: httpx.Client,
    api: YotpoAPI,
    mutate: t.Callable[[dict[str, t.Any]], None],
    rule: str,
) -> None:
    """strict=False still rejects nulls, identity breaches, bad dates, empty names."""
    api.strict = False
    body = good_body()
    mutate(body)
    response = send(client, body, get_token(client))
    assert response.status_code == 400
    assert rules(response) == {rule}


# --- semantics -----------------------------------------------------------------------


def test_same_id_upserts_instead_of_duplicating(
    client: httpx.Client, api: YotpoAPI
) -> None:
    """A repeated id replaces the stored copy (kept in place) and counts an upsert."""
    token = get_token(client)
    first = good_body()
    other = good_body()
    other["id"] = "0b7d2c4e-1111-4222-8333-944455556666"
    second = copy.deepcopy(first)
    second["properties"]["total"] = 99
    assert send(client, first, token).status_code == 200
    assert send(client, other, token).status_code == 200
    response = send(client, second, token)
    assert response.status_code == 200
    assert response.json()["updated"] is True
    assert api.events == [second, other]
    assert api.upserts == 1


def test_same_id_in_two_stores_is_two_events() -> None:
    """Upsert is keyed by (store_id, id)."""
    api = YotpoAPI(stores={"a": "secret-a", "b": "secret-b"}, rate_limit=None)
    with EmulatorServer([api]) as srv, httpx.Client(base_url=srv.url) as c:
        for store in ("a", "b"):
            token = get_token(c, store, f"secret-{store}")
            path = f"/core/v3/stores/{store}/custom_events"
            assert send(c, good_body(), token, path=path).status_code == 200
    assert len(api.events) == 2
    assert api.upserts == 0


def test_reset_forgets_events_and_tokens(client: httpx.Client, api: YotpoAPI) -> None:
    """reset() empties events, counters and issued tokens."""
    token = get_token(client)
    send(client, good_body(), token)
    api.reset()
    assert api.events == [] and api.tokens_issued == 0 and api.upserts == 0
    assert send(client, good_body(), token).status_code == 401


def test_custom_field_map_is_used_for_path_method_and_fields(
    client: httpx.Client, api: YotpoAPI
) -> None:
    """Swapping the field map moves the endpoint and renames every field."""
    api.field_map = DEFAULT_FIELD_MAP.replace(
        path="/core/v3/stores/{store_id}/events/custom",
        method="PUT",
        envelope="event",
        event_name="type",
        customer_properties="attributes",
        version="test-2",
    )
    body = good_body()
    body["type"] = body.pop("event_name")
    body["customer"]["attributes"] = body["customer"].pop("properties")
    path = f"/core/v3/stores/{STORE}/events/custom"
    token = get_token(client)
    assert (
        send(client, {"event": body}, token, path=path, method="PUT").status_code == 200
    )
    assert api.events == [body]
    assert send(client, {"event": body}, token, path=path).status_code == 405
    assert send(client, {"event": body}, token).status_code == 404
    unwrapped = send(client, body, token, path=path, method="PUT")
    assert unwrapped.status_code == 400
    assert rules(unwrapped) == {"envelope"}
    old = good_body()
    response = send(client, {"event": old}, token, path=path, method="PUT")
    assert {"event_name", "unknown_field"} <= rules(response)


# --- rate limit ----------------------------------------------------------------------


def test_rate_limit_answers_429_with_ratelimit_headers() -> None:
    """Past the per-store limit: 429, RateLimit-Remaining 0, RateLimit-Reset, no
    Retry-After; refused requests do not count and are not stored."""
    api = YotpoAPI(rate_limit=2, rate_window=60.0)
    with EmulatorServer([api]) as srv, httpx.Client(base_url=srv.url) as c:
        token = get_token(c)
        remaining = []
        for i in range(2):
            body = good_body()
            body["id"] = f"00000000-0000-4000-8000-00000000000{i}"
            response = send(c, body, token)
            assert response.status_code == 200
            remaining.append(response.headers["RateLimit-Remaining"])
        assert remaining == ["1", "0"]
        limited = send(c, good_body(), token)
        assert limited.status_code == 429
        assert rules(limited) == {"rate_limit"}
        assert limited.headers["RateLimit-Remaining"] == "0"
        assert 1 <= int(limited.headers["RateLimit-Reset"]) <= 60
        assert "Retry-After" not in limited.headers
        assert send(c, good_body(), token).status_code == 429
    assert len(api.events) == 2
    assert api.rate_limited == 2


def test_rate_limit_is_per_store() -> None:
    """One store's exhausted window does not limit another store."""
    api = YotpoAPI(
        stores={"a": "secret-a", "b": "secret-b"}, rate_limit=1, rate_window=60
    )
    with EmulatorServer([api]) as srv, httpx.Client(base_url=srv.url) as c:
        token_a = get_token(c, "a", "secret-a")
        token_b = get_token(c, "b", "secret-b")
        path_a = "/core/v3/stores/a/custom_events"
        path_b = "/core/v3/stores/b/custom_events"
        assert send(c, good_body(), token_a, path=path_a).status_code == 200
        assert send(c, good_body(), token_a, path=path_a).status_code == 429
        assert send(c, good_body(), token_b, path=path_b).status_code == 200


def test_ratelimit_remaining_is_on_every_event_response() -> None:
    """200, 400, 401 and 415 answers of the event endpoint carry RateLimit-Remaining."""
    api = YotpoAPI(rate_limit=10, rate_window=60)
    with EmulatorServer([api]) as srv, httpx.Client(base_url=srv.url) as c:
        token = get_token(c)
        bad = good_body()
        bad["id"] = "x"
        answers = [
            send(c, good_body(), token),
            send(c, bad, token),
            send(c, good_body(), "yt_unknown"),
            send(c, good_body(), token, content_type="text/plain"),
        ]
        assert [r.status_code for r in answers] == [200, 400, 401, 415]
        assert [r.headers["RateLimit-Remaining"] for r in answers] == [
            "9",
            "8",
            "7",
            "6",
        ]
        assert all("RateLimit-Reset" in r.headers for r in answers)


def test_rate_limit_window_slides() -> None:
    """Once the oldest request leaves the window a new one is admitted."""
    api = YotpoAPI(rate_limit=1, rate_window=0.2)
    with EmulatorServer([api]) as srv, httpx.Client(base_url=srv.url) as c:
        token = get_token(c)
        assert send(c, good_body(), token).status_code == 200
        assert send(c, good_body(), token).status_code == 429

        deadline = time.monotonic() + 10
        while send(c, good_body(), token).status_code == 429:
            assert time.monotonic() < deadline, "the window never slid"
            time.sleep(0.02)
        assert api.rate_limited >= 1
