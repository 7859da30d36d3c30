"""Exceptions raised by trackware.

trackware raises into the host application only for configuration errors at
start-up, and for invalid events when the caller opted into ``strict=True``.
Everything that happens while delivering events is caught, logged and counted.

The hierarchy::

    TrackwareError
     +-- ConfigurationError      (also a ValueError) bad arguments, missing credentials
     +-- InvalidEventError       (also a TypeError) only with strict=True
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "InvalidEventError", "TrackwareError"]


class TrackwareError(Exception):
    """Base class of every exception trackware raises."""


class ConfigurationError(TrackwareError, ValueError):
    """A tracker, exporter or integration was configured wrongly.

    The message always names the fix.
    """


class InvalidEventError(TrackwareError, TypeError):
    """An event could not be built (raised only when ``strict=True``)."""
