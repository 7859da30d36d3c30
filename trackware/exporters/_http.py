"""The HTTP exporter base every vendor builds on, and the HTTP retry vocabulary.

:class:`BaseHTTPExporter` maps a batch to :class:`HTTPRequest` calls, sends
them with one re-authentication on 401 (``trackware._auth.TokenAuth``) and
classifies each answer into per-event outcomes.
"""

from __future__ import annotations

import dataclasses
import email.utils
import os
import ssl
import threading
import time
import typing as t

import httpx

from .. import _log
from .._auth import Credentials, TokenAuth, no_credentials
from .._event import Event
from .._json import dumps
from .._retry import RetryPolicy
from ..exceptions import AuthError, ConfigurationError
from ._base import BaseExporter, ExportResult, report_progress
from ._client import build_client
from ._urls import redact_url, register_url_secrets

__all__ = [
    "RETRYABLE_STATUSES",
    "BaseHTTPExporter",
    "ExporterStopped",
    "HTTPRequest",
    "parse_retry_after",
    "response_json",
    "response_text",
    "retry_floor",
]

# --- the HTTP retry vocabulary -------------------------------------------------------

#: HTTP statuses that mean "try again later" for every vendor.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` (delta-seconds or HTTP date) value."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_floor(headers: t.Mapping[str, str]) -> float | None:
    """The longest wait any of ``Retry-After`` / ``RateLimit-Reset`` asks for."""
    floor = parse_retry_after(headers.get("retry-after"))
    reset = headers.get("ratelimit-reset") or headers.get("x-ratelimit-reset")
    if reset:
        try:
            seconds = float(reset)
        except ValueError:
            seconds = -1.0
        # RateLimit-Reset is delta-seconds (IETF draft, Yotpo); some servers send
        # an epoch timestamp instead, recognisable by its size.
        if seconds > 1_000_000_000:
            seconds = seconds - time.time()
        if seconds >= 0:
            floor = seconds if floor is None else max(floor, seconds)
    return floor


_BODY_LIMIT = 4096


@dataclasses.dataclass
class HTTPRequest:
    """One HTTP call an exporter wants to make for some events.

    Attributes:
        events: the events whose fate this call decides.
        method, url: the call (``url`` absolute, or relative to ``base_url``).
        json: the body, encoded with trackware's JSON encoder (or ``content``).
        headers: extra headers (auth headers come from ``credentials``).
        auth_key: which credential/session to use (for ``credentials``).
        params: query parameters.
    """

    events: list[Event]
    method: str
    url: str
    json: t.Any = None
    content: bytes | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    auth_key: t.Any = None
    params: dict[str, str] | None = None


class ExporterStopped(httpx.TransportError):
    """Raised instead of making a request once the exporter is closed or halted
    (shutdown). An ``httpx.TransportError``, so every path that copes with a
    connection failure copes with it; ``send`` reports it as a retryable
    failure that the worker, shutting down, does not retry."""


def response_text(response: httpx.Response) -> str:
    try:
        text = response.text
    except Exception:
        text = repr(response.content[:_BODY_LIMIT])
    return _log.scrub(text[:_BODY_LIMIT])


def response_json(response: httpx.Response) -> dict[str, t.Any] | None:
    """The response body as a JSON object, or ``None`` when it is not one."""
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class BaseHTTPExporter(BaseExporter):
    """Sends events over HTTP with pooling, auth refresh and outcome classification.

    Subclasses implement :meth:`build_requests` (and usually
    :meth:`credentials`); :meth:`classify` turns a response into per-event
    outcomes: 2xx sent; 408, 425, 429 and 5xx retried (``Retry-After`` /
    ``RateLimit-Reset`` honoured as a floor); other statuses rejected with the
    vendor's body. A 401 (or a status in ``reauth_statuses``) makes the
    exporter refresh its credentials and resend once
    (:class:`~trackware._auth.TokenAuth`).

    After a retryable failure the rest of the batch is not attempted in this
    round (it is retried with it), so a struggling vendor is not hammered.

    Args:
        base_url: scheme and host (and optional path prefix) of the API.
        timeout: read/write/pool timeout per request, seconds.
        connect_timeout: connect timeout, seconds.
        verify: TLS verification: ``True`` or a CA bundle path or an
            ``ssl.SSLContext``. ``False`` is refused: trackware keeps
            verification on.
        cert: client certificate for mutual TLS: a path, or ``(cert, key)``.
        transport: an httpx transport (advanced: proxies, custom networking).
    """

    reauth_statuses: t.ClassVar[frozenset[int]] = frozenset({401})

    def __init__(
        self,
        *,
        base_url: str,
        name: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        verify: bool | str | ssl.SSLContext = True,
        cert: str | tuple[str, str] | None = None,
        max_batch_size: int = 100,
        events: t.Iterable[str] | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            name=name, max_batch_size=max_batch_size, events=events, retry=retry
        )
        if verify is False:
            raise ConfigurationError(
                f"{type(self).__name__}: verify=False is not allowed; pass the path "
                "of a CA bundle (verify='/path/ca.pem') for private certificates"
            )
        if isinstance(base_url, str):
            # Before anything can print it: what in the URL may be a secret.
            register_url_secrets(base_url)
        if not isinstance(base_url, str) or not base_url.startswith(
            ("http://", "https://")
        ):
            shown = redact_url(base_url) if isinstance(base_url, str) else base_url
            raise ConfigurationError(
                f"{type(self).__name__}: base_url must start with https:// "
                f"(or http:// for local testing), got {shown!r}"
            )
        if cert is not None:
            paths = (cert,) if isinstance(cert, str) else cert
            for path in paths:
                if not os.path.exists(path):
                    raise ConfigurationError(
                        f"{type(self).__name__}: client certificate file {path!r} "
                        "does not exist"
                    )
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._verify = verify
        self._cert = cert
        self._transport = transport
        self._client: httpx.Client | None = None
        self._client_pid = 0
        self._client_lock = threading.Lock()
        self._closed = False
        self.requests_sent = 0
        #: ``(status, body)`` of the most recent response (for ``send-test``).
        self.last_response: tuple[int, str] | None = None

    # --- connection management -------------------------------------------------------
    @property
    def client(self) -> httpx.Client:
        """The pooled HTTP client, built on first use (and anew in a forked
        child). A closed exporter never builds one: it raises
        :class:`ExporterStopped` (a client built then would never be closed)."""
        client = self._client
        if client is None or self._client_pid != os.getpid():
            with self._client_lock:
                if self._closed:
                    raise ExporterStopped(f"{self.name}: exporter closed")
                if self._client is None or self._client_pid != os.getpid():
                    self._client = self._make_client()
                    self._client_pid = os.getpid()
                client = self._client
        return client

    def _make_client(self) -> httpx.Client:
        return build_client(
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            verify=self._verify,
            cert=self._cert,
            transport=self._transport,
        )

    def after_fork(self) -> None:
        # The parent's sockets and SSL context must not be used (or closed) by
        # the child: drop the reference and build a new client lazily (nothing
        # is imported then: see trackware.exporters._client).
        super().after_fork()
        self._client = None
        self._client_lock = threading.Lock()

    def close(self) -> None:
        """Stop sending and close the connections. For good: a closed exporter
        makes no further request (an export under way stops at its next one)."""
        self.halt()
        with self._client_lock:
            self._closed = True
            client = self._client
            self._client = None
        if client is not None and self._client_pid == os.getpid():
            client.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (no further request is made)."""
        return self._closed

    def _stopped_reason(self) -> str:
        return "exporter closed" if self._closed else "exporter stopped at shutdown"

    # --- vendor hooks ----------------------------------------------------------------
    def build_requests(
        self, events: t.Sequence[Event]
    ) -> tuple[list[HTTPRequest], ExportResult]:
        """Map events to HTTP calls. Return the calls and the events already
        decided (rejected against the vendor contract, or skipped)."""
        raise NotImplementedError

    def credentials(self, request: HTTPRequest) -> Credentials:
        """What authenticates ``request``: a callable ``(refresh) -> headers``
        (:data:`~trackware.exporters.Credentials`), typically a
        :class:`~trackware.exporters.CachedToken` over the exporter's
        :class:`~trackware.TokenCache` (default: none). It is called once
        per attempt, with ``refresh=True`` for the resend after a 401, and
        raises :class:`~trackware.exceptions.AuthError` when no credential
        can be had. Called once per request, before anything is fetched."""
        return no_credentials

    def classify(self, request: HTTPRequest, response: httpx.Response) -> ExportResult:
        """Per-event outcomes from the vendor's answer (see the class docstring)."""
        status = response.status_code
        if 200 <= status < 300:
            return ExportResult.success(request.events)
        return self.error_outcome(request, response, status, f"HTTP {status}")

    def error_outcome(
        self,
        request: HTTPRequest,
        response: httpx.Response,
        code: t.Any,
        reason: str,
    ) -> ExportResult:
        """Outcomes for error status ``code``: the HTTP status, or the one a
        2xx answer's body reports (vendors that mirror the status in the body:
        Cardlytics, MXO). Retried when ``code`` is a retryable status,
        otherwise rejected with ``reason`` and the start of the body (an
        unusable ``code`` rejects with the HTTP status)."""
        text = response_text(response)
        if isinstance(code, int) and not isinstance(code, bool):
            if code in RETRYABLE_STATUSES:
                return ExportResult.failure(
                    request.events,
                    reason,
                    retry_after=retry_floor(response.headers),
                    status=code,
                    body=text,
                )
            status = code
        else:
            status = response.status_code
        return ExportResult.rejected_all(
            request.events, f"{reason}: {text[:500]}", status=status, body=text
        )

    def before_request(self, request: HTTPRequest) -> float | None:
        """Called before each call; may return seconds to wait first (rate limits)."""
        return None

    def after_response(self, request: HTTPRequest, response: httpx.Response) -> None:
        """Called after each response (rate-limit bookkeeping)."""

    # --- the export loop -------------------------------------------------------------
    def export(self, events: t.Sequence[Event], /) -> ExportResult:
        if self._halt.is_set():
            return ExportResult.failure(events, self._stopped_reason())
        requests, result = self.prepare(events)
        if result.rejected or result.skipped:
            report_progress(result)
        for index, request in enumerate(requests):
            if self._halt.is_set():
                # Closed or halted (shutdown) between two requests: send
                # nothing more; the worker has dead-lettered what is left.
                result.add_retry(
                    [e for later in requests[index:] for e in later.events],
                    self._stopped_reason(),
                )
                break
            outcome = self.send(request)
            result.merge(outcome)
            if not report_progress(outcome):
                # The batch was given up (shutdown) while this request ran.
                result.add_retry(
                    [e for later in requests[index + 1 :] for e in later.events],
                    "batch given up at shutdown",
                )
                break
            if outcome.retry:
                for later in requests[index + 1 :]:
                    result.add_retry(
                        later.events,
                        outcome.error or "retryable failure",
                        retry_after=outcome.retry_after,
                        status=outcome.status,
                        body=outcome.body,
                    )
                break
        return result

    def prepare(
        self, events: t.Sequence[Event]
    ) -> tuple[list[HTTPRequest], ExportResult]:
        """:meth:`build_requests`, with every JSON body encoded, before anything
        is sent. An event that cannot be mapped or encoded costs itself only:
        when the batch fails, its halves are mapped again (recursively, no
        request is made) until the event that fails alone is rejected, with
        ``mapping error: ...`` or ``could not encode: ...`` and the exception's
        type. Its batch-mates go out as usual. (Such an error would fail the
        same way on every retry, so it is never retried.)"""
        try:
            requests, result = self.build_requests(events)
            for request in requests:
                if request.content is None and request.json is not None:
                    try:
                        request.content = dumps(request.json).encode("utf-8")
                    except Exception as exc:
                        raise _EncodeError(exc) from exc
        except Exception as exc:
            if len(events) > 1:
                mid = len(events) // 2
                requests, result = self.prepare(events[:mid])
                more, rest = self.prepare(events[mid:])
                result.merge(rest)
                return requests + more, result
            cause = exc.cause if isinstance(exc, _EncodeError) else exc
            what = "could not encode" if cause is not exc else "mapping error"
            _log.error(
                f"build:{self.name}",
                "trackware: %s: %s (%s); the event is rejected",
                self.name,
                what,
                type(cause).__name__,
                exc_info=cause is exc,
            )
            detail = _log.scrub(str(cause).split("\n", 1)[0])[:200]
            detail = detail.encode("ascii", "backslashreplace").decode("ascii")
            return [], ExportResult.rejected_all(
                events, f"{what}: {type(cause).__name__}: {detail}"
            )
        return requests, result

    def send(self, request: HTTPRequest) -> ExportResult:
        """Make one call (with one re-authentication on 401) and classify it."""
        if self._halt.is_set():
            return ExportResult.failure(request.events, self._stopped_reason())
        try:
            wait = self.before_request(request)
        except ExporterStopped as exc:
            return ExportResult.failure(request.events, str(exc))
        if wait and self._halt.wait(wait):
            # Closed or halted while waiting (shutdown): do not send.
            return ExportResult.failure(request.events, self._stopped_reason())
        try:
            auth = TokenAuth(
                self.credentials(request),
                reauth_statuses=self.reauth_statuses,
                before_send=self._before_attempt,
                refused_again=self._refused_again,
            )
            response = self._call(request, auth)
        except AuthError as exc:
            if exc.retryable:
                return ExportResult.failure(
                    request.events,
                    f"authentication failed: {exc}",
                    retry_after=exc.retry_after,
                    status=exc.status,
                    body=exc.body,
                )
            # A 404 from the token endpoint means a wrong URL (base_url, a site
            # key or store id in the path), not wrong credentials.
            what = (
                "not found (check the base URL and any id in the path)"
                if exc.status == 404
                else "authentication refused"
            )
            return ExportResult.rejected_all(
                request.events,
                f"{what}: {exc}",
                status=exc.status,
                body=exc.body,
            )
        except ExporterStopped as exc:
            return ExportResult.failure(request.events, str(exc))
        except httpx.TimeoutException as exc:
            return ExportResult.failure(
                request.events, f"timeout ({type(exc).__name__})"
            )
        except httpx.HTTPError as exc:
            detail = _log.scrub(str(exc))[:200]
            return ExportResult.failure(
                request.events, f"connection error ({type(exc).__name__}: {detail})"
            )
        self.last_response = (response.status_code, response_text(response))
        self.after_response(request, response)
        return self.classify(request, response)

    def _before_attempt(self) -> None:
        """Right before each attempt goes out (after any token fetch)."""
        if self._halt.is_set():
            # Halted while the request was being prepared (a token fetch).
            raise ExporterStopped(f"{self.name}: {self._stopped_reason()}")
        self.requests_sent += 1

    def _refused_again(self, status: int) -> None:
        _log.warn(
            f"reauth:{self.name}",
            "trackware: %s answered %d even with a fresh token",
            self.name,
            status,
        )

    def _call(self, request: HTTPRequest, auth: TokenAuth) -> httpx.Response:
        url = request.url if "://" in request.url else self.base_url + request.url
        content = request.content
        headers = dict(request.headers)
        if request.json is not None:
            if content is None:  # not through prepare()
                content = dumps(request.json).encode("utf-8")
            headers.setdefault("Content-Type", "application/json")
        client = self.client
        try:
            return client.request(
                request.method,
                url,
                content=content,
                headers=headers,
                params=request.params,
                auth=auth,
            )
        except RuntimeError:
            # httpx refuses a client closed meanwhile (close() from shutdown).
            if self._closed:
                raise ExporterStopped(f"{self.name}: exporter closed") from None
            raise

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} name={self.name!r} "
            f"base_url={redact_url(self.base_url)!r}>"
        )


class _EncodeError(Exception):
    """A request body could not be encoded (prepare() tells it from a mapping
    error)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause
