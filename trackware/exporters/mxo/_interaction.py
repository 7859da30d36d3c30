"""MXO's Interaction API: background delivery and the synchronous interact()."""

from __future__ import annotations

import base64
import time
import typing as t

import httpx

from ... import _ambient, _log
from ..._ambient import AmbientScope
from ..._auth import CachedToken, Credentials, TokenAuth, TokenCache
from ..._event import Event, iso_time
from ..._json import dumps
from ...exceptions import AuthError, ConfigurationError, ContractViolation
from .._base import ExportResult, iso_time_problem
from .._http import HTTPRequest
from .._urls import redact_url, register_url_secrets
from ._exporter import MXOExporter
from ._mapping import (
    DEFAULT_PROFILE_EVENTS,
    INTERACTION_PATH,
    JSON,
    MAX_OFFLINE_BATCH,
    OFFLINE_BATCH_PATH,
    TOKEN_PATH,
    CustomerKey,
    MXORequest,
    OfflineGroup,
    PropertySource,
    Touchpoints,
    encode,
)
from ._realtime import InteractionResult, caller, read_answer
from ._token import request_token

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from .._options import ExporterOptions

__all__ = ["InteractionExporter"]


class InteractionExporter(MXOExporter):
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
        return cls(**cls._env_options(environ, overrides, required, optional))

    # --- auth -------------------------------------------------------------------------
    def _fetch_token(self, _key: str) -> tuple[str, float | None]:
        return request_token(self.client, self.token_url, self._basic)

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
        headers = {"Content-Type": JSON, "dataMimeType": JSON}
        now = time.time()
        # one visitor's offline interactions per group, in first-seen order
        groups: dict[tuple[str, str], OfflineGroup] = {}
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
                encoded = encode(item)
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
                    MXORequest(
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
            group = groups.get(key)
            if group is None:
                group = groups[key] = OfflineGroup(tid)
            group.events.append(event)
            group.items.append(encoded)
        size = self.max_batch_size
        for group in groups.values():
            items = group.items
            for start in range(0, len(items), size):
                chunk = group.events[start : start + size]
                requests.append(
                    MXORequest(
                        chunk,
                        "PUT",
                        OFFLINE_BATCH_PATH,
                        content=b"[" + b",".join(items[start : start + size]) + b"]",
                        headers=dict(headers),
                        params=self._params(group.tid),
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
        if self.closed:
            return InteractionResult(error="the exporter is closed")
        if not isinstance(uri, str) or not uri.strip():
            return InteractionResult(error="uri must be a non-empty interaction URI")
        who = caller(
            _ambient_scope(),
            visitor_id=visitor_id,
            customer_key=customer_key,
            tid=tid,
            key_of=self._customer_key,
            tid_for=self.tid_for,
        )
        item: dict[str, t.Any] = {"uri": uri}
        if who.customer_key:
            item["customerKey"] = str(who.customer_key)
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
        try:
            response = self.client.post(
                self.base_url + INTERACTION_PATH,
                content=dumps(item).encode("utf-8"),
                headers={"Content-Type": JSON, "dataMimeType": JSON, "Accept": JSON},
                params=self._params(who.tid),
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
        return read_answer(response, who, self.remember_tid)


def _ambient_scope() -> AmbientScope | None:
    """The current trackware scope (``trackware._context`` installs its source
    when the package is imported, which importing this module does first)."""
    return _ambient.current()
