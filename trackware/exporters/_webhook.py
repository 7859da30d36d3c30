"""HTTPExporter: events as JSON to any HTTP endpoint of your own."""

from __future__ import annotations

import time
import typing as t

from .._auth import Credentials, no_credentials
from .._event import Event, wire_dict
from .._json import ORJSON, encode_fast
from ..exceptions import AuthError, ConfigurationError, ContractViolation
from ._base import ExportResult, encode_event, event_json
from ._http import BaseHTTPExporter, HTTPRequest
from ._urls import register_header_secrets, register_url_secrets, split_userinfo

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from ._options import HTTPExporterOptions

__all__ = ["HTTPExporter"]


class HTTPExporter(BaseHTTPExporter):
    """Delivers events as JSON to any HTTP endpoint of your own (a webhook).

    Credentials in ``url`` never reach a log line, a repr or an error
    message: ``https://user:password@host/...`` is sent as an
    ``Authorization: Basic`` header and taken out of the URL; every query
    value (``?api_key=...``: any of them may be a key) stays in the URL but is
    scrubbed from every log line (httpx's request line included) and dead
    letter, and shown as ``***`` in ``repr()``. (Values shorter than four
    characters cannot be told from ordinary text and are not scrubbed from
    logs; prefer a header for a credential anyway.)

    Args:
        url: the endpoint.
        headers: static headers; values of credential-like headers
            (Authorization, ``*-Key``, ``*-Token``...) are scrubbed from logs.
        auth: a callable returning headers per request (e.g. a fresh signature).
        body: ``"batch"`` (default: ``{"events": [...], "sent_at": ...}``),
            ``"array"`` (a JSON array of events), ``"single"`` (one event per
            request, with an ``Idempotency-Key`` header = the event id), or a
            callable taking the list of events and returning the JSON body.
        method: HTTP method (default ``POST``).
        max_batch_size: events per request (default 500).
    """

    default_name = "http"

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        headers: t.Mapping[str, str] | None = None,
        auth: t.Callable[[], t.Mapping[str, str]] | None = None,
        body: str | t.Callable[[list[Event]], t.Any] = "batch",
        method: str = "POST",
        max_batch_size: int = 500,
        **options: Unpack[HTTPExporterOptions],
    ) -> None:
        static = dict(headers or {})
        basic = None
        if isinstance(url, str):
            register_url_secrets(url)
            url, basic = split_userinfo(url)
        if basic is not None:
            if any(key.lower() == "authorization" for key in static):
                raise ConfigurationError(
                    "HTTPExporter: the URL carries credentials (user:password@) "
                    "and headers has an Authorization header too; use one of them"
                )
            static["Authorization"] = basic
        super().__init__(
            base_url=url, name=name, max_batch_size=max_batch_size, **options
        )
        if not callable(body) and body not in ("batch", "array", "single"):
            raise ConfigurationError(
                "HTTPExporter body must be 'batch', 'array', 'single' or a callable"
            )
        #: The endpoint, without the userinfo (sent as a Basic header instead).
        self.url = url
        self.method = method.upper()
        self.body = body
        self.headers = static
        register_header_secrets(self.headers)
        self.auth = auth

    def build_requests(
        self, events: t.Sequence[Event]
    ) -> tuple[list[HTTPRequest], ExportResult]:
        result = ExportResult()
        if ORJSON and self.body in ("batch", "array"):
            # With orjson, the whole array in one call: the same bytes as
            # joined one by one (when it cannot be, _json says so and each
            # event is encoded alone, as below).
            whole = encode_fast([wire_dict(event) for event in events])
            if whole is not None:
                return [self._request(list(events), self._body(whole))], result
        # Each event is encoded alone before it joins the batch: one value
        # JSON cannot carry rejects its event only, not the whole request.
        # The body is then joined from those bytes once (never re-encoded).
        batch: list[Event] = []
        encoded: list[bytes] = []
        for event in events:
            try:
                data = event_json(event)
            except ContractViolation as exc:
                result.reject(event, str(exc))
                continue
            batch.append(event)
            encoded.append(data)
        if not batch:
            return [], result
        bodies: list[tuple[list[Event], bytes]]
        if callable(self.body):
            try:
                text = encode_event(self.body(batch))
            except ContractViolation as exc:
                for event in batch:
                    result.reject(event, f"the body callable's result: {exc}")
                return [], result
            bodies = [(batch, text.encode("utf-8"))]
        elif self.body == "single":
            bodies = [([e], data) for e, data in zip(batch, encoded, strict=True)]
        else:
            bodies = [(batch, self._body(b"[" + b",".join(encoded) + b"]"))]
        return [self._request(evs, content) for evs, content in bodies], result

    def _body(self, array: bytes) -> bytes:
        """The request body of a ``"batch"`` or ``"array"`` exporter around
        the events' JSON ``array``."""
        if self.body == "array":
            return array
        sent_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return b'{"events":' + array + b',"sent_at":"' + sent_at.encode() + b'"}'

    def _request(self, events: list[Event], content: bytes) -> HTTPRequest:
        headers = dict(self.headers)
        headers.setdefault("Content-Type", "application/json")
        if self.body == "single":
            headers["Idempotency-Key"] = events[0].event_id
        return HTTPRequest(
            events, self.method, self.url, content=content, headers=headers
        )

    def credentials(self, request: HTTPRequest) -> Credentials:
        return no_credentials if self.auth is None else self._callable_headers

    def _callable_headers(self, refresh: bool) -> dict[str, str]:
        """The ``auth`` callable's headers (called anew for the resend)."""
        assert self.auth is not None
        try:
            headers = dict(self.auth())
        except Exception as exc:
            raise AuthError(
                f"auth callable raised {type(exc).__name__}", retryable=True
            ) from None
        register_header_secrets(headers)
        return headers
