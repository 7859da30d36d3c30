"""The Synerise emulator: workspace login, v4 events and transactions, AI events.

Routes ``synerise.login``, ``.custom``, ``.batch``, ``.dedicated``,
``.transaction``, ``.transaction_batch``, ``.ai_single`` and ``.ai_batch``:
authentication (JWT, Basic, tracker key), headers, Synerise's error body,
batches (all-or-nothing), storage with ``eventSalt`` overwrite and future-time
replacement. The body rules are in ``_synerise_rules``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import json
import secrets
import time
import typing as t
import uuid

from ._api import HTTPError, Reply, Request, VendorAPI
from ._synerise_rules import (
    AI_EVENT_TYPES,
    API_VERSION,
    KEBAB_RE,
    RESERVED_ACTIONS,
    check_ai_item,
    check_common,
    check_event,
    check_transaction,
    parse_time,
)

__all__ = [
    "AI_EVENT_TYPES",
    "RESERVED_ACTIONS",
    "IssuedToken",
    "SyneriseAPI",
    "parse_time",
]


class IssuedToken(t.NamedTuple):
    """A JWT the login route issued: for which API key, valid until when
    (:attr:`SyneriseAPI.clock` time)."""

    api_key: str
    expires: float


def _iso(unix: float) -> str:
    moment = _dt.datetime.fromtimestamp(unix, _dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SyneriseAPI(VendorAPI):
    """The Synerise v4 events, transactions, AI events and workspace-login APIs.

    Args:
        api_keys: known workspace API keys, mapped to their workspace GUID.
        basic_auth_keys: API keys for which ``Basic GUID:apiKey`` is enabled.
        tracker_keys: tracker keys accepted as ``?token=`` on AI endpoints.
        token_ttl: lifetime of issued JWTs, seconds.
        token_exp_claim: put ``exp`` in issued JWTs (turn off to test a
            client's fallback lifetime).
        expired_status: the answer to an expired or unknown JWT (401 or 403).
        api_version_status: the answer to a missing/wrong ``Api-Version``
            (400 or 415).
        strict: enforce the rules marked "strict" in vendor-apis.md §7 (action
            format and reserved actions, ``type``/``action`` coupling, integer
            ``client.id``, integer ``eventTimestamp``).
        max_batch: most elements in ``/v4/events/batch`` and
            ``/v4/transactions/batch``.
        max_ai_batch: most items in ``/events/v1/batch``.

    All of these are plain attributes that tests may change. :attr:`clock`
    (default ``time.time``) is the emulator's notion of now, for tests that
    need tokens to expire or times to be in the future.

    Recorded state: :attr:`events` (accepted items, in order), :attr:`logins`
    (successful logins), :attr:`overwrites` (items replaced via ``eventSalt``),
    :attr:`warnings` (lenient-mode notes).
    """

    vendor = "synerise"

    def __init__(
        self,
        *,
        api_keys: t.Mapping[str, str] | None = None,
        basic_auth_keys: t.Iterable[str] = (),
        tracker_keys: t.Iterable[str] = ("test-tracker-key-0001",),
        token_ttl: float = 3600.0,
        token_exp_claim: bool = True,
        expired_status: int = 401,
        api_version_status: int = 400,
        strict: bool = True,
        max_batch: int = 1000,
        max_ai_batch: int = 1000,
    ) -> None:
        super().__init__()
        self.api_keys: dict[str, str] = dict(
            api_keys
            if api_keys is not None
            else {"test-synerise-api-key": "6f1c1e36-1d5b-4b8e-9d3a-5d2f0c9b7a11"}
        )
        self.basic_auth_keys: set[str] = set(basic_auth_keys)
        self.tracker_keys: set[str] = set(tracker_keys)
        self.token_ttl = token_ttl
        self.token_exp_claim = token_exp_claim
        self.expired_status = expired_status
        self.api_version_status = api_version_status
        self.strict = strict
        self.max_batch = max_batch
        self.max_ai_batch = max_ai_batch
        self.clock: t.Callable[[], float] = time.time
        self._signing_key = secrets.token_bytes(32)
        self.events: list[dict[str, t.Any]] = []
        self.tokens: dict[str, IssuedToken] = {}
        self.logins = 0
        self.overwrites = 0
        self.warnings: list[str] = []
        self._index: dict[tuple[str, ...], int] = {}

        self.route(
            "synerise.login", "POST", r"/uauth/v2/auth/login/profile", self._login
        )
        self.route("synerise.custom", "POST", r"/v4/events/custom", self._custom)
        self.route("synerise.batch", "POST", r"/v4/events/batch", self._batch)
        self.route(
            "synerise.ai_single",
            "POST",
            r"/events/v1/single/(?P<type>[^/]+)",
            self._ai_single,
        )
        self.route(
            "synerise.ai_single",
            "POST",
            r"(?:/ai)?/v4/events/ai-compat/(?P<type>[^/]+)",
            self._ai_single,
        )
        self.route("synerise.ai_batch", "POST", r"/events/v1/batch", self._ai_batch)
        self.route(
            "synerise.dedicated",
            "POST",
            r"/v4/events/(?P<type>[^/]+)",
            self._dedicated,
        )
        self.route(
            "synerise.transaction", "POST", r"/v4/transactions", self._transaction
        )
        self.route(
            "synerise.transaction_batch",
            "POST",
            r"/v4/transactions/batch",
            self._transaction_batch,
        )

    def reset(self) -> None:
        with self.lock:
            self.events.clear()
            self.tokens.clear()
            self._index.clear()
            self.warnings.clear()
            self.logins = 0
            self.overwrites = 0

    # --- helpers for tests ---------------------------------------------------------
    def expire_tokens(self) -> None:
        """Make every issued JWT expired (as if its lifetime had passed)."""
        with self.lock:
            self.tokens = {k: v._replace(expires=0.0) for k, v in self.tokens.items()}

    def of_kind(self, kind: str) -> list[dict[str, t.Any]]:
        """Accepted items of one kind: ``"event"``, ``"transaction"`` or ``"ai"``."""
        with self.lock:
            return [e for e in self.events if e["kind"] == kind]

    # --- errors ----------------------------------------------------------------------
    @staticmethod
    def _error(status: int, errors: list[str]) -> HTTPError:
        titles = {
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            415: "Unsupported Media Type",
        }
        return HTTPError(
            status,
            {
                "status": status,
                "error": titles.get(status, "Error"),
                "message": "; ".join(errors)[:2000],
                "errors": errors[:100],
            },
        )

    def _reject(self, errors: list[str]) -> None:
        """400 listing ``errors``, if there are any."""
        if errors:
            raise self._error(400, errors)

    @classmethod
    def _json(cls, request: Request) -> t.Any:
        """The body as JSON, or 400 in Synerise's error shape."""
        try:
            return request.json()
        except HTTPError as exc:
            raise cls._error(400, [f"body: {exc.reply.body['error']}"]) from None

    # --- auth ------------------------------------------------------------------------
    def _issue(self, api_key: str) -> str:
        now = self.clock()
        claims: dict[str, t.Any] = {
            "sub": self.api_keys[api_key],
            "iat": int(now),
            "jti": uuid.uuid4().hex,
        }
        if self.token_exp_claim:
            claims["exp"] = int(now + self.token_ttl)
        head = _b64(json.dumps({"alg": "HS512", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(
            self._signing_key, f"{head}.{body}".encode(), hashlib.sha512
        ).digest()
        token = f"{head}.{body}.{_b64(signature)}"
        with self.lock:
            self.tokens[token] = IssuedToken(api_key, now + self.token_ttl)
        return token

    def _jwt_valid(self, token: str) -> bool:
        with self.lock:
            entry = self.tokens.get(token)
        return entry is not None and self.clock() < entry.expires

    def _check_bearer(self, token: str) -> None:
        if not self._jwt_valid(token):
            raise self._error(
                self.expired_status,
                ["Authorization: token missing, expired or invalid"],
            )

    def _check_v4_auth(self, request: Request) -> None:
        bearer = request.credentials("bearer")
        if bearer is not None:
            self._check_bearer(bearer)
            return
        basic = request.credentials("basic")
        if basic is not None:
            try:
                decoded = base64.b64decode(basic, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            guid, _, key = decoded.partition(":")
            if (
                key in self.api_keys
                and self.api_keys[key] == guid
                and key in self.basic_auth_keys
            ):
                return
            raise self._error(
                401,
                [
                    "Authorization: Basic credentials unknown, or Basic auth "
                    "is not enabled for this API key"
                ],
            )
        raise self._error(
            401, ["Authorization: a Bearer JWT (or enabled Basic auth) is required"]
        )

    def _check_ai_auth(self, request: Request) -> None:
        token = request.query.get("token")
        if token is not None:
            if token in self.tracker_keys or self._jwt_valid(token):
                return
            raise self._error(401, ["token: unknown tracker key"])
        bearer = request.credentials("bearer")
        if bearer is not None:
            self._check_bearer(bearer)
            return
        raise self._error(
            401, ["auth: a 'token' query parameter or a Bearer JWT is required"]
        )

    def _check_headers(self, request: Request, *, api_version: bool) -> None:
        if api_version and request.headers.get("Api-Version") != API_VERSION:
            raise self._error(
                self.api_version_status,
                [f"Api-Version: header required and must be {API_VERSION!r}"],
            )
        if request.content_type != "application/json":
            raise self._error(415, ["Content-Type: must be application/json"])

    def _check_ai_item(self, item: object, where: str, errors: list[str]) -> None:
        """The AI item rules; lenient-mode notes go to :attr:`warnings`."""
        warnings: list[str] = []
        check_ai_item(item, where, errors, strict=self.strict, warnings=warnings)
        if warnings:
            with self.lock:
                self.warnings.extend(warnings)

    # --- storage ---------------------------------------------------------------------
    def _store(
        self, kind: str, name: str, item: dict[str, t.Any], time_field: str | None
    ) -> None:
        """Append ``item``, or overwrite an earlier one with the same key."""
        now = self.clock()
        record = dict(item)
        record["kind"] = kind
        record["eventCreateTime"] = _iso(now)
        key: tuple[str, ...] | None = None
        if time_field is not None:
            sent = item.get(time_field)
            stored = now
            if isinstance(sent, str):
                when = parse_time(sent)
                if when is not None and when > now:
                    # Documented: a future time is rejected and replaced by the
                    # receive time; the original stays as snr-original-time.
                    record["snr-original-time"] = sent
                    record[time_field] = _iso(now)
                else:
                    stored = t.cast(float, when)
            record["storedTime"] = int(round(stored * 1000))
            salt = item.get("eventSalt")
            if isinstance(salt, str):
                client = json.dumps(item.get("client"), sort_keys=True)
                key = (kind, name, client, str(record["storedTime"]), salt)
        with self.lock:
            if key is not None and key in self._index:
                self.events[self._index[key]] = record
                self.overwrites += 1
                return
            if key is not None:
                self._index[key] = len(self.events)
            self.events.append(record)

    # --- handlers --------------------------------------------------------------------
    def _login(self, request: Request) -> Reply:
        if request.content_type != "application/json":
            raise self._error(415, ["Content-Type: must be application/json"])
        if self.strict and request.headers.get("Api-Version") != API_VERSION:
            raise self._error(
                self.api_version_status,
                [f"Api-Version: header required and must be {API_VERSION!r}"],
            )
        body = self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("apiKey"), str):
            raise self._error(400, ["apiKey: required, a string"])
        key = body["apiKey"]
        if key not in self.api_keys:
            raise self._error(401, ["apiKey: invalid API key"])
        token = self._issue(key)
        with self.lock:
            self.logins += 1
        return Reply(200, {"token": token})

    def _v4_prelude(self, request: Request) -> t.Any:
        self._check_v4_auth(request)
        self._check_headers(request, api_version=True)
        return self._json(request)

    def _v4_array(
        self, body: t.Any, noun: str, check: t.Callable[[object, str, list[str]], None]
    ) -> list[dict[str, t.Any]]:
        """A v4 batch body: 1..``max_batch`` elements, all valid (or 400)."""
        if not isinstance(body, list):
            raise self._error(400, [f"body: must be a JSON array of {noun}"])
        if not 1 <= len(body) <= self.max_batch:
            raise self._error(
                400,
                [f"body: a batch holds 1..{self.max_batch} {noun}, got {len(body)}"],
            )
        errors: list[str] = []
        for i, item in enumerate(body):
            check(item, f"[{i}].", errors)
        self._reject(errors)
        return body

    def _custom(self, request: Request) -> Reply:
        body = self._v4_prelude(request)
        errors: list[str] = []
        check_event(body, "", errors, strict=self.strict, batch=False)
        self._reject(errors)
        self._store("event", body["action"], {"type": "custom", **body}, "time")
        return Reply(202)

    def _dedicated(self, request: Request) -> Reply:
        etype = request.params["type"]
        body = self._v4_prelude(request)
        if not KEBAB_RE.fullmatch(etype):
            raise self._error(400, [f"path: unknown event endpoint {etype[:100]!r}"])
        if not isinstance(body, dict):
            raise self._error(400, ["body: must be an object"])
        errors: list[str] = []
        if "action" in body and self.strict:
            errors.append(
                "action: not used on a dedicated endpoint; the endpoint is the type"
            )
        check_common(body, "", errors, strict=self.strict)
        self._reject(errors)
        self._store("event", etype, {**body, "type": etype}, "time")
        return Reply(202)

    def _batch(self, request: Request) -> Reply:
        body = self._v4_array(
            self._v4_prelude(request),
            "events",
            lambda item, where, errors: check_event(
                item, where, errors, strict=self.strict, batch=True
            ),
        )
        for item in body:
            name = item["action"] if item["type"] == "custom" else item["type"]
            self._store("event", name, item, "time")
        return Reply(202)

    def _transaction(self, request: Request) -> Reply:
        body = self._v4_prelude(request)
        errors: list[str] = []
        check_transaction(body, "", errors, strict=self.strict)
        self._reject(errors)
        self._store("transaction", "transaction.charge", body, "recordedAt")
        return Reply(202)

    def _transaction_batch(self, request: Request) -> Reply:
        body = self._v4_array(
            self._v4_prelude(request),
            "transactions",
            lambda item, where, errors: check_transaction(
                item, where, errors, strict=self.strict
            ),
        )
        for item in body:
            self._store("transaction", "transaction.charge", item, "recordedAt")
        return Reply(202)

    def _check_event_type(self, value: object, where: str) -> str:
        if value not in AI_EVENT_TYPES:
            raise self._error(
                400,
                [
                    f"{where}: must be one of {sorted(AI_EVENT_TYPES)}, "
                    f"got {str(value)[:100]!r}"
                ],
            )
        return str(value)

    def _ai_single(self, request: Request) -> Reply:
        self._check_ai_auth(request)
        self._check_headers(request, api_version=False)
        etype = self._check_event_type(request.params.get("type"), "eventType (path)")
        body = self._json(request)
        errors: list[str] = []
        self._check_ai_item(body, "", errors)
        self._reject(errors)
        self._store("ai", etype, {**body, "eventType": etype}, None)
        return Reply(202)

    def _ai_batch(self, request: Request) -> Reply:
        self._check_ai_auth(request)
        self._check_headers(request, api_version=False)
        body = self._json(request)
        if not isinstance(body, dict):
            raise self._error(400, ["body: must be an object {eventType, items}"])
        etype = self._check_event_type(body.get("eventType"), "eventType")
        items = body.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= self.max_ai_batch:
            raise self._error(
                400, [f"items: required, an array of 1..{self.max_ai_batch} events"]
            )
        errors: list[str] = []
        for i, item in enumerate(items):
            self._check_ai_item(item, f"items[{i}].", errors)
        self._reject(errors)
        for item in items:
            self._store("ai", etype, {**item, "eventType": etype}, None)
        return Reply(202)
