"""trackware: embeddable event tracking with background delivery to vendor APIs.

Quick start::

    import trackware
    from trackware.exporters import HTTPExporter

    trackware.set_tracker(trackware.Tracker([HTTPExporter("https://example.com/events")]))
    trackware.track("offer.activated", {"offer_id": "o-1"}, user_id="c-42")

See the README for the Flask and ASGI integrations and the vendor exporters.

Every public name is imported on first use (``_EXPORTS`` below: a name and
the module that defines it), so ``import trackware`` costs almost nothing;
``from trackware import X`` and ``trackware.X`` work as for eager imports.
The design: docs/architecture/front.md ("A light import").
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing costs more than the rest of
# this module (type checkers take any name TYPE_CHECKING as true).
TYPE_CHECKING = False

__version__ = "0.1.0"

#: Public name -> the module (relative to this package) that defines it. A
#: submodule's own name maps to itself. Adding a public name is one line here
#: (and its typing import below: tests/core/test_exports.py keeps both in step).
_EXPORTS: dict[str, str] = {
    "DEFAULT_REDACT_ALLOW": "._redact",
    "DEFAULT_REDACT_WORDS": "._redact",
    "REDACTED": "._redact",
    "AuthError": ".exceptions",
    "Bridge": "._bridge",
    "ConfigurationError": ".exceptions",
    "DeadLetter": "._deadletter",
    "DeadLetterRecord": "._deadletter",
    "DestinationStats": "._config",
    "Event": "._event",
    "EventQueue": "._queue",
    "ExportResult": ".exporters._base",
    "Exporter": ".exporters._base",
    "InvalidEventError": ".exceptions",
    "JSONLinesDeadLetter": "._deadletter",
    "MemoryDeadLetter": "._deadletter",
    "MemoryQueue": "._queue",
    "QueuedEvent": "._queue",
    "Rejection": ".exporters._base",
    "RetryPolicy": "._retry",
    "Scope": "._context",
    "TokenCache": "._auth",
    "Tracker": "._tracker",
    "TrackerOptions": "._config",
    "TrackerStats": "._config",
    "TrackwareError": ".exceptions",
    "bridge": "._default",
    "current_scope": "._context",
    "exporters": ".exporters",
    "flush": "._default",
    "get_tracker": "._default",
    "identify": "._context",
    "init": "._default",
    "new_event_id": "._event",
    "request_scope": "._default",
    "set_tracker": "._default",
    "shutdown": "._default",
    "signals": ".signals",
    "stats": "._default",
    "track": "._default",
    "tracked": "._decorators",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    import typing as t

    from . import exporters as exporters
    from . import signals as signals
    from ._auth import TokenCache as TokenCache
    from ._bridge import Bridge as Bridge
    from ._config import DestinationStats as DestinationStats
    from ._config import TrackerOptions as TrackerOptions
    from ._config import TrackerStats as TrackerStats
    from ._context import Scope as Scope
    from ._context import current_scope as current_scope
    from ._context import identify as identify
    from ._deadletter import DeadLetter as DeadLetter
    from ._deadletter import DeadLetterRecord as DeadLetterRecord
    from ._deadletter import JSONLinesDeadLetter as JSONLinesDeadLetter
    from ._deadletter import MemoryDeadLetter as MemoryDeadLetter
    from ._decorators import tracked as tracked
    from ._default import bridge as bridge
    from ._default import flush as flush
    from ._default import get_tracker as get_tracker
    from ._default import init as init
    from ._default import request_scope as request_scope
    from ._default import set_tracker as set_tracker
    from ._default import shutdown as shutdown
    from ._default import stats as stats
    from ._default import track as track
    from ._event import Event as Event
    from ._event import new_event_id as new_event_id
    from ._queue import EventQueue as EventQueue
    from ._queue import MemoryQueue as MemoryQueue
    from ._queue import QueuedEvent as QueuedEvent
    from ._redact import DEFAULT_REDACT_ALLOW as DEFAULT_REDACT_ALLOW
    from ._redact import DEFAULT_REDACT_WORDS as DEFAULT_REDACT_WORDS
    from ._redact import REDACTED as REDACTED
    from ._retry import RetryPolicy as RetryPolicy
    from ._tracker import Tracker as Tracker
    from .exceptions import AuthError as AuthError
    from .exceptions import ConfigurationError as ConfigurationError
    from .exceptions import InvalidEventError as InvalidEventError
    from .exceptions import TrackwareError as TrackwareError
    from .exporters import Exporter as Exporter
    from .exporters import ExportResult as ExportResult
    from .exporters import Rejection as Rejection


del TYPE_CHECKING


def __getattr__(name: str) -> t.Any:
    """Import a public name's module on first use and keep the name here."""
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(where, __name__)
    value = module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
