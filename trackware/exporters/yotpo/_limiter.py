"""Yotpo's client-side rate limit: one token bucket per store, shared in the process.

The buckets are reset in a forked child.
"""

from __future__ import annotations

import collections
import math
import threading
import time

from ... import _lifecycle

__all__ = ["DEFAULT_RATE_LIMIT_WAIT", "StoreLimiter", "limiter_for"]

#: Yotpo recommends waiting 1 second after a 429 that names no reset time.
DEFAULT_RATE_LIMIT_WAIT = 1.0
#: A bogus ``RateLimit-Reset`` cannot block a store longer than this.
_MAX_RATE_LIMIT_BLOCK = 300.0


class StoreLimiter:
    """Paces requests to one store across every exporter in the process.

    A token bucket of ``limit`` tokens where each token comes back ``period``
    seconds after the request that spent it *finished*. A bucket that refills
    continuously lets ``2 * limit`` requests into one second (a full bucket,
    then a refill) and a vendor counting a sliding window answers 429; timing
    each token from the response (a request reached the vendor before its
    response came back) keeps every 1-second window at ``limit`` whatever the
    network latency. The vendor's own signals (``RateLimit-Remaining: 0``,
    429 with ``RateLimit-Reset``/``Retry-After``) block the store on top.
    Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # [end] per spent token; end is +inf while the request is in flight.
        self._tokens: collections.deque[list[float]] = collections.deque()
        self.blocked_until = 0.0

    def wait_time(self, limit: int, period: float, now: float) -> float:
        """Seconds until a token is free (call with the lock held)."""
        tokens = self._tokens
        while tokens and tokens[0][0] <= now - period:
            tokens.popleft()
        wait = self.blocked_until - now
        if len(tokens) >= limit:
            ends = sorted(token[0] for token in tokens)
            wait = max(wait, ends[-limit] + period - now)
        return wait

    def acquire(
        self, limit: int, period: float, stop: threading.Event
    ) -> list[float] | None:
        """Wait until a token is free, spend it, and return it (a ticket).

        Returns ``None``, spending nothing, as soon as ``stop`` is set (the
        exporter was closed or halted by shutdown): the wait never outlasts
        the shutdown budget.
        """
        while True:
            with self._lock:
                now = time.monotonic()
                wait = self.wait_time(limit, period, now)
                if wait <= 0:
                    ticket = [math.inf]
                    self._tokens.append(ticket)
                    return ticket
            if stop.wait(min(wait, 1.0)):
                return None

    def release(self, ticket: list[float]) -> None:
        """The request that spent ``ticket`` has finished (answered or failed)."""
        with self._lock:
            ticket[0] = time.monotonic()
            # Keep the deque ordered by end time for the pruning in wait_time.
            ordered = sorted(self._tokens, key=lambda token: token[0])
            self._tokens = collections.deque(ordered)

    def block(self, seconds: float) -> None:
        """The vendor asked for a pause: send nothing for ``seconds``."""
        seconds = min(max(seconds, 0.0), _MAX_RATE_LIMIT_BLOCK)
        with self._lock:
            self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)

    def blocked_for(self) -> float:
        """Seconds the vendor's pause still lasts (0 when none)."""
        with self._lock:
            return max(0.0, self.blocked_until - time.monotonic())


_limiters: dict[str, StoreLimiter] = {}
_limiters_lock = threading.Lock()
_MAX_LIMITERS = 1024


def limiter_for(store_id: str) -> StoreLimiter:
    with _limiters_lock:
        limiter = _limiters.get(store_id)
        if limiter is None:
            if len(_limiters) >= _MAX_LIMITERS:
                _limiters.pop(next(iter(_limiters)))
            limiter = _limiters[store_id] = StoreLimiter()
        return limiter


def _reset_limiters_after_fork() -> None:
    # A lock held by another thread at fork time would never be released in
    # the child; the child starts with fresh (empty) buckets.
    global _limiters_lock
    _limiters_lock = threading.Lock()
    _limiters.clear()


_lifecycle.on_fork(_reset_limiters_after_fork)
