"""Yotpo access tokens: the store's API secret exchanged at ``TOKEN_PATH``.

:class:`AccessTokenFetcher` is the fetch function of the exporter's
:class:`~trackware._auth.TokenCache`.
"""

from __future__ import annotations

import typing as t
import urllib.parse

import httpx

from ... import _log
from ..._json import dumps
from ...exceptions import AuthError
from .._http import RETRYABLE_STATUSES, response_json, response_text, retry_floor

__all__ = ["TOKEN_PATH", "AccessTokenFetcher"]

#: The token endpoint (documented, unlike the event endpoint).
TOKEN_PATH = "/core/v3/stores/{store_id}/access_tokens"


class AccessTokenFetcher:
    """Exchanges a store's API secret for an access token.

    Args:
        client: returns the exporter's pooled HTTP client (built lazily).
        base_url: the API host.
        secret: the store's API secret.
        max_age: seconds a token is used before a new one is fetched.
    """

    def __init__(
        self,
        client: t.Callable[[], httpx.Client],
        base_url: str,
        secret: str,
        *,
        max_age: float,
    ) -> None:
        self._client = client
        self._base_url = base_url
        self._secret = secret
        self.max_age = max_age

    def __call__(self, store_id: str) -> tuple[str, float | None]:
        """A new access token for ``store_id``, and how long to use it."""
        url = self._base_url + TOKEN_PATH.replace(
            "{store_id}", urllib.parse.quote(store_id, safe="")
        )
        try:
            response = self._client().post(
                url,
                content=dumps({"secret": self._secret}).encode("utf-8"),
                headers={
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
            )
        except httpx.HTTPError as exc:
            raise AuthError(
                f"Yotpo token request failed ({type(exc).__name__})", retryable=True
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            token = (response_json(response) or {}).get("access_token")
            if not isinstance(token, str) or not token:
                raise AuthError(
                    f"Yotpo token endpoint answered HTTP {status} without an "
                    "access_token",
                    retryable=True,
                    status=status,
                    body=response_text(response),
                )
            _log.register_secret(token)
            return token, self.max_age
        retryable = status in RETRYABLE_STATUSES
        raise AuthError(
            f"Yotpo token endpoint answered HTTP {status}"
            + (
                ""
                if retryable
                else " (check the store id and base URL)"
                if status == 404
                else " (check the store id and API secret)"
            ),
            retryable=retryable,
            status=status,
            body=response_text(response),
            retry_after=retry_floor(response.headers) if retryable else None,
        )
