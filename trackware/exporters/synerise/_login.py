"""Synerise's workspace JWT: ``POST /uauth/v2/auth/login/profile`` with the API key.

:class:`WorkspaceLogin` is the fetch function of the exporter's
:class:`~trackware._auth.TokenCache`.
"""

from __future__ import annotations

import typing as t

import httpx

from ... import _log
from ..._auth import jwt_expiry
from ..._json import dumps
from ...exceptions import AuthError
from .._http import RETRYABLE_STATUSES, response_json, response_text, retry_floor

__all__ = ["API_VERSION", "LOGIN_PATH", "WorkspaceLogin"]

API_VERSION = "4.4"
LOGIN_PATH = "/uauth/v2/auth/login/profile"


class WorkspaceLogin:
    """Fetches workspace JWTs and counts the logins.

    The JWT is cached until ``refresh_margin`` seconds before its ``exp``
    (``ttl`` when it has none); the margin is applied here, since
    ``TokenCache`` would cap it at a quarter of the lifetime.

    Args:
        client: returns the exporter's pooled HTTP client (built lazily).
        url: the login URL.
        api_key: the workspace API key.
        ttl: the lifetime assumed for a token without a readable ``exp``.
        refresh_margin: seconds before ``exp`` at which the token is renewed.
    """

    def __init__(
        self,
        client: t.Callable[[], httpx.Client],
        url: str,
        api_key: str,
        *,
        ttl: float,
        refresh_margin: float,
    ) -> None:
        self._client = client
        self._url = url
        self._api_key = api_key
        self.ttl = ttl
        self.refresh_margin = refresh_margin
        #: Tokens fetched so far.
        self.count = 0

    def __call__(self, key: str) -> tuple[str, float | None]:
        """Fetch a workspace JWT; returns it with the seconds to cache it."""
        try:
            response = self._client().post(
                self._url,
                content=dumps({"apiKey": self._api_key}).encode("utf-8"),
                headers={
                    "Accept": "application/json",
                    "Api-Version": API_VERSION,
                    "Content-Type": "application/json",
                },
            )
        except httpx.HTTPError as exc:
            detail = _log.scrub(str(exc))[:200]
            raise AuthError(
                f"Synerise login failed: {type(exc).__name__}: {detail}",
                retryable=True,
            ) from None
        status = response.status_code
        if status != 200:
            body = response_text(response)
            raise AuthError(
                f"Synerise login answered HTTP {status}: {body[:300]}",
                retryable=status in RETRYABLE_STATUSES,
                status=status,
                body=body,
                retry_after=retry_floor(response.headers),
            )
        token = (response_json(response) or {}).get("token")
        if not isinstance(token, str) or not token:
            raise AuthError(
                "Synerise login answered 200 without a token",
                retryable=True,
                status=status,
                body=response_text(response),
            )
        _log.register_secret(token)
        self.count += 1
        # exp - iat when the token states both (immune to clock skew between
        # us and Synerise), else exp - now.
        expiry = jwt_expiry(token)
        if expiry is None:
            return token, self.ttl
        return token, max(0.0, expiry.lifetime() - self.refresh_margin)
