"""Unit tests of trackware._auth: the token cache, the one re-authentication
flow (an ``httpx.Auth``, driven here through ``httpx.MockTransport``: no server
behaviour is at stake) and the JWT expiry helper."""

from __future__ import annotations

import base64
import json
import threading
import time
import typing as t

import httpx
import pytest

from trackware import _log
from trackware._auth import (
    CachedToken,
    JWTExpiry,
    TokenAuth,
    TokenCache,
    bearer,
    jwt_expiry,
    no_credentials,
)
from trackware.exceptions import AuthError


class Issuer:
    """A fetch function handing out tok-1, tok-2... and counting calls."""

    def __init__(self, ttl: float | None = 600.0, delay: float = 0.0) -> None:
        self.ttl = ttl
        self.delay = delay
        self.keys: list[str] = []

    def __call__(self, key: str) -> tuple[str, float | None]:
        if self.delay:
            time.sleep(self.delay)
        self.keys.append(key)
        return f"tok-{key}-{len(self.keys)}-7f3a9c", self.ttl


# --- TokenCache ----------------------------------------------------------------------


def test_a_token_is_fetched_once_and_reused() -> None:
    issuer = Issuer()
    cache: TokenCache[str] = TokenCache(issuer)
    first = cache.get("a")
    assert cache.get("a") == first
    assert cache.fetches == 1 and issuer.keys == ["a"]
    assert cache.get("b") != first  # one token per key
    assert issuer.keys == ["a", "b"]


def test_a_token_is_registered_for_scrubbing_when_fetched() -> None:
    cache: TokenCache[str] = TokenCache(Issuer())
    token = cache.get("scrub")
    assert token not in _log.scrub(f"the vendor echoed {token}")


def test_an_expired_token_is_fetched_again() -> None:
    issuer = Issuer(ttl=0.0)  # expires at once (the margin is capped at ttl/4)
    cache: TokenCache[str] = TokenCache(issuer)
    assert cache.get("a") != cache.get("a")
    assert cache.fetches == 2


def test_no_ttl_from_the_fetch_means_the_default_ttl() -> None:
    issuer = Issuer(ttl=None)
    cache: TokenCache[str] = TokenCache(issuer, default_ttl=0.0)
    cache.get("a")
    cache.get("a")
    assert cache.fetches == 2
    kept: TokenCache[str] = TokenCache(Issuer(ttl=None), default_ttl=3600.0)
    kept.get("a")
    kept.get("a")
    assert kept.fetches == 1


def test_refresh_fetches_unless_another_caller_already_replaced_the_token() -> None:
    cache: TokenCache[str] = TokenCache(Issuer())
    old = cache.get("a")
    new = cache.get("a", refresh=True, stale=old)
    assert new != old and cache.fetches == 2
    # A second caller that also saw ``old`` refused gets ``new``, no fetch.
    assert cache.get("a", refresh=True, stale=old) == new
    assert cache.fetches == 2
    # refresh without stale always fetches.
    assert cache.get("a", refresh=True) not in (old, new)
    assert cache.fetches == 3


def test_invalidate_clear_and_max_keys() -> None:
    issuer = Issuer()
    cache: TokenCache[str] = TokenCache(issuer, max_keys=2)
    a = cache.get("a")
    cache.invalidate("a")
    assert cache.get("a") != a
    cache.get("b")
    cache.get("c")  # evicts the oldest key, "a"
    assert issuer.keys == ["a", "a", "b", "c"]
    cache.get("a")
    assert issuer.keys[-1] == "a"
    cache.clear()
    cache.get("c")
    assert issuer.keys[-1] == "c" and cache.fetches == 6


def test_fresh_is_an_empty_cache_with_the_same_settings() -> None:
    issuer = Issuer()
    cache: TokenCache[str] = TokenCache(
        issuer, refresh_margin=5.0, default_ttl=7.0, max_keys=3
    )
    cache.get("a")
    child = cache.fresh()
    assert (child.refresh_margin, child.default_ttl, child.max_keys) == (5.0, 7.0, 3)
    assert child.fetches == 0
    child.get("a")
    assert issuer.keys == ["a", "a"]


def test_concurrent_callers_share_one_fetch() -> None:
    cache: TokenCache[str] = TokenCache(Issuer(delay=0.05))
    tokens: list[str] = []
    threads = [
        threading.Thread(target=lambda: tokens.append(cache.get("a"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1 and len(tokens) == 8
    assert cache.fetches == 1


# --- TokenAuth: the re-authentication flow ----------------------------------------


class API:
    """A MockTransport handler: refuses the first ``refuse`` requests with
    401, then answers 200; records each request's Authorization header."""

    def __init__(self, refuse: int = 0, status: int = 401) -> None:
        self.refuse = refuse
        self.status = status
        self.seen: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.headers.get("Authorization"))
        request.read()
        if len(self.seen) <= self.refuse:
            return httpx.Response(self.status, text="refused")
        return httpx.Response(200, json={"ok": True})


def post(api: API, auth: httpx.Auth) -> httpx.Response:
    with httpx.Client(transport=httpx.MockTransport(api)) as client:
        return client.post("https://vendor.test/x", content=b"{}", auth=auth)


def test_the_cached_token_is_sent_and_a_200_ends_the_flow() -> None:
    cache: TokenCache[str] = TokenCache(Issuer())
    token = cache.get("k")
    api = API()
    auth = TokenAuth(CachedToken(cache, "k"))
    assert post(api, auth).status_code == 200
    assert api.seen == [f"Bearer {token}"]
    assert not auth.refreshed and cache.fetches == 1


def test_a_401_refreshes_once_and_resends_with_the_new_token() -> None:
    cache: TokenCache[str] = TokenCache(Issuer())
    old = cache.get("k")
    api = API(refuse=1)
    credentials = CachedToken(cache, "k")
    auth = TokenAuth(credentials)
    response = post(api, auth)
    assert response.status_code == 200
    assert auth.refreshed and cache.fetches == 2
    new = cache.get("k")
    assert api.seen == [f"Bearer {old}", f"Bearer {new}"] and new != old
    assert credentials.token == new  # the token the request was made with


def test_a_second_refusal_is_returned_and_reported_once() -> None:
    cache: TokenCache[str] = TokenCache(Issuer())
    reported: list[int] = []
    api = API(refuse=5, status=403)
    auth = TokenAuth(
        CachedToken(cache, "k"),
        reauth_statuses=frozenset({401, 403}),
        refused_again=reported.append,
    )
    assert post(api, auth).status_code == 403
    assert len(api.seen) == 2 and reported == [403]
    # A status outside reauth_statuses is not retried at all.
    plain = API(refuse=5, status=403)
    assert post(plain, TokenAuth(CachedToken(cache, "k"))).status_code == 403
    assert len(plain.seen) == 1


def test_a_refresh_uses_a_token_another_request_already_renewed() -> None:
    """The stale token is the one this request carried: a request refused
    with it after another one renewed the token does not fetch again."""
    cache: TokenCache[str] = TokenCache(Issuer())

    class Renewing(API):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            if not self.seen:  # meanwhile another request renews the token
                cache.get("k", refresh=True)
            return super().__call__(request)

    api = Renewing(refuse=1)
    assert post(api, TokenAuth(CachedToken(cache, "k"))).status_code == 200
    assert cache.fetches == 2  # the first token and the other request's renewal
    assert api.seen[1] == f"Bearer {cache.get('k')}" != api.seen[0]


def test_credentials_are_asked_anew_per_attempt_and_may_add_headers() -> None:
    calls: list[bool] = []

    def credentials(refresh: bool) -> dict[str, str]:
        calls.append(refresh)
        return {"X-Token": f"attempt-{len(calls)}"}

    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("X-Token"))
        return httpx.Response(401 if len(seen) == 1 else 200)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        response = client.get("https://vendor.test/", auth=TokenAuth(credentials))
    assert response.status_code == 200
    assert calls == [False, True] and seen == ["attempt-1", "attempt-2"]


def test_an_unauthenticated_request_is_still_resent_once_after_a_401() -> None:
    api = API(refuse=1)
    assert post(api, TokenAuth(no_credentials)).status_code == 200
    assert api.seen == [None, None]


def test_an_auth_error_reaches_the_caller_and_nothing_is_sent() -> None:
    def fetch(key: str) -> tuple[str, float | None]:
        raise AuthError("token endpoint answered HTTP 503", retryable=True, status=503)

    api = API()
    with pytest.raises(AuthError) as info:
        post(api, TokenAuth(CachedToken(TokenCache(fetch), "k")))
    assert info.value.retryable and info.value.status == 503
    assert api.seen == []


def test_before_send_runs_before_each_attempt_and_may_stop_it() -> None:
    cache: TokenCache[str] = TokenCache(Issuer())
    attempts: list[int] = []

    def count() -> None:
        attempts.append(1)

    api = API(refuse=1)
    post(api, TokenAuth(CachedToken(cache, "k"), before_send=count))
    assert len(attempts) == 2 == len(api.seen)

    class Stopped(httpx.TransportError):
        pass

    def stop() -> None:
        raise Stopped("halted")

    stopped = API()
    with pytest.raises(Stopped):
        post(stopped, TokenAuth(CachedToken(cache, "k"), before_send=stop))
    assert stopped.seen == []


def test_bearer_and_custom_headers() -> None:
    assert bearer("abc") == {"Authorization": "Bearer abc"}
    cache: TokenCache[str] = TokenCache(Issuer())
    credentials = CachedToken(cache, "k", header=lambda token: {"X-Key": token})
    assert credentials(False) == {"X-Key": cache.get("k")}


# --- JWT expiry ----------------------------------------------------------------------


def jwt(claims: t.Any) -> str:
    raw = claims if isinstance(claims, str) else json.dumps(claims)
    payload = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    return f"eyJhbGciOiJub25lIn0.{payload}.sig"


def test_jwt_expiry_reads_exp_and_iat() -> None:
    assert jwt_expiry(jwt({"exp": 1000, "iat": 400})) == JWTExpiry(1000.0, 400.0)
    assert jwt_expiry(jwt({"exp": 1000, "iat": 400})).lifetime() == 600  # type: ignore[union-attr]
    only_exp = jwt_expiry(jwt({"exp": 1000}))
    assert only_exp == JWTExpiry(1000.0, None)
    assert only_exp.lifetime(now=900.0) == 100 == only_exp.remaining(now=900.0)
    assert jwt_expiry(jwt({"exp": 1_700_000_000_000})) == JWTExpiry(1.7e9, None)


def test_jwt_expiry_from_other_claims_and_iso_text() -> None:
    claims = ("exp", "sessionExpirationTimestamp")
    found = jwt_expiry(
        jwt({"sessionExpirationTimestamp": 1700000000000}), claims=claims
    )
    assert found is not None and found.expires_at == 1_700_000_000.0
    assert jwt_expiry(jwt({"sessionExpirationTimestamp": 5})) is None  # not asked
    iso = jwt_expiry(jwt({"exp": "2023-11-14T22:13:20Z"}))
    assert iso is not None and iso.expires_at == 1_700_000_000.0
    naive = jwt_expiry(jwt({"exp": "2023-11-14T22:13:20"}))  # UTC
    assert naive is not None and naive.expires_at == 1_700_000_000.0


def test_jwt_expiry_is_none_when_the_token_states_none() -> None:
    assert jwt_expiry("opaque-session-token") is None
    assert jwt_expiry("a.b") is None
    assert jwt_expiry(jwt("not json")) is None
    assert jwt_expiry(jwt([1, 2])) is None
    assert jwt_expiry(jwt({"iat": 1})) is None
    assert jwt_expiry(jwt({"exp": True})) is None
    assert jwt_expiry(jwt({"exp": "soon"})) is None
    assert jwt_expiry(jwt({"exp": float("inf")})) is None
