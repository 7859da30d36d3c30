"""Yotpo's client-side rate limit: one token bucket per store, shared in the
process, or by every process of a worker fleet through Redis.

In-process (the default) the buckets live in this module and are reset in a
forked child. ``trackware worker`` calls :func:`share_through_redis`: from
then on every limiter keeps its tokens in Redis (one sorted set per store,
``trackware:{namespace}:limit:yotpo:{store}``, changed by one Lua script with
Redis's own clock), so Yotpo's 5 requests/s per store hold across all the
workers, on any number of machines. See docs/worker.md.
"""

from __future__ import annotations

import collections
import math
import threading
import time
import typing as t
import uuid

from ... import _lifecycle, _log

__all__ = [
    "DEFAULT_RATE_LIMIT_WAIT",
    "SHARED_LEASE",
    "StoreLimiter",
    "limiter_for",
    "share_through_redis",
    "stop_sharing",
]

#: Yotpo recommends waiting 1 second after a 429 that names no reset time.
DEFAULT_RATE_LIMIT_WAIT = 1.0
#: A bogus ``RateLimit-Reset`` cannot block a store longer than this.
_MAX_RATE_LIMIT_BLOCK = 300.0
#: Shared limiter: a token whose request never reports its end (the worker
#: was killed mid-request) counts as ended this long after it was spent.
SHARED_LEASE = 30.0
#: Shared limiter: the longest sleep between two looks at the shared bucket.
_SHARED_POLL = 0.05


class _ScriptClient(t.Protocol):
    """What the shared limiter needs of a ``redis.Redis`` client."""

    def register_script(self, script: str) -> t.Any: ...


# One script, four operations, all timed by the Redis server's clock (TIME),
# so that workers on machines whose clocks differ still share one window.
# KEYS[1]: the store's tokens (sorted set: member = ticket, score = the
# millisecond its request ended, or spent + lease while in flight);
# KEYS[2]: the vendor-imposed pause (the millisecond it ends).
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
if op == 'acquire' then
  local limit = tonumber(ARGV[2])
  local period = tonumber(ARGV[3])
  local lease = tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
  local wait = 0
  local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
  if blocked > now then wait = blocked - now end
  local n = redis.call('ZCARD', KEYS[1])
  if n >= limit then
    local e = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
    local w = tonumber(e[2]) + period - now
    if w > wait then wait = w end
  end
  if wait > 0 then return wait end
  redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], lease + period + 1000)
  return 0
elseif op == 'release' then
  redis.call('ZADD', KEYS[1], 'XX', now, ARGV[2])
  return 0
elseif op == 'block' then
  local untl = now + tonumber(ARGV[2])
  local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
  if untl > blocked then
    redis.call('SET', KEYS[2], untl, 'PX', tonumber(ARGV[2]) + 1000)
  end
  return 0
else
  local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
  if blocked > now then return blocked - now end
  return 0
end
"""


class _Shared:
    """The Redis side of every limiter, once :func:`share_through_redis` ran."""

    def __init__(self, client: _ScriptClient, namespace: str) -> None:
        self.script = client.register_script(_LUA)
        self.prefix = f"trackware:{namespace}:limit:yotpo:"

    def call(self, store_id: str, *args: object) -> float:
        """Run one operation for ``store_id``; milliseconds it answered."""
        key = self.prefix + store_id
        return float(self.script(keys=[key, key + ":blocked"], args=list(args)))


_shared: _Shared | None = None


def share_through_redis(client: _ScriptClient, namespace: str) -> None:
    """Keep every store's bucket (and Yotpo's pauses) in Redis from now on,
    shared by every process that calls this with the same namespace.

    ``client`` is a ``redis.Redis``. When Redis fails a call, that call falls
    back to the process's own bucket (logged, rate-limited): the fleet may
    then exceed the limit by one process's share until Redis answers again.
    """
    global _shared
    _shared = _Shared(client, namespace)


def stop_sharing() -> None:
    """Back to in-process buckets (what :func:`share_through_redis` changed)."""
    global _shared
    _shared = None


class StoreLimiter:
    """Paces requests to one store across every exporter in the process (or,
    after :func:`share_through_redis`, across every process of the fleet).

    A token bucket of ``limit`` tokens where each token comes back ``period``
    seconds after the request that spent it *finished*. A bucket that refills
    continuously lets ``2 * limit`` requests into one second (a full bucket,
    then a refill) and a vendor counting a sliding window answers 429; timing
    each token from the response (a request reached the vendor before its
    response came back) keeps every 1-second window at ``limit`` whatever the
    network latency. The vendor's own signals (``RateLimit-Remaining: 0``,
    429 with ``RateLimit-Reset``/``Retry-After``) block the store on top.
    Thread-safe.

    Shared through Redis, the same rule holds with the tokens in one sorted
    set per store; a token whose process died mid-request counts as ended
    :data:`SHARED_LEASE` seconds after it was spent.
    """

    def __init__(self, store_id: str = "") -> None:
        self.store_id = store_id
        self._lock = threading.Lock()
        # [end] per spent token; end is +inf while the request is in flight.
        self._tokens: collections.deque[list[float]] = collections.deque()
        self.blocked_until = 0.0
        # id(ticket) -> its member in the shared bucket.
        self._shared_tickets: dict[int, str] = {}

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
            shared = _shared
            if shared is not None:
                member = uuid.uuid4().hex
                wait_ms = self._shared_call(
                    shared,
                    "acquire",
                    limit,
                    round(period * 1000),
                    member,
                    round(SHARED_LEASE * 1000),
                )
                if wait_ms is not None:
                    if wait_ms <= 0:
                        ticket = [math.inf]
                        with self._lock:
                            self._shared_tickets[id(ticket)] = member
                        return ticket
                    if stop.wait(min(wait_ms / 1000, _SHARED_POLL)):
                        return None
                    continue
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
            member = self._shared_tickets.pop(id(ticket), None)
        if member is not None:
            shared = _shared
            if shared is not None:
                # On failure the token ends with its lease.
                self._shared_call(shared, "release", member)
            return
        with self._lock:
            ticket[0] = time.monotonic()
            # Keep the deque ordered by end time for the pruning in wait_time.
            ordered = sorted(self._tokens, key=lambda token: token[0])
            self._tokens = collections.deque(ordered)

    def block(self, seconds: float) -> None:
        """The vendor asked for a pause: send nothing for ``seconds``."""
        seconds = min(max(seconds, 0.0), _MAX_RATE_LIMIT_BLOCK)
        shared = _shared
        if shared is not None:
            self._shared_call(shared, "block", round(seconds * 1000))
        with self._lock:
            self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)

    def blocked_for(self) -> float:
        """Seconds the vendor's pause still lasts (0 when none)."""
        shared = _shared
        if shared is not None:
            wait_ms = self._shared_call(shared, "blocked")
            if wait_ms is not None:
                return max(0.0, wait_ms / 1000)
        with self._lock:
            return max(0.0, self.blocked_until - time.monotonic())

    def _shared_call(self, shared: _Shared, *args: object) -> float | None:
        """One shared operation; ``None`` when Redis failed (logged)."""
        try:
            return shared.call(self.store_id, *args)
        except Exception as exc:
            _log.warn(
                "yotpo-limiter-redis",
                "trackware: the shared Yotpo rate limiter could not reach Redis "
                "(%s); pacing this process alone until it answers",
                type(exc).__name__,
            )
            return None


_limiters: dict[str, StoreLimiter] = {}
_limiters_lock = threading.Lock()
_MAX_LIMITERS = 1024


def limiter_for(store_id: str) -> StoreLimiter:
    with _limiters_lock:
        limiter = _limiters.get(store_id)
        if limiter is None:
            if len(_limiters) >= _MAX_LIMITERS:
                _limiters.pop(next(iter(_limiters)))
            limiter = _limiters[store_id] = StoreLimiter(store_id)
        return limiter


def _reset_limiters_after_fork() -> None:
    # A lock held by another thread at fork time would never be released in
    # the child; the child starts with fresh (empty) buckets. A shared bucket
    # stays shared (redis-py opens the child's own connections).
    global _limiters_lock
    _limiters_lock = threading.Lock()
    _limiters.clear()


_lifecycle.on_fork(_reset_limiters_after_fork)
