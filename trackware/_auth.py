"""Token caches for vendor authentication (OAuth2, session tokens, JWTs).

One :class:`TokenCache` per credential set; tokens are cached per key (for
Cardlytics, per end customer), refreshed ``refresh_margin`` seconds before they
expire and on demand after a 401, with a single-flight lock per key so that
concurrent callers never fetch the same token twice. Tokens are registered
with the log scrubber the moment they are obtained.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import typing as t

from . import _log
from .exceptions import AuthError  # renovation: re-export, remove at the end

__all__ = ["AuthError", "TokenCache", "jwt_claims"]

K = t.TypeVar("K", bound=t.Hashable)


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


class _Entry:
    __slots__ = ("expires_at", "lock", "token")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.token: str | None = None
        self.expires_at = 0.0


class TokenCache(t.Generic[K]):
    """Caches tokens by key; ``fetch(key)`` returns ``(token, ttl_seconds)``.

    Args:
        fetch: obtains a fresh token; raises :class:`AuthError` on failure.
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
