"""Yotpo (SMS & Email): "Create or update custom customer event", one per request.

:class:`CustomEventExporter` authenticates with an access token from the store
id (``app_key``) and API secret and paces requests per store; ``_mapping``
builds the body, ``_fields`` holds the unpublished endpoint and field names
(:class:`YotpoFieldMap`), ``_phone`` the E.164 normalisers and ``_limiter``
the per-store rate limit. docs/architecture/vendors.md has the details.
"""

from __future__ import annotations

import re
import typing as t

import httpx

from ... import _log
from ..._auth import CachedToken, Credentials, TokenCache
from ..._event import Event
from ...exceptions import ConfigurationError, ContractViolation
from .._base import ExportResult, encode_event, env_options
from .._http import (
    BaseHTTPExporter,
    ExporterStopped,
    HTTPRequest,
    retry_floor,
)
from .._urls import redact_url
from ._fields import DEFAULT_FIELD_MAP, MAX_NAME_LENGTH, YotpoFieldMap, snake_case
from ._limiter import DEFAULT_RATE_LIMIT_WAIT, limiter_for
from ._mapping import PhoneNormalizer, YotpoMapping
from ._phone import (
    PHONE_LIBRARY,
    normalize_phone,
    normalize_phone_libphonenumber,
    normalize_phone_strict,
)
from ._token import TOKEN_PATH, AccessTokenFetcher

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from .._options import ExporterOptions

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_FIELD_MAP",
    "PHONE_LIBRARY",
    "TOKEN_PATH",
    "CustomEventExporter",
    "YotpoFieldMap",
    "normalize_phone",
    "normalize_phone_libphonenumber",
    "normalize_phone_strict",
    "snake_case",
]

#: Yotpo's Core API host.
DEFAULT_BASE_URL = "https://api.yotpo.com"

_SNAKE_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*\Z")
_REGION_RE = re.compile(r"^[A-Z]{2}\Z")
_NESTED_MODES = ("reject", "flatten")
_PREFERENCES = ("email", "phone")
_ENV_PREFIX = "TRACKWARE_YOTPO_"
#: Read from the environment only (never an override), converted by from_env.
_ENV_RAW = {
    "EVENTS": "<events>",
    "ALL_EVENTS": "<all events>",
    "EVENT_PATH": "<event path>",
    "EVENT_METHOD": "<event method>",
}
_ENV_OPTIONAL = {
    "BASE_URL": "base_url",
    "SOURCE": "source",
    "IDENTITY_PREFERENCE": "identity_preference",
    "DEFAULT_COUNTRY_CODE": "default_country_code",
    "DEFAULT_REGION": "default_region",
    "NESTED_PROPERTIES": "nested_properties",
    **_ENV_RAW,
}


def _token_header(token: str) -> dict[str, str]:
    return {"X-Yotpo-Token": token}


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


class CustomEventExporter(YotpoMapping, BaseHTTPExporter):
    """Delivers events to Yotpo as custom customer events, one per request.

    Each event becomes (field names from the :class:`YotpoFieldMap`)::

        {"source": "trackware", "event_name": "order_shipped",
         "timestamp": "2026-11-24T06:00:00.000Z", "id": "<event_id>",
         "customer": {"external_id": "c-42", "properties": {...traits}},
         "properties": {...event properties}}

    Contract, applied on the worker (an event that breaks it is rejected for
    Yotpo only, with the rule in the dead letter):

    * names are snake-cased (lowercase, other characters -> ``_``, runs
      collapse) and must end up 1..255 characters;
    * ``id`` is the event's ``event_id`` (Yotpo upserts by it, so retries
      never duplicate); an app-supplied id that is not a UUID becomes a
      stable UUID derived from it; the timestamp is always sent (UTC, ``Z``);
    * an event that names no customer (no user id, email or phone: an
      anonymous page view) is ``not_applicable`` for Yotpo, not rejected;
    * identity: ``external_id`` is ``user_id``; without one, exactly one of
      email / E.164 phone (``identity_preference`` picks when both exist).
      Phones are normalised to E.164 with Google's libphonenumber data when
      ``phonenumbers`` is installed (``pip install 'trackware[phone]'``);
      without it only numbers already in E.164 are usable (see
      :func:`normalize_phone_strict`). Email and phone
      ride along with an ``external_id`` when valid. ``anonymous_id`` is never
      used: it would create a throw-away Yotpo profile;
    * properties (and customer properties, from ``traits`` minus email /
      phone) are flat primitives: ``None`` values dropped, whitespace in keys
      replaced by ``_``, datetimes as ISO strings; nested objects and arrays
      are rejected, or flattened (``{"a": {"b": 1}}`` -> ``{"a_b": 1}``,
      lists as ``a_0``, ``a_1``) with ``nested_properties="flatten"``.

    Environment variables of :meth:`from_env`: ``TRACKWARE_YOTPO_STORE_ID``,
    ``TRACKWARE_YOTPO_SECRET`` (required); ``TRACKWARE_YOTPO_BASE_URL``,
    ``TRACKWARE_YOTPO_SOURCE``, ``TRACKWARE_YOTPO_EVENTS``
    (``app.name=yotpo_name,...``; unset: all events),
    ``TRACKWARE_YOTPO_IDENTITY_PREFERENCE``,
    ``TRACKWARE_YOTPO_DEFAULT_REGION``, ``TRACKWARE_YOTPO_DEFAULT_COUNTRY_CODE``,
    ``TRACKWARE_YOTPO_NESTED_PROPERTIES``, ``TRACKWARE_YOTPO_EVENT_PATH``,
    ``TRACKWARE_YOTPO_EVENT_METHOD`` (optional).

    Args:
        store_id: the Yotpo store id (``app_key``).
        secret: the store's API secret (exchanged for an access token).
        event_names: app event name -> Yotpo event name (snake_case).
        all_events: also send events missing from ``event_names``, under their
            snake-cased name.
        source: the ``source`` field (snake_case), default ``"trackware"``.
        identity_preference: ``"email"`` (default) or ``"phone"``: which one
            identifies a customer without ``user_id`` who has both.
        default_region: the country of national phone numbers, an ISO 3166
            code (``"IT"``: ``06 1234 5678`` -> ``+390612345678``); needs
            ``trackware[phone]``. Without it national numbers are unusable.
        default_country_code: the same as a calling code (``"44"``; the
            region is the code's main country); ``default_region`` wins.
        nested_properties: ``"reject"`` (default) or ``"flatten"``.
        field_map: endpoint and field names (default :data:`DEFAULT_FIELD_MAP`).
        base_url: default ``https://api.yotpo.com``.
        rate_limit: requests per second per store (shared by every exporter
            of the store in the process); ``None`` turns the limiter off.
        token_max_age: seconds a token is used before a new one is fetched
            (Yotpo tokens last 14 days; default 13 days). A 401 also refreshes.
        max_rate_limit_sleep: a vendor-imposed pause up to this long is waited
            out on the worker; a longer one makes the batch retry later.
        max_batch_size: events per export call (still one request each).
        **options: ``name``, ``timeout``, ``connect_timeout``, ``verify``,
            ``cert``, ``retry``, ``transport`` (see :class:`BaseHTTPExporter`).

    Raises:
        ConfigurationError: missing credentials, neither ``event_names`` nor
            ``all_events``, names that are not snake_case, unknown
            ``identity_preference`` / ``nested_properties``, a bad country
            code or base URL.
    """

    default_name = "yotpo"

    def __init__(
        self,
        store_id: str,
        secret: str,
        *,
        event_names: t.Mapping[str, str] | None = None,
        all_events: bool = False,
        source: str = "trackware",
        identity_preference: str = "email",
        default_country_code: str | int | None = None,
        default_region: str | None = None,
        nested_properties: str = "reject",
        field_map: YotpoFieldMap = DEFAULT_FIELD_MAP,
        base_url: str = DEFAULT_BASE_URL,
        rate_limit: int | None = 5,
        token_max_age: float = 13 * 86400.0,
        max_rate_limit_sleep: float = 5.0,
        max_batch_size: int = 10,
        **options: Unpack[ExporterOptions],
    ) -> None:
        if isinstance(secret, str) and secret:
            _log.register_secret(secret)
        cls = type(self).__name__
        missing = [
            arg
            for arg, value in (("store_id", store_id), ("secret", secret))
            if not isinstance(value, str) or not value.strip()
        ]
        if missing:
            raise ConfigurationError(
                f"{cls}: {' and '.join(missing)} must be non-empty strings: pass the "
                "Yotpo store id (app_key) and API secret, or set "
                "TRACKWARE_YOTPO_STORE_ID / TRACKWARE_YOTPO_SECRET with from_env()"
            )
        super().__init__(base_url=base_url, max_batch_size=max_batch_size, **options)
        if event_names is None and not all_events:
            raise ConfigurationError(
                f"{cls}: say which events go to Yotpo: event_names={{'order.shipped': "
                "'order_shipped'}} and/or all_events=True"
            )
        names: dict[str, str] = {}
        for app_name, yotpo_name in dict(event_names or {}).items():
            names[app_name] = self._check_name("event_names", app_name, yotpo_name)
        self.event_names = names
        self.all_events = bool(all_events)
        self.source = self._check_name("source", None, source)
        if identity_preference not in _PREFERENCES:
            raise ConfigurationError(
                f"{cls}: identity_preference must be 'email' or 'phone', got "
                f"{identity_preference!r}"
            )
        self.identity_preference = identity_preference
        code = None if default_country_code is None else str(default_country_code)
        if code is not None:
            code = code.strip().lstrip("+")
            if not (code.isdigit() and 1 <= len(code) <= 3 and code[0] != "0"):
                raise ConfigurationError(
                    f"{cls}: default_country_code must be a calling code of 1-3 "
                    f"digits such as '44' or '1', got {default_country_code!r}"
                )
        self.default_country_code = code
        if default_region is not None and (
            not isinstance(default_region, str)
            or not _REGION_RE.match(default_region.strip().upper())
        ):
            raise ConfigurationError(
                f"{cls}: default_region must be an ISO 3166 country code such as "
                f"'GB' or 'IT', got {default_region!r}"
            )
        self.default_region = (
            default_region.strip().upper() if default_region is not None else None
        )
        if nested_properties not in _NESTED_MODES:
            raise ConfigurationError(
                f"{cls}: nested_properties must be 'reject' or 'flatten', got "
                f"{nested_properties!r}"
            )
        self.nested_properties = nested_properties
        if not isinstance(field_map, YotpoFieldMap):
            raise ConfigurationError(
                f"{cls}: field_map must be a YotpoFieldMap (e.g. "
                "DEFAULT_FIELD_MAP.replace(path=...))"
            )
        self.field_map = field_map
        if rate_limit is not None and (
            not isinstance(rate_limit, int) or rate_limit < 1
        ):
            raise ConfigurationError(
                f"{cls}: rate_limit must be a positive number of requests per second "
                f"or None, got {rate_limit!r}"
            )
        self.rate_limit = rate_limit
        self.rate_period = 1.0
        if token_max_age <= 0:
            raise ConfigurationError(f"{cls}: token_max_age must be > 0 seconds")
        self.token_max_age = float(token_max_age)
        self.max_rate_limit_sleep = float(max_rate_limit_sleep)
        self.store_id = store_id
        self._limiter = limiter_for(store_id)
        self._tickets: dict[int, list[list[float]]] = {}
        self._fetch_token = AccessTokenFetcher(
            lambda: self.client, self.base_url, secret, max_age=self.token_max_age
        )
        self._tokens: TokenCache[str] = TokenCache(
            self._fetch_token, refresh_margin=0.0, default_ttl=self.token_max_age
        )

    # --- configuration helpers -------------------------------------------------------
    def _check_name(self, what: str, app_name: str | None, value: t.Any) -> str:
        where = f"{what}[{app_name!r}]" if app_name is not None else what
        if (
            not isinstance(value, str)
            or not _SNAKE_RE.match(value)
            or len(value) > MAX_NAME_LENGTH
        ):
            hint = snake_case(value) if isinstance(value, str) else ""
            fix = f" (use {hint!r})" if hint and len(hint) <= MAX_NAME_LENGTH else ""
            raise ConfigurationError(
                f"{type(self).__name__}: {where} must be a snake_case name of 1-"
                f"{MAX_NAME_LENGTH} characters like 'order_shipped', got {value!r}"
                f"{fix}"
            )
        return value

    @classmethod
    def from_env(
        cls, environ: t.Mapping[str, str] | None = None, **overrides: t.Any
    ) -> CustomEventExporter:
        """Build the exporter from ``TRACKWARE_YOTPO_*`` variables (see the class).

        ``overrides`` (constructor keyword arguments) win over the environment.
        Without ``TRACKWARE_YOTPO_EVENTS`` every event is sent (snake-cased).

        Raises:
            ConfigurationError: naming the missing variables.
        """
        options = env_options(
            cls.__name__,
            environ,
            prefix=_ENV_PREFIX,
            required={"STORE_ID": "store_id", "SECRET": "secret"},
            optional=_ENV_OPTIONAL,
            overrides=overrides,
            hint=" (the Yotpo store id / app_key and its API secret)",
        )
        raw = {suffix: options.pop(arg, "") for suffix, arg in _ENV_RAW.items()}
        if raw["EVENTS"]:
            names: dict[str, str] = {}
            for pair in raw["EVENTS"].split(","):
                if not pair.strip():
                    continue
                app_name, sep, yotpo_name = pair.partition("=")
                if not sep or not app_name.strip() or not yotpo_name.strip():
                    raise ConfigurationError(
                        f"{cls.__name__}.from_env: {_ENV_PREFIX}EVENTS must look "
                        "like 'order.shipped=order_shipped,cart.viewed=cart_viewed', "
                        f"got an entry {pair.strip()!r}"
                    )
                names[app_name.strip()] = yotpo_name.strip()
            options.setdefault("event_names", names)
            options.setdefault("all_events", _truthy(raw["ALL_EVENTS"]))
        else:
            options.setdefault("all_events", True)
        if raw["EVENT_PATH"] or raw["EVENT_METHOD"]:
            changes = {}
            if raw["EVENT_PATH"]:
                changes["path"] = raw["EVENT_PATH"]
            if raw["EVENT_METHOD"]:
                changes["method"] = raw["EVENT_METHOD"].upper()
            field_map = overrides.get("field_map", DEFAULT_FIELD_MAP)
            options["field_map"] = field_map.replace(**changes)
        return cls(**options)

    # --- routing (application thread: cheap) ---------------------------------------
    def applies(self, event: Event, /) -> bool:
        only = self._only  # the events= option, as every exporter takes it
        if only is not None and event.name not in only:
            return False
        return self.all_events or event.name in self.event_names

    # --- mapping (worker thread) -----------------------------------------------------
    def build_requests(
        self, events: t.Sequence[Event]
    ) -> tuple[list[HTTPRequest], ExportResult]:
        result = ExportResult()
        requests: list[HTTPRequest] = []
        for event in events:
            if not self.identifiable(event):
                # Yotpo has no anonymous customers: by design, not an error.
                result.skipped.append(event)
                continue
            try:
                body = self.payload(event)
                content = encode_event(body).encode("utf-8")
            except ContractViolation as exc:
                result.reject(event, f"yotpo contract: {exc}")
                continue
            except Exception as exc:
                result.reject_unmapped(event, exc, self.name, "yotpo")
                continue
            requests.append(
                HTTPRequest(
                    [event],
                    self.field_map.method,
                    self.field_map.event_path(self.store_id),
                    content=content,
                    headers={
                        "Content-Type": "application/json",
                        "Accept": "application/json",
                    },
                    auth_key=self.store_id,
                )
            )
        return requests, result

    def _phone_normalizer(self) -> PhoneNormalizer:
        # This package's normalize_phone, read at call time: replacing it
        # (tests do, to run without phonenumbers) changes what is used.
        return normalize_phone

    # --- auth ------------------------------------------------------------------------
    def credentials(self, request: HTTPRequest) -> Credentials:
        """The store's access token; the resend after a 401 is a second
        request, so it first spends a rate-limit token of its own."""
        token = CachedToken(self._tokens, self.store_id, _token_header)

        def credentials(refresh: bool) -> t.Mapping[str, str]:
            if refresh:
                self._spend_token(request)
            return token(refresh)

        return credentials

    # --- rate limiting ---------------------------------------------------------------
    def _spend_token(self, request: HTTPRequest) -> None:
        if self.rate_limit is None:
            return
        ticket = self._limiter.acquire(self.rate_limit, self.rate_period, self._halt)
        if ticket is None:
            raise ExporterStopped(
                f"{self.name}: stopped while waiting for a rate-limit token"
            )
        self._tickets.setdefault(id(request), []).append(ticket)

    def before_request(self, request: HTTPRequest) -> float | None:
        # Waits inside acquire() (on the worker thread) so that the token is
        # taken at the moment the request goes out, not when the wait began.
        self._spend_token(request)
        return None

    def after_response(self, request: HTTPRequest, response: httpx.Response) -> None:
        headers = response.headers
        remaining = headers.get("ratelimit-remaining")
        exhausted = False
        if remaining is not None:
            try:
                exhausted = float(remaining) <= 0
            except ValueError:
                exhausted = False
        if response.status_code == 429 or exhausted:
            floor = retry_floor(headers)
            self._limiter.block(DEFAULT_RATE_LIMIT_WAIT if floor is None else floor)

    def rate_limit_wait(self) -> float:
        """Seconds Yotpo asked this store to pause for (0 when none)."""
        return self._limiter.blocked_for()

    def send(self, request: HTTPRequest) -> ExportResult:
        blocked = self._limiter.blocked_for()
        if blocked > self.max_rate_limit_sleep:
            # Too long to sleep on the worker: let the retry machinery wait
            # (interruptible by shutdown) and try again.
            return ExportResult.failure(
                request.events,
                "rate limited by Yotpo (waiting for RateLimit-Reset)",
                retry_after=blocked,
                status=429,
            )
        try:
            return super().send(request)
        finally:
            for ticket in self._tickets.pop(id(request), ()):
                self._limiter.release(ticket)

    def after_fork(self) -> None:
        super().after_fork()
        # Locks the parent's threads held at fork time stay held in the child:
        # take the child's fresh limiter and a fresh token cache.
        self._limiter = limiter_for(self.store_id)
        self._tickets = {}
        self._tokens = self._tokens.fresh()

    def classify(self, request: HTTPRequest, response: httpx.Response) -> ExportResult:
        result = super().classify(request, response)
        if response.status_code == 429 and result.retry_after is None:
            result.retry_after = DEFAULT_RATE_LIMIT_WAIT
        return result

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} name={self.name!r} store_id={self.store_id!r} "
            f"base_url={redact_url(self.base_url)!r}>"
        )
