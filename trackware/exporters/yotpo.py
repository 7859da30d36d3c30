"""Yotpo (SMS & Email) "Create or update custom customer event" exporter.

One event per request to Yotpo's Core API v3, authenticated with an access
token obtained from the store id (``app_key``) and API secret, and paced by a
client-side rate limiter of 5 requests per second per store.

The endpoint's path, method and JSON field names are **not published** (see
vendor-apis.md §5.7): they live in one overridable :class:`YotpoFieldMap`,
shared with the local emulator, so a real request sample from a Yotpo account
can be applied by changing configuration, not code::

    from trackware.exporters.yotpo import DEFAULT_FIELD_MAP, CustomEventExporter

    field_map = DEFAULT_FIELD_MAP.replace(path="/core/v3/stores/{store_id}/events")
    exporter = CustomEventExporter("store-id", "secret", all_events=True,
                                   field_map=field_map)
"""

from __future__ import annotations

import collections
import collections.abc as c
import dataclasses
import datetime as _dt
import decimal
import enum
import math
import os
import re
import threading
import time
import typing as t
import urllib.parse
import uuid

import httpx

from .. import _env, _log
from .._auth import AuthError, TokenCache
from .._event import Event, dumps, iso_time
from .._retry import RETRYABLE_STATUSES, retry_floor
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
    ExporterStopped,
    HTTPRequest,
    redact_url,
    response_json,
    response_text,
)

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from .._config import ExporterOptions

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_FIELD_MAP",
    "TOKEN_PATH",
    "CustomEventExporter",
    "YotpoFieldMap",
    "PHONE_LIBRARY",
    "normalize_phone",
    "normalize_phone_libphonenumber",
    "normalize_phone_strict",
    "snake_case",
]

#: Yotpo's Core API host.
DEFAULT_BASE_URL = "https://api.yotpo.com"
#: The token endpoint (documented, unlike the event endpoint).
TOKEN_PATH = "/core/v3/stores/{store_id}/access_tokens"
#: Longest event name / source Yotpo accepts.
MAX_NAME_LENGTH = 255

_SNAKE_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*\Z")
_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")
_E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}\Z")
#: The fallback's E.164: ``+``, a country code not starting with 0, 8-15 digits.
_STRICT_E164_RE = re.compile(r"^\+[1-9][0-9]{7,14}\Z", re.ASCII)
#: Pure formatting the fallback removes (not parentheses: "(0)" is a guess).
_PHONE_SEPARATORS_RE = re.compile(r"[\s\-.]")
_REGION_RE = re.compile(r"^[A-Z]{2}\Z")
_WHITESPACE_RE = re.compile(r"\s")
_METHODS = frozenset({"POST", "PUT", "PATCH"})
_NESTED_MODES = ("reject", "flatten")
_PREFERENCES = ("email", "phone")
#: Yotpo recommends waiting 1 second after a 429 that names no reset time.
_DEFAULT_RATE_LIMIT_WAIT = 1.0
#: A bogus ``RateLimit-Reset`` cannot block a store longer than this.
_MAX_RATE_LIMIT_BLOCK = 300.0
#: Trait keys that carry identity rather than customer properties.
_IDENTITY_TRAITS = frozenset({"email", "phone", "phone_number", "external_id"})


def snake_case(name: str) -> str:
    """Yotpo's "snake-cased" form of ``name``.

    Lowercase; every run of characters other than ``a-z`` and ``0-9`` becomes
    one ``_``; leading and trailing ``_`` are dropped
    (``"Order.Shipped!"`` -> ``"order_shipped"``). May return ``""``.
    """
    return _NON_ALNUM_RE.sub("_", name.lower()).strip("_")


def normalize_phone_strict(value: str, default_region: str | None = None) -> str | None:
    """The fallback used without the ``phonenumbers`` library: ``value`` when it
    is already E.164, else ``None``.

    Only spaces, dashes and dots are removed; the rest must be ``+``, a
    country code not starting with 0, and 8 to 15 digits in all. Nothing is
    guessed: not a national number's country (``default_region`` is
    ignored), not a trunk ``0`` after the country code (``+44 (0) 7700...``,
    ``+49 030...``), not ``00`` for ``+``. Install ``trackware[phone]`` for
    real normalisation.
    """
    number = _PHONE_SEPARATORS_RE.sub("", value)
    return number if _STRICT_E164_RE.match(number) else None


def _region(default_region: str | int | None) -> str | None:
    """An ISO 3166 region (``"GB"``) from a region or a calling code (``"44"``)."""
    if default_region is None:
        return None
    text = str(default_region).strip().lstrip("+")
    if text.isdigit():
        import phonenumbers

        region = phonenumbers.region_code_for_country_code(int(text))
        return None if region == phonenumbers.UNKNOWN_REGION else region
    return text.upper() or None


def normalize_phone_libphonenumber(
    value: str, default_region: str | int | None = None
) -> str | None:
    """``value`` as E.164 using Google's libphonenumber data (the
    ``phonenumbers`` package, ``trackware[phone]``), or ``None``.

    International numbers (``+`` or ``00``) are parsed with their country's
    rules (``+44 (0) 7700 900999`` -> ``+447700900999``, ``+49 030 123456`` ->
    ``+4930123456``); national ones need ``default_region``, an ISO 3166 code
    (``"IT"``: ``06 1234 5678`` -> ``+390612345678``, Italy keeps its 0) or a
    calling code (``"44"``). A number must be *possible* for its country (the
    right length); whether a range is assigned is not checked (that data
    changes, and test ranges such as UK 07700 900xxx are unassigned).
    """
    import phonenumbers

    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, _region(default_region))
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164 if _E164_RE.match(e164) else None


try:
    import phonenumbers as _phonenumbers
except ImportError:  # pragma: no cover - exercised through normalize_phone_strict
    #: Whether the ``phonenumbers`` library is installed (``trackware[phone]``).
    PHONE_LIBRARY = False
else:
    PHONE_LIBRARY = True
    # libphonenumber imports a region's metadata module the first time it
    # parses a number of that region: here, on the worker thread, where a
    # fork in the middle of an import breaks the child (see exporters._http).
    # All of them are loaded now, on the importing thread (about 0.1 s).
    _phonenumbers.PhoneMetadata.load_all()

#: ``value`` as an E.164 number or ``None``: :func:`normalize_phone_libphonenumber`
#: when ``phonenumbers`` is installed (``pip install 'trackware[phone]'``),
#: else the strict fallback :func:`normalize_phone_strict`.
normalize_phone: t.Callable[[str, str | None], str | None] = (
    normalize_phone_libphonenumber if PHONE_LIBRARY else normalize_phone_strict
)


@dataclasses.dataclass(frozen=True)
class YotpoFieldMap:
    """Where the custom-event endpoint is and what its JSON fields are called.

    Yotpo's reference strips URLs and field names, so every value here except
    the identity keys' meaning is a **placeholder** (vendor-apis.md §5.4). The
    exporter builds requests from it and the emulator validates with the same
    instance; override it when a real request sample says otherwise.

    Attributes:
        path: the endpoint under the base URL; must contain ``{store_id}``.
        method: ``POST`` (placeholder), ``PUT`` or ``PATCH``.
        envelope: when set, the event object is wrapped as ``{envelope: {...}}``.
        source, event_name, timestamp, id, customer, properties: top-level fields.
        external_id, phone_number, email, customer_properties: fields of the
            customer object.
        version: a label for this map (shown in docs and emulator errors).
    """

    path: str = "/core/v3/stores/{store_id}/custom_events"
    method: str = "POST"
    envelope: str | None = None
    source: str = "source"
    event_name: str = "event_name"
    timestamp: str = "timestamp"
    id: str = "id"
    customer: str = "customer"
    properties: str = "properties"
    external_id: str = "external_id"
    phone_number: str = "phone_number"
    email: str = "email"
    customer_properties: str = "properties"
    version: str = "placeholder-1"

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ConfigurationError(
                f"YotpoFieldMap.path must start with '/', got {self.path!r}"
            )
        if "{store_id}" not in self.path:
            raise ConfigurationError(
                "YotpoFieldMap.path must contain '{store_id}', e.g. "
                "'/core/v3/stores/{store_id}/custom_events'"
            )
        if self.method.upper() not in _METHODS or self.method != self.method.upper():
            raise ConfigurationError(
                f"YotpoFieldMap.method must be one of {sorted(_METHODS)} "
                f"(upper case), got {self.method!r}"
            )
        top = (
            self.source,
            self.event_name,
            self.timestamp,
            self.id,
            self.customer,
            self.properties,
        )
        inner = (
            self.external_id,
            self.phone_number,
            self.email,
            self.customer_properties,
        )
        for group, where in ((top, "event"), (inner, "customer")):
            if not all(isinstance(f, str) and f for f in group):
                raise ConfigurationError(
                    f"YotpoFieldMap: every {where} field name must be a non-empty "
                    "string"
                )
            if len(set(group)) != len(group):
                raise ConfigurationError(
                    f"YotpoFieldMap: the {where} field names must be distinct, got "
                    f"{list(group)}"
                )
        if self.envelope is not None and not self.envelope:
            raise ConfigurationError(
                "YotpoFieldMap.envelope must be a non-empty field name or None"
            )

    def replace(self, **changes: t.Any) -> YotpoFieldMap:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def event_path(self, store_id: str) -> str:
        """The endpoint path for ``store_id`` (URL-quoted)."""
        return self.path.replace("{store_id}", urllib.parse.quote(store_id, safe=""))


#: The placeholder map from vendor-apis.md §5.4 (path and method are guesses too).
DEFAULT_FIELD_MAP = YotpoFieldMap()


# --- the per-store rate limiter ------------------------------------------------------


class _StoreLimiter:
    """Paces requests to one store across every exporter in the process.

    A token bucket of ``limit`` tokens where each token comes back ``period``
    seconds after the request that spent it *finished*. A bucket that refills
    continuously lets ``2 * limit`` requests into one second (a full bucket,
    then a refill) and a vendor counting a sliding window answers 429; timing
    each token from the response (a request reached the vendor before its
    response came back) keeps every 1-second window at ``limit`` whatever the
    network latency. The vendor's own signals (``RateLimit-Remaining: 0``,
    429 with ``RateLimit-Reset``/``Retry-After``) block the store on top.
    Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # [end] per spent token; end is +inf while the request is in flight.
        self._tokens: collections.deque[list[float]] = collections.deque()
        self.blocked_until = 0.0

    def wait_time(self, limit: int, period: float, now: float) -> float:
        """Seconds until a token is free (call with the lock held)."""
        tokens = self._tokens
        while tokens and tokens[0][0] <= now - period:
            tokens.popleft()
        wait = self.blocked_until - now
        if len(tokens) >= limit:
            ends = sorted(token[0] for token in tokens)
            wait = max(wait, ends[-limit] + period - now)
        return wait

    def acquire(
        self, limit: int, period: float, stop: threading.Event
    ) -> list[float] | None:
        """Wait until a token is free, spend it, and return it (a ticket).

        Returns ``None``, spending nothing, as soon as ``stop`` is set (the
        exporter was closed or halted by shutdown): the wait never outlasts
        the shutdown budget.
        """
        while True:
            with self._lock:
                now = time.monotonic()
                wait = self.wait_time(limit, period, now)
                if wait <= 0:
                    ticket = [math.inf]
                    self._tokens.append(ticket)
                    return ticket
            if stop.wait(min(wait, 1.0)):
                return None

    def release(self, ticket: list[float]) -> None:
        """The request that spent ``ticket`` has finished (answered or failed)."""
        with self._lock:
            ticket[0] = time.monotonic()
            # Keep the deque ordered by end time for the pruning in wait_time.
            ordered = sorted(self._tokens, key=lambda token: token[0])
            self._tokens = collections.deque(ordered)

    def block(self, seconds: float) -> None:
        """The vendor asked for a pause: send nothing for ``seconds``."""
        seconds = min(max(seconds, 0.0), _MAX_RATE_LIMIT_BLOCK)
        with self._lock:
            self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)

    def blocked_for(self) -> float:
        """Seconds the vendor's pause still lasts (0 when none)."""
        with self._lock:
            return max(0.0, self.blocked_until - time.monotonic())


_limiters: dict[str, _StoreLimiter] = {}
_limiters_lock = threading.Lock()
_MAX_LIMITERS = 1024


def _limiter_for(store_id: str) -> _StoreLimiter:
    with _limiters_lock:
        limiter = _limiters.get(store_id)
        if limiter is None:
            if len(_limiters) >= _MAX_LIMITERS:
                _limiters.pop(next(iter(_limiters)))
            limiter = _limiters[store_id] = _StoreLimiter()
        return limiter


def _reset_limiters_after_fork() -> None:
    # A lock held by another thread at fork time would never be released in
    # the child; the child starts with fresh (empty) buckets.
    global _limiters_lock
    _limiters_lock = threading.Lock()
    _limiters.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_limiters_after_fork)


# --- mapping -------------------------------------------------------------------------


class _ContractError(ContractViolation):
    """An event breaks Yotpo's contract; the message names the rule."""


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


class CustomEventExporter(BaseHTTPExporter):
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
        self._secret = secret
        self._limiter = _limiter_for(store_id)
        self._tickets: dict[int, list[list[float]]] = {}
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
        env = os.environ if environ is None else environ
        _env.check_environment(env)  # a misspelt name is reported
        prefix = "TRACKWARE_YOTPO_"
        kwargs: dict[str, t.Any] = {}
        missing = []
        for var, arg in (("STORE_ID", "store_id"), ("SECRET", "secret")):
            value = env.get(prefix + var, "").strip()
            if value:
                kwargs[arg] = value
            elif arg not in overrides:
                missing.append(prefix + var)
        if missing:
            raise ConfigurationError(
                f"{cls.__name__}.from_env: set {' and '.join(missing)} (the Yotpo "
                "store id / app_key and its API secret)"
            )
        simple = {
            "BASE_URL": "base_url",
            "SOURCE": "source",
            "IDENTITY_PREFERENCE": "identity_preference",
            "DEFAULT_COUNTRY_CODE": "default_country_code",
            "DEFAULT_REGION": "default_region",
            "NESTED_PROPERTIES": "nested_properties",
        }
        for var, arg in simple.items():
            value = env.get(prefix + var, "").strip()
            if value:
                kwargs[arg] = value
        mapping = env.get(prefix + "EVENTS", "").strip()
        if mapping:
            names: dict[str, str] = {}
            for pair in mapping.split(","):
                if not pair.strip():
                    continue
                app_name, sep, yotpo_name = pair.partition("=")
                if not sep or not app_name.strip() or not yotpo_name.strip():
                    raise ConfigurationError(
                        f"{cls.__name__}.from_env: {prefix}EVENTS must look like "
                        f"'order.shipped=order_shipped,cart.viewed=cart_viewed', got "
                        f"an entry {pair.strip()!r}"
                    )
                names[app_name.strip()] = yotpo_name.strip()
            kwargs["event_names"] = names
            kwargs["all_events"] = _truthy(env.get(prefix + "ALL_EVENTS", ""))
        else:
            kwargs["all_events"] = True
        path = env.get(prefix + "EVENT_PATH", "").strip()
        method = env.get(prefix + "EVENT_METHOD", "").strip()
        if path or method:
            changes = {}
            if path:
                changes["path"] = path
            if method:
                changes["method"] = method.upper()
            kwargs["field_map"] = overrides.pop("field_map", DEFAULT_FIELD_MAP).replace(
                **changes
            )
        kwargs.update(overrides)
        return cls(**kwargs)

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

    @staticmethod
    def identifiable(event: Event) -> bool:
        """Whether ``event`` names a customer at all (a user id, an email or a
        phone, on the event or in its traits). Yotpo keeps no anonymous
        customers, so an event without any is ``not_applicable`` here, not a
        rejection; one whose email or phone is unusable is rejected (someone
        must fix it)."""
        if event.email or event.phone:
            return True
        user_id = event.user_id
        if user_id is not None and str(user_id).strip():
            return True
        traits = event.traits
        return bool(traits) and any(
            _text(traits.get(key)) for key in ("email", "phone", "phone_number")
        )

    def yotpo_name(self, event: Event) -> str:
        """The Yotpo event name for ``event`` (raises ``_ContractError``)."""
        name = self.event_names.get(event.name)
        if name is None:
            name = snake_case(event.name)
        if not name:
            raise _ContractError(
                f"event_name: {event.name!r} has no letters or digits, so it has no "
                "snake_case form (Yotpo needs a non-empty snake_case name)"
            )
        if len(name) > MAX_NAME_LENGTH:
            raise _ContractError(
                f"event_name: the snake_case name is {len(name)} characters; Yotpo "
                f"allows at most {MAX_NAME_LENGTH} (map it in event_names)"
            )
        return name

    def payload(self, event: Event) -> dict[str, t.Any]:
        """The JSON body for ``event`` (before encoding).

        Raises ``_ContractError`` naming the rule the event breaks.
        """
        fm = self.field_map
        customer = self.customer(event)
        problem = iso_time_problem(event.unix_time, fm.timestamp)
        if problem:
            raise _ContractError(problem)
        body: dict[str, t.Any] = {
            fm.source: self.source,
            fm.event_name: self.yotpo_name(event),
            fm.timestamp: iso_time(event.unix_time),
            # Yotpo's id must be a UUID: an app-supplied id that is not one
            # becomes a stable UUID derived from it (as Cardlytics does).
            fm.id: stable_uuid(event.event_id),
            fm.customer: customer,
        }
        properties = self.flat_properties(event.properties, "properties")
        if properties:
            body[fm.properties] = properties
        if fm.envelope:
            return {fm.envelope: body}
        return body

    def customer(self, event: Event) -> dict[str, t.Any]:
        """The customer object: identity per Yotpo's rule, plus properties."""
        fm = self.field_map
        traits = event.traits
        email = event.email or _text(traits.get("email"))
        phone_raw = (
            event.phone
            or _text(traits.get("phone"))
            or _text(traits.get("phone_number"))
        )
        region = self.default_region or self.default_country_code
        # Looked up at call time: the module-level choice of normaliser.
        phone = normalize_phone(phone_raw, region) if phone_raw else None
        email_ok = bool(email) and _valid_email(t.cast(str, email))
        customer: dict[str, t.Any] = {}
        user_id = event.user_id
        if user_id is not None and str(user_id).strip():
            customer[fm.external_id] = str(user_id)
            # Contacts enrich the profile when valid; an invalid one is left
            # out rather than costing the event (external_id identifies it).
            if email_ok:
                customer[fm.email] = email
            if phone:
                customer[fm.phone_number] = phone
        else:
            choices = {"email": email if email_ok else None, "phone": phone}
            preferred = self.identity_preference
            other = "phone" if preferred == "email" else "email"
            chosen = preferred if choices[preferred] else other
            if not choices[chosen]:
                problems = []
                if email and not email_ok:
                    problems.append("the email is not a valid address")
                if phone_raw and not phone:
                    problems.append(self._phone_problem(region))
                detail = (
                    "; ".join(problems) or "the event has no user_id, email or phone"
                )
                raise _ContractError(
                    f"identity: {detail}. Yotpo identifies a customer by external_id "
                    "(user_id), or else by exactly one of email / E.164 phone_number"
                )
            if chosen == "email":
                customer[fm.email] = choices["email"]
            else:
                customer[fm.phone_number] = choices["phone"]
        props = {k: v for k, v in traits.items() if k not in _IDENTITY_TRAITS}
        flat = self.flat_properties(props, "customer properties")
        if flat:
            customer[fm.customer_properties] = flat
        return customer

    @staticmethod
    def _phone_problem(region: str | None) -> str:
        problem = "the phone number cannot be made E.164"
        if normalize_phone is normalize_phone_strict:
            return (
                f"{problem}: without the phonenumbers library only numbers "
                "already in E.164 (like +447700900123) are accepted; install "
                "trackware[phone] to normalise national and formatted numbers"
            )
        if not region:
            return (
                f"{problem} (set default_region or default_country_code for "
                "national numbers)"
            )
        return f"{problem} (not a possible number for its country)"

    def flat_properties(
        self, properties: t.Mapping[str, t.Any], what: str
    ) -> dict[str, t.Any]:
        """Yotpo's flat ``key: primitive`` object from ``properties``."""
        out: dict[str, t.Any] = {}
        origin: dict[str, str] = {}
        for key, value in properties.items():
            self._flatten_into(out, origin, str(key), value, what)
        return out

    def _flatten_into(
        self,
        out: dict[str, t.Any],
        origin: dict[str, str],
        key: str,
        value: t.Any,
        what: str,
    ) -> None:
        if value is None:
            return  # Yotpo does not take null: the property is simply left out.
        clean = _WHITESPACE_RE.sub("_", key)
        if not clean:
            raise _ContractError(f"{what}: a property has an empty name")
        if isinstance(value, (c.Mapping, list, tuple)):
            if self.nested_properties != "flatten":
                kind = "an object" if isinstance(value, c.Mapping) else "an array"
                raise _ContractError(
                    f"{what}: {key!r} is {kind}; Yotpo takes flat primitive values "
                    "(string, number, boolean, ISO date); use nested_properties="
                    "'flatten' or flatten it in a before_send hook"
                )
            items: c.Iterable[tuple[t.Any, t.Any]] = (
                value.items() if isinstance(value, c.Mapping) else enumerate(value)
            )
            for sub, item in items:
                self._flatten_into(out, origin, f"{clean}_{sub}", item, what)
            return
        primitive = _primitive(value)
        if isinstance(value, (float, decimal.Decimal)) and primitive is _INVALID:
            raise _ContractError(
                f"{what}: {key!r} is not a finite number (JSON has no NaN/Infinity)"
            )
        if primitive is _INVALID:
            raise _ContractError(
                f"{what}: {key!r} has type {type(value).__name__}; Yotpo takes "
                "string, number, boolean or ISO date values"
            )
        if primitive is None:
            return
        if clean in out:
            raise _ContractError(
                f"{what}: {origin[clean]!r} and {key!r} both become {clean!r} "
                "(Yotpo property names use _ instead of spaces)"
            )
        out[clean] = primitive
        origin[clean] = key

    # --- auth ------------------------------------------------------------------------
    def _fetch_token(self, store_id: str) -> tuple[str, float | None]:
        url = self.base_url + TOKEN_PATH.replace(
            "{store_id}", urllib.parse.quote(store_id, safe="")
        )
        try:
            response = self.client.post(
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
            return token, self.token_max_age
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

    def auth_headers(
        self, request: HTTPRequest, *, refresh: bool = False
    ) -> dict[str, str]:
        if refresh:
            # The resend after a 401 is a second request: it needs its own token.
            self._spend_token(request)
        token = self._tokens.get(self.store_id, refresh=refresh)
        return {"X-Yotpo-Token": token}

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
            self._limiter.block(_DEFAULT_RATE_LIMIT_WAIT if floor is None else floor)

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
        self._limiter = _limiter_for(self.store_id)
        self._tickets = {}
        self._tokens = self._tokens.fresh()

    def classify(self, request: HTTPRequest, response: httpx.Response) -> ExportResult:
        result = super().classify(request, response)
        if response.status_code == 429 and result.retry_after is None:
            result.retry_after = _DEFAULT_RATE_LIMIT_WAIT
        return result

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} name={self.name!r} store_id={self.store_id!r} "
            f"base_url={redact_url(self.base_url)!r}>"
        )


_INVALID = object()


def _text(value: t.Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _valid_email(value: str) -> bool:
    return value.count("@") == 1 and not _WHITESPACE_RE.search(value)


def _primitive(value: t.Any) -> t.Any:
    """A JSON primitive for ``value``; ``None`` to drop it; ``_INVALID`` if none."""
    if isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return _primitive(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return _INVALID
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else _INVALID
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return _INVALID
