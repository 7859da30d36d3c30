"""The retry policy and the per-destination circuit breaker.

Pure policy, no I/O: the delivery loop (:mod:`trackware._worker`) asks them
when to try again; HTTP's own retry vocabulary (retryable statuses,
``Retry-After``) lives in :mod:`trackware.exporters._http`.
"""

from __future__ import annotations

import dataclasses
import random

from .exceptions import ConfigurationError

__all__ = ["CircuitBreaker", "RetryPolicy"]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How a destination retries and when it gives up.

    A failed attempt (connection error, timeout, 408, 429, 5xx) is retried after
    a capped exponential backoff with full jitter:
    ``uniform(0, min(max_delay, base_delay * 2 ** attempt))``. A vendor's
    ``Retry-After`` or ``RateLimit-Reset`` is a floor under that delay.

    A batch gives up (its events are dead-lettered as ``retries_exhausted``,
    with the vendor's last answer) when ``max_attempts`` attempts failed or
    ``max_retry_time`` seconds passed since its first attempt, whichever comes
    first. While a batch waits for its retry the destination goes on sending
    its other events; a batch split in halves (because it kept failing while
    others got through) keeps its attempt count and first-attempt time. A
    ``Retry-After`` pauses the whole destination.

    The circuit breaker opens after ``failure_threshold`` consecutive failed
    attempts (attempts of a batch narrowed down to one poison event do not
    count). While it is open nothing is sent and events stay queued (bounded
    by the queue limits, never dropped because of the breaker); after
    ``open_for`` seconds one probe attempt is made (half-open). Each failed
    probe doubles the wait, up to ``max_open_for``.

    Args:
        max_attempts: attempts per batch, ``None`` for no limit by count.
        max_retry_time: seconds a batch may keep retrying.
        base_delay: first backoff ceiling, seconds.
        max_delay: largest backoff ceiling, seconds.
        failure_threshold: consecutive failures that open the circuit.
        open_for: first open period, seconds.
        max_open_for: longest open period, seconds.
        max_retry_after: a vendor's ``Retry-After`` beyond this is capped, so
            a bogus header cannot park a destination for days.
    """

    max_attempts: int | None = 10
    max_retry_time: float = 600.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    failure_threshold: int = 5
    open_for: float = 5.0
    max_open_for: float = 60.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigurationError("RetryPolicy.max_attempts must be >= 1 or None")
        for name in (
            "max_retry_time",
            "base_delay",
            "max_delay",
            "open_for",
            "max_open_for",
        ):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"RetryPolicy.{name} must be >= 0 seconds")
        if self.failure_threshold < 1:
            raise ConfigurationError("RetryPolicy.failure_threshold must be >= 1")

    def backoff(self, attempt: int, floor: float | None = None) -> float:
        """Delay before retry number ``attempt`` (1-based), honouring ``floor``."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** min(attempt - 1, 30)))
        delay = random.uniform(0.0, ceiling)
        if floor is not None:
            delay = max(delay, min(floor, self.max_retry_after))
        return delay


class CircuitBreaker:
    """Closed / open / half-open state of one destination (worker thread only)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.state = self.CLOSED
        self.failures = 0
        self._open_for = policy.open_for
        self.open_until = 0.0

    def allow(self, now: float) -> bool:
        """May an attempt be made now? Moves open -> half-open when due."""
        if self.state == self.OPEN:
            if now < self.open_until:
                return False
            self.state = self.HALF_OPEN
        return True

    def blocked_until(self) -> float:
        """While open, when the next probe may go (else 0: nothing blocks)."""
        return self.open_until if self.state == self.OPEN else 0.0

    def record_success(self) -> None:
        """An attempt got through: closed, counts and open period start over."""
        self.state = self.CLOSED
        self.failures = 0
        self._open_for = self.policy.open_for

    def record_failure(self, now: float) -> None:
        """An attempt failed at ``now``: open after ``failure_threshold`` in a
        row, or at once (for twice as long) when the half-open probe fails."""
        self.failures += 1
        if self.state == self.HALF_OPEN:
            self._open_for = min(self._open_for * 2, self.policy.max_open_for)
            self._open(now)
        elif self.failures >= self.policy.failure_threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = self.OPEN
        self.open_until = now + self._open_for
