"""Cardlytics customer sessions: ``POST /v2/session/startSession``, one per customer.

:class:`SessionStarter` is the fetch function of the exporter's
:class:`~trackware._auth.TokenCache`; it turns every answer into a token or an
:class:`~trackware.exceptions.AuthError` (retryable or not).
"""

from __future__ import annotations

import threading
import typing as t
import uuid

import httpx

from ... import _log
from ..._auth import jwt_expiry
from ..._json import dumps
from ...exceptions import AuthError
from .._http import RETRYABLE_STATUSES, response_json, response_text, retry_floor
from ._contract import error_body

__all__ = ["SESSION_EXPIRY_CLAIMS", "SESSION_PATH", "SessionBody", "SessionStarter"]

SESSION_PATH = "/v2/session/startSession"
#: The JWT claims a session token may state its expiry in, in this order.
SESSION_EXPIRY_CLAIMS = ("exp", "sessionExpirationTimestamp")
#: ``"credentials"``, ``"customer"``, or a callable: customer id -> body.
SessionBody: t.TypeAlias = "str | t.Callable[[str], t.Mapping[str, t.Any]]"


class SessionStarter:
    """Starts Cardlytics sessions; counts consecutive startSession 500s.

    Cardlytics answers bad credentials with 500: after ``max_failures`` of them
    in a row the failure is no longer retryable. Thread-safe.

    Args:
        client: returns the exporter's pooled HTTP client (built lazily).
        url: the startSession URL.
        client_id, client_secret: the ``"credentials"`` body's values.
        body: the startSession body (see ``ClientEventExporter(session_body=)``).
        max_failures: consecutive 500s after which the error is not retryable.
    """

    def __init__(
        self,
        client: t.Callable[[], httpx.Client],
        url: str,
        *,
        client_id: str | None,
        client_secret: str | None,
        body: SessionBody,
        max_failures: int,
    ) -> None:
        self._client = client
        self._url = url
        self._client_id = client_id
        self._client_secret = client_secret
        self._body = body
        self.max_failures = max_failures
        self._lock = threading.Lock()
        self._failures = 0

    def after_fork(self) -> None:
        """A lock a parent thread held at fork time: start the child afresh."""
        self._lock = threading.Lock()

    def request_body(self, customer: str) -> t.Mapping[str, t.Any]:
        """The startSession body for ``customer``."""
        body = self._body
        if callable(body):
            return body(customer)
        if body == "customer":
            return {"sourceCustomerId": customer, "scopes": ["api:customer"]}
        return {"clientId": self._client_id, "secret": self._client_secret}

    def __call__(self, customer: str) -> tuple[str, float | None]:
        """``POST /v2/session/startSession`` for ``customer``: the session token
        and its lifetime in seconds (``None``: not readable from the token)."""
        try:
            content = dumps(self.request_body(customer)).encode("utf-8")
        except Exception as exc:
            # A broken session_body callable fails the same way every time.
            raise AuthError(
                f"could not build the startSession body ({type(exc).__name__})",
                retryable=False,
            ) from None
        try:
            response = self._client().post(
                self._url,
                content=content,
                headers={
                    "Content-Type": "application/json",
                    "x-source-customer-id": customer,
                    "X-CDLX-Request-Id": str(uuid.uuid4()),
                },
            )
        except httpx.TimeoutException as exc:
            raise AuthError(
                f"startSession timed out ({type(exc).__name__})", retryable=True
            ) from None
        except httpx.HTTPError as exc:
            raise AuthError(
                f"startSession connection error ({type(exc).__name__}: "
                f"{_log.scrub(str(exc))[:200]})",
                retryable=True,
            ) from None
        status = response.status_code
        text = response_text(response)
        if 200 <= status < 300:
            token, body_status = _token_from(response)
            if token is None:
                raise AuthError(
                    f"startSession answered HTTP {status} without a sessionToken",
                    retryable=body_status in RETRYABLE_STATUSES,
                    status=body_status or status,
                    body=text,
                )
            _log.register_secret(token)
            with self._lock:
                self._failures = 0
            expiry = jwt_expiry(token, claims=SESSION_EXPIRY_CLAIMS)
            return token, None if expiry is None else max(0.0, expiry.remaining())
        if status == 500:
            with self._lock:
                self._failures += 1
                failures = self._failures
            if failures >= self.max_failures:
                raise AuthError(
                    f"startSession answered HTTP 500 {failures} times in a row; "
                    "Cardlytics answers invalid clientId/secret with 500: check "
                    "client_id and client_secret (TRACKWARE_CARDLYTICS_CLIENT_ID / "
                    "_CLIENT_SECRET)",
                    retryable=False,
                    status=status,
                    body=text,
                )
            raise AuthError(
                "startSession answered HTTP 500 (invalid credentials, or a "
                "server error)",
                retryable=True,
                status=status,
                body=text,
                retry_after=retry_floor(response.headers),
            )
        if status in RETRYABLE_STATUSES:
            raise AuthError(
                f"startSession answered HTTP {status}",
                retryable=True,
                status=status,
                body=text,
                retry_after=retry_floor(response.headers),
            )
        data = response_json(response) or {}
        title = f": {data['title']}" if isinstance(data.get("title"), str) else ""
        raise AuthError(
            f"startSession refused customer session (HTTP {status}{title})",
            retryable=False,
            status=status,
            body=text,
        )


def _token_from(response: httpx.Response) -> tuple[str | None, int | None]:
    """The session token of a 2xx answer (``None`` for an error body), and
    the ``status`` an error body carries."""
    data = response_json(response)
    if data is None:
        return None, None
    failed, body_status = error_body(data)
    if failed:
        return None, body_status
    for key in ("sessionToken", "token", "accessToken", "access_token"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value, None
    return None, body_status
