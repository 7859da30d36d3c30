"""Medallia MXO (ex-Thunderhead ONE): the Interaction API and the Lightweight API.

:class:`InteractionExporter` (OAuth2; background delivery and the synchronous
:meth:`~InteractionExporter.interact`) and :class:`LightweightExporter`
(unauthenticated, one call per event). See ``docs/vendors/mxo.md``.
"""

from __future__ import annotations

from ._interaction import InteractionExporter
from ._lightweight import LightweightExporter
from ._mapping import (
    DEFAULT_PROFILE_EVENTS,
    IDENTITY_FIELDS,
    INTERACTION_PATH,
    LIGHTWEIGHT_PATH,
    MAX_OFFLINE_BATCH,
    OFFLINE_BATCH_PATH,
    TOKEN_PATH,
    CustomerKey,
    PropertySource,
    Touchpoints,
)
from ._realtime import InteractionResult

__all__ = [
    "DEFAULT_PROFILE_EVENTS",
    "IDENTITY_FIELDS",
    "INTERACTION_PATH",
    "LIGHTWEIGHT_PATH",
    "MAX_OFFLINE_BATCH",
    "OFFLINE_BATCH_PATH",
    "TOKEN_PATH",
    "CustomerKey",
    "InteractionExporter",
    "InteractionResult",
    "LightweightExporter",
    "PropertySource",
    "Touchpoints",
]
