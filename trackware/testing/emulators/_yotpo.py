"""The Yotpo emulator: access tokens and the custom customer event (Core API v3).

Routes ``yotpo.token`` (``POST /core/v3/stores/{store_id}/access_tokens``) and
``yotpo.event`` (path and method from the field map): tokens per store, the
per-store rate limit, upsert by ``(store_id, id)`` and what was accepted. The
body rules and the field map are in ``_yotpo_rules``.
"""

from __future__ import annotations

import collections
import math
import re
import secrets
import time
import typing as t
import urllib.parse

from ._api import HTTPError, Reply, Request, VendorAPI
from ._yotpo_rules import DEFAULT_FIELD_MAP, FieldMap, event_body, fail

__all__ = ["DEFAULT_SECRET", "DEFAULT_STORE_ID", "YotpoAPI"]

#: The store the emulator knows by default, and its API secret.
DEFAULT_STORE_ID = "yotpo-test-store"
DEFAULT_SECRET = "yotpo-test-secret-0001"


class _Token(t.NamedTuple):
    """An access token: its store, valid until (``time.monotonic()``)."""

    store_id: str
    until: float


class YotpoAPI(VendorAPI):
    """Yotpo's token and custom-customer-event endpoints, validated strictly.

    Args (also plain attributes tests may change):
        stores: store id -> API secret (default one test store).
        strict: the strict reading of contradictory docs (see the module).
        field_map: path, method and field names of the event endpoint (the
            exporter's ``YotpoFieldMap`` or any object of that shape; default:
            the emulator's own copy of the placeholders).
        token_ttl: seconds an access token is valid (Yotpo: 14 days).
        rate_limit: requests per ``rate_window`` per store (``None``: off).
        rate_window: the sliding window, seconds.

    Recorded state: ``events`` (the current copy of each accepted event, in
    order), ``upserts``, ``tokens_issued``, ``rate_limited`` (429s answered).
    """

    vendor = "yotpo"

    def __init__(
        self,
        *,
        stores: t.Mapping[str, str] | None = None,
        strict: bool = True,
        field_map: FieldMap = DEFAULT_FIELD_MAP,
        token_ttl: float = 14 * 86400.0,
        rate_limit: int | None = 5,
        rate_window: float = 1.0,
    ) -> None:
        super().__init__()
        self.stores: dict[str, str] = dict(
            stores if stores is not None else {DEFAULT_STORE_ID: DEFAULT_SECRET}
        )
        self.strict = strict
        self.field_map = field_map
        self.token_ttl = token_ttl
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.route(
            "yotpo.token",
            "POST",
            r"/core/v3/stores/(?P<store_id>[^/]+)/access_tokens",
            self._token,
        )
        # One route for every other path under a store: the event endpoint's
        # path and method come from ``field_map`` at request time, so tests can
        # swap the map without rebuilding the server.
        self.route(
            "yotpo.event",
            ("GET", "POST", "PUT", "PATCH", "DELETE"),
            r"/core/v3/stores/[^/]+/(?!access_tokens$).+",
            self._event,
        )
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self._events: dict[tuple[str, str], dict[str, t.Any]] = {}
            self._stores_of: dict[tuple[str, str], str] = {}
            self._tokens: dict[str, _Token] = {}
            self._windows: dict[str, collections.deque[float]] = {}
            self.upserts = 0
            self.tokens_issued = 0
            self.rate_limited = 0

    # --- recorded state --------------------------------------------------------------
    @property
    def events(self) -> list[dict[str, t.Any]]:
        """The current copy of every accepted event, in first-insertion order."""
        with self.lock:
            return list(self._events.values())

    def events_for(self, store_id: str) -> list[dict[str, t.Any]]:
        """The current events of one store."""
        with self.lock:
            return [e for (store, _), e in self._events.items() if store == store_id]

    def expire_tokens(self) -> None:
        """Make every issued token expired (as after 14 days)."""
        with self.lock:
            self._tokens = {
                tok: entry._replace(until=0.0) for tok, entry in self._tokens.items()
            }

    def tokens_valid(self) -> int:
        """How many issued tokens are still valid."""
        now = time.monotonic()
        with self.lock:
            return sum(1 for entry in self._tokens.values() if entry.until > now)

    # --- token endpoint --------------------------------------------------------------
    def _token(self, request: Request) -> Reply:
        body = self._json(request)
        store_id = urllib.parse.unquote(request.params["store_id"])
        if not isinstance(body, dict):
            raise fail(400, "body_object", None, "the body must be a JSON object")
        secret = body.get("secret")
        if not isinstance(secret, str) or not secret:
            raise fail(401, "credentials", "secret", "secret is required")
        with self.lock:
            known = self.stores.get(store_id)
            if known is None or not secrets.compare_digest(known, secret):
                raise fail(
                    401, "credentials", "secret", "unknown store id or wrong secret"
                )
            token = "yt_" + secrets.token_urlsafe(24)
            now = time.monotonic()
            self._tokens = {
                tok: entry for tok, entry in self._tokens.items() if entry.until > now
            }
            self._tokens[token] = _Token(store_id, now + self.token_ttl)
            self.tokens_issued += 1
        return Reply(200, {"access_token": token})

    # --- event endpoint --------------------------------------------------------------
    def _event(self, request: Request) -> Reply:
        fm = self.field_map
        pattern = re.escape(fm.path).replace(
            re.escape("{store_id}"), "(?P<store_id>[^/]+)"
        )
        match = re.fullmatch(pattern, request.path)
        if match is None:
            raise fail(
                404,
                "path",
                None,
                f"no such endpoint: {request.path} (field map {fm.version} expects "
                f"{fm.method} {fm.path})",
            )
        if request.method != fm.method:
            raise fail(
                405,
                "method",
                None,
                f"use {fm.method} (field map {fm.version})",
                {"Allow": fm.method},
            )
        store_id = urllib.parse.unquote(match.group("store_id"))
        headers = self._admit(store_id)
        try:
            self._authorize(request, store_id)
            body = self._json(request)
            event = self.validate(body, fm)
            key = (store_id, str(event[fm.id]))
            with self.lock:
                replaced = key in self._events
                if replaced:
                    self.upserts += 1
                self._events[key] = event
            return Reply(200, {"event": event, "updated": replaced}, headers)
        except HTTPError as exc:
            exc.reply.headers.update(headers)
            raise

    @staticmethod
    def _json(request: Request) -> t.Any:
        """The JSON body: 415 unless the Content-Type says JSON, 400 unless it is."""
        if request.content_type != "application/json":
            raise fail(
                415,
                "content_type",
                None,
                "Content-Type must be application/json, got "
                f"{request.headers.get('Content-Type')!r}",
            )
        try:
            return request.json()
        except HTTPError:
            raise fail(400, "json", None, "the body is not valid JSON") from None

    def _admit(self, store_id: str) -> dict[str, str]:
        """Count the request in the store's window, or answer 429."""
        limit = self.rate_limit
        if limit is None:
            return {}
        window_length = self.rate_window
        with self.lock:
            now = time.monotonic()
            window = self._windows.setdefault(store_id, collections.deque())
            while window and window[0] <= now - window_length:
                window.popleft()
            if len(window) >= limit:
                self.rate_limited += 1
                reset = max(1, math.ceil(window[0] + window_length - now))
                raise fail(
                    429,
                    "rate_limit",
                    None,
                    f"more than {limit} requests in {window_length:g}s for this store",
                    {
                        "RateLimit-Limit": str(limit),
                        "RateLimit-Remaining": "0",
                        "RateLimit-Reset": str(reset),
                    },
                )
            window.append(now)
            reset = max(0, math.ceil(window[0] + window_length - now))
            return {
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": str(limit - len(window)),
                "RateLimit-Reset": str(reset),
            }

    def _authorize(self, request: Request, store_id: str) -> None:
        token = request.headers.get("X-Yotpo-Token")
        if not token:
            raise fail(401, "auth", "X-Yotpo-Token", "X-Yotpo-Token header missing")
        with self.lock:
            entry = self._tokens.get(token)
        if entry is None:
            raise fail(401, "auth", "X-Yotpo-Token", "unknown access token")
        if entry.until <= time.monotonic():
            raise fail(401, "auth", "X-Yotpo-Token", "access token expired")
        if entry.store_id != store_id:
            raise fail(
                401, "auth", "X-Yotpo-Token", "access token issued for another store"
            )

    # --- body validation -------------------------------------------------------------
    def validate(self, body: t.Any, fm: FieldMap) -> dict[str, t.Any]:
        """The event object from ``body``, or ``HTTPError`` 400 listing every rule
        it breaks."""
        return event_body(body, fm, strict=self.strict)
