"""The MXO emulator enforces every rule of the MXO rows of the validation table."""

from __future__ import annotations

import base64
import datetime as dt
import json
import typing as t

import httpx
import pytest

from trackware.testing.emulators import EmulatorServer
from trackware.testing.emulators._mxo import MXOAPI

SK = "ONE-NX8P2RSAAU-1813"
LW_SK = "ONE-5BTO1FBU1O-1109"
TID = "dedc2983-4666-4641-8047-61250a878f89"
BASIC = "Basic " + base64.b64encode(b"mxo-client-id:mxo-client-secret").decode()
FORM = "application/x-www-form-urlencoded"
RT = "/one/oauth2/rt/api/2.0/interaction"
OFFLINE = "/one/oauth2/rt/api/2.0/interaction/offline"
BATCH = "/one/oauth2/rt/api/2.0/interactions/offline"
LW = f"/one/rt/track/{LW_SK}/events"


@pytest.fixture
def api() -> MXOAPI:
    return MXOAPI()


@pytest.fixture
def client(api: MXOAPI) -> t.Iterator[httpx.Client]:
    with EmulatorServer([api]) as emu, httpx.Client(base_url=emu.url) as c:
        yield c


def request_token(client: httpx.Client) -> httpx.Response:
    """A valid client-credentials token request."""
    return client.post(
        "/one/oauth2token",
        content=b"grant_type=client_credentials",
        headers={"Authorization": BASIC, "Content-Type": FORM},
    )


def get_token(client: httpx.Client) -> str:
    r = request_token(client)
    assert r.status_code == 200, r.text
    return t.cast(str, r.json()["access_token"])


def now_iso(delta: float = 0.0) -> str:
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delta)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def call(
    client: httpx.Client,
    method: str,
    path: str,
    body: t.Any,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> httpx.Response:
    hdrs = {"Content-Type": "application/json", "dataMimeType": "application/json"}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    hdrs.update(headers or {})
    hdrs = {k: v for k, v in hdrs.items() if v}
    return client.request(
        method,
        path,
        content=raw if raw is not None else json.dumps(body).encode(),
        headers=hdrs,
        params={"sk": SK} if params is None else params,
    )


def offline_item(**extra: t.Any) -> dict[str, t.Any]:
    item: dict[str, t.Any] = {"uri": "api://shop/page", "timestamp": now_iso()}
    item.update(extra)
    return item


# --- token endpoint -------------------------------------------------------------------


def test_token_issued_without_expires_in_by_default(client: httpx.Client) -> None:
    """A valid client-credentials request gets a Bearer token and no expires_in."""
    r = request_token(client)
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["access_token"]
    assert "expires_in" not in body


def test_token_expires_in_only_when_configured(
    api: MXOAPI, client: httpx.Client
) -> None:
    """report_expires_in adds expires_in (= the configured TTL)."""
    api.report_expires_in = True
    api.token_ttl = 120
    assert request_token(client).json()["expires_in"] == 120


@pytest.mark.parametrize(
    ("headers", "body", "status", "rule"),
    [
        ({"Content-Type": "application/json"}, b"{}", 415, "content_type"),
        ({}, b"grant_type=client_credentials", 401, "client_authentication"),
        (
            {"Authorization": "Bearer abc"},
            b"grant_type=client_credentials",
            401,
            "client_authentication",
        ),
        (
            {"Authorization": "Basic !!notbase64"},
            b"grant_type=client_credentials",
            401,
            "client_authentication",
        ),
        (
            {
                "Authorization": "Basic "
                + base64.b64encode(b"mxo-client-id:wrong").decode()
            },
            b"grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            {"Authorization": BASIC},
            b"grant_type=password",
            400,
            "unsupported_grant_type",
        ),
        ({"Authorization": BASIC}, b"", 400, "unsupported_grant_type"),
    ],
)
def test_token_rules(
    client: httpx.Client,
    headers: dict[str, str],
    body: bytes,
    status: int,
    rule: str,
) -> None:
    """Basic client auth, form content type and grant_type are all required."""
    hdrs = {"Content-Type": FORM}
    hdrs.update(headers)
    r = client.post("/one/oauth2token", content=body, headers=hdrs)
    assert r.status_code == status
    assert r.json()["error"] == rule
    assert r.json()["statusCode"] == status


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/one/oauth2token"),
        ("GET", RT),
        ("DELETE", RT),
        ("POST", OFFLINE),
        ("POST", BATCH),
        ("GET", LW),
        ("PUT", LW),
    ],
)
def test_wrong_method_is_405(client: httpx.Client, method: str, path: str) -> None:
    """Each endpoint takes only its documented methods; others get 405 + Allow."""
    r = client.request(method, path, params={"sk": SK})
    assert r.status_code == 405
    assert r.json()["error"] == "method"
    assert r.headers["Allow"]


# --- Interaction API: auth and headers ------------------------------------------------


@pytest.mark.parametrize("path", [RT, OFFLINE, BATCH])
@pytest.mark.parametrize("auth", [None, BASIC, "Bearer not-a-token", "Bearer"], ids=str)
def test_interaction_needs_a_known_bearer_token(
    client: httpx.Client, path: str, auth: str | None
) -> None:
    """Basic, unknown or missing credentials get 401 on interaction paths."""
    body: t.Any = [offline_item()] if path == BATCH else offline_item()
    r = call(client, "PUT", path, body, headers={"Authorization": auth or ""})
    assert r.status_code == 401
    assert r.json()["error"] == "bearer_token"


def test_expired_token_is_401(api: MXOAPI, client: httpx.Client) -> None:
    """A token past its TTL is refused like an unknown one."""
    api.token_ttl = 0.0
    token = get_token(client)
    r = call(client, "PUT", RT, {"uri": "api://x"}, token=token)
    assert r.status_code == 401


def test_revoked_token_is_401(api: MXOAPI, client: httpx.Client) -> None:
    """revoke_tokens() makes every issued token invalid."""
    token = get_token(client)
    assert call(client, "PUT", RT, {"uri": "api://x"}, token=token).status_code == 200
    api.revoke_tokens()
    assert call(client, "PUT", RT, {"uri": "api://x"}, token=token).status_code == 401


@pytest.mark.parametrize("path", [RT, OFFLINE, BATCH])
def test_interaction_needs_json_content_type(client: httpx.Client, path: str) -> None:
    """A non-JSON Content-Type is 415."""
    token = get_token(client)
    r = call(client, "PUT", path, {}, token=token, headers={"Content-Type": FORM})
    assert r.status_code == 415
    assert r.json()["error"] == "content_type"


@pytest.mark.parametrize(
    ("method", "headers", "strict", "status"),
    [
        # POST without dataMimeType is 400 (strict); lenient mode lets it through.
        ("POST", {"dataMimeType": ""}, True, 400),
        ("POST", {"dataMimeType": ""}, False, 200),
        # PUT without dataMimeType is accepted.
        ("PUT", {"dataMimeType": ""}, True, 200),
        # Anything but application/json is 400; the header name is case-blind.
        ("POST", {"dataMimeType": "text/xml"}, True, 400),
        ("POST", {"dataMimeType": "", "Datamimetype": "application/json"}, True, 200),
    ],
    ids=["post-missing", "post-missing-lenient", "put-missing", "xml", "lowercase"],
)
def test_datamimetype_rules(
    api: MXOAPI,
    client: httpx.Client,
    method: str,
    headers: dict[str, str],
    strict: bool,
    status: int,
) -> None:
    """dataMimeType: required on POST (strict), optional on PUT, JSON only."""
    api.strict = strict
    token = get_token(client)
    r = call(client, method, RT, {"uri": "api://x"}, token=token, headers=headers)
    assert r.status_code == status
    if status == 400:
        assert r.json()["error"] == "dataMimeType"


# --- Interaction API: query -----------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"sk": ""}, {"sk": "one-bad"}], ids=str)
def test_site_key_rules(client: httpx.Client, params: dict[str, str]) -> None:
    """sk is required, non-empty and (heuristic, strict) shaped ONE-XXXXXXXXXX-NNNN."""
    token = get_token(client)
    r = call(client, "PUT", RT, {"uri": "api://x"}, token=token, params=params)
    assert r.status_code == 400 and r.json()["error"] == "sk"


def test_site_key_heuristic_is_switchable(api: MXOAPI, client: httpx.Client) -> None:
    """check_site_key=False accepts any non-empty sk."""
    api.check_site_key = False
    token = get_token(client)
    r = call(
        client, "PUT", RT, {"uri": "api://x"}, token=token, params={"sk": "mysite"}
    )
    assert r.status_code == 200


def test_unknown_site_key_is_404(api: MXOAPI, client: httpx.Client) -> None:
    """With site_keys configured, another key is 404 on both APIs."""
    api.site_keys = {SK}
    token = get_token(client)
    other = {"sk": "ONE-AAAAAAAAAA-0000"}
    r = call(client, "PUT", RT, {"uri": "api://x"}, token=token, params=other)
    assert r.status_code == 404 and r.json()["message"] == "unknown site key"
    assert lw(client, {"uri": "api://x"}).status_code == 404
    assert call(client, "PUT", RT, {"uri": "api://x"}, token=token).status_code == 200


def test_tid_must_be_uuid_like_in_strict_mode(
    api: MXOAPI, client: httpx.Client
) -> None:
    """A malformed tid is 400 in strict mode, accepted in lenient mode."""
    token = get_token(client)
    params = {"sk": SK, "tid": "not a tid"}
    r = call(client, "PUT", RT, {"uri": "api://x"}, token=token, params=params)
    assert r.status_code == 400 and r.json()["error"] == "tid"
    api.strict = False
    r = call(client, "PUT", RT, {"uri": "api://x"}, token=token, params=params)
    assert r.status_code == 200


# --- Interaction API: body ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "JSON object"),
        ({}, "uri must be a non-empty string"),
        ({"uri": ""}, "uri must be a non-empty string"),
        ({"uri": 5}, "uri must be a non-empty string"),
        ({"url": "api://x"}, "url is not accepted"),
        ({"uri": "api://x", "customerKeyName": "email"}, "requires customerKey"),
        ({"uri": "api://x", "customerKey": ""}, "customerKey must be"),
        ({"uri": "api://x", "customerKey": 5}, "customerKey must be"),
        (
            {"uri": "api://x", "customerKey": "c", "customerKeyName": ""},
            "customerKeyName must be",
        ),
        ({"uri": "api://x", "properties": {"a": "b"}}, "array"),
        ({"uri": "api://x", "properties": ["a"]}, "properties[0] must be an object"),
        ({"uri": "api://x", "properties": [{"value": "b"}]}, ".name"),
        ({"uri": "api://x", "properties": [{"name": "", "value": "b"}]}, ".name"),
        ({"uri": "api://x", "properties": [{"name": "a"}]}, ".value"),
        ({"uri": "api://x", "properties": [{"name": "a", "value": None}]}, ".value"),
        ({"uri": "api://x", "properties": [{"name": "a", "value": {}}]}, ".value"),
        (
            {"uri": "api://x", "properties": [{"name": "a", "value": "b", "x": 1}]},
            "unknown keys",
        ),
        ({"uri": "api://x", "device": []}, "device must be an object"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_interaction_body_rules(
    client: httpx.Client, method: str, body: t.Any, fragment: str
) -> None:
    """Each body rule is enforced on POST and PUT and named in the 400 body."""
    token = get_token(client)
    r = call(client, method, RT, body, token=token)
    assert r.status_code == 400
    assert fragment in r.json()["message"]


def test_malformed_json_is_400(client: httpx.Client) -> None:
    """A body that is not JSON is 400."""
    token = get_token(client)
    r = call(client, "PUT", RT, None, token=token, raw=b"{nope")
    assert r.status_code == 400 and "malformed JSON" in r.text


def test_valid_properties_values(api: MXOAPI, client: httpx.Client) -> None:
    """Property values may be strings, numbers or booleans; device an object."""
    token = get_token(client)
    body = {
        "uri": "api://x",
        "customerKey": "c-1",
        "customerKeyName": "email",
        "properties": [
            {"name": "a", "value": "b"},
            {"name": "n", "value": 1.5},
            {"name": "f", "value": False},
        ],
        "device": {"os": "web"},
    }
    r = call(client, "PUT", RT, body, token=token)
    assert r.status_code == 200
    assert api.events[0]["interaction"] == body


def test_url_accepted_in_lenient_mode_and_recorded(
    api: MXOAPI, client: httpx.Client
) -> None:
    """Lenient mode takes url (and records that url arrived), not both."""
    api.strict = False
    token = get_token(client)
    assert call(client, "PUT", RT, {"url": "api://x"}, token=token).status_code == 200
    assert api.events[-1]["uri_field"] == "url"
    r = call(client, "PUT", RT, {"url": "api://x", "uri": "api://x"}, token=token)
    assert r.status_code == 400 and "exactly one" in r.json()["message"]
    assert call(client, "PUT", RT, {"uri": "api://x"}, token=token).status_code == 200
    assert api.events[-1]["uri_field"] == "uri"


def test_trailing_slash_is_optional(api: MXOAPI, client: httpx.Client) -> None:
    """/interaction/ and /interaction are the same endpoint."""
    token = get_token(client)
    assert (
        call(client, "PUT", RT + "/", {"uri": "api://x"}, token=token).status_code
        == 200
    )
    assert api.events[0]["endpoint"] == "mxo.interaction"


# --- Interaction API: tids and optimizations ------------------------------------------


def test_tid_assigned_when_absent_and_echoed_when_known(
    api: MXOAPI, client: httpx.Client
) -> None:
    """A new tid is assigned on the first call and a known one is echoed."""
    token = get_token(client)
    first = call(client, "PUT", RT, {"uri": "api://x"}, token=token).json()["tid"]
    again = call(
        client,
        "PUT",
        RT,
        {"uri": "api://x"},
        token=token,
        params={"sk": SK, "tid": first},
    ).json()["tid"]
    assert again == first
    assert first in api.tids and not api.unknown_tids


def test_unknown_tid_is_recorded(api: MXOAPI, client: httpx.Client) -> None:
    """A tid MXO never assigned is echoed but noted (clients must not invent tids)."""
    token = get_token(client)
    r = call(
        client,
        "PUT",
        RT,
        {"uri": "api://x"},
        token=token,
        params={"sk": SK, "tid": TID},
    )
    assert r.json()["tid"] == TID
    assert api.unknown_tids == [TID]


def test_post_returns_canned_optimizations_put_none(client: httpx.Client) -> None:
    """POST answers optimizations with base64 data and REPLACE; PUT answers none."""
    token = get_token(client)
    post = call(client, "POST", RT, {"uri": "api://x"}, token=token).json()
    assert (
        post["statusCode"] == 200 and post["trackers"] == [] and post["captures"] == []
    )
    (opt,) = post["optimizations"]
    assert opt["directives"] == "REPLACE"
    assert json.loads(base64.b64decode(opt["data"]))["offer"] == "demo-offer"
    put = call(client, "PUT", RT, {"uri": "api://x"}, token=token).json()
    assert put["optimizations"] == []


def test_optimizations_are_configurable(api: MXOAPI, client: httpx.Client) -> None:
    """The canned optimizations can be replaced."""
    api.optimizations = []
    token = get_token(client)
    assert (
        call(client, "POST", RT, {"uri": "api://x"}, token=token).json()[
            "optimizations"
        ]
        == []
    )


# --- offline single -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "fragment"),
    [
        (None, "timestamp is required"),
        (1714564800, "ISO-8601 string"),
        ("yesterday", "ISO-8601 with a time zone"),
        ("2024-05-01T12:00:00", "ISO-8601 with a time zone"),
        ("2024-05-01", "ISO-8601 with a time zone"),
        ("FUTURE", "in the future"),
    ],
)
def test_offline_timestamp_rules(
    client: httpx.Client, timestamp: t.Any, fragment: str
) -> None:
    """Offline timestamps are ISO-8601 with a zone and not in the future."""
    token = get_token(client)
    item: dict[str, t.Any] = {"uri": "api://x"}
    if timestamp == "FUTURE":
        item["timestamp"] = now_iso(3600)
    elif timestamp is not None:
        item["timestamp"] = timestamp
    r = call(client, "PUT", OFFLINE, item, token=token)
    assert r.status_code == 400
    assert fragment in r.json()["message"]


@pytest.mark.parametrize(
    "timestamp",
    ["2024-05-01T12:00:00.000Z", "2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00Z"],
)
def test_offline_single_accepted(
    api: MXOAPI, client: httpx.Client, timestamp: str
) -> None:
    """A valid historic interaction is recorded; no optimizations are returned."""
    token = get_token(client)
    r = call(client, "PUT", OFFLINE, offline_item(timestamp=timestamp), token=token)
    assert r.status_code == 200
    assert set(r.json()) == {"statusCode", "tid"}
    assert api.events[0]["endpoint"] == "mxo.offline"


def test_offline_timestamp_within_skew_is_accepted(
    api: MXOAPI, client: httpx.Client
) -> None:
    """A timestamp slightly ahead (clock skew) passes; the skew is configurable."""
    token = get_token(client)
    r = call(client, "PUT", OFFLINE, offline_item(timestamp=now_iso(60)), token=token)
    assert r.status_code == 200
    api.future_skew = 0.0
    r = call(client, "PUT", OFFLINE, offline_item(timestamp=now_iso(60)), token=token)
    assert r.status_code == 400


# --- offline multiple -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ({"uri": "api://x"}, "interactions"),
        ([], "interactions"),
        ("x", "interactions"),
    ],
)
def test_offline_batch_must_be_a_non_empty_array(
    client: httpx.Client, body: t.Any, rule: str
) -> None:
    """The body is a JSON array of at least one interaction."""
    token = get_token(client)
    r = call(client, "PUT", BATCH, body, token=token)
    assert r.status_code == 400 and r.json()["error"] == rule


def test_offline_batch_caps_at_100(api: MXOAPI, client: httpx.Client) -> None:
    """100 interactions are accepted; 101 are refused with 400."""
    token = get_token(client)
    r = call(client, "PUT", BATCH, [offline_item() for _ in range(101)], token=token)
    assert r.status_code == 400 and r.json()["error"] == "max_interactions"
    assert not api.events
    r = call(client, "PUT", BATCH, [offline_item() for _ in range(100)], token=token)
    assert r.status_code == 200
    assert len(api.events_for("mxo.offline_batch")) == 100


def test_offline_batch_is_all_or_nothing(api: MXOAPI, client: httpx.Client) -> None:
    """One invalid element rejects the call (nothing recorded, all problems listed)."""
    token = get_token(client)
    body = [
        offline_item(),
        {"uri": "api://x"},
        offline_item(),
        {"timestamp": now_iso()},
    ]
    r = call(client, "PUT", BATCH, body, token=token)
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert len(errors) == 2
    assert errors[0].startswith("[1] timestamp is required")
    assert errors[1].startswith("[3] uri")
    assert not api.events


def test_offline_batch_records_each_interaction_with_one_tid(
    api: MXOAPI, client: httpx.Client
) -> None:
    """Every element is recorded with its endpoint and the call's tid."""
    token = get_token(client)
    r = call(client, "PUT", BATCH, [offline_item(), offline_item()], token=token)
    tid = r.json()["tid"]
    assert [e["tid"] for e in api.events] == [tid, tid]
    assert {e["endpoint"] for e in api.events} == {"mxo.offline_batch"}


# --- Lightweight API ------------------------------------------------------------------


def lw(
    client: httpx.Client,
    body: t.Any,
    *,
    path: str = LW,
    content_type: str = "application/json; charset=utf-8",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    hdrs = {"Content-Type": content_type}
    hdrs.update(headers or {})
    return client.post(
        path, content=json.dumps(body).encode(), headers=hdrs, params=params
    )


def test_lightweight_needs_no_auth_and_ignores_authorization(
    api: MXOAPI, client: httpx.Client
) -> None:
    """No credentials are needed; an Authorization header is ignored."""
    r = lw(client, {"uri": "api://x"})
    assert r.status_code == 200 and set(r.json()) == {"statusCode", "tid"}
    r = lw(client, {"uri": "api://x"}, headers={"Authorization": "Bearer junk"})
    assert r.status_code == 200
    assert [e["endpoint"] for e in api.events] == ["mxo.lightweight"] * 2


@pytest.mark.parametrize(
    "path", ["/one/rt/track//events", "/one/rt/track/one-bad/events"]
)
def test_lightweight_site_key_in_path(client: httpx.Client, path: str) -> None:
    """An empty (or, heuristically, malformed) site key is 404."""
    r = lw(client, {"uri": "api://x"}, path=path)
    assert r.status_code == 404 and r.json()["error"] == "sk"


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("application/json;charset=UTF-8", 200),
        ("text/plain", 415),
        ("application/json; charset=latin-1", 415),
    ],
)
def test_lightweight_content_type(
    client: httpx.Client, content_type: str, status: int
) -> None:
    """JSON with an optional utf-8 charset is required."""
    r = lw(client, {"uri": "api://x"}, content_type=content_type)
    assert r.status_code == status


def test_lightweight_extra_query_parameters_and_tid(
    api: MXOAPI, client: httpx.Client
) -> None:
    """Extra query parameters are allowed; tid is echoed; a bad tid is 400."""
    first = lw(client, {"uri": "api://x"}, params={"campaign": "spring"}).json()["tid"]
    r = lw(client, {"uri": "api://x"}, params={"tid": first, "promo": "p1"})
    assert r.json()["tid"] == first
    assert api.events[1]["query"] == {"tid": first, "promo": "p1"}
    r = lw(client, {"uri": "api://x"}, params={"tid": "nope"})
    assert r.status_code == 400 and r.json()["error"] == "tid"


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ([], "body"),
        ({}, "uri"),
        ({"uri": ""}, "uri"),
        ({"uri": "api://x", "customerKey": "c"}, "customerKey"),
        ({"uri": "api://x", "url": "api://x"}, "url"),
        ({"uri": "api://x", "ck": 5}, "ck"),
        ({"uri": "api://x", "properties": "a=b"}, "properties"),
        ({"uri": "api://x", "properties": [{"name": "a"}]}, "properties"),
        ({"uri": "api://x", "properties": {"a": {"b": 1}}}, "properties"),
        ({"uri": "api://x", "properties": {"a": None}}, "properties"),
    ],
)
def test_lightweight_body_rules(client: httpx.Client, body: t.Any, rule: str) -> None:
    """uri required, ck a string, properties array or object; no customerKey/url."""
    r = lw(client, body)
    assert r.status_code == 400 and r.json()["error"] == rule


def test_lightweight_lenient_mode_takes_customer_key(
    api: MXOAPI, client: httpx.Client
) -> None:
    """Only strict mode refuses customerKey and url."""
    api.strict = False
    assert lw(client, {"uri": "api://x", "customerKey": "c"}).status_code == 200


@pytest.mark.parametrize(
    "properties",
    [
        [{"name": "a", "value": "b"}, {"name": "n", "value": 2}],
        {"a": "b", "n": 2, "f": True},
    ],
)
def test_lightweight_properties_shapes(
    api: MXOAPI, client: httpx.Client, properties: t.Any
) -> None:
    """Both documented property shapes are accepted and recorded as sent."""
    body = {"uri": "api://x", "properties": properties, "ck": "c-1"}
    assert lw(client, body).status_code == 200
    assert api.events[0]["interaction"] == body


def test_reset_forgets_state(api: MXOAPI, client: httpx.Client) -> None:
    """reset() clears events, tokens and tids but keeps configuration."""
    api.strict = False
    token = get_token(client)
    call(client, "PUT", RT, {"uri": "api://x"}, token=token)
    api.reset()
    assert not api.events and not api.tokens and not api.tids
    assert api.token_requests == 0 and api.strict is False
    assert call(client, "PUT", RT, {"uri": "api://x"}, token=token).status_code == 401
