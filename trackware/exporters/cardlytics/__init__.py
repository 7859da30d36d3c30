"""Cardlytics Publisher API v2: customer activity via ``POST /v2/events/clientEvent``.

:class:`ClientEventExporter` batches events per customer (one session each);
``_contract`` maps an event to a ``ClientEventMessage``, ``_session`` starts the
customer sessions. docs/architecture/vendors.md records the choices where Cardlytics'
documents disagree.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import typing as t
import uuid

import httpx

from ... import _log
from ..._auth import CachedToken, Credentials, TokenCache
from ..._event import Event
from ..._retry import RetryPolicy
from ...exceptions import ConfigurationError, ContractViolation
from .._base import ExportResult, encode_event, env_options
from .._http import BaseHTTPExporter, HTTPRequest, response_json
from .._urls import redact_url
from ._contract import (
    AD_EVENT_TYPES,
    CHANNELS,
    CLIENT_EVENT_TYPES,
    DEFAULT_MAPPING,
    NO_USER,
    SECTIONS,
    ClientEventContract,
    error_body,
)
from ._session import SESSION_PATH, SessionBody, SessionStarter

__all__ = [
    "AD_EVENT_TYPES",
    "CHANNELS",
    "CLIENT_EVENT_TYPES",
    "DEFAULT_MAPPING",
    "NO_USER",
    "SECTIONS",
    "ClientEventExporter",
]

_CLIENT_EVENT_PATH = "/v2/events/clientEvent"
_ENV_PREFIX = "TRACKWARE_CARDLYTICS_"
_ENV_REQUIRED = {
    "BASE_URL": "base_url",
    "CLIENT_ID": "client_id",
    "CLIENT_SECRET": "client_secret",
    "CUSTOMER_ID_KEY": "customer_id_key",
}
#: Read from the environment only: combined with CERT into ``cert``.
_CERT_KEY = "<cert key>"
_ENV_OPTIONAL = {
    "CERT": "cert",
    "CERT_KEY": _CERT_KEY,
    "CA_BUNDLE": "verify",
    "MAPPING": "mapping",
    "SESSION_EVENT": "session_event",
    "DEFAULT_CHANNEL": "default_channel",
    "DEFAULT_SECTION": "default_section",
    "HEADER_STYLE": "header_style",
    "SEND_ANONYMOUS": "send_anonymous",
    "REQUIRE_CERT": "require_cert",
    "MAX_BATCH_SIZE": "max_batch_size",
}
_HEADER_STYLES = ("bearer", "session-token")


def _flag(value: str, variable: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{variable} must be true or false, not {value!r}")


def _parse_mapping(value: str, variable: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, client_event = part.partition("=")
        if not sep or not name.strip() or not client_event.strip():
            raise ConfigurationError(
                f"{variable} must look like 'app.event=ClientEvent,other=...', "
                f"got {part!r}"
            )
        mapping[name.strip()] = client_event.strip()
    return mapping


class ClientEventExporter(ClientEventContract, BaseHTTPExporter):
    """Sends mapped events to Cardlytics ``POST /v2/events/clientEvent``.

    Events are grouped per customer (one session token each), so events of
    different customers never share a request. ``clientEventId`` is the event
    id (a UUID; other ids are turned into a stable UUIDv5), so retries carry
    the same id.

    Ad events take their metadata from the event properties ``serveToken``,
    ``section``, ``channel``, ``imageSlots``, ``categoryId``, ``curationId``
    and ``displayPosition`` (snake_case spellings work too). An event whose
    properties break the contract (no ``serveToken``, a ``section`` outside the
    Section enum...) is rejected for this destination with the rule it broke;
    the rest of the batch is sent.

    Args:
        base_url: the Cardlytics host, e.g.
            ``https://publisher-rewards-api.cardlytics.com``.
        client_id, client_secret: startSession credentials.
        customer_id_key: HMAC-SHA-256 key pseudonymising user ids into
            ``x-source-customer-id``.
        mapping: app event name -> ``clientEvent`` (merged over
            ``{session_event: "LogEnrollment"}``).
        session_event: the app's session-start event name (``None``: no
            default LogEnrollment mapping).
        default_channel: ``channel`` when an event has none (``None``: required).
        default_section: ``section`` when an event has none (``None``: required).
        require_serve_token: reject Ad events without ``serveToken``.
        send_anonymous: send events without a user id as customer
            ``no-user-available`` (``False``: such events are not applicable).
        header_style: ``"bearer"`` (``Authorization: Bearer`` plus
            ``x-source-customer-id``, the newer docs) or ``"session-token"``
            (``X-CDLX-Session-Token``, the older docs; ``x-source-customer-id``
            is still sent).
        session_body: the startSession body: ``"credentials"``
            (``{clientId, secret}``), ``"customer"`` (``{sourceCustomerId,
            scopes: ["api:customer"]}``, the OpenAPI variant, where the client
            certificate authenticates), or a callable taking the customer id and
            returning the body.
        session_ttl: session lifetime assumed when the token does not say.
        refresh_margin: renew sessions this many seconds before they expire.
        max_session_failures: consecutive startSession 500s (Cardlytics'
            answer to bad credentials) after which events are rejected as an
            authentication error instead of retried.
        cert: client certificate for mutual TLS, a path or ``(cert, key)``;
            required for ``https://`` URLs unless ``require_cert=False`` (an
            egress proxy adds it).
        max_batch_size: events per request (default 50).

    Environment variables of :meth:`from_env`: ``TRACKWARE_CARDLYTICS_BASE_URL``,
    ``_CLIENT_ID``, ``_CLIENT_SECRET``, ``_CUSTOMER_ID_KEY`` (required);
    ``_CERT``, ``_CERT_KEY``, ``_CA_BUNDLE``, ``_MAPPING``
    (``app.event=ClientEvent,...``), ``_SESSION_EVENT``, ``_DEFAULT_CHANNEL``,
    ``_DEFAULT_SECTION``, ``_HEADER_STYLE``, ``_SEND_ANONYMOUS``,
    ``_REQUIRE_CERT``, ``_MAX_BATCH_SIZE`` (optional; all prefixed
    ``TRACKWARE_CARDLYTICS``).
    """

    default_name = "cardlytics"

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        customer_id_key: str | bytes,
        mapping: t.Mapping[str, str] | None = None,
        session_event: str | None = "session_start",
        default_channel: str | None = "OLB",
        default_section: str | None = None,
        require_serve_token: bool = True,
        send_anonymous: bool = True,
        header_style: str = "bearer",
        session_body: SessionBody = "credentials",
        session_ttl: float = 900.0,
        refresh_margin: float = 180.0,
        max_session_failures: int = 2,
        cert: str | tuple[str, str] | None = None,
        require_cert: bool = True,
        verify: bool | str | ssl.SSLContext = True,
        name: str | None = None,
        max_batch_size: int = 50,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        cls = type(self).__name__
        # Register credentials first: no error below may carry them unscrubbed.
        for secret in (client_id, client_secret, customer_id_key):
            _log.register_secret(secret)
        if not callable(session_body) and session_body not in (
            "credentials",
            "customer",
        ):
            raise ConfigurationError(
                f"{cls}: session_body must be 'credentials', 'customer' or a callable"
            )
        if session_body == "credentials" and not (client_id and client_secret):
            raise ConfigurationError(
                f"{cls}: client_id and client_secret are required (your Cardlytics "
                "startSession credentials; TRACKWARE_CARDLYTICS_CLIENT_ID / "
                "TRACKWARE_CARDLYTICS_CLIENT_SECRET)"
            )
        if not customer_id_key:
            raise ConfigurationError(
                f"{cls}: customer_id_key is required: the HMAC key that "
                "pseudonymises user ids into x-source-customer-id "
                "(TRACKWARE_CARDLYTICS_CUSTOMER_ID_KEY)"
            )
        if header_style not in _HEADER_STYLES:
            raise ConfigurationError(
                f"{cls}: header_style must be 'bearer' or 'session-token', "
                f"not {header_style!r}"
            )
        if default_channel is not None and default_channel not in CHANNELS:
            raise ConfigurationError(
                f"{cls}: default_channel {default_channel!r} is not a Cardlytics "
                f"Channel; use one of {', '.join(sorted(CHANNELS))}"
            )
        if default_section is not None and default_section not in SECTIONS:
            raise ConfigurationError(
                f"{cls}: default_section {default_section!r} is not a Cardlytics "
                f"Section; use one of {', '.join(sorted(SECTIONS))}"
            )
        if max_session_failures < 1:
            raise ConfigurationError(f"{cls}: max_session_failures must be >= 1")
        if session_ttl <= 0 or refresh_margin < 0:
            raise ConfigurationError(
                f"{cls}: session_ttl must be > 0 and refresh_margin >= 0 seconds"
            )
        full: dict[str, str] = {}
        if session_event:
            full[session_event] = "LogEnrollment"
        full.update(mapping or {})
        for event_name, client_event in full.items():
            if not isinstance(event_name, str) or not event_name:
                raise ConfigurationError(
                    f"{cls}: mapping keys must be non-empty event names, "
                    f"got {event_name!r}"
                )
            if (
                not isinstance(client_event, str)
                or client_event not in CLIENT_EVENT_TYPES
            ):
                raise ConfigurationError(
                    f"{cls}: mapping[{event_name!r}] = {client_event!r} is not a "
                    "Cardlytics clientEvent; use one of "
                    f"{', '.join(sorted(CLIENT_EVENT_TYPES))}"
                )
        if (
            cert is None
            and require_cert
            and isinstance(base_url, str)
            and base_url.startswith("https://")
        ):
            raise ConfigurationError(
                f"{cls}: Cardlytics requires mutual TLS: pass cert='client.pem' or "
                "cert=('client.crt', 'client.key') (TRACKWARE_CARDLYTICS_CERT / "
                "_CERT_KEY), or require_cert=False when a proxy adds it"
            )
        super().__init__(
            base_url=base_url,
            name=name,
            timeout=timeout,
            connect_timeout=connect_timeout,
            verify=verify,
            cert=cert,
            max_batch_size=max_batch_size,
            events=full.keys(),
            retry=retry,
            transport=transport,
        )
        self.mapping: dict[str, str] = full
        self.default_channel = default_channel
        self.default_section = default_section
        self.require_serve_token = require_serve_token
        self.send_anonymous = send_anonymous
        self.header_style = header_style
        self.max_session_failures = max_session_failures
        self._key = (
            customer_id_key.encode("utf-8")
            if isinstance(customer_id_key, str)
            else bytes(customer_id_key)
        )
        self._starter = SessionStarter(
            lambda: self.client,
            self.base_url + SESSION_PATH,
            client_id=client_id,
            client_secret=client_secret,
            body=session_body,
            max_failures=max_session_failures,
        )
        self.sessions: TokenCache[str] = TokenCache(
            self._starter,
            refresh_margin=refresh_margin,
            default_ttl=session_ttl,
        )

    def after_fork(self) -> None:
        # A parent thread may have held a session lock at fork time: start the
        # child with fresh locks (it fetches its own sessions).
        super().after_fork()
        self.sessions = self.sessions.fresh()
        self._starter.after_fork()

    # --- configuration from the environment ------------------------------------------
    @classmethod
    def from_env(
        cls, environ: t.Mapping[str, str] | None = None, **overrides: t.Any
    ) -> ClientEventExporter:
        """Build from ``TRACKWARE_CARDLYTICS_*`` variables (see the class docs);
        keyword arguments override them."""
        required = dict(_ENV_REQUIRED)
        if overrides.get("session_body", "credentials") != "credentials":
            del required["CLIENT_ID"], required["CLIENT_SECRET"]
        options = env_options(
            cls.__name__,
            environ,
            prefix=_ENV_PREFIX,
            required=required,
            optional=_ENV_OPTIONAL,
            overrides=overrides,
        )
        key = options.pop(_CERT_KEY, None)
        if "cert" not in overrides:
            if key and "cert" not in options:
                raise ConfigurationError(
                    f"{_ENV_PREFIX}CERT_KEY is set but {_ENV_PREFIX}CERT is not: "
                    "set both"
                )
            if key:
                options["cert"] = (options["cert"], key)
        for suffix, arg in _ENV_OPTIONAL.items():
            if arg in overrides or arg not in options:
                continue
            variable = _ENV_PREFIX + suffix
            if arg == "mapping":
                options[arg] = _parse_mapping(options[arg], variable)
            elif arg in ("send_anonymous", "require_cert"):
                options[arg] = _flag(options[arg], variable)
            elif arg == "max_batch_size":
                try:
                    options[arg] = int(options[arg])
                except ValueError:
                    raise ConfigurationError(
                        f"{variable} must be an integer, not {options[arg]!r}"
                    ) from None
        return cls(**options)

    # --- identity ------------------------------------------------------------------
    def customer_id(self, user_id: str | None) -> str:
        """The ``x-source-customer-id`` for a user id (HMAC-SHA-256, hex)."""
        if not user_id:
            return NO_USER
        return hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def applies(self, event: Event, /) -> bool:
        return event.name in self.mapping and (
            self.send_anonymous or bool(event.user_id)
        )

    # --- batching -------------------------------------------------------------------
    def build_requests(
        self, events: t.Sequence[Event]
    ) -> tuple[list[HTTPRequest], ExportResult]:
        result = ExportResult()
        # customer -> ((event, clientEventId) in batch order, encoded messages
        # by id). Each message is checked and encoded alone before it joins
        # its customer's batch (Cardlytics refuses a batch for one bad item).
        groups: dict[str, tuple[list[tuple[Event, str]], dict[str, str]]] = {}
        for event in events:
            if not self.applies(event):
                result.skipped.append(event)
                continue
            try:
                message = self.message(event)
                encoded = encode_event(message)
            except ContractViolation as exc:
                result.reject(event, str(exc))
                continue
            except Exception as exc:
                result.reject_unmapped(event, exc, self.name, "cardlytics")
                continue
            group_events, messages = groups.setdefault(
                self.customer_id(event.user_id), ([], {})
            )
            client_event_id = message["clientEventId"]
            group_events.append((event, client_event_id))
            # The same event twice in one batch would make Cardlytics refuse
            # the whole request (duplicate clientEventId): send it once.
            messages.setdefault(client_event_id, encoded)
        requests: list[HTTPRequest] = []
        cap = self.max_batch_size
        for customer, (group_events, messages) in groups.items():
            unique = list(messages.items())
            for start in range(0, len(unique), cap):
                chunk = unique[start : start + cap]
                ids = {cid for cid, _ in chunk}
                chunk_events = [e for e, cid in group_events if cid in ids]
                body = '{"clientEvents":[' + ",".join(m for _, m in chunk) + "]}"
                requests.append(
                    HTTPRequest(
                        chunk_events,
                        "POST",
                        _CLIENT_EVENT_PATH,
                        content=body.encode("utf-8"),
                        headers={
                            "Content-Type": "application/json",
                            "x-source-customer-id": customer,
                        },
                        auth_key=customer,
                    )
                )
        return requests, result

    # --- sessions --------------------------------------------------------------------
    def credentials(self, request: HTTPRequest) -> Credentials:
        """The session of the request's customer (``auth_key``)."""
        return CachedToken(
            self.sessions, t.cast(str, request.auth_key), self._session_headers
        )

    def _session_headers(self, token: str) -> dict[str, str]:
        # Called once per HTTP attempt, so the request id is new per attempt.
        headers = {"X-CDLX-Request-Id": str(uuid.uuid4())}
        if self.header_style == "bearer":
            headers["Authorization"] = f"Bearer {token}"
        else:
            headers["X-CDLX-Session-Token"] = token
        return headers

    # --- outcomes ------------------------------------------------------------------
    def classify(self, request: HTTPRequest, response: httpx.Response) -> ExportResult:
        """2xx is success unless the body carries an error (``type`` or
        ``status >= 400``); everything else as in the base class."""
        status = response.status_code
        if 200 <= status < 300:
            data = response_json(response) or {}
            failed, body_status = error_body(data)
            if not failed:
                return ExportResult.success(request.events)
            return self.error_outcome(
                request,
                response,
                body_status,
                f"HTTP {status} with an error body (status {data.get('status')!r})",
            )
        return super().classify(request, response)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} name={self.name!r} "
            f"base_url={redact_url(self.base_url)!r} "
            f"events={len(self.mapping)}>"
        )
