"""Redis Streams: the app process only appends; ``trackware worker`` delivers.

The stream format (shared with :mod:`trackware._stream_consumer`) is written
down in docs/architecture/streams.md; the constants and helpers below are its
single definition. ``redis`` is imported inside functions only: ``import
trackware`` never imports it.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import threading
import time
import typing as t
import urllib.parse

from . import _log
from ._codec import encode
from ._event import SIZE_SLOT, Event
from ._queue import EventQueue, QueuedEvent
from .exceptions import ConfigurationError
from .exporters._urls import redact_url

if t.TYPE_CHECKING:
    import redis

__all__ = [
    "DEAD_FIELD_ERROR",
    "EVENT_FIELD",
    "GROUP",
    "ID_FIELD",
    "RedisStreamQueue",
    "RedisStreams",
    "connect",
    "dead_key",
    "stream_key",
    "trimmed_key",
]

#: Entry field holding ``trackware._codec.encode(event)``.
EVENT_FIELD = b"e"
#: Entry field holding the event id (UTF-8), for people and tools; the id
#: inside the encoded event is the authoritative one.
ID_FIELD = b"id"
#: The consumer group every worker joins (one per stream).
GROUP = "trackware"
#: Extra field of a dead-letter entry: the last error, text.
DEAD_FIELD_ERROR = b"error"


def stream_key(namespace: str, destination: str) -> str:
    """The stream of ``destination``'s events:
    ``trackware:{namespace}:{destination}``."""
    return f"trackware:{namespace}:{destination}"


def dead_key(namespace: str, destination: str) -> str:
    """The dead-letter stream of ``destination``: ``...:{destination}:dead``."""
    return f"{stream_key(namespace, destination)}:dead"


def trimmed_key(namespace: str, destination: str) -> str:
    """A counter (INCRBY) of entries trimmed before the group read them,
    fleet-wide: ``...:{destination}:trimmed``."""
    return f"{stream_key(namespace, destination)}:trimmed"


def connect(url: str, **options: t.Any) -> redis.Redis:
    """A ``redis.Redis`` client for ``url`` (``redis://``, ``rediss://``,
    ``unix://``). Defaults: 5 s socket and connect timeouts, no automatic
    retries (callers retry with their own backoff), bytes replies.
    ``options`` are passed to ``redis.Redis.from_url`` and win."""
    import redis as _redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kwargs: dict[str, t.Any] = {
        "retry": Retry(NoBackoff(), 0),
        "socket_timeout": 5.0,
        "socket_connect_timeout": 5.0,
        "retry_on_timeout": False,
        "health_check_interval": 0,
        "client_name": "trackware",
    }
    kwargs.update(options)
    return _redis.Redis.from_url(url, **kwargs)


# --- the app side: appending ---------------------------------------------------------

#: Appends a batch to one stream and trims it, counting the entries the
#: trim removed before the group read them (see docs/architecture/streams.md).
#: KEYS: stream, trimmed counter. ARGV: maxlen, group, then (event, id) pairs.
_APPEND_SCRIPT = """
local key = KEYS[1]
local maxlen = tonumber(ARGV[1])
local n = 0
for i = 3, #ARGV, 2 do
  redis.call('XADD', key, '*', 'e', ARGV[i], 'id', ARGV[i + 1])
  n = n + 1
end
local len = redis.call('XLEN', key)
if len <= maxlen then
  return {n, 0}
end
local has_group = false
local last = nil
local entries_read = nil
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', key)
if ok then
  for _, g in ipairs(groups) do
    local info = {}
    for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
    if info['name'] == ARGV[2] then
      has_group = true
      last = info['last-delivered-id']
      entries_read = info['entries-read']
    end
  end
end
local read = 0
if has_group then
  local added = nil
  if entries_read then
    local s = redis.call('XINFO', 'STREAM', key)
    for j = 1, #s, 2 do
      if s[j] == 'entries-added' then added = s[j + 1] end
    end
  end
  if added then
    -- Entries the group has read that are still in the stream, at its head
    -- (entries leave only from the head: added - len have left so far).
    read = entries_read - (added - len)
    if read < 0 then read = 0 end
  else
    read = #redis.call('XRANGE', key, '-', last, 'COUNT', len - maxlen)
  end
end
local removed = redis.call('XTRIM', key, 'MAXLEN', '~', maxlen)
local unread = removed - math.min(removed, read)
if unread > 0 then
  redis.call('INCRBY', KEYS[2], unread)
end
return {n, unread}
"""

_BACKOFF_FIRST = 0.05
_DOWN_SPILL_INTERVAL = 0.05
_BACKOFF_CAP = 5.0


def _fallback_put(queue: EventQueue, events: list[Event]) -> list[Event]:
    """Put ``events`` into ``queue`` in order; the events it dropped."""
    put_many = getattr(queue, "put_many", None)
    if put_many is not None:
        return list(put_many(events) or ())
    dropped: list[Event] = []
    for event in events:
        lost = queue.put(event)
        if lost:
            dropped.extend(lost)
    return dropped


class RedisStreamQueue:
    """One destination's queue in an app process that only appends to Redis.

    An :class:`~trackware._queue.EventQueue` whose ``put`` appends to a
    bounded in-memory buffer (no network, no encoding); the background
    thread of its :class:`RedisStreams` sends the buffer to the stream.
    ``take`` hands the in-process worker nothing (``trackware worker``
    delivers): ``depth()`` is 0, and the buffered, fallback and Redis figures
    are in :meth:`extra_stats`. An event is pending, for ``flush()``, until
    Redis acknowledged its append (or it was dropped, counted).
    """

    #: What ``put`` does when the buffer is full (Redis is slower than the app).
    policy = "drop_oldest"

    def __init__(
        self,
        streams: RedisStreams,
        destination: str,
        fallback: EventQueue,
        *,
        max_events: int,
        max_bytes: int,
    ) -> None:
        self.streams = streams
        self.destination = destination
        self.key = stream_key(streams.namespace, destination)
        self.trimmed_key = trimmed_key(streams.namespace, destination)
        self.fallback = fallback
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._buf: collections.deque[Event] = collections.deque()
        self._bytes = 0
        self._seq = 0
        #: (first sequence number, count) of the batch the sender holds
        #: from the buffer (being appended, or being moved to the fallback).
        self._inflight: tuple[int, int] | None = None
        #: (fallback's sequence number of the last event moved, our sequence
        #: number of the first): ours are pending until the fallback settled
        #: past the former.
        self._marks: collections.deque[tuple[int, int]] = collections.deque()
        #: Items taken from the fallback whose append failed: sent first.
        self._held: list[QueuedEvent] = []
        self.enqueued = 0
        self.dropped_full = 0
        self.appended = 0
        self.moved_to_fallback = 0
        self.forwarded = 0
        self.trimmed = 0
        self.fallback_full = 0
        self.unencodable = 0
        self.unforwarded = 0

    # --- application side (hot path) ------------------------------------------
    def put(self, event: Event, /) -> list[Event] | None:
        size: int = event[SIZE_SLOT]
        dropped: list[Event] | None = None
        with self._lock:
            self.enqueued += 1
            buf = self._buf
            if len(buf) >= self.max_events or self._bytes + size > self.max_bytes:
                if size > self.max_bytes:
                    # Larger than the whole buffer: only this event can go.
                    self.dropped_full += 1
                    return [event]
                dropped = self._make_room(size)
            self._seq += 1
            buf.append(event)
            self._bytes += size
            first = len(buf) == 1
        if first:
            self.streams.kick()
        return dropped

    def put_many(self, events: list[Event], /) -> list[Event] | None:
        """:meth:`put` for each of ``events``, in order."""
        dropped: list[Event] = []
        for event in events:
            lost = self.put(event)
            if lost:
                dropped.extend(lost)
        return dropped or None

    def _make_room(self, size: int) -> list[Event]:
        # Called with the lock held, the buffer full (the sender is behind:
        # Redis is slow). Drop the oldest, as MemoryQueue's default does.
        buf = self._buf
        dropped: list[Event] = []
        while buf and (
            len(buf) >= self.max_events or self._bytes + size > self.max_bytes
        ):
            old = buf.popleft()
            self._bytes -= old[SIZE_SLOT]
            dropped.append(old)
        self.dropped_full += len(dropped)
        return dropped

    # --- the in-process worker's side: nothing to deliver here ------------------
    def take(self, max_events: int, max_bytes: int, /) -> list[QueuedEvent]:
        return []

    def done(self, items: t.Sequence[QueuedEvent], /) -> None:
        pass

    def depth(self) -> int:
        return 0

    def oldest_time(self) -> float | None:
        return None

    def nbytes(self) -> int:
        return 0

    def in_flight(self) -> int:
        return 0

    def last_seq(self) -> int:
        return self._seq

    def pending_floor(self) -> int:
        with self._lock:
            floor = self._seq - len(self._buf) + 1
            if self._inflight is not None:
                floor = min(floor, self._inflight[0])
            if self._marks:
                self._prune_marks(self.fallback.pending_floor())
                if self._marks:
                    floor = min(floor, self._marks[0][1])
            return floor

    def _prune_marks(self, settled: int) -> None:
        """Forget the marks of moves the fallback has settled (lock held)."""
        marks = self._marks
        while marks and marks[0][0] < settled:
            marks.popleft()

    def reset_after_fork(self) -> None:
        # The parent keeps (and appends) what it buffered; the child starts
        # empty, with its own connection and thread.
        self.streams.reset_after_fork()
        self._init_state()
        try:
            self.fallback.reset_after_fork()
        except Exception:
            _log.error(
                f"fork:redis-fallback:{self.destination}",
                "trackware: resetting the fallback queue of %s after fork failed",
                self.destination,
                exc_info=True,
            )

    def close(self) -> None:
        pass

    # --- figures ----------------------------------------------------------------
    def dropped_by_reason(self) -> dict[str, int]:
        """Events this queue dropped, by reason (besides ``dropped_full``)."""
        reasons = {
            "redis_trimmed": self.trimmed,
            "redis_fallback_full": self.fallback_full,
            "redis_unencodable": self.unencodable,
        }
        return {reason: n for reason, n in reasons.items() if n}

    def extra_stats(self) -> dict[str, int | str | None]:
        """Merged into ``stats()["destinations"][name]``."""
        stats: dict[str, int | str | None] = {}
        extra = getattr(self.fallback, "extra_stats", None)
        if extra is not None:
            try:
                stats.update(extra())
            except Exception:
                pass
        try:
            fallback_depth = self.fallback.depth() + self.fallback.in_flight()
        except Exception:
            fallback_depth = None
        stats.update(
            {
                "redis_state": self.streams.state,
                "redis_appended": self.appended,
                "redis_buffered": len(self._buf),
                "redis_fallback": self.moved_to_fallback,
                "redis_fallback_depth": fallback_depth,
                "redis_forwarded": self.forwarded,
                "redis_trimmed": self.trimmed,
                "redis_fallback_full": self.fallback_full,
                "redis_unencodable": self.unencodable,
                "redis_unforwarded": self.unforwarded,
                "redis_errors": self.streams.errors,
            }
        )
        return stats

    # --- the sender's side --------------------------------------------------------
    def _buffered(self) -> int:
        return len(self._buf)

    def _nearly_full(self) -> bool:
        """Three quarters of the buffer's bounds used."""
        return (
            len(self._buf) * 4 >= self.max_events * 3
            or self._bytes * 4 >= self.max_bytes * 3
        )

    def _take_buffer(self, limit: int) -> list[Event]:
        """The buffer's head (up to ``limit``), now in flight."""
        with self._lock:
            buf = self._buf
            n = min(limit, len(buf))
            if not n:
                return []
            first = self._seq - len(buf) + 1
            if n == len(buf):
                events = list(buf)
                buf.clear()
                self._bytes = 0
            else:
                events = [buf.popleft() for _ in range(n)]
                self._bytes -= sum(e[SIZE_SLOT] for e in events)
            self._inflight = (first, n)
            return events

    def _settle_inflight(self) -> None:
        with self._lock:
            self._inflight = None

    def _to_fallback(self, events: list[Event]) -> None:
        """Move the in-flight buffer batch ``events`` to the fallback queue."""
        if not events:
            self._settle_inflight()
            return
        try:
            dropped = _fallback_put(self.fallback, events)
        except Exception:
            _log.error(
                f"redis-fallback:{self.destination}",
                "trackware: the fallback queue of %s failed; %d event(s) dropped",
                self.destination,
                len(events),
                exc_info=True,
            )
            dropped = events
        settled = self.fallback.pending_floor()
        with self._lock:
            self._prune_marks(settled)
            inflight = self._inflight
            if inflight is not None:
                self._marks.append((self.fallback.last_seq(), inflight[0]))
            self._inflight = None
            self.moved_to_fallback += len(events) - len(dropped)
            self.fallback_full += len(dropped)
        if dropped:
            _log.warn(
                f"redis-fallback-full:{self.destination}",
                "trackware: Redis is unavailable and the fallback queue of %s is "
                "full: dropped %d event(s) (stats: redis_fallback_full)",
                self.destination,
                len(dropped),
            )

    def _spill(self) -> None:
        """Redis is away: everything buffered goes to the fallback."""
        while True:
            events = self._take_buffer(1 << 30)
            if not events:
                return
            self._to_fallback(events)


class _Batch:
    """What the sender appends to one stream in one round trip."""

    __slots__ = ("queue", "events", "from_fallback", "parts")

    def __init__(
        self,
        queue: RedisStreamQueue,
        events: list[Event],
        from_fallback: list[QueuedEvent] | None,
        parts: list[bytes],
    ) -> None:
        self.queue = queue
        self.events = events
        self.from_fallback = from_fallback
        #: Each event's two RESP bulk strings (encoded event, id).
        self.parts = parts


class RedisStreams:
    """Redis Streams for one tracker in one process: the app only appends.

    Args:
        url: ``redis://host:port/db``, ``rediss://...`` or ``unix:///path``.
        namespace: streams are ``trackware:{namespace}:{destination}``.
        maxlen: the ``MAXLEN ~`` bound of each stream; entries trimmed before
            a worker read them are counted (``redis_trimmed``).
        fallback: ``fallback(destination)`` builds the queue events go to
            while Redis is unreachable (the spool's queue, or memory).
        batch_size: most events per stream per round trip.
        buffer_events, buffer_bytes: the in-memory buffer's bounds per
            destination (the oldest are dropped, counted, beyond them).
        socket_timeout: the background thread's timeout for a Redis reply.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "default",
        maxlen: int = 1_000_000,
        fallback: t.Callable[[str], EventQueue],
        batch_size: int = 500,
        buffer_events: int = 100_000,
        buffer_bytes: int = 64 * 1024 * 1024,
        socket_timeout: float = 2.0,
        linger: float = 0.002,
    ) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError("redis_namespace must be a non-empty string")
        if not isinstance(maxlen, int) or maxlen < 1:
            raise ConfigurationError(
                f"redis_maxlen must be an int >= 1, not {maxlen!r}"
            )
        if batch_size < 1 or buffer_events < 1 or buffer_bytes < 1:
            raise ConfigurationError("batch_size and the buffer bounds must be >= 1")
        if importlib.util.find_spec("redis") is None:
            raise ConfigurationError(
                "queue='redis://...' needs the redis package: "
                "pip install 'trackware[redis]'"
            )
        self.url = url
        self.display_url = redact_url(url)
        # A password in the URL (redis://:secret@host) never reaches a log line.
        try:
            _log.register_secret(urllib.parse.urlsplit(url).password)
        except ValueError:
            pass
        self.namespace = namespace
        self.maxlen = maxlen
        self.batch_size = batch_size
        self.socket_timeout = socket_timeout
        self.linger = linger
        self._make_fallback = fallback
        self._buffer_bounds = (buffer_events, buffer_bytes)
        self._queues: dict[str, RedisStreamQueue] = {}
        self._init_state()

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        #: Held by the sender for each round (close() takes it to spill).
        self._round_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._client: t.Any = None
        self._sha: str | None = None
        self._closing = False
        self._stop = False
        #: "idle" (nothing sent yet), "up", "down" or "closed".
        self.state = "idle"
        self.errors = 0
        self._backoff = _BACKOFF_FIRST
        self._retry_at = 0.0
        self._down_since: float | None = None

    def queue(self, destination: str) -> RedisStreamQueue:
        """The queue of ``destination`` (one per name)."""
        queue = self._queues.get(destination)
        if queue is None:
            max_events, max_bytes = self._buffer_bounds
            queue = RedisStreamQueue(
                self,
                destination,
                self._make_fallback(destination),
                max_events=max_events,
                max_bytes=max_bytes,
            )
            self._queues[destination] = queue
            # A spool wakes the sender when it adopts a dead process's events.
            set_waker = getattr(queue.fallback, "set_waker", None)
            if set_waker is not None:
                set_waker(self.kick)
            if queue.fallback.depth() or getattr(queue.fallback, "durable", False):
                # A spool: events a previous process left there (now, or
                # adopted later) are forwarded without waiting for a track().
                self.kick()
        return queue

    def reset_after_fork(self) -> None:
        """In a forked child: a new client and thread (never the parent's
        connection). Called by each queue's ``reset_after_fork``; acts once."""
        if self._pid != os.getpid():
            self._init_state()

    def kick(self) -> None:
        """Events are buffered: start the sender, or wake it."""
        if self._thread is None:
            self._start()
        self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closing:
                return
            thread = threading.Thread(
                target=self._run, name="trackware-redis", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:
                return  # interpreter shutdown: close() forwards on its thread
            self._thread = thread

    # --- the sender thread ------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            try:
                with self._round_lock:
                    if self._stop:
                        break
                    busy = self._round()
            except Exception:  # pragma: no cover - defensive: never die
                _log.error(
                    "redis-sender",
                    "trackware: the Redis sender hit an internal error",
                    exc_info=True,
                )
                busy = False
            if busy:
                continue
            if self._closing and self._idle():
                break
            if self.state == "down":
                # Spill what app threads buffer every 50 ms until the next
                # reconnect attempt (not once per put: each spill is a write
                # when the fallback is a spool).
                wait = max(0.0, self._retry_at - time.monotonic())
                time.sleep(min(wait, _DOWN_SPILL_INTERVAL))
                continue
            wait = 0.05 if self._closing else 1.0
            self._wake.wait(wait)
            self._wake.clear()
            if self.linger and not self._closing and self.state != "down":
                # Let a batch gather: fewer, larger round trips.
                if self._buffered() < self.batch_size:
                    time.sleep(self.linger)

    def _buffered(self) -> int:
        return sum(q._buffered() for q in list(self._queues.values()))

    def _idle(self) -> bool:
        """Nothing left to forward (buffers, held batches, fallbacks)."""
        for queue in list(self._queues.values()):
            if queue._buffered() or queue._held or queue.fallback.depth():
                return False
        return True

    def _round(self) -> bool:
        """One round trip (or one reconnect attempt). True if there is more."""
        queues = list(self._queues.values())
        if self.state == "down":
            for queue in queues:
                queue._spill()
            if time.monotonic() < self._retry_at:
                return False
            if not self._ping():
                return False
        batches: list[_Batch] = []
        for queue in queues:
            batch = self._next_batch(queue)
            if batch is not None:
                batches.append(batch)
        if not batches:
            return False
        self._append(batches)
        return self.state != "down" and any(
            q._buffered() or q._held or q.fallback.depth() for q in queues
        )

    def _next_batch(self, queue: RedisStreamQueue) -> _Batch | None:
        limit = self.batch_size
        from_fallback: list[QueuedEvent] | None = None
        if queue._nearly_full():
            # Redis answers, but slower than the app tracks: keep the events
            # in the fallback (a spool keeps them on disk) rather than let the
            # buffer drop the oldest; they are forwarded first, in order.
            queue._spill()
            _log.warn(
                f"redis-slow:{queue.destination}",
                "trackware: Redis at %s takes events for %s slower than they are "
                "tracked; the buffer goes to the fallback queue (stats: "
                "redis_fallback)",
                self.display_url,
                queue.destination,
            )
        if queue._held:
            from_fallback = queue._held
            queue._held = []
        elif queue.fallback.depth():
            from_fallback = queue.fallback.take(limit, 1 << 62)
        if from_fallback is not None:
            events = [item[1] for item in from_fallback]
            if queue._buffered() > 4 * limit:
                # Older events are being forwarded: keep the buffer small (and
                # the order) by moving it behind them.
                queue._spill()
        else:
            events = queue._take_buffer(limit)
        if not events:
            return None
        parts: list[bytes] = []
        kept: list[Event] = []
        for event in events:
            try:
                data = encode(event)
            except Exception as exc:
                queue.unencodable += 1
                _log.error(
                    f"redis-encode:{queue.destination}",
                    "trackware: an event for %s cannot be encoded (%s); dropped "
                    "(stats: redis_unencodable)",
                    queue.destination,
                    type(exc).__name__,
                )
                continue
            # The id is the encoded array's second element (a quoted UUID):
            # cut out rather than formatted again; anything else is asked for.
            if data[3:4] == b'"' and data[40:41] == b'"':
                eid = data[4:40]
            else:
                eid = event.event_id.encode("utf-8")
            parts.append(
                b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(data), data, len(eid), eid)
            )
            kept.append(event)
        if not kept:
            if from_fallback is not None:
                queue.fallback.done(from_fallback)
            else:
                queue._settle_inflight()
            return None
        return _Batch(queue, kept, from_fallback, parts)

    def _connect(self) -> t.Any:
        if self._client is None:
            self._client = connect(
                self.url,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout,
            )
        return self._client

    def _ping(self) -> bool:
        try:
            self._connect().ping()
        except Exception as exc:
            self._went_down(exc)
            return False
        return True

    def _command(self, batch: _Batch, sha: bytes) -> bytes:
        """``EVALSHA sha 2 stream trimmed maxlen group (event id)...`` in RESP:
        packed here, once per batch (redis-py's packer costs more per
        argument than encoding the event does)."""
        queue = batch.queue
        head = [sha, b"2", queue.key.encode(), queue.trimmed_key.encode()]
        head += [str(self.maxlen).encode(), GROUP.encode()]
        out = [b"*%d\r\n$7\r\nEVALSHA\r\n" % (1 + len(head) + 2 * len(batch.events))]
        out += [b"$%d\r\n%b\r\n" % (len(x), x) for x in head]
        out += batch.parts
        return b"".join(out)

    def _append(self, batches: list[_Batch]) -> None:
        """One round trip: every batch's EVALSHA, pipelined on one connection."""
        import redis

        results: list[t.Any] = []
        for attempt in range(2):
            try:
                results = self._roundtrip(batches)
            except Exception as exc:
                self._went_down(exc)
                for batch in batches:
                    self._failed(batch)
                return
            if attempt == 0 and any(
                isinstance(r, redis.exceptions.NoScriptError) for r in results
            ):
                # Redis restarted or SCRIPT FLUSH: load it again, once. (A
                # batch that failed with NOSCRIPT appended nothing.)
                self._sha = None
                retry = [
                    (b, r)
                    for b, r in zip(batches, results, strict=True)
                    if isinstance(r, redis.exceptions.NoScriptError)
                ]
                for batch, result in zip(batches, results, strict=True):
                    if not isinstance(result, redis.exceptions.NoScriptError):
                        self._settle(batch, result)
                batches = [b for b, _ in retry]
                continue
            break
        failure: Exception | None = None
        for batch, result in zip(batches, results, strict=True):
            if isinstance(result, Exception):
                failure = failure or result
            self._settle(batch, result)
        if failure is not None:
            self._went_down(failure)
        elif self.state != "up":
            self._came_back()

    def _settle(self, batch: _Batch, result: t.Any) -> None:
        if isinstance(result, Exception):
            self._failed(batch)
        else:
            self._appended(batch, result)

    def _roundtrip(self, batches: list[_Batch]) -> list[t.Any]:
        """Send the batches' commands; their replies (an exception object for
        a command Redis refused). Raises for a connection problem."""
        import redis

        client = self._connect()
        if self._sha is None:
            self._sha = client.script_load(_APPEND_SCRIPT)
        sha = self._sha.encode() if isinstance(self._sha, str) else bytes(self._sha)
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([self._command(b, sha) for b in batches])
            results: list[t.Any] = []
            for _ in batches:
                try:
                    results.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    results.append(exc)
            return results
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _appended(self, batch: _Batch, result: t.Any) -> None:
        queue = batch.queue
        n = len(batch.events)
        unread = int(result[1]) if isinstance(result, list) and len(result) > 1 else 0
        if batch.from_fallback is not None:
            queue.fallback.done(batch.from_fallback)
            queue.forwarded += n
            settled = queue.fallback.pending_floor()
            with queue._lock:
                queue._prune_marks(settled)
        else:
            queue._settle_inflight()
        queue.appended += n
        if unread:
            queue.trimmed += unread
            _log.warn(
                f"redis-trimmed:{queue.destination}",
                "trackware: stream %s reached its length bound (redis_maxlen=%d): "
                "%d entries no worker had read were trimmed (stats: "
                "redis_trimmed); are the workers running and keeping up?",
                queue.key,
                self.maxlen,
                unread,
            )

    def _failed(self, batch: _Batch) -> None:
        queue = batch.queue
        if batch.from_fallback is not None:
            queue._held = batch.from_fallback  # still in flight in the fallback
        else:
            queue._to_fallback(batch.events)

    def _went_down(self, exc: BaseException) -> None:
        self.errors += 1
        now = time.monotonic()
        if self.state != "down":
            self._down_since = now
            self._backoff = _BACKOFF_FIRST
            _log.warn(
                f"redis-down:{self.display_url}",
                "trackware: Redis at %s is unavailable (%s); events go to the "
                "fallback queue until it answers (stats: redis_fallback)",
                self.display_url,
                _log.scrub(f"{type(exc).__name__}: {exc}"),
            )
        else:
            self._backoff = min(self._backoff * 2, _BACKOFF_CAP)
        self.state = "down"
        self._retry_at = now + self._backoff
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def _came_back(self) -> None:
        if self.state == "down" and self._down_since is not None:
            _log.logger.info(
                "trackware: Redis at %s answers again after %.1f s; forwarding "
                "the fallback queue",
                self.display_url,
                time.monotonic() - self._down_since,
            )
        self.state = "up"
        self._backoff = _BACKOFF_FIRST
        self._down_since = None

    # --- shutdown -------------------------------------------------------------------
    def close(self, deadline: float) -> bool:
        """Forward what is buffered (and in the fallback) until ``deadline``
        (a ``time.monotonic()`` value); what is left stays in the fallback
        queue, counted (``redis_unforwarded``) and logged. Never raises.
        True if everything reached Redis."""
        try:
            return self._close(deadline) == 0
        except Exception:
            _log.error(
                "redis-close",
                "trackware: closing the Redis streams failed",
                exc_info=True,
            )
            return False

    def _close(self, deadline: float) -> int:
        self._closing = True
        thread = self._thread
        if thread is None and any(
            q._buffered() or q.fallback.depth() for q in self._queues.values()
        ):
            # No sender (interpreter exit): forward on this thread.
            while time.monotonic() < deadline and not self._idle():
                if not self._round():
                    wait = self._retry_at if self.state == "down" else 0.0
                    wait = max(wait - time.monotonic(), 0.01)
                    time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
        elif thread is not None:
            self._wake.set()
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop = True
        self._wake.set()
        left = 0
        if self._round_lock.acquire(timeout=0.5):
            try:
                for queue in self._queues.values():
                    queue._spill()
                    held = len(queue._held)
                    left_here = held + queue.fallback.depth()
                    queue.unforwarded += left_here
                    left += left_here
            finally:
                self._round_lock.release()
        else:
            for queue in self._queues.values():
                left_here = queue._buffered() + queue.fallback.depth()
                queue.unforwarded += left_here
                left += left_here
        if left:
            _log.logger.warning(
                "trackware: %d event(s) were not forwarded to Redis at %s before "
                "the shutdown deadline; they stay in the fallback queue (a spool "
                "keeps them for the next start; in memory they are lost) "
                "(stats: redis_unforwarded)",
                left,
                self.display_url,
            )
        self.state = "closed"
        client, self._client = self._client, None
        if client is not None and (thread is None or not thread.is_alive()):
            try:
                client.close()
            except Exception:
                pass
        return left

    def __repr__(self) -> str:
        return (
            f"<RedisStreams {self.display_url} namespace={self.namespace!r} "
            f"state={self.state}>"
        )
