"""The Cardlytics emulator: startSession and clientEvent (Publisher API v2).

Routes ``cardlytics.startSession`` (``POST /v2/session/startSession``) and
``cardlytics.clientEvent`` (``POST /v2/events/clientEvent``): sessions,
authentication, Cardlytics' error envelope and what was accepted. The body
rules and enum tables are in ``_cardlytics_rules``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import json
import os
import time
import typing as t
import uuid

from ._api import HTTPError, Reply, Request, VendorAPI, loads_json
from ._cardlytics_rules import (
    AD_EVENT_TYPES,
    CHANNELS,
    CLIENT_EVENTS,
    NO_USER,
    SCOPES,
    SECTIONS,
    client_event_errors,
)

__all__ = [
    "AD_EVENT_TYPES",
    "CHANNELS",
    "CLIENT_EVENTS",
    "SECTIONS",
    "CardlyticsAPI",
]

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_NOT_ENROLLED = "User is not enrolled in the program and should not receive events."
_NO_ACCOUNTS = "User has no accounts"


class _Session(t.NamedTuple):
    customer: str
    session_id: str
    expires: float
    scopes: tuple[str, ...]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class CardlyticsAPI(VendorAPI):
    """The emulated Cardlytics API: configuration, issued sessions, accepted events.

    Args:
        credentials: accepted ``clientId`` -> ``secret`` pairs (default:
            ``cardlytics-test-client`` / ``cardlytics-test-secret``).
        strict: enforce the rules marked *strict* in the contract table
            (``serveToken`` required, ``clientEventMetadata: null`` present for
            non-Ad events, no unknown keys, ``x-source-customer-id`` must match
            the session's customer, OpenAPI ``sourceCustomerId`` must match
            the header).
        token_ttl: session lifetime, seconds (default 900; 3600 per the other page).
        max_events: most ``clientEvents`` per request.
        auth_header: which session header clientEvent accepts: ``"either"``
            (default), ``"bearer"`` (``Authorization: Bearer``) or
            ``"session-token"`` (``X-CDLX-Session-Token``).
        no_accounts: customer ids whose startSession is answered 400
            "User has no accounts".
        not_enrolled: customer ids whose startSession is answered 400 "User is
            not enrolled in the program...".
        organization_id: put in the session JWT.

    Attributes:
        events: accepted ``clientEvents`` items (dicts), in order, first
            occurrence of each ``clientEventId`` only.
        duplicates: items whose ``clientEventId`` an earlier request already
            delivered (accepted, recorded here, not added to ``events``).
        batches: one dict per accepted request: ``customer``, ``requestId``,
            ``clientEvents``.
        sessions: one dict per issued session: ``customer``, ``token``,
            ``expires`` (epoch seconds), ``scopes``.
    """

    vendor = "cardlytics"

    def __init__(
        self,
        *,
        credentials: t.Mapping[str, str] | None = None,
        strict: bool = True,
        token_ttl: float = 900.0,
        max_events: int = 100,
        auth_header: str = "either",
        no_accounts: t.Iterable[str] = (),
        not_enrolled: t.Iterable[str] = (),
        organization_id: str = "org-trackware-test",
    ) -> None:
        super().__init__()
        self.credentials: dict[str, str] = dict(
            credentials
            if credentials is not None
            else {"cardlytics-test-client": "cardlytics-test-secret"}
        )
        self.strict = strict
        self.token_ttl = token_ttl
        self.max_events = max_events
        self.auth_header = auth_header
        self.no_accounts: set[str] = set(no_accounts)
        self.not_enrolled: set[str] = set(not_enrolled)
        self.organization_id = organization_id
        self.events: list[dict[str, t.Any]] = []
        self.duplicates: list[dict[str, t.Any]] = []
        self.batches: list[dict[str, t.Any]] = []
        self.sessions: list[dict[str, t.Any]] = []
        self._tokens: dict[str, _Session] = {}
        self._seen: set[str] = set()
        self._signing_key = os.urandom(32)
        self.route(
            "cardlytics.startSession",
            _METHODS,
            r"/v2/session/startSession",
            self._start_session,
        )
        self.route(
            "cardlytics.clientEvent",
            _METHODS,
            r"/v2/events/clientEvent",
            self._client_event,
        )

    def reset(self) -> None:
        with self.lock:
            self.events.clear()
            self.duplicates.clear()
            self.batches.clear()
            self.sessions.clear()
            self._tokens.clear()
            self._seen.clear()

    # --- helpers for tests -----------------------------------------------------------
    def expire_sessions(self) -> None:
        """Make every issued session token invalid (the next use gets 401)."""
        with self.lock:
            self._tokens.clear()

    def claims(self, token: str) -> dict[str, t.Any]:
        """The JWT payload of an issued token."""
        payload = token.split(".")[1]
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        return t.cast("dict[str, t.Any]", json.loads(decoded))

    # --- shared checks ---------------------------------------------------------------
    @staticmethod
    def _request_id(request: Request) -> str:
        return request.headers.get("X-CDLX-Request-Id") or str(uuid.uuid4())

    @staticmethod
    def _error(
        status: int,
        kind: str,
        title: str,
        errors: list[str],
        request_id: str,
        headers: dict[str, str] | None = None,
    ) -> HTTPError:
        return HTTPError(
            status,
            {
                "type": kind,
                "title": title,
                "status": status,
                "validationErrors": errors,
                "requestId": request_id,
            },
            headers,
        )

    @classmethod
    def _bad_request(
        cls, errors: list[str], request_id: str, title: str = "Bad Request"
    ) -> HTTPError:
        return cls._error(400, "ValidationException", title, errors, request_id)

    @classmethod
    def _unauthorized(cls, error: str, request_id: str) -> HTTPError:
        return cls._error(
            401, "SessionValidationException", "Unauthorized", [error], request_id
        )

    def _preamble(self, request: Request, request_id: str) -> None:
        """Method (405) and content type (415) checks."""
        if request.method != "POST":
            raise self._error(
                405,
                "HttpRequestMethodNotSupported",
                "Method Not Allowed",
                [f"method {request.method} not allowed: use POST"],
                request_id,
                {"Allow": "POST"},
            )
        if request.content_type != "application/json":
            raise self._error(
                415,
                "HttpMediaTypeNotSupported",
                "Unsupported Media Type",
                [
                    "Content-Type must be application/json, got "
                    f"{request.content_type or 'none'!r}"
                ],
                request_id,
            )

    def _body(self, request: Request, request_id: str) -> t.Any:
        """The JSON object body, or 400 ``HttpMessageNotReadable``."""
        try:
            body = loads_json(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._error(
                400,
                "HttpMessageNotReadable",
                "Bad Request",
                [f"body: malformed JSON ({exc})"],
                request_id,
            ) from None
        if not isinstance(body, dict):
            raise self._error(
                400,
                "HttpMessageNotReadable",
                "Bad Request",
                ["body: must be a JSON object"],
                request_id,
            )
        return body

    def _customer_header(self, request: Request, request_id: str) -> str:
        customer = (request.headers.get("x-source-customer-id") or "").strip()
        if not customer:
            raise self._bad_request(
                [
                    "x-source-customer-id header is required (a pseudonymised "
                    f"customer id, or {NO_USER!r})"
                ],
                request_id,
            )
        return customer

    # --- POST /v2/session/startSession -----------------------------------------------
    def _start_session(self, request: Request) -> Reply:
        request_id = self._request_id(request)
        self._preamble(request, request_id)
        customer = self._customer_header(request, request_id)
        body = self._body(request, request_id)
        scopes: tuple[str, ...] = ("api:customer",)
        if "clientId" in body or "secret" in body:
            client_id = body.get("clientId")
            secret = body.get("secret")
            known = isinstance(client_id, str) and self.credentials.get(client_id)
            if not (
                known and isinstance(secret, str) and hmac.compare_digest(known, secret)
            ):
                # Documented quirk: invalid credentials are answered 500, not 401.
                raise self._error(
                    500,
                    "InternalServerError",
                    "Internal Server Error",
                    ["clientId/secret: invalid credentials"],
                    request_id,
                )
        elif "sourceCustomerId" in body:
            # The OpenAPI file's body: the client certificate authenticates.
            errors = []
            source = body.get("sourceCustomerId")
            if not isinstance(source, str) or not source:
                errors.append("sourceCustomerId: must be a non-empty string")
            elif self.strict and source != customer:
                errors.append(
                    "sourceCustomerId: must equal the x-source-customer-id header"
                )
            raw_scopes = body.get("scopes", ["api:customer"])
            if (
                not isinstance(raw_scopes, list)
                or not raw_scopes
                or not all(isinstance(s, str) and s in SCOPES for s in raw_scopes)
            ):
                errors.append(
                    "scopes: must be a non-empty array of 'api:customer' / "
                    "'api:institution'"
                )
            else:
                scopes = tuple(raw_scopes)
            if errors:
                raise self._bad_request(errors, request_id)
        else:
            raise self._bad_request(
                ["body: must carry clientId and secret (or sourceCustomerId)"],
                request_id,
            )
        if customer in self.not_enrolled:
            raise self._bad_request([_NOT_ENROLLED], request_id, _NOT_ENROLLED)
        if customer in self.no_accounts:
            raise self._bad_request([_NO_ACCOUNTS], request_id, _NO_ACCOUNTS)
        now = time.time()
        expires = now + self.token_ttl
        session_id = str(uuid.uuid4())
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {
            "customerId": customer,
            "sessionId": session_id,
            "organizationId": self.organization_id,
            "scopes": list(scopes),
            "iat": int(now),
            "exp": round(expires, 3),
            "sessionExpirationTimestamp": _dt.datetime.fromtimestamp(
                expires, _dt.timezone.utc
            )
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }
        payload = _b64(json.dumps(claims).encode())
        signature = _b64(
            hmac.new(
                self._signing_key, f"{header}.{payload}".encode(), hashlib.sha256
            ).digest()
        )
        token = f"{header}.{payload}.{signature}"
        with self.lock:
            self._tokens[token] = _Session(customer, session_id, expires, scopes)
            self.sessions.append(
                {
                    "customer": customer,
                    "token": token,
                    "expires": expires,
                    "scopes": list(scopes),
                }
            )
        return Reply(200, {"sessionToken": token})

    # --- POST /v2/events/clientEvent -------------------------------------------------
    def _session(self, request: Request, request_id: str) -> _Session:
        token: str | None = None
        if self.auth_header in ("either", "bearer"):
            token = request.credentials("bearer")
        if token is None and self.auth_header in ("either", "session-token"):
            token = request.headers.get("X-CDLX-Session-Token")
        if not token:
            accepted = {
                "either": "Authorization: Bearer <token> or X-CDLX-Session-Token",
                "bearer": "Authorization: Bearer <token>",
                "session-token": "X-CDLX-Session-Token",
            }.get(self.auth_header, self.auth_header)
            raise self._unauthorized(f"session token required ({accepted})", request_id)
        with self.lock:
            session = self._tokens.get(token)
        # Cardlytics gives "no special indication that the session has
        # expired": unknown and expired tokens get the same answer.
        if session is None or time.time() >= session.expires:
            raise self._unauthorized("session token: unknown or expired", request_id)
        return session

    def _client_event(self, request: Request) -> Reply:
        request_id = self._request_id(request)
        self._preamble(request, request_id)
        session = self._session(request, request_id)
        customer = self._customer_header(request, request_id)
        if self.strict and customer != session.customer:
            raise self._unauthorized(
                "x-source-customer-id: does not match the session's customer",
                request_id,
            )
        if "api:customer" not in session.scopes:
            raise self._error(
                403,
                "SessionValidationException",
                "Forbidden",
                ["session scope: creating customer events needs 'api:customer'"],
                request_id,
            )
        body = self._body(request, request_id)
        errors = self.validate(body)
        if errors:
            raise self._bad_request(errors, request_id)
        items: list[dict[str, t.Any]] = body["clientEvents"]
        with self.lock:
            self.batches.append(
                {"customer": customer, "requestId": request_id, "clientEvents": items}
            )
            for item in items:
                if item["clientEventId"] in self._seen:
                    self.duplicates.append(item)
                else:
                    self._seen.add(item["clientEventId"])
                    self.events.append(item)
        return Reply(200, {"requestId": request_id})

    # --- body validation -------------------------------------------------------------
    def validate(self, body: t.Mapping[str, t.Any]) -> list[str]:
        """Every violation of the clientEvent body rules (empty when valid)."""
        return client_event_errors(body, strict=self.strict, max_events=self.max_events)
