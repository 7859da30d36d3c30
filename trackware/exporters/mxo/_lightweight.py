"""MXO's Lightweight Event Listening API: one unauthenticated call per event."""

from __future__ import annotations

import typing as t

from ..._event import Event
from ...exceptions import ConfigurationError, ContractViolation
from .._base import ExportResult
from .._http import HTTPRequest
from ._exporter import MXOExporter
from ._mapping import (
    LIGHTWEIGHT_PATH,
    CustomerKey,
    MXORequest,
    PropertySource,
    Touchpoints,
    encode,
    string_value,
)

if t.TYPE_CHECKING:
    from typing_extensions import Unpack  # the checker's stubs; 3.10 has none

    from .._options import LightweightExporterOptions

__all__ = ["LightweightExporter"]


class LightweightExporter(MXOExporter):
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
        return cls(**cls._env_options(environ, overrides, required, optional))

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
                        text = string_value(value)
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
                content = encode(body)
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
                MXORequest(
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
                text = string_value(value)
                if text is not None:
                    flat[key] = text
        return flat
