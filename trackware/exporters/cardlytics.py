"""Cardlytics Publisher API v2: customer activity via ``POST /v2/events/clientEvent``.

App events are mapped by name to a Cardlytics ``clientEvent``; the
``clientEventType`` is derived from Cardlytics' reference table, so the two can
never be paired wrongly. Ad events (``AdImpression``/``AdInteraction``) carry a
``clientEventMetadata`` object built from the event's properties; the others
send ``null``. Sessions are per end customer (``x-source-customer-id``, an
HMAC-SHA-256 pseudonym of the user id) and come from
``POST /v2/session/startSession``.

Contract choices where Cardlytics' documents disagree:

* ``RewardSummaryLinkClicked`` is sent as ``CustomerProfileAction`` (the
  reference table), not ``SessionAction`` as in one seed example;
  ``ExpandRedemption`` (seed only) is a ``CustomerProfileAction``.
* ``serveToken`` is required for Ad events by default (``require_serve_token``),
  although the vendor table marks it optional: it is the only link to the ad.
* Session lifetime: read from the JWT (``exp`` or
  ``sessionExpirationTimestamp``) when it decodes, else ``session_ttl`` (900 s);
  sessions are renewed ``refresh_margin`` (180 s) early, so at ~12 minutes.
* startSession answers bad credentials with **500**: after
  ``max_session_failures`` consecutive 500s the events are rejected as an
  authentication/configuration error instead of being retried forever.
* A ``200`` whose body carries ``type`` or ``status >= 400`` is a failure.
* The batch size is undocumented: ``max_batch_size`` defaults to 50.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import math
import os
import ssl
import threading
import time
import typing as t
import uuid

import httpx

from .. import _env, _log
from .._auth import AuthError, TokenCache, jwt_claims
from .._event import Event, dumps
from .._retry import RETRYABLE_STATUSES, RetryPolicy, retry_floor
from ..exceptions import ConfigurationError
from ._base import (
    ContractViolation,
    ExportResult,
    encode_event,
    iso_time_problem,
    stable_uuid,
)
from ._http import (
    BaseHTTPExporter,
    HTTPRequest,
    redact_url,
    response_json,
    response_text,
)

__all__ = [
    "AD_EVENT_TYPES",
    "CHANNELS",
    "CLIENT_EVENT_TYPES",
    "DEFAULT_MAPPING",
    "NO_USER",
    "SECTIONS",
    "ClientEventExporter",
]

#: ``clientEvent`` -> its ``clientEventType`` (Cardlytics' reference table,
#: plus ``ExpandRedemption``, which only the seed example uses).
CLIENT_EVENT_TYPES: t.Mapping[str, str] = {
    "DisplayElementExpanded": "AdInteraction",
    "DisplayElementCollapsed": "AdInteraction",
    "UrlLinkClicked": "AdInteraction",
    "UrlLinkContinue": "AdInteraction",
    "ActivateOffer": "AdInteraction",
    "ParkOffer": "AdInteraction",
    "UnParkOffer": "AdInteraction",
    "UnParkAllOffers": "SessionAction",
    "AdViewableImpression": "AdImpression",
    "LogEnrollment": "SessionAction",
    "RewardSummaryLinkClicked": "CustomerProfileAction",
    "LearnMoreLinkClicked": "CustomerProfileAction",
    "FaqLinkClicked": "CustomerProfileAction",
    "ExpiredOffersLinkClicked": "AdInteraction",
    "ExpandRedemption": "CustomerProfileAction",
}
#: Types whose events need ``clientEventMetadata``.
AD_EVENT_TYPES = frozenset({"AdImpression", "AdInteraction"})
CHANNELS = frozenset(
    {"Email", "SMS", "MMS", "OLB", "MobileWeb", "MobileApp", "MobileWallet"}
)
SECTIONS = frozenset(
    {
        "Email",
        "SMS",
        "MMS",
        "Transaction",
        "Summary",
        "Dashboard",
        "Landing",
        "OnboardingPage",
        "LatestOffers",
        "ExpiringSoon",
        "RewardSummaryListView",
        "FeaturedOffers",
        "EntertainmentCategory",
        "FoodCategory",
        "RetailCategory",
        "ServicesCategory",
        "TravelCategory",
    }
)
#: The ``x-source-customer-id`` of events without a user id.
NO_USER = "no-user-available"
#: Applied under the user's mapping: the session-start event logs enrollment.
DEFAULT_MAPPING: t.Mapping[str, str] = {"session_start": "LogEnrollment"}

_CLIENT_EVENT_PATH = "/v2/events/clientEvent"
_SESSION_PATH = "/v2/session/startSession"
_HEADER_STYLES = ("bearer", "session-token")
#: (metadata key, property names looked up in order)
_METADATA_PROPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("serveToken", ("serveToken", "serve_token")),
    ("section", ("section",)),
    ("channel", ("channel",)),
    ("imageSlots", ("imageSlots", "image_slots")),
    ("categoryId", ("categoryId", "category_id")),
    ("curationId", ("curationId", "curation_id")),
    ("displayPosition", ("displayPosition", "display_position")),
)


class _Violation(ContractViolation):
    """An event breaks the Cardlytics contract (the message names the rule)."""


def _timestamp(unix: float) -> str:
    """ISO-8601 UTC with ``Z``; milliseconds only when there are any."""
    seconds = math.floor(unix)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    ms = min(int(round((unix - seconds) * 1000)), 999)
    return f"{text}.{ms:03d}Z" if ms else f"{text}Z"


def _client_event_id(event_id: str) -> str:
    # Lowercase: Cardlytics compares ids case-insensitively, so two ids that
    # differ only in case would be duplicates and fail the whole request.
    return stable_uuid(event_id).lower()


def _jwt_expiry(token: str) -> float | None:
    """Epoch seconds from a JWT's ``exp`` or ``sessionExpirationTimestamp``."""
    claims = jwt_claims(token) if token.count(".") == 2 else None
    if claims is None:
        return None
    for key in ("exp", "sessionExpirationTimestamp"):
        value = claims.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            # Milliseconds are recognisable by their size.
            return float(value) / 1000.0 if value > 100_000_000_000 else float(value)
        if isinstance(value, str) and value:
            try:
                when = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=_dt.timezone.utc)
            return when.timestamp()
    return None


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


class ClientEventExporter(BaseHTTPExporter):
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
        session_body: str | t.Callable[[str], t.Mapping[str, t.Any]] = "credentials",
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
        self._client_id = client_id
        self._client_secret = client_secret
        self._session_body = session_body
        self._key = (
            customer_id_key.encode("utf-8")
            if isinstance(customer_id_key, str)
            else bytes(customer_id_key)
        )
        self.sessions: TokenCache[str] = TokenCache(
            self._start_session,
            refresh_margin=refresh_margin,
            default_ttl=session_ttl,
        )
        self._failures_lock = threading.Lock()
        self._session_failures = 0

    def after_fork(self) -> None:
        # A parent thread may have held a session lock at fork time: start the
        # child with fresh locks (it fetches its own sessions).
        super().after_fork()
        self.sessions = self.sessions.fresh()
        self._failures_lock = threading.Lock()

    # --- configuration from the environment ------------------------------------------
    @classmethod
    def from_env(
        cls, environ: t.Mapping[str, str] | None = None, **overrides: t.Any
    ) -> ClientEventExporter:
        """Build from ``TRACKWARE_CARDLYTICS_*`` variables (see the class docs);
        keyword arguments override them."""
        env = os.environ if environ is None else environ
        _env.check_environment(env)  # a misspelt name is reported
        prefix = "TRACKWARE_CARDLYTICS_"

        def get(suffix: str) -> str | None:
            value = env.get(prefix + suffix)
            return value if value else None

        options: dict[str, t.Any] = {}
        required = {
            "BASE_URL": "base_url",
            "CLIENT_ID": "client_id",
            "CLIENT_SECRET": "client_secret",
            "CUSTOMER_ID_KEY": "customer_id_key",
        }
        if overrides.get("session_body", "credentials") != "credentials":
            del required["CLIENT_ID"], required["CLIENT_SECRET"]
        missing = []
        for suffix, arg in required.items():
            value = get(suffix)
            if value is not None:
                options[arg] = value
            elif arg not in overrides:
                missing.append(prefix + suffix)
        if missing:
            raise ConfigurationError(
                f"{cls.__name__}.from_env: set {', '.join(missing)}"
            )
        cert, key = get("CERT"), get("CERT_KEY")
        if key and not cert:
            raise ConfigurationError(
                f"{prefix}CERT_KEY is set but {prefix}CERT is not: set both"
            )
        if cert:
            options["cert"] = (cert, key) if key else cert
        if get("CA_BUNDLE"):
            options["verify"] = get("CA_BUNDLE")
        if get("MAPPING"):
            options["mapping"] = _parse_mapping(
                t.cast(str, get("MAPPING")), prefix + "MAPPING"
            )
        for suffix, arg in (
            ("SESSION_EVENT", "session_event"),
            ("DEFAULT_CHANNEL", "default_channel"),
            ("DEFAULT_SECTION", "default_section"),
            ("HEADER_STYLE", "header_style"),
        ):
            if get(suffix):
                options[arg] = get(suffix)
        for suffix, arg in (
            ("SEND_ANONYMOUS", "send_anonymous"),
            ("REQUIRE_CERT", "require_cert"),
        ):
            raw = get(suffix)
            if raw is not None:
                options[arg] = _flag(raw, prefix + suffix)
        raw_size = get("MAX_BATCH_SIZE")
        if raw_size is not None:
            try:
                options["max_batch_size"] = int(raw_size)
            except ValueError:
                raise ConfigurationError(
                    f"{prefix}MAX_BATCH_SIZE must be an integer, not {raw_size!r}"
                ) from None
        options.update(overrides)
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

    # --- mapping -------------------------------------------------------------------
    def message(self, event: Event) -> dict[str, t.Any]:
        """The ``ClientEventMessage`` for ``event``; raises ``ValueError`` naming
        the broken rule when the event cannot satisfy the contract."""
        client_event = self.mapping[event.name]
        kind = CLIENT_EVENT_TYPES[client_event]
        problem = iso_time_problem(event.unix_time, "clientEventTimestamp")
        if problem:
            raise _Violation(problem)
        return {
            "clientEventId": _client_event_id(event.event_id),
            "clientEventType": kind,
            "clientEvent": client_event,
            "clientEventTimestamp": _timestamp(event.unix_time),
            "clientEventMetadata": (
                self._metadata(event, client_event) if kind in AD_EVENT_TYPES else None
            ),
        }

    def _metadata(self, event: Event, client_event: str) -> dict[str, t.Any]:
        props = event.properties
        values: dict[str, t.Any] = {}
        for key, names in _METADATA_PROPS:
            for prop in names:
                value = props.get(prop)
                if value is not None:
                    values[key] = value
                    break
        rule = f"{client_event} clientEventMetadata"
        if "section" not in values and self.default_section is not None:
            values["section"] = self.default_section
        if "channel" not in values and self.default_channel is not None:
            values["channel"] = self.default_channel
        token = values.get("serveToken")
        if token is None:
            if self.require_serve_token:
                raise _Violation(
                    f"{rule}.serveToken is required for Ad events: set the "
                    "'serveToken' property (the ad's adServeToken from getAds)"
                )
        elif not isinstance(token, str) or not token:
            raise _Violation(f"{rule}.serveToken must be a non-empty string")
        for key, enum, enum_name in (
            ("section", SECTIONS, "Section"),
            ("channel", CHANNELS, "Channel"),
        ):
            value = values.get(key)
            if value is None:
                raise _Violation(
                    f"{rule}.{key} is required: set the {key!r} property "
                    f"(a {enum_name} value)"
                )
            if not isinstance(value, str) or value not in enum:
                raise _Violation(
                    f"{rule}.{key} {value!r} is not a Cardlytics {enum_name} value "
                    f"(one of {', '.join(sorted(enum))})"
                )
        slots = values.get("imageSlots")
        if slots is not None:
            if not isinstance(slots, (list, tuple)) or not all(
                isinstance(s, str) for s in slots
            ):
                raise _Violation(f"{rule}.imageSlots must be a list of strings")
            values["imageSlots"] = list(slots)
        for key in ("categoryId", "curationId"):
            value = values.get(key)
            if value is None or isinstance(value, str):
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                values[key] = str(value)
            else:
                raise _Violation(f"{rule}.{key} must be a string")
        position = values.get("displayPosition")
        if position is not None and (
            not isinstance(position, int) or isinstance(position, bool) or position < 0
        ):
            raise _Violation(
                f"{rule}.displayPosition must be a zero-based integer (>= 0)"
            )
        # Cardlytics' documented field order, defaults included.
        return {key: values[key] for key, _ in _METADATA_PROPS if key in values}

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
    def auth_headers(
        self, request: HTTPRequest, *, refresh: bool = False
    ) -> dict[str, str]:
        # Called once per HTTP attempt, so the request id is new per attempt.
        token = self.sessions.get(t.cast(str, request.auth_key), refresh=refresh)
        headers = {"X-CDLX-Request-Id": str(uuid.uuid4())}
        if self.header_style == "bearer":
            headers["Authorization"] = f"Bearer {token}"
        else:
            headers["X-CDLX-Session-Token"] = token
        return headers

    def _session_request_body(self, customer: str) -> t.Mapping[str, t.Any]:
        body = self._session_body
        if callable(body):
            return body(customer)
        if body == "customer":
            return {"sourceCustomerId": customer, "scopes": ["api:customer"]}
        return {"clientId": self._client_id, "secret": self._client_secret}

    def _start_session(self, customer: str) -> tuple[str, float | None]:
        """TokenCache fetch: ``POST /v2/session/startSession`` for ``customer``."""
        try:
            content = dumps(self._session_request_body(customer)).encode("utf-8")
        except Exception as exc:
            # A broken session_body callable fails the same way every time.
            raise AuthError(
                f"could not build the startSession body ({type(exc).__name__})",
                retryable=False,
            ) from None
        try:
            response = self.client.post(
                self.base_url + _SESSION_PATH,
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
            token, body_status = self._token_from(response)
            if token is None:
                raise AuthError(
                    f"startSession answered HTTP {status} without a sessionToken",
                    retryable=body_status in RETRYABLE_STATUSES,
                    status=body_status or status,
                    body=text,
                )
            _log.register_secret(token)
            with self._failures_lock:
                self._session_failures = 0
            expiry = _jwt_expiry(token)
            return token, None if expiry is None else max(0.0, expiry - time.time())
        if status == 500:
            with self._failures_lock:
                self._session_failures += 1
                failures = self._session_failures
            if failures >= self.max_session_failures:
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

    @staticmethod
    def _token_from(response: httpx.Response) -> tuple[str | None, int | None]:
        """The session token of a 2xx answer (``None`` for an error body), and
        the ``status`` an error body carries."""
        data = response_json(response)
        if data is None:
            return None, None
        failed, body_status = _error_body(data)
        if failed:
            return None, body_status
        for key in ("sessionToken", "token", "accessToken", "access_token"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value, None
        return None, body_status

    # --- outcomes ------------------------------------------------------------------
    def classify(self, request: HTTPRequest, response: httpx.Response) -> ExportResult:
        """2xx is success unless the body carries an error (``type`` or
        ``status >= 400``); everything else as in the base class."""
        status = response.status_code
        if 200 <= status < 300:
            data = response_json(response) or {}
            failed, body_status = _error_body(data)
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


def _error_body(data: dict[str, t.Any]) -> tuple[bool, int | None]:
    """Does a Cardlytics answer body report an error (a ``type``, or a
    ``status`` of 400 or more)? And that status, when it is an int."""
    status = data.get("status")
    code = status if type(status) is int else None
    return "type" in data or (code or 0) >= 400, code
