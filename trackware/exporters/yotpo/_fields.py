"""Yotpo's custom-event endpoint and field names: :class:`YotpoFieldMap`.

The event endpoint's path, method and field names are not published, so they
live in one overridable map, shared with the local emulator.
"""

from __future__ import annotations

import dataclasses
import re
import typing as t
import urllib.parse

from ...exceptions import ConfigurationError

__all__ = ["DEFAULT_FIELD_MAP", "MAX_NAME_LENGTH", "YotpoFieldMap", "snake_case"]

#: Longest event name / source Yotpo accepts.
MAX_NAME_LENGTH = 255

_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")
_METHODS = frozenset({"POST", "PUT", "PATCH"})


def snake_case(name: str) -> str:
    """Yotpo's "snake-cased" form of ``name``.

    Lowercase; every run of characters other than ``a-z`` and ``0-9`` becomes
    one ``_``; leading and trailing ``_`` are dropped
    (``"Order.Shipped!"`` -> ``"order_shipped"``). May return ``""``.
    """
    return _NON_ALNUM_RE.sub("_", name.lower()).strip("_")


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
