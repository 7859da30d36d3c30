"""A strict emulator of Yotpo's Core API v3 custom customer events.

Routes (vendor-apis.md §7, rows "Yotpo token" and "Yotpo custom customer
event"):

* ``yotpo.token``: ``POST /core/v3/stores/{store_id}/access_tokens`` with
  ``{"secret": ...}`` answers ``200 {"access_token": ...}``; a token lives
  ``token_ttl`` seconds (14 days by default) and is good for its store only.
* ``yotpo.event``: the custom-event endpoint. Its path, method and field names
  come from the same :class:`~trackware.exporters.yotpo.YotpoFieldMap` the
  exporter uses (they are unknown; §5.7). The path must lie under
  ``/core/v3/stores/{store_id}/`` (the only Yotpo namespace this emulator
  routes); ``field_map`` may be swapped at any time.

Choices where the documents disagree (each follows the "Handle:" lines of
vendor-apis.md §5.7):

* ``strict=True`` (default) requires ``timestamp`` and ``source`` (the seed
  says optional / defaulted), snake_case names (``^[a-z0-9]+(_[a-z0-9]+)*$``),
  a UUID ``id`` and a timestamp with a time zone; ``strict=False`` only checks
  non-empty strings of at most 255 characters, any string ``id`` and any
  ISO-8601 date or date-time. Strict mode also rejects fields the field map
  does not name, so a typo in a map shows up as an error instead of a loss.
* Success is ``200`` with a JSON echo of the stored event (the real code is
  unknown). Errors are ``{"status": N, "errors": [{"rule", "field",
  "message"}]}`` (the real error body is unknown too).
* The rate limit (5 requests per store per sliding 1-second window by
  default) covers the event endpoint only ("some endpoints may have their own
  rate limit"); every request routed to the event endpoint counts, except
  those answered 429. Answers carry ``RateLimit-Limit``,
  ``RateLimit-Remaining`` and ``RateLimit-Reset`` (whole seconds until a slot
  frees); a 429 never carries ``Retry-After`` (Yotpo does not document one).
* Events are upserted by ``(store_id, id)``: ``events`` keeps the current
  copy of each, in first-insertion order; ``upserts`` counts replacements.
"""

from __future__ import annotations

import collections
import datetime as _dt
import math
import re
import secrets
import time
import typing as t
import urllib.parse

from ...exporters.yotpo import DEFAULT_FIELD_MAP, MAX_NAME_LENGTH, YotpoFieldMap
from ._server import HTTPError, Reply, Request, VendorAPI

__all__ = ["DEFAULT_SECRET", "DEFAULT_STORE_ID", "YotpoAPI"]

#: The store the emulator knows by default, and its API secret.
DEFAULT_STORE_ID = "yotpo-test-store"
DEFAULT_SECRET = "yotpo-test-secret-0001"

_SNAKE_RE = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_E164_RE = re.compile(r"\+[1-9]\d{1,14}", re.ASCII)
_DATETIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?"
    r"(Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_WHITESPACE_RE = re.compile(r"\s")

Problem: t.TypeAlias = "tuple[str, str | None, str]"


def _errors(status: int, problems: t.Sequence[Problem]) -> dict[str, t.Any]:
    return {
        "status": status,
        "errors": [
            {"rule": rule, "field": field, "message": message}
            for rule, field, message in problems
        ],
    }


def _fail(
    status: int,
    rule: str,
    field: str | None,
    message: str,
    headers: dict[str, str] | None = None,
) -> HTTPError:
    return HTTPError(status, _errors(status, [(rule, field, message)]), headers)


def _iso_ok(value: str, *, strict: bool) -> bool:
    match = _DATETIME_RE.fullmatch(value)
    if match is not None:
        if strict and match.group(7) is None:
            return False
        y, mo, d, h, mi, sec = (int(match.group(i)) for i in range(1, 7))
        try:
            _dt.datetime(y, mo, d, h, mi, sec)
        except ValueError:
            return False
        return True
    if strict:
        return False
    date = _DATE_RE.fullmatch(value)
    if date is None:
        return False
    try:
        _dt.date(int(date.group(1)), int(date.group(2)), int(date.group(3)))
    except ValueError:
        return False
    return True


class YotpoAPI(VendorAPI):
    """Yotpo's token and custom-customer-event endpoints, validated strictly.

    Args (also plain attributes tests may change):
        stores: store id -> API secret (default one test store).
        strict: the strict reading of contradictory docs (see the module).
        field_map: path, method and field names of the event endpoint.
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
        field_map: YotpoFieldMap = DEFAULT_FIELD_MAP,
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
            self._tokens: dict[str, tuple[str, float]] = {}
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
                tok: (store, 0.0) for tok, (store, _) in self._tokens.items()
            }

    def tokens_valid(self) -> int:
        """How many issued tokens are still valid."""
        now = time.monotonic()
        with self.lock:
            return sum(1 for _, until in self._tokens.values() if until > now)

    # --- token endpoint --------------------------------------------------------------
    def _token(self, request: Request) -> Reply:
        body = self._json(request)
        store_id = urllib.parse.unquote(request.params["store_id"])
        if not isinstance(body, dict):
            raise _fail(400, "body_object", None, "the body must be a JSON object")
        secret = body.get("secret")
        if not isinstance(secret, str) or not secret:
            raise _fail(401, "credentials", "secret", "secret is required")
        with self.lock:
            known = self.stores.get(store_id)
            if known is None or not secrets.compare_digest(known, secret):
                raise _fail(
                    401, "credentials", "secret", "unknown store id or wrong secret"
                )
            token = "yt_" + secrets.token_urlsafe(24)
            now = time.monotonic()
            self._tokens = {
                tok: entry for tok, entry in self._tokens.items() if entry[1] > now
            }
            self._tokens[token] = (store_id, now + self.token_ttl)
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
            raise _fail(
                404,
                "path",
                None,
                f"no such endpoint: {request.path} (field map {fm.version} expects "
                f"{fm.method} {fm.path})",
            )
        if request.method != fm.method:
            raise HTTPError(
                405,
                _errors(
                    405,
                    [("method", None, f"use {fm.method} (field map {fm.version})")],
                ),
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
            raise _fail(
                415,
                "content_type",
                None,
                "Content-Type must be application/json, got "
                f"{request.headers.get('Content-Type')!r}",
            )
        try:
            return request.json()
        except HTTPError:
            raise _fail(400, "json", None, "the body is not valid JSON") from None

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
                raise _fail(
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
            raise _fail(401, "auth", "X-Yotpo-Token", "X-Yotpo-Token header missing")
        with self.lock:
            entry = self._tokens.get(token)
        if entry is None:
            raise _fail(401, "auth", "X-Yotpo-Token", "unknown access token")
        owner, until = entry
        if until <= time.monotonic():
            raise _fail(401, "auth", "X-Yotpo-Token", "access token expired")
        if owner != store_id:
            raise _fail(
                401, "auth", "X-Yotpo-Token", "access token issued for another store"
            )

    # --- body validation -------------------------------------------------------------
    def validate(self, body: t.Any, fm: YotpoFieldMap) -> dict[str, t.Any]:
        """The event object from ``body``, or ``HTTPError`` 400 listing every rule
        it breaks."""
        if fm.envelope:
            if not isinstance(body, dict) or not isinstance(
                body.get(fm.envelope), dict
            ):
                raise _fail(
                    400,
                    "envelope",
                    fm.envelope,
                    f"the body must be {{{fm.envelope!r}: {{...}}}}",
                )
            if self.strict and set(body) != {fm.envelope}:
                raise _fail(
                    400, "unknown_field", None, f"only {fm.envelope!r} is allowed"
                )
            body = body[fm.envelope]
        if not isinstance(body, dict):
            raise _fail(400, "body_object", None, "the body must be a JSON object")
        problems: list[Problem] = []
        strict = self.strict
        known = {
            fm.source,
            fm.event_name,
            fm.timestamp,
            fm.id,
            fm.customer,
            fm.properties,
        }
        if strict:
            for key in body:
                if key not in known:
                    problems.append(("unknown_field", key, f"unknown field {key!r}"))
        self._check_name(body, fm.event_name, "event_name", True, problems)
        self._check_name(body, fm.source, "source", strict, problems)
        if fm.id not in body:
            problems.append(("id", fm.id, "required"))
        else:
            value = body[fm.id]
            if not isinstance(value, str) or not value:
                problems.append(("id", fm.id, "must be a non-empty string"))
            elif strict and not _UUID_RE.fullmatch(value):
                problems.append(("id", fm.id, "must be a UUID"))
        if fm.timestamp not in body:
            if strict:
                problems.append(("timestamp", fm.timestamp, "required"))
        else:
            value = body[fm.timestamp]
            if not isinstance(value, str) or not _iso_ok(value, strict=strict):
                problems.append(
                    (
                        "timestamp",
                        fm.timestamp,
                        "must be an ISO-8601 date-time"
                        + (" with a time zone" if strict else ""),
                    )
                )
        self._check_customer(body, fm, problems)
        if fm.properties in body:
            self._check_flat(body[fm.properties], fm.properties, problems)
        if problems:
            raise HTTPError(400, _errors(400, problems))
        return body

    def _check_name(
        self,
        body: dict[str, t.Any],
        field: str,
        rule: str,
        required: bool,
        problems: list[Problem],
    ) -> None:
        if field not in body:
            if required:
                problems.append((rule, field, "required"))
            return
        value = body[field]
        if not isinstance(value, str) or not value:
            problems.append((rule, field, "must be a non-empty string"))
        elif len(value) > MAX_NAME_LENGTH:
            problems.append((rule, field, f"longer than {MAX_NAME_LENGTH} characters"))
        elif self.strict and not _SNAKE_RE.fullmatch(value):
            problems.append((rule, field, f"must be snake_case, got {value!r}"))

    def _check_customer(
        self, body: dict[str, t.Any], fm: YotpoFieldMap, problems: list[Problem]
    ) -> None:
        customer = body.get(fm.customer)
        if fm.customer not in body:
            problems.append(("customer", fm.customer, "required"))
            return
        if not isinstance(customer, dict):
            problems.append(("customer", fm.customer, "must be an object"))
            return
        if self.strict:
            known = {fm.external_id, fm.email, fm.phone_number, fm.customer_properties}
            for key in customer:
                if key not in known:
                    problems.append(
                        ("unknown_field", f"{fm.customer}.{key}", f"unknown {key!r}")
                    )
        present = {
            field: customer[field]
            for field in (fm.external_id, fm.email, fm.phone_number)
            if field in customer
        }
        if fm.external_id in present:
            value = present[fm.external_id]
            if not isinstance(value, str) or not value:
                problems.append(
                    ("external_id", fm.external_id, "must be a non-empty string")
                )
        if fm.email in present:
            value = present[fm.email]
            if (
                not isinstance(value, str)
                or value.count("@") != 1
                or _WHITESPACE_RE.search(value)
            ):
                problems.append(("email", fm.email, "not a valid email address"))
        if fm.phone_number in present:
            value = present[fm.phone_number]
            if not isinstance(value, str) or not _E164_RE.fullmatch(value):
                problems.append(
                    (
                        "phone_e164",
                        fm.phone_number,
                        "must be E.164 (+<country><number>)",
                    )
                )
        if not present:
            problems.append(
                (
                    "identity",
                    fm.customer,
                    f"identify the customer by {fm.external_id}, {fm.email} or "
                    f"{fm.phone_number}",
                )
            )
        elif (
            fm.external_id not in present
            and fm.email in present
            and fm.phone_number in present
        ):
            problems.append(
                (
                    "identity",
                    fm.customer,
                    f"without {fm.external_id}, send only one of {fm.email} or "
                    f"{fm.phone_number}",
                )
            )
        if fm.customer_properties in customer:
            self._check_flat(
                customer[fm.customer_properties],
                f"{fm.customer}.{fm.customer_properties}",
                problems,
            )

    def _check_flat(self, value: t.Any, where: str, problems: list[Problem]) -> None:
        if not isinstance(value, dict):
            problems.append(("properties_object", where, "must be an object"))
            return
        for key, item in value.items():
            path = f"{where}.{key}"
            if not key or _WHITESPACE_RE.search(key):
                problems.append(
                    ("property_key", path, "property names use _ instead of spaces")
                )
            if item is None:
                problems.append(("property_null", path, "null is not supported"))
            elif isinstance(item, (dict, list)):
                problems.append(
                    (
                        "property_nested",
                        path,
                        "values must be primitives (string, number, boolean, date)",
                    )
                )
