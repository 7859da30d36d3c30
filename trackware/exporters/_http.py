"""The shared HTTP delivery machinery every vendor exporter builds on."""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import logging
import os
import ssl
import threading
import time
import typing as t
import urllib.parse

import certifi
import httpcore  # noqa: F401 - imported for fork safety (see _build_lock)
import httpx

from .. import _log
from .._auth import Credentials, TokenAuth, no_credentials
from .._event import Event, dumps
from .._retry import RetryPolicy
from ..exceptions import AuthError, ConfigurationError
from ._base import (
    BaseExporter,
    ContractViolation,
    ExportResult,
    encode_event,
    report_progress,
)

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from .._config import HTTPExporterOptions

__all__ = [
    "RETRYABLE_STATUSES",
    "BaseHTTPExporter",
    "ExporterStopped",
    "HTTPExporter",
    "HTTPRequest",
    "parse_retry_after",
    "retry_floor",
]

# httpx logs every request line (query string included) at INFO on its own
# logger; credentials some vendors take as query parameters (Synerise's tracker
# key) must not reach an app's logs through it.
_httpx_logger = logging.getLogger("httpx")
if not any(isinstance(f, _log._ScrubFilter) for f in _httpx_logger.filters):
    _httpx_logger.addFilter(_log._ScrubFilter())

# Fork safety. httpx imports httpcore (and h11, h2, certifi...) only when its
# first client is built, which here happens on a worker thread: a fork while
# that thread is inside the import leaves the child a half-initialised module
# ("partially initialized module 'httpcore'" on every retry) or a module lock
# no thread of the child will ever release. So all of it is imported above, by
# whoever imports trackware (normally the main thread); certifi's bundle is
# located now (certifi.where() imports more on its first call), and the idna
# codec is loaded now (socket.getaddrinfo imports it on its first call). Left
# of a build is the SSL context: it is made while holding _build_lock, which every
# fork waits for (the register_at_fork below): no child inherits OpenSSL
# half-way through loading a bundle. A child builds clients of its own (see
# after_fork); it never uses its parent's connections or SSL context.
certifi.where()
"localhost".encode("idna")
_build_lock = threading.Lock()
# Registered after logging's own fork hook (logging is imported first), so this
# one runs before logging takes its module lock for the fork: a build that logs
# is never waited for while that lock is held.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_build_lock.acquire,
        after_in_parent=_build_lock.release,
        after_in_child=_build_lock.release,
    )

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
#: Query keys whose values are treated as credentials whatever their length.
_URL_KEY_WORDS = ("key", "token", "secret", "sig", "pass", "auth", "session", "code")
_USER_AGENT = "trackware/0.1 (+python-httpx)"
_SENSITIVE_HEADER_WORDS = (
    "authorization",
    "token",
    "key",
    "secret",
    "cookie",
    "signature",
)


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
        with _build_lock:  # no fork in the middle of it (see _build_lock)
            return self._build_client()

    def _build_client(self) -> httpx.Client:
        verify: t.Any = self._verify
        if self._cert is not None:
            ctx = (
                verify
                if isinstance(verify, ssl.SSLContext)
                else ssl.create_default_context(
                    cafile=verify if isinstance(verify, str) else None
                )
            )
            if isinstance(self._cert, str):
                ctx.load_cert_chain(self._cert)
            else:
                ctx.load_cert_chain(self._cert[0], self._cert[1])
            verify = ctx
        return httpx.Client(
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            verify=verify,
            transport=self._transport,
            headers={"User-Agent": _USER_AGENT},
            follow_redirects=False,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        )

    def after_fork(self) -> None:
        # The parent's sockets and SSL context must not be used (or closed) by
        # the child: drop the reference and build a new client lazily (nothing
        # is imported then: see _build_lock).
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
        """What authenticates ``request``: a callable ``(refresh) -> headers``,
        typically ``CachedToken(self._tokens, request.auth_key, header)``
        (default: none). It is called once per attempt, with ``refresh=True``
        for the resend after a 401, and raises
        :class:`~trackware.exceptions.AuthError` when no credential can be
        had. Called once per request, before anything is fetched."""
        if type(self).auth_headers is BaseHTTPExporter.auth_headers:
            return no_credentials
        # renovation: the old auth_headers hook, until every vendor overrides
        # credentials(); remove it (and auth_headers) at the end.
        return lambda refresh: self.auth_headers(request, refresh=refresh)

    def auth_headers(
        self, request: HTTPRequest, *, refresh: bool = False
    ) -> dict[str, str]:
        """Deprecated hook (override :meth:`credentials`): headers that
        authenticate ``request``; ``refresh`` after a 401."""
        return {}

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
            url, basic = _split_userinfo(url)
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
        _register_header_secrets(self.headers)
        self.auth = auth

    def build_requests(
        self, events: t.Sequence[Event]
    ) -> tuple[list[HTTPRequest], ExportResult]:
        result = ExportResult()
        # Each event is encoded alone before it joins the batch: one value
        # JSON cannot carry rejects its event only, not the whole request.
        batch: list[Event] = []
        encoded: list[str] = []
        for event in events:
            try:
                text = encode_event(event.to_dict())
            except ContractViolation as exc:
                result.reject(event, str(exc))
                continue
            batch.append(event)
            encoded.append(text)
        if not batch:
            return [], result
        bodies: list[tuple[list[Event], str]]
        if callable(self.body):
            try:
                bodies = [(batch, encode_event(self.body(batch)))]
            except ContractViolation as exc:
                for event in batch:
                    result.reject(event, f"the body callable's result: {exc}")
                return [], result
        elif self.body == "single":
            bodies = [([e], text) for e, text in zip(batch, encoded, strict=True)]
        elif self.body == "array":
            bodies = [(batch, "[" + ",".join(encoded) + "]")]
        else:
            sent_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            bodies = [
                (
                    batch,
                    '{"events":[' + ",".join(encoded) + f'],"sent_at":"{sent_at}"}}',
                )
            ]
        requests = []
        for evs, text in bodies:
            headers = dict(self.headers)
            headers.setdefault("Content-Type", "application/json")
            if self.body == "single":
                headers["Idempotency-Key"] = evs[0].event_id
            requests.append(
                HTTPRequest(
                    evs,
                    self.method,
                    self.url,
                    content=text.encode("utf-8"),
                    headers=headers,
                )
            )
        return requests, result

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
        _register_header_secrets(headers)
        return headers


class _EncodeError(Exception):
    """A request body could not be encoded (prepare() tells it from a mapping
    error)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """``url`` without its ``user:password@`` part, and that part as a Basic
    ``Authorization`` value (``None`` when there is none)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url, None
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    _log.register_secret(token)
    bare = urllib.parse.urlunsplit(
        (parts.scheme, host, parts.path, parts.query, parts.fragment)
    )
    return bare, f"Basic {token}"


def register_url_secrets(url: str) -> None:
    """Register every part of ``url`` that can carry a secret with the log
    scrubber: the userinfo (user and password), the fragment, and the query's
    values, each as written, decoded, and as httpx re-encodes it in its
    ``HTTP Request:`` log line.

    Choice: a query value is registered when its key looks like a credential
    (``key``, ``token``, ``secret``, ``sig``, ``pass``, ``auth``...) or when
    it is 8 characters or longer (a bare key too); a short value of an
    ordinary key (``format=json``, ``v=2``) is not, since scrubbing it would
    mangle every log line that contains the word. ``repr()`` and errors hide
    every query value regardless."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, sep, password = userinfo.partition(":")
        found.append(userinfo)
        if sep:
            found.append(password)
        # The user name too when it may be a key (some APIs take the key as
        # the user name); a short one (admin) would only mangle log lines.
        if len(user) >= 8 or not sep:
            found.append(user)
    queries = [parts.query]
    try:
        queries.append(httpx.URL(url).query.decode("ascii", "replace"))
    except Exception:  # not a URL httpx takes: it will never log it either
        pass
    for query in queries:
        for item in query.split("&") if query else ():
            key, sep, value = item.partition("=")
            if not sep:
                key, value = "", key
            if len(value) >= 8 or any(word in key.lower() for word in _URL_KEY_WORDS):
                found.append(value)
    if parts.fragment:
        found.append(parts.fragment)
    for raw in found:
        for text in {
            raw,
            urllib.parse.unquote(raw),
            urllib.parse.unquote_plus(raw),
        }:
            _log.register_secret(text)
            _log.register_secret(urllib.parse.quote(text, safe=""))
            _log.register_secret(urllib.parse.quote_plus(text))


def redact_url(url: str) -> str:
    """``url`` for display: the userinfo, every query value (and bare key)
    and the fragment replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<a URL that cannot be parsed>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{key}=***" if sep else "***"
        for key, sep, _ in (item.partition("=") for item in parts.query.split("&"))
    )
    return urllib.parse.urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            query if parts.query else "",
            "***" if parts.fragment else "",
        )
    )


def _register_header_secrets(headers: t.Mapping[str, str]) -> None:
    """Keep the credentials in ``headers`` out of logs: the whole value, and
    the token after ``Bearer``/``Basic`` (a vendor may echo it alone)."""
    for key, value in headers.items():
        if any(word in key.lower() for word in _SENSITIVE_HEADER_WORDS):
            _log.register_secret(value)
            if value.lower().startswith(("bearer ", "basic ")):
                _log.register_secret(value.split(" ", 1)[1])
