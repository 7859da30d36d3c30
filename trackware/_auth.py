"""Vendor authentication: the token cache and the one re-authentication flow.

:class:`TokenCache` keeps tokens per key; :class:`TokenAuth` is the
``httpx.Auth`` flow every exporter uses (send with the current credentials,
on a 401 refresh them once and send again); :func:`jwt_expiry` reads the
expiry a JWT states. Tokens are registered with the log scrubber when fetched.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import threading
import time
import typing as t

import httpx

from . import _log

__all__ = [
    "CachedToken",
    "Credentials",
    "JWTExpiry",
    "TokenAuth",
    "TokenCache",
    "bearer",
    "jwt_claims",
    "jwt_expiry",
    "no_credentials",
]

K = t.TypeVar("K", bound=t.Hashable)


class _Entry:
    __slots__ = ("expires_at", "lock", "token")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.token: str | None = None
        self.expires_at = 0.0


class TokenCache(t.Generic[K]):
    """Caches tokens by key; ``fetch(key)`` returns ``(token, ttl_seconds)``.

    Args:
        fetch: obtains a fresh token; raises
            :class:`~trackware.exceptions.AuthError` on failure.
        refresh_margin: refresh this many seconds before expiry.
        default_ttl: lifetime assumed when ``fetch`` returns ``None`` as TTL.
        max_keys: bound on cached keys (oldest evicted).
    """

    def __init__(
        self,
        fetch: t.Callable[[K], tuple[str, float | None]],
        *,
        refresh_margin: float = 60.0,
        default_ttl: float = 900.0,
        max_keys: int = 10_000,
    ) -> None:
        self._fetch = fetch
        self.refresh_margin = refresh_margin
        self.default_ttl = default_ttl
        self.max_keys = max_keys
        self._entries: dict[K, _Entry] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def _entry(self, key: K) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                if len(self._entries) >= self.max_keys:
                    self._entries.pop(next(iter(self._entries)))
                entry = self._entries[key] = _Entry()
            return entry

    def get(self, key: K, *, refresh: bool = False, stale: str | None = None) -> str:
        """A valid token for ``key``.

        Args:
            refresh: fetch a new one even if the cached one looks valid.
            stale: with ``refresh``, only fetch if the cached token is still
                this one (another thread may have refreshed it already).
        """
        entry = self._entry(key)
        with entry.lock:
            now = time.monotonic()
            valid = entry.token is not None and now < entry.expires_at
            if valid and not (refresh and (stale is None or entry.token == stale)):
                return t.cast(str, entry.token)
            token, ttl = self._fetch(key)
            self.fetches += 1
            _log.register_secret(token)
            ttl = self.default_ttl if ttl is None else ttl
            margin = min(self.refresh_margin, ttl / 4)
            entry.token = token
            entry.expires_at = now + max(0.0, ttl - margin)
            return token

    def invalidate(self, key: K) -> None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None:
            with entry.lock:
                entry.token = None
                entry.expires_at = 0.0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def fresh(self) -> TokenCache[K]:
        """An empty cache with the same fetch and settings: what a forked
        child starts with (a parent thread may have held a lock at fork time,
        and the child fetches its own tokens)."""
        return TokenCache(
            self._fetch,
            refresh_margin=self.refresh_margin,
            default_ttl=self.default_ttl,
            max_keys=self.max_keys,
        )

    def __repr__(self) -> str:
        return f"<TokenCache keys={len(self._entries)}>"


# --- the re-authentication flow ------------------------------------------------------

#: Headers for one attempt; ``True`` asks for refreshed credentials (after a
#: 401). May raise :class:`~trackware.exceptions.AuthError`.
Credentials: t.TypeAlias = "t.Callable[[bool], t.Mapping[str, str]]"

#: The statuses that mean "your credentials were refused" for most vendors.
REAUTH_STATUSES: frozenset[int] = frozenset({401})


def no_credentials(refresh: bool) -> dict[str, str]:
    """:data:`Credentials` of an unauthenticated request (a 401 is still
    answered by one resend, as for any request)."""
    return {}


def bearer(token: str) -> dict[str, str]:
    """``Authorization: Bearer <token>``."""
    return {"Authorization": f"Bearer {token}"}


class CachedToken(t.Generic[K]):
    """:data:`Credentials` from one key of a :class:`TokenCache`, for one request.

    The first call gives the cached token's headers; a refresh fetches a new
    token unless another request already replaced the one this request
    carried (then that newer token is used). ``token`` is the token the
    request was last made with.
    """

    __slots__ = ("_header", "_key", "_tokens", "token")

    def __init__(
        self,
        tokens: TokenCache[K],
        key: K,
        header: t.Callable[[str], t.Mapping[str, str]] = bearer,
    ) -> None:
        self._tokens = tokens
        self._key = key
        self._header = header
        self.token: str | None = None

    def __call__(self, refresh: bool) -> t.Mapping[str, str]:
        if refresh:
            token = self._tokens.get(self._key, refresh=True, stale=self.token)
        else:
            token = self._tokens.get(self._key)
        self.token = token
        return self._header(token)


class TokenAuth(httpx.Auth):
    """The one re-authentication flow (an ``httpx.Auth``).

    Sends the request with ``credentials(False)``; when the answer's status is
    in ``reauth_statuses``, sends it once more with ``credentials(True)``
    (refreshed), and calls ``refused_again(first_status)`` when that answer is
    refused too. ``before_send`` runs before each attempt goes out, after the
    credentials were had (it may raise to stop the request: a shutdown during
    a token fetch). :class:`~trackware.exceptions.AuthError` from the
    credentials propagates to the caller of the request. ``refreshed`` tells
    whether a second attempt was made.
    """

    # A refused answer is read (and its connection freed) before the refresh,
    # which may need a connection of the same pool for the token request.
    requires_response_body = True

    def __init__(
        self,
        credentials: Credentials,
        *,
        reauth_statuses: t.Container[int] = REAUTH_STATUSES,
        before_send: t.Callable[[], None] | None = None,
        refused_again: t.Callable[[int], None] | None = None,
    ) -> None:
        self._credentials = credentials
        self._reauth = reauth_statuses
        self._before_send = before_send
        self._refused_again = refused_again
        self.refreshed = False

    def auth_flow(
        self, request: httpx.Request
    ) -> t.Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self._credentials(False))
        if self._before_send is not None:
            self._before_send()
        response = yield request
        first = response.status_code
        if first not in self._reauth:
            return
        request.headers.update(self._credentials(True))
        if self._before_send is not None:
            self._before_send()
        self.refreshed = True
        response = yield request
        if response.status_code in self._reauth and self._refused_again is not None:
            self._refused_again(first)


# --- JWTs ----------------------------------------------------------------------------


def jwt_claims(token: str) -> dict[str, t.Any] | None:
    """The (unverified) claims of a JWT's payload segment, or ``None`` when the
    token has no second segment or it is not a base64url-encoded JSON object."""
    parts = token.split(".")
    if len(parts) < 2:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None


class JWTExpiry(t.NamedTuple):
    """The times a JWT states (epoch seconds)."""

    expires_at: float
    issued_at: float | None

    def lifetime(self, now: float | None = None) -> float:
        """Seconds the token is valid for: ``exp - iat`` when it states
        ``iat`` (immune to clock skew between us and the issuer), else
        ``exp - now``."""
        if self.issued_at is not None:
            return self.expires_at - self.issued_at
        return self.remaining(now)

    def remaining(self, now: float | None = None) -> float:
        """Seconds from ``now`` (default: the clock) until ``exp``."""
        return self.expires_at - (time.time() if now is None else now)


def _claim_time(value: t.Any, text: bool) -> float | None:
    """Epoch seconds from a claim: a number (milliseconds recognised by their
    size) or, with ``text``, an ISO-8601 string (UTC when it has no zone)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value) / 1000.0 if value > 100_000_000_000 else float(value)
    if text and isinstance(value, str) and value:
        try:
            when = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        return when.timestamp()
    return None


def jwt_expiry(token: str, *, claims: t.Sequence[str] = ("exp",)) -> JWTExpiry | None:
    """When the JWT ``token`` says it expires: the first of ``claims`` that
    holds a time (a number of seconds or milliseconds, or ISO-8601 text), with
    its ``iat`` if numeric. ``None`` for an opaque token (not three
    dot-separated segments) or one stating no readable expiry. Unverified:
    only for deciding when to refresh."""
    found = jwt_claims(token) if token.count(".") == 2 else None
    if found is None:
        return None
    for key in claims:
        expires_at = _claim_time(found.get(key), text=True)
        if expires_at is not None:
            return JWTExpiry(expires_at, _claim_time(found.get("iat"), text=False))
    return None
