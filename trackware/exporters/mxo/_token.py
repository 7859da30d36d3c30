"""MXO's OAuth2 token endpoint (client credentials)."""

from __future__ import annotations

import httpx

from ... import _log
from ...exceptions import AuthError
from .._http import RETRYABLE_STATUSES, response_json, response_text, retry_floor
from ._mapping import JSON

__all__ = ["request_token"]


def request_token(
    client: httpx.Client, url: str, basic: str
) -> tuple[str, float | None]:
    """A token from ``POST url`` (``grant_type=client_credentials``, HTTP Basic
    client authentication ``basic``) and its lifetime in seconds (``None``
    when MXO states none). Raises :class:`~trackware.exceptions.AuthError`,
    retryable for a connection failure or a retryable status."""
    try:
        response = client.post(
            url,
            content=b"grant_type=client_credentials",
            headers={
                "Authorization": basic,
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": JSON,
            },
        )
    except httpx.HTTPError as exc:
        raise AuthError(
            f"MXO token request failed ({type(exc).__name__})", retryable=True
        ) from None
    status = response.status_code
    if not 200 <= status < 300:
        retryable = status in RETRYABLE_STATUSES
        raise AuthError(
            f"MXO token endpoint answered HTTP {status}",
            retryable=retryable,
            status=status,
            body=response_text(response),
            retry_after=retry_floor(response.headers) if retryable else None,
        )
    data = response_json(response) or {}
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise AuthError(
            "MXO token response has no access_token",
            retryable=False,
            status=status,
            body=response_text(response),
        )
    _log.register_secret(token)
    expires_in = data.get("expires_in")
    ttl: float | None = None
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool):
        ttl = float(expires_in) if expires_in > 0 else None
    elif isinstance(expires_in, str):
        try:
            ttl = float(expires_in)
        except ValueError:
            ttl = None
    return token, ttl
