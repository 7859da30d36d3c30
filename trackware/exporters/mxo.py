"""Medallia MXO (ex-Thunderhead ONE): the Interaction API and the Lightweight API.

* :class:`InteractionExporter` authenticates with OAuth2 client credentials
  and delivers tracked events in the background as historic interactions
  (``PUT /interactions/offline``, at most 100 per call), profile updates
  (``PUT /interaction``) or real-time interactions (``POST /interaction``).
  Its :meth:`~InteractionExporter.interact` method asks MXO for optimizations
  synchronously, for a view that needs them now.
* :class:`LightweightExporter` posts one unauthenticated event per request to
  ``/one/rt/track/{sk}/events``.

Both keep the ``tid`` MXO assigns to each visitor (by ``anonymous_id``, in a
bounded map) and send it on later calls; :meth:`tid_for` exposes it to the
Flask/ASGI integrations (``tid_source=exporter.tid_for``).

MXO has no deduplication key: a call that failed after MXO processed it and
is then retried counts twice. trackware never resends a call MXO accepted, and
logs (rate-limited) when a retry may double-count.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import re
import threading
import time
import typing as t

import httpx

from .. import _log
from .._auth import CachedToken, Credentials, TokenAuth, TokenCache
from .._context import current_scope
from .._event import Event, dumps, iso_time, to_jsonable
from ..exceptions import AuthError, ConfigurationError
from ._base import (
    ContractViolation,
    ExportResult,
    encode_event,
    env_options,
    iso_time_problem,
)
from ._http import (
    RETRYABLE_STATUSES,
    BaseHTTPExporter,
    HTTPRequest,
    redact_url,
    register_url_secrets,
    response_json,
    response_text,
    retry_floor,
)

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from .._config import ExporterOptions, LightweightExporterOptions

__all__ = [
    "DEFAULT_PROFILE_EVENTS",
    "InteractionExporter",
    "InteractionResult",
    "LightweightExporter",
]

TOKEN_PATH = "/one/oauth2token"
INTERACTION_PATH = "/one/oauth2/rt/api/2.0/interaction"
OFFLINE_BATCH_PATH = "/one/oauth2/rt/api/2.0/interactions/offline"
LIGHTWEIGHT_PATH = "/one/rt/track/{sk}/events"
#: The documented cap of ``PUT /interactions/offline``.
MAX_OFFLINE_BATCH = 100
#: Events sent as profile updates (``PUT /interaction``) unless configured.
DEFAULT_PROFILE_EVENTS: frozenset[str] = frozenset({"identify", "profile.updated"})
#: Identity fields a customer key can come from.
IDENTITY_FIELDS = ("user_id", "email", "phone", "anonymous_id")

_SITE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")
_TID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
_JSON = "application/json"
_ENV_PREFIX = "TRACKWARE_MXO_"

Touchpoints: t.TypeAlias = "t.Mapping[str, str] | t.Callable[[Event], str | None]"
CustomerKey: t.TypeAlias = "str | t.Callable[[Event], str | None]"
PropertySource: t.TypeAlias = "t.Callable[[Event], t.Mapping[str, t.Any]]"


@dataclasses.dataclass
class _MXORequest(HTTPRequest):
    #: anonymous ids whose tid the answer tells us.
    visitors: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class InteractionResult:
    """What :meth:`InteractionExporter.interact` got back.

    Attributes:
        optimizations: MXO's optimization points (``data`` is base64), empty
            on failure.
        tid: the visitor's MXO identifier (remembered for later calls).
        error: why the call failed, or ``None``.
        status: the HTTP status MXO answered, if it answered.
    """

    optimizations: list[dict[str, t.Any]] = dataclasses.field(default_factory=list)
    tid: str | None = None
    error: str | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def decoded(self) -> list[str | None]:
        """Each optimization's base64 ``data`` decoded as UTF-8 text (or None)."""
        out: list[str | None] = []
        for item in self.optimizations:
            data = item.get("data") if isinstance(item, dict) else None
            try:
                out.append(base64.b64decode(data).decode("utf-8") if data else None)
            except (ValueError, TypeError):
                out.append(None)
        return out


def _string_value(value: t.Any) -> str | None:
    """An MXO property value: text (``None`` means: leave the property out)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    try:
        plain = to_jsonable(value)
        return plain if isinstance(plain, str) else encode_event(plain)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ContractViolation(
            f"json: a property value of type {type(value).__name__} cannot be "
            f"encoded as JSON ({type(exc).__name__}); MXO property values are text"
        ) from None


def _is_2xx(code: t.Any) -> bool:
    """Whether ``code`` (a body's ``statusCode``) is an integer 2xx status."""
    return isinstance(code, int) and not isinstance(code, bool) and 200 <= code < 300


def _encode(obj: t.Any) -> bytes:
    """JSON-encode one event's body on the worker, alone (an unencodable value
    breaks the contract: ContractViolation)."""
    return encode_event(obj).encode("utf-8")


class _MXOExporter(BaseHTTPExporter):
    """What both MXO exporters share: touchpoints, identity, properties, tids."""

    def __init__(
        self,
        *,
        base_url: str,
        site_key: str,
        touchpoints: Touchpoints | None = None,
        default_touchpoint: str | None = None,
        customer_key: CustomerKey = "user_id",
        properties_from: PropertySource | None = None,
        event_id_property: str | None = None,
        max_visitors: int = 10_000,
        **options: Unpack[LightweightExporterOptions],
    ) -> None:
        super().__init__(base_url=base_url, **options)
        cls = type(self).__name__
        if not isinstance(site_key, str) or not _SITE_KEY_RE.match(site_key):
            raise ConfigurationError(
                f"{cls}: site_key must be your Space's site key (letters, digits, "
                f"'-' or '_', e.g. 'ONE-XXXXXXXXXX-1234'), got {site_key!r}"
            )
        if touchpoints is None and default_touchpoint is None:
            raise ConfigurationError(
                f"{cls}: pass touchpoints={{'event.name': 'api://touchpoint/path'}} "
                "(or a callable), or default_touchpoint='api://touchpoint' to send "
                "every event to <default_touchpoint>/<event name>"
            )
        self._touchpoint_map: dict[str, str] = {}
        self._touchpoint_fn: t.Callable[[Event], str | None] | None = None
        if callable(touchpoints):
            self._touchpoint_fn = touchpoints
        elif touchpoints is not None:
            for event_name, uri in dict(touchpoints).items():
                if not isinstance(uri, str) or not uri.strip() or uri != uri.strip():
                    raise ConfigurationError(
                        f"{cls}: touchpoints[{event_name!r}] must be the "
                        f"touchpoint/interaction URI configured in MXO, got {uri!r}"
                    )
                self._touchpoint_map[event_name] = uri
        if default_touchpoint is not None and (
            not isinstance(default_touchpoint, str) or not default_touchpoint.strip()
        ):
            raise ConfigurationError(
                f"{cls}: default_touchpoint must be a touchpoint URI such as "
                f"'api://my.touchpoint', got {default_touchpoint!r}"
            )
        self._default_touchpoint = (
            default_touchpoint.rstrip("/") if default_touchpoint else None
        )
        self._match_all = (
            self._touchpoint_fn is not None or self._default_touchpoint is not None
        )
        if not callable(customer_key) and customer_key not in IDENTITY_FIELDS:
            raise ConfigurationError(
                f"{cls}: customer_key must be one of {', '.join(IDENTITY_FIELDS)} "
                f"or a callable(event) -> str | None, got {customer_key!r}"
            )
        if event_id_property is not None and not event_id_property:
            raise ConfigurationError(
                f"{cls}: event_id_property must be a property name or None"
            )
        if max_visitors < 1:
            raise ConfigurationError(f"{cls}: max_visitors must be >= 1")
        self.site_key = site_key
        self.customer_key = customer_key
        self.properties_from = properties_from
        self.event_id_property = event_id_property
        self.max_visitors = max_visitors
        self._tids: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._tids_lock = threading.Lock()

    def after_fork(self) -> None:
        # A parent thread may have held the lock at fork time: a fresh one.
        super().after_fork()
        self._tids_lock = threading.Lock()

    # --- cheap check on the app thread ------------------------------------------------
    def applies(self, event: Event, /) -> bool:
        only = self._only
        if only is not None and event.name not in only:
            return False
        return self._match_all or event.name in self._touchpoint_map

    # --- tids -------------------------------------------------------------------------
    def tid_for(self, anonymous_id: str) -> str | None:
        """The tid MXO assigned to this visitor, if one was seen (thread-safe)."""
        with self._tids_lock:
            return self._tids.get(anonymous_id)

    def remember_tid(self, anonymous_id: str, tid: str) -> None:
        """Keep ``tid`` for ``anonymous_id`` (the oldest visitors are forgotten)."""
        if not anonymous_id or not isinstance(tid, str) or not _TID_RE.match(tid):
            return
        with self._tids_lock:
            self._tids[anonymous_id] = tid
            self._tids.move_to_end(anonymous_id)
            while len(self._tids) > self.max_visitors:
                self._tids.popitem(last=False)

    def _event_tid(self, event: Event) -> str | None:
        tid = event.context.get("mxo_tid")
        if tid is not None:
            if isinstance(tid, str) and _TID_RE.match(tid):
                return tid
            _log.warn(
                f"mxo-tid:{self.name}",
                "trackware: %s: ignoring a context['mxo_tid'] that is not an MXO "
                "tid (UUID); the event is sent without it",
                self.name,
            )
        if event.anonymous_id:
            return self.tid_for(event.anonymous_id)
        return None

    # --- mapping (worker thread) ---------------------------------------------------
    def _touchpoint(self, event: Event) -> str | None:
        """The interaction URI, ``None`` when the event is not for MXO."""
        uri = self._touchpoint_map.get(event.name)
        if uri is not None:
            return uri
        if self._touchpoint_fn is not None:
            value = self._touchpoint_fn(event)
            if value is None:
                return None
            if (
                not isinstance(value, str)
                or not value.strip()
                or value != value.strip()
            ):
                raise ContractViolation(
                    f"uri: the touchpoint mapping returned {value!r}; MXO needs a "
                    "non-empty interaction URI without surrounding spaces"
                )
            return value
        if self._default_touchpoint is not None:
            return f"{self._default_touchpoint}/{event.name}"
        return None

    def _customer_key(self, event: Event) -> str | None:
        source = self.customer_key
        value = source(event) if callable(source) else getattr(event, source)
        if value is None or value == "":
            return None
        return value if isinstance(value, str) else str(value)

    def _property_pairs(self, event: Event) -> list[tuple[str, t.Any]]:
        props = (
            self.properties_from(event)
            if self.properties_from is not None
            else event.properties
        )
        pairs: list[tuple[str, t.Any]] = []
        for key, value in props.items():
            if not isinstance(key, str) or not key.strip():
                raise ContractViolation(
                    f"properties: property name {key!r} is not a non-empty string "
                    "(MXO properties[].name)"
                )
            pairs.append((key, value))
        if self.event_id_property:
            pairs.append((self.event_id_property, event.event_id))
        return pairs

    def _properties_array(self, pairs: list[tuple[str, t.Any]]) -> list[dict[str, str]]:
        out = []
        for key, value in pairs:
            text = _string_value(value)
            if text is not None:
                out.append({"name": key, "value": text})
        return out

    # --- answers ----------------------------------------------------------------------
    def classify(self, request: HTTPRequest, response: httpx.Response) -> ExportResult:
        """2xx needs a 2xx ``statusCode`` in the body too; the tid is remembered."""
        status = response.status_code
        if not 200 <= status < 300:
            return super().classify(request, response)
        body = response_json(response) or {}
        code = body.get("statusCode")
        if not _is_2xx(code):
            return self.error_outcome(
                request,
                response,
                code,
                f"MXO answered HTTP {status} without a 2xx statusCode in the "
                f"body (statusCode={code!r})",
            )
        tid = body.get("tid")
        if isinstance(tid, str) and isinstance(request, _MXORequest):
            for visitor in request.visitors:
                self.remember_tid(visitor, tid)
        return ExportResult.success(request.events)

    def send(self, request: HTTPRequest) -> ExportResult:
        if isinstance(request, _MXORequest) and request.visitors:
            # An earlier call of this export may just have told us the
            # visitor's tid: use it rather than have MXO assign a second one.
            params = dict(request.params or {})
            if "tid" not in params:
                known = self.tid_for(request.visitors[0])
                if known is not None:
                    params["tid"] = known
                    request.params = params
        outcome = super().send(request)
        if outcome.retry:
            _log.warn(
                f"mxo-replay:{self.name}",
                "trackware: %s: MXO has no deduplication key; if it processed the "
                "failed call before answering, retrying %d interaction(s) will "
                "count them twice",
                self.name,
                len(outcome.retry),
            )
        return outcome

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} name={self.name!r} "
            f"base_url={redact_url(self.base_url)!r} "
            f"site_key={self.site_key!r}>"
        )


class InteractionExporter(_MXOExporter):
    """Delivers events to the MXO Interaction API (OAuth2 client credentials).

    Routing, per event:

    * ``profile_events`` (default ``identify``, ``profile.updated``): a profile
      update, ``PUT /one/oauth2/rt/api/2.0/interaction``, one per event;
    * ``realtime_events`` (default none): ``POST .../interaction``, which
      registers activity immediately (the optimizations are not used);
    * every other mapped event: a historic interaction through
      ``PUT .../interactions/offline``, at most 100 per call, with the event's
      time as ISO-8601 UTC with milliseconds (``2024-05-01T12:00:00.000Z``) in
      ``timestamp_field``. One call carries one visitor's events (its ``tid``
      is a query parameter), so events are grouped by tid, else by visitor
      (``anonymous_id``), else by customer key; an event with none of these
      goes alone so that MXO gives it its own tid.

    Each interaction is ``{"uri", "customerKey"?, "customerKeyName"?,
    "properties"?}``: ``uri`` from ``touchpoints``, ``customerKey`` from the
    event's identity (``customer_key``, default ``user_id``), ``properties`` as
    ``[{"name", "value"}]`` with string values (booleans ``"true"``/``"false"``,
    numbers as text, lists and objects as compact JSON; ``None`` values left
    out). Calls carry ``Authorization: Bearer``, ``Content-Type`` and
    ``dataMimeType: application/json``; the tid is the event's
    ``context["mxo_tid"]`` or the one MXO last returned for the visitor.

    The token comes from ``POST /one/oauth2token`` (HTTP Basic client
    authentication, ``grant_type=client_credentials``); it is cached for
    ``expires_in`` when MXO sends it, else for ``token_ttl`` (default: until MXO
    answers 401, which fetches a new one and retries the call once).

    Args:
        base_url: your MXO server, e.g. ``https://eu2.thunderhead.com``.
        client_id, client_secret: API credentials (MXO Admin Settings > API
            Credentials).
        site_key: the Space's site key (``sk``).
        touchpoints: event name -> interaction URI, or a callable
            ``(event) -> uri | None`` (``None``: not for MXO).
        default_touchpoint: events not in ``touchpoints`` go to
            ``<default_touchpoint>/<event name>``.
        profile_events, realtime_events: event names routed as described.
        customer_key: identity field (``user_id``, ``email``, ``phone``,
            ``anonymous_id``) or callable giving ``customerKey``.
        customer_key_name: sent as ``customerKeyName`` with ``customerKey``
            (MXO's default key name is ``customerkey``).
        timestamp_field: the offline timestamp's field name.
        future_tolerance: an offline event timestamped up to this many
            seconds in the future is sent with the current time (MXO refuses
            future timestamps); one further ahead is rejected for MXO with
            the rule (default 300).
        token_url: the token endpoint (default ``<base_url>/one/oauth2token``).
        token_ttl: token lifetime assumed when MXO sends no ``expires_in``,
            seconds; ``None`` keeps it until a 401.
        properties_from: callable ``(event) -> mapping`` replacing
            ``event.properties`` as the source of ``properties``.
        event_id_property: also send the trackware event id under this property
            name (MXO has no dedup key; this lets you spot double counts).
        max_visitors: visitors whose tid is remembered (oldest forgotten).
        max_batch_size: interactions per offline call, at most 100.

    Environment (:meth:`from_env`): ``TRACKWARE_MXO_BASE_URL``,
    ``TRACKWARE_MXO_CLIENT_ID``, ``TRACKWARE_MXO_CLIENT_SECRET``,
    ``TRACKWARE_MXO_SITE_KEY``, ``TRACKWARE_MXO_TOUCHPOINT`` (the
    ``default_touchpoint``) are required; ``TRACKWARE_MXO_CUSTOMER_KEY``,
    ``TRACKWARE_MXO_CUSTOMER_KEY_NAME``, ``TRACKWARE_MXO_TIMESTAMP_FIELD`` and
    ``TRACKWARE_MXO_TOKEN_URL`` are optional.
    """

    default_name = "mxo"

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
        site_key: str,
        touchpoints: Touchpoints | None = None,
        default_touchpoint: str | None = None,
        profile_events: t.Iterable[str] = DEFAULT_PROFILE_EVENTS,
        realtime_events: t.Iterable[str] = (),
        customer_key: CustomerKey = "user_id",
        customer_key_name: str | None = None,
        timestamp_field: str = "timestamp",
        future_tolerance: float = 300.0,
        token_url: str | None = None,
        token_ttl: float | None = None,
        properties_from: PropertySource | None = None,
        event_id_property: str | None = None,
        max_visitors: int = 10_000,
        max_batch_size: int = MAX_OFFLINE_BATCH,
        **options: Unpack[ExporterOptions],
    ) -> None:
        cls = type(self).__name__
        # Registered before anything can fail, so no error message shows them.
        # The client id is half of the credential pair: scrubbed as well.
        for credential in (client_id, client_secret):
            _log.register_secret(credential if isinstance(credential, str) else None)
        if not isinstance(client_id, str) or not client_id:
            raise ConfigurationError(
                f"{cls}: client_id is required (MXO Admin Settings > API "
                "Credentials; or TRACKWARE_MXO_CLIENT_ID with from_env())"
            )
        if not isinstance(client_secret, str) or not client_secret:
            raise ConfigurationError(
                f"{cls}: client_secret is required (MXO Admin Settings > API "
                "Credentials; or TRACKWARE_MXO_CLIENT_SECRET with from_env())"
            )
        if max_batch_size > MAX_OFFLINE_BATCH:
            raise ConfigurationError(
                f"{cls}: max_batch_size must be <= {MAX_OFFLINE_BATCH} (MXO takes "
                f"at most {MAX_OFFLINE_BATCH} offline interactions per call), "
                f"got {max_batch_size}"
            )
        if not isinstance(timestamp_field, str) or not timestamp_field:
            raise ConfigurationError(f"{cls}: timestamp_field must be a field name")
        if not future_tolerance >= 0:
            raise ConfigurationError(f"{cls}: future_tolerance must be >= 0 seconds")
        if customer_key_name is not None and (
            not isinstance(customer_key_name, str) or not customer_key_name
        ):
            raise ConfigurationError(
                f"{cls}: customer_key_name must be the API name of an MXO key, "
                "or None for MXO's default (customerkey)"
            )
        if token_ttl is not None and token_ttl <= 0:
            raise ConfigurationError(f"{cls}: token_ttl must be > 0 seconds or None")
        super().__init__(
            base_url=base_url,
            site_key=site_key,
            touchpoints=touchpoints,
            default_touchpoint=default_touchpoint,
            customer_key=customer_key,
            properties_from=properties_from,
            event_id_property=event_id_property,
            max_visitors=max_visitors,
            max_batch_size=max_batch_size,
            **options,
        )
        if isinstance(token_url, str):
            register_url_secrets(token_url)  # httpx logs the token request's URL
        if token_url is not None and not (
            isinstance(token_url, str) and token_url.startswith(("http://", "https://"))
        ):
            shown = redact_url(token_url) if isinstance(token_url, str) else token_url
            raise ConfigurationError(
                f"{cls}: token_url must start with https://, got {shown!r}"
            )
        self.token_url = token_url or self.base_url + TOKEN_PATH
        self.profile_events = frozenset(profile_events)
        self.realtime_events = frozenset(realtime_events)
        both = self.profile_events & self.realtime_events
        if both:
            raise ConfigurationError(
                f"{cls}: {sorted(both)} are in both profile_events and "
                "realtime_events; choose one route per event"
            )
        self.customer_key_name = customer_key_name
        self.timestamp_field = timestamp_field
        self.future_tolerance = float(future_tolerance)
        basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        _log.register_secret(basic)
        self._basic = f"Basic {basic}"
        self._tokens: TokenCache[str] = TokenCache(
            self._fetch_token,
            refresh_margin=30.0,
            default_ttl=token_ttl if token_ttl is not None else 10 * 365 * 86400.0,
            max_keys=1,
        )

    def after_fork(self) -> None:
        # The token cache's lock may have been held at fork time: the child
        # starts with a fresh cache (and fetches its own token).
        super().after_fork()
        self._tokens = self._tokens.fresh()

    @classmethod
    def from_env(
        cls, environ: t.Mapping[str, str] | None = None, **overrides: t.Any
    ) -> InteractionExporter:
        """Build from ``TRACKWARE_MXO_*`` variables (see the class docstring)."""
        required = {
            "BASE_URL": "base_url",
            "CLIENT_ID": "client_id",
            "CLIENT_SECRET": "client_secret",
            "SITE_KEY": "site_key",
        }
        optional = {
            "CUSTOMER_KEY": "customer_key",
            "CUSTOMER_KEY_NAME": "customer_key_name",
            "TIMESTAMP_FIELD": "timestamp_field",
            "TOKEN_URL": "token_url",
        }
        if "touchpoints" in overrides:  # then the default touchpoint is optional
            optional["TOUCHPOINT"] = "default_touchpoint"
        else:
            required["TOUCHPOINT"] = "default_touchpoint"
        return cls(
            **env_options(
                cls.__name__,
                environ,
                prefix=_ENV_PREFIX,
                required=required,
                optional=optional,
                overrides=overrides,
            )
        )

    # --- auth -------------------------------------------------------------------------
    def _fetch_token(self, _key: str) -> tuple[str, float | None]:
        try:
            response = self.client.post(
                self.token_url,
                content=b"grant_type=client_credentials",
                headers={
                    "Authorization": self._basic,
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": _JSON,
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

    def credentials(self, request: HTTPRequest) -> Credentials:
        return CachedToken(self._tokens, "token")

    # --- mapping ----------------------------------------------------------------------
    def _offline_time(self, event: Event, now: float) -> float:
        """The offline ``timestamp`` of ``event``: MXO refuses one later than
        its server time (plus an undocumented skew), and would refuse the whole
        ``/interactions/offline`` call with it. A time up to
        ``future_tolerance`` ahead (an app clock running a little fast) is
        sent as now; a later one is rejected, for this destination only."""
        when = event.unix_time
        if when <= now:
            problem = iso_time_problem(when, self.timestamp_field)
            if problem:
                raise ContractViolation(problem)
            return when
        ahead = when - now
        if ahead > self.future_tolerance:
            raise ContractViolation(
                f"{self.timestamp_field}: the event time {iso_time(min(when, 2e11))} "
                f"is {ahead:.0f} s in the future; MXO refuses offline interactions "
                "timestamped later than its server time (check the clock of the "
                "host that tracked it, or the timestamp passed to track())"
            )
        return now

    def _interaction(self, event: Event, uri: str) -> dict[str, t.Any]:
        item: dict[str, t.Any] = {"uri": uri}
        customer_key = self._customer_key(event)
        if customer_key is not None:
            item["customerKey"] = customer_key
            if self.customer_key_name is not None:
                item["customerKeyName"] = self.customer_key_name
        properties = self._properties_array(self._property_pairs(event))
        if properties:
            item["properties"] = properties
        return item

    def _params(self, tid: str | None) -> dict[str, str]:
        params = {"sk": self.site_key}
        if tid is not None:
            params["tid"] = tid
        return params

    def build_requests(
        self, events: t.Sequence[Event]
    ) -> tuple[list[HTTPRequest], ExportResult]:
        result = ExportResult()
        requests: list[HTTPRequest] = []
        headers = {"Content-Type": _JSON, "dataMimeType": _JSON}
        now = time.time()
        # group key -> (events, encoded interactions, tid), in first-seen order
        groups: dict[tuple[str, str], tuple[list[Event], list[bytes], str | None]] = {}
        for event in events:
            offline = not (
                event.name in self.profile_events or event.name in self.realtime_events
            )
            try:
                uri = self._touchpoint(event)
                if uri is None:
                    result.skipped.append(event)
                    continue
                item = self._interaction(event, uri)
                if offline:
                    item[self.timestamp_field] = iso_time(
                        self._offline_time(event, now)
                    )
                encoded = _encode(item)
                tid = self._event_tid(event)
            except ContractViolation as exc:
                result.reject(event, str(exc))
                continue
            except Exception as exc:  # a user callable failed: this event only
                result.reject_unmapped(event, exc, self.name)
                continue
            if not offline:
                method = "POST" if event.name in self.realtime_events else "PUT"
                requests.append(
                    _MXORequest(
                        [event],
                        method,
                        INTERACTION_PATH,
                        content=encoded,
                        headers=dict(headers),
                        params=self._params(tid),
                        visitors=(event.anonymous_id,) if event.anonymous_id else (),
                    )
                )
                continue
            if tid is not None:
                key = ("tid", tid)
            elif event.anonymous_id:
                key = ("visitor", event.anonymous_id)
            elif "customerKey" in item:
                key = ("customer", str(item["customerKey"]))
            else:
                key = ("event", event.event_id)
            group = groups.setdefault(key, ([], [], tid))
            group[0].append(event)
            group[1].append(encoded)
        size = self.max_batch_size
        for group_events, items, tid in groups.values():
            for start in range(0, len(items), size):
                chunk = group_events[start : start + size]
                requests.append(
                    _MXORequest(
                        chunk,
                        "PUT",
                        OFFLINE_BATCH_PATH,
                        content=b"[" + b",".join(items[start : start + size]) + b"]",
                        headers=dict(headers),
                        params=self._params(tid),
                        visitors=tuple(
                            dict.fromkeys(
                                e.anonymous_id for e in chunk if e.anonymous_id
                            )
                        ),
                    )
                )
        return requests, result

    # --- synchronous real-time interaction -----------------------------------------
    def interact(
        self,
        uri: str,
        *,
        properties: t.Mapping[str, t.Any] | None = None,
        customer_key: str | None = None,
        visitor_id: str | None = None,
        tid: str | None = None,
        timeout: float = 2.0,
    ) -> InteractionResult:
        """Ask MXO for optimizations now (``POST /interaction``); never raises.

        For a view that must render what MXO decides. This blocks the calling
        thread for at most ``timeout`` seconds per HTTP call (plus a token
        fetch on first use, bounded by the exporter's ``timeout``). On any
        failure it returns an empty result whose ``error`` says why.

        Args:
            uri: the touchpoint/interaction URI.
            properties: sent as ``[{"name", "value"}]`` with string values.
            customer_key: the customer (default: from the current trackware
                scope's identity, per ``customer_key`` configuration).
            visitor_id: the visitor whose tid is used and remembered (default:
                the current scope's ``anonymous_id``).
            tid: the MXO tid to send (default: the scope's ``mxo_tid``, else
                the one remembered for the visitor).
            timeout: seconds for each HTTP call.
        """
        try:
            return self._interact(
                uri, properties, customer_key, visitor_id, tid, timeout
            )
        except Exception as exc:
            _log.error(
                f"interact:{self.name}",
                "trackware: %s: interact() failed internally",
                self.name,
                exc_info=True,
            )
            return InteractionResult(error=f"internal error: {type(exc).__name__}")

    def _interact(
        self,
        uri: str,
        properties: t.Mapping[str, t.Any] | None,
        customer_key: str | None,
        visitor_id: str | None,
        tid: str | None,
        timeout: float,
    ) -> InteractionResult:
        if self._closed:
            return InteractionResult(error="the exporter is closed")
        if not isinstance(uri, str) or not uri.strip():
            return InteractionResult(error="uri must be a non-empty interaction URI")
        scope = current_scope()
        visitor = visitor_id or (scope.anonymous_id if scope is not None else None)
        if customer_key is None and scope is not None:
            probe = Event(
                "mxo.interact",
                user_id=scope.user_id,
                anonymous_id=scope.anonymous_id,
                email=scope.email,
                phone=scope.phone,
                traits=scope.traits,
                context=scope.context,
            )
            customer_key = self._customer_key(probe)
        if tid is None and scope is not None:
            scoped = scope.context.get("mxo_tid")
            tid = scoped if isinstance(scoped, str) else None
        if tid is None and visitor:
            tid = self.tid_for(visitor)
        if tid is not None and not _TID_RE.match(tid):
            tid = None
        item: dict[str, t.Any] = {"uri": uri}
        if customer_key:
            item["customerKey"] = str(customer_key)
            if self.customer_key_name is not None:
                item["customerKeyName"] = self.customer_key_name
        pairs = list((properties or {}).items())
        for key, _ in pairs:
            if not isinstance(key, str) or not key.strip():
                return InteractionResult(
                    error=f"properties: property name {key!r} is not a non-empty string"
                )
        props = self._properties_array(pairs)
        if props:
            item["properties"] = props
        request = _MXORequest([], "POST", INTERACTION_PATH, params=self._params(tid))
        content = dumps(item).encode("utf-8")
        try:
            response = self.client.post(
                self.base_url + INTERACTION_PATH,
                content=content,
                headers={"Content-Type": _JSON, "dataMimeType": _JSON, "Accept": _JSON},
                params=request.params,
                timeout=timeout,
                auth=TokenAuth(
                    CachedToken(self._tokens, "token"),
                    reauth_statuses=self.reauth_statuses,
                ),
            )
        except AuthError as exc:
            return InteractionResult(error=f"authentication failed: {exc}")
        except httpx.TimeoutException as exc:
            return InteractionResult(error=f"timeout ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return InteractionResult(error=f"connection error ({type(exc).__name__})")
        status = response.status_code
        body = response_json(response) or {}
        if not (200 <= status < 300 and _is_2xx(body.get("statusCode"))):
            return InteractionResult(
                error=f"HTTP {status}: {response_text(response)[:300]}",
                status=status,
            )
        new_tid = body.get("tid")
        new_tid = new_tid if isinstance(new_tid, str) else tid
        if new_tid is not None:
            if visitor:
                self.remember_tid(visitor, new_tid)
            if (
                scope is not None
                and scope.context.get("mxo_tid") != new_tid
                and _TID_RE.match(new_tid)
            ):
                # The integrations persist it in the visitor's tid cookie.
                scope.bind(mxo_tid=new_tid)
        optimizations = body.get("optimizations")
        return InteractionResult(
            optimizations=[o for o in optimizations if isinstance(o, dict)]
            if isinstance(optimizations, list)
            else [],
            tid=new_tid,
            status=status,
        )


class LightweightExporter(_MXOExporter):
    """Delivers events to the MXO Lightweight Event Listening API, unauthenticated.

    One ``POST /one/rt/track/{sk}/events[?tid=...]`` per event with
    ``Content-Type: application/json; charset=utf-8`` and the body
    ``{"uri", "properties"?, "ck"?}``: ``uri`` from ``touchpoints``,
    ``properties`` as ``[{"name", "value"}]`` with string values (or, with
    ``properties_format="object"``, a flat object of string, number and boolean
    values), and ``ck`` the customer key (never ``customerKey``: this API names
    it ``ck``). No credentials are sent at all. The visitor's tid is the
    event's ``context["mxo_tid"]`` or the one MXO last returned for the
    visitor. Properties named in ``query_properties`` (campaign codes...) go to
    the query string instead of the body, as MXO documents.

    Args:
        base_url: your MXO server, e.g. ``https://eu2.thunderhead.com``.
        site_key: the Space's site key (path segment ``{sk}``).
        touchpoints, default_touchpoint, customer_key, properties_from,
            event_id_property, max_visitors: as for
            :class:`InteractionExporter`.
        properties_format: ``"array"`` (default) or ``"object"``.
        query_properties: property names sent as query parameters.

    Environment (:meth:`from_env`): ``TRACKWARE_MXO_BASE_URL``,
    ``TRACKWARE_MXO_SITE_KEY`` and ``TRACKWARE_MXO_TOUCHPOINT`` are required;
    ``TRACKWARE_MXO_CUSTOMER_KEY`` and ``TRACKWARE_MXO_PROPERTIES_FORMAT`` are
    optional.
    """

    default_name = "mxo_lightweight"

    def __init__(
        self,
        *,
        base_url: str,
        site_key: str,
        touchpoints: Touchpoints | None = None,
        default_touchpoint: str | None = None,
        customer_key: CustomerKey = "user_id",
        properties_format: str = "array",
        query_properties: t.Iterable[str] = (),
        properties_from: PropertySource | None = None,
        event_id_property: str | None = None,
        max_visitors: int = 10_000,
        **options: Unpack[LightweightExporterOptions],
    ) -> None:
        if properties_format not in ("array", "object"):
            raise ConfigurationError(
                "LightweightExporter: properties_format must be 'array' or "
                f"'object', got {properties_format!r}"
            )
        super().__init__(
            base_url=base_url,
            site_key=site_key,
            touchpoints=touchpoints,
            default_touchpoint=default_touchpoint,
            customer_key=customer_key,
            properties_from=properties_from,
            event_id_property=event_id_property,
            max_visitors=max_visitors,
            **options,
        )
        self.properties_format = properties_format
        self.query_properties = frozenset(query_properties)
        self.path = LIGHTWEIGHT_PATH.format(sk=site_key)

    @classmethod
    def from_env(
        cls, environ: t.Mapping[str, str] | None = None, **overrides: t.Any
    ) -> LightweightExporter:
        """Build from ``TRACKWARE_MXO_*`` variables (see the class docstring)."""
        required = {"BASE_URL": "base_url", "SITE_KEY": "site_key"}
        optional = {
            "CUSTOMER_KEY": "customer_key",
            "PROPERTIES_FORMAT": "properties_format",
        }
        if "touchpoints" in overrides:  # then the default touchpoint is optional
            optional["TOUCHPOINT"] = "default_touchpoint"
        else:
            required["TOUCHPOINT"] = "default_touchpoint"
        return cls(
            **env_options(
                cls.__name__,
                environ,
                prefix=_ENV_PREFIX,
                required=required,
                optional=optional,
                overrides=overrides,
            )
        )

    def build_requests(
        self, events: t.Sequence[Event]
    ) -> tuple[list[HTTPRequest], ExportResult]:
        result = ExportResult()
        requests: list[HTTPRequest] = []
        for event in events:
            try:
                uri = self._touchpoint(event)
                if uri is None:
                    result.skipped.append(event)
                    continue
                body: dict[str, t.Any] = {"uri": uri}
                params: dict[str, str] = {}
                pairs = []
                for key, value in self._property_pairs(event):
                    if key in self.query_properties:
                        text = _string_value(value)
                        if text is not None:
                            params[key] = text
                    else:
                        pairs.append((key, value))
                properties = self._properties(pairs)
                if properties:
                    body["properties"] = properties
                customer_key = self._customer_key(event)
                if customer_key is not None:
                    body["ck"] = customer_key
                content = _encode(body)
                tid = self._event_tid(event)
            except ContractViolation as exc:
                result.reject(event, str(exc))
                continue
            except Exception as exc:  # a user callable failed: this event only
                result.reject_unmapped(event, exc, self.name)
                continue
            if tid is not None:
                params["tid"] = tid
            requests.append(
                _MXORequest(
                    [event],
                    "POST",
                    self.path,
                    content=content,
                    headers={"Content-Type": "application/json; charset=utf-8"},
                    params=params or None,
                    visitors=(event.anonymous_id,) if event.anonymous_id else (),
                )
            )
        return requests, result

    def _properties(
        self, pairs: list[tuple[str, t.Any]]
    ) -> list[dict[str, str]] | dict[str, t.Any]:
        if self.properties_format == "array":
            return self._properties_array(pairs)
        flat: dict[str, t.Any] = {}
        for key, value in pairs:
            if isinstance(value, (str, bool, int, float)):
                flat[key] = value
            else:
                text = _string_value(value)
                if text is not None:
                    flat[key] = text
        return flat
