"""What both MXO exporters share: touchpoints, identity, properties, tids."""

from __future__ import annotations

import collections
import threading
import typing as t

import httpx

from ... import _log
from ..._event import Event
from ...exceptions import ConfigurationError, ContractViolation
from .._base import ExportResult, env_options
from .._http import BaseHTTPExporter, HTTPRequest, response_json
from .._urls import redact_url
from ._mapping import (
    ENV_PREFIX,
    IDENTITY_FIELDS,
    SITE_KEY_RE,
    TID_RE,
    CustomerKey,
    MXORequest,
    PropertySource,
    Touchpoints,
    is_2xx,
    string_value,
)

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from .._options import LightweightExporterOptions

__all__ = ["MXOExporter"]


class MXOExporter(BaseHTTPExporter):
    """The base of both MXO exporters: touchpoints, identity, properties, tids."""

    @classmethod
    def _env_options(
        cls,
        environ: t.Mapping[str, str] | None,
        overrides: dict[str, t.Any],
        required: dict[str, str],
        optional: dict[str, str],
    ) -> dict[str, t.Any]:
        """``from_env``'s keyword arguments from ``TRACKWARE_MXO_*``: the
        common rule of both exporters is that ``TOUCHPOINT`` is required
        unless ``touchpoints=`` is given."""
        if "touchpoints" in overrides:
            optional = {**optional, "TOUCHPOINT": "default_touchpoint"}
        else:
            required = {**required, "TOUCHPOINT": "default_touchpoint"}
        return env_options(
            cls.__name__,
            environ,
            prefix=ENV_PREFIX,
            required=required,
            optional=optional,
            overrides=overrides,
        )

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
        if not isinstance(site_key, str) or not SITE_KEY_RE.match(site_key):
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
        if not anonymous_id or not isinstance(tid, str) or not TID_RE.match(tid):
            return
        with self._tids_lock:
            self._tids[anonymous_id] = tid
            self._tids.move_to_end(anonymous_id)
            while len(self._tids) > self.max_visitors:
                self._tids.popitem(last=False)

    def _event_tid(self, event: Event) -> str | None:
        tid = event.context.get("mxo_tid")
        if tid is not None:
            if isinstance(tid, str) and TID_RE.match(tid):
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
            text = string_value(value)
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
        if not is_2xx(code):
            return self.error_outcome(
                request,
                response,
                code,
                f"MXO answered HTTP {status} without a 2xx statusCode in the "
                f"body (statusCode={code!r})",
            )
        tid = body.get("tid")
        if isinstance(tid, str) and isinstance(request, MXORequest):
            for visitor in request.visitors:
                self.remember_tid(visitor, tid)
        return ExportResult.success(request.events)

    def send(self, request: HTTPRequest) -> ExportResult:
        if isinstance(request, MXORequest) and request.visitors:
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
