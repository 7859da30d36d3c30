"""Exceptions raised by trackware.

trackware raises into the host application only for configuration errors at
start-up, and for invalid events when the caller opted into ``strict=True``.
Everything that happens while delivering events is caught, logged and counted.

The hierarchy::

    TrackwareError
     +-- ConfigurationError      (also a ValueError) bad arguments, missing credentials
     +-- InvalidEventError       (also a TypeError) only with strict=True
     +-- AuthError               a vendor token could not be obtained (delivery)
     +-- ContractViolation       (also a ValueError) an event breaks a vendor contract
"""

from __future__ import annotations

from . import _log

__all__ = [
    "AuthError",
    "ConfigurationError",
    "ContractViolation",
    "InvalidEventError",
    "TrackwareError",
]


class TrackwareError(Exception):
    """Base class of every exception trackware raises."""


class ConfigurationError(TrackwareError, ValueError):
    """A tracker, exporter or integration was configured wrongly.

    The message always names the fix.
    """


class InvalidEventError(TrackwareError, TypeError):
    """An event could not be built (raised only when ``strict=True``)."""


class AuthError(TrackwareError):
    """A token could not be obtained.

    Raised by an exporter's token fetch and caught by its delivery: the
    events are retried (``retryable``) or rejected, never raised to the app.

    Attributes:
        retryable: whether trying again later may help (network error, 5xx),
            as opposed to bad credentials.
        status: the token endpoint's HTTP status, if it answered.
        body: its response body (scrubbed), if any.
        retry_after: the wait the token endpoint asked for, seconds, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(_log.scrub(message))
        self.retryable = retryable
        self.status = status
        self.body = _log.scrub(body) if body else body
        self.retry_after = retry_after


class ContractViolation(TrackwareError, ValueError):
    """An event breaks a destination's contract; the message names the rule.

    Raised by an exporter's mapping; the event is rejected for that destination
    only (``Rejection.status`` is ``None``: decided before sending). A
    ``ValueError`` too, so code that catches encoding errors catches it.
    """
