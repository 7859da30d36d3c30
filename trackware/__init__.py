"""trackware: embeddable event tracking with background delivery to vendor APIs.

Quick start::

    import trackware
    from trackware.exporters import HTTPExporter

    trackware.set_tracker(trackware.Tracker([HTTPExporter("https://example.com/events")]))
    trackware.track("offer.activated", {"offer_id": "o-1"}, user_id="c-42")

See the README for the Flask and ASGI integrations and the vendor exporters.
"""

from __future__ import annotations

from . import exporters, signals
from ._auth import TokenCache
from ._bridge import Bridge
from ._config import DestinationStats, TrackerOptions, TrackerStats
from ._context import Scope, current_scope, identify
from ._deadletter import (
    DeadLetter,
    DeadLetterRecord,
    JSONLinesDeadLetter,
    MemoryDeadLetter,
)
from ._decorators import tracked
from ._default import (
    bridge,
    flush,
    get_tracker,
    init,
    request_scope,
    set_tracker,
    shutdown,
    stats,
    track,
)
from ._event import Event, new_event_id
from ._queue import EventQueue, MemoryQueue, QueuedEvent
from ._redact import DEFAULT_REDACT_ALLOW, DEFAULT_REDACT_WORDS, REDACTED
from ._retry import RetryPolicy
from ._tracker import Tracker
from .exceptions import (
    AuthError,
    ConfigurationError,
    InvalidEventError,
    TrackwareError,
)
from .exporters import Exporter, ExportResult, Rejection

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_REDACT_ALLOW",
    "DEFAULT_REDACT_WORDS",
    "REDACTED",
    "AuthError",
    "Bridge",
    "ConfigurationError",
    "DeadLetter",
    "DeadLetterRecord",
    "DestinationStats",
    "Event",
    "EventQueue",
    "ExportResult",
    "Exporter",
    "InvalidEventError",
    "JSONLinesDeadLetter",
    "MemoryDeadLetter",
    "MemoryQueue",
    "QueuedEvent",
    "Rejection",
    "RetryPolicy",
    "Scope",
    "TokenCache",
    "Tracker",
    "TrackerOptions",
    "TrackerStats",
    "TrackwareError",
    "bridge",
    "current_scope",
    "exporters",
    "flush",
    "get_tracker",
    "identify",
    "init",
    "new_event_id",
    "request_scope",
    "set_tracker",
    "shutdown",
    "signals",
    "stats",
    "track",
    "tracked",
]
