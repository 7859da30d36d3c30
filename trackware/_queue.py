"""Bounded queues between the application's threads and a destination's worker.

:class:`EventQueue` is the interface (a durable queue plugs in behind it),
:class:`MemoryQueue` the default. Every accepted event gets a sequence number
and stays *pending* until the worker settles it (``done``); ``flush()`` waits
for ``pending_floor()`` to pass the last number handed out before it.
"""

from __future__ import annotations

import collections
import threading
import typing as t

from ._event import SIZE_SLOT, TIME_SLOT, Event
from .exceptions import ConfigurationError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENTS",
    "QUEUE_FULL_POLICIES",
    "EventQueue",
    "MemoryQueue",
    "QueuedEvent",
]

QUEUE_FULL_POLICIES = ("drop_oldest", "drop_newest", "block")

#: The default bound of a destination's in-memory queue: a burst of 100,000
#: ordinary events fits whole, and the queue stays under 64 MiB of counted
#: event bytes (``Event.size``).
DEFAULT_MAX_EVENTS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


QueuedEvent = tuple[int, Event]
"""``(sequence number, event)``: a plain tuple, the cheapest thing to allocate."""


@t.runtime_checkable
class EventQueue(t.Protocol):
    """**Protocol:** a bounded queue of events for one destination.

    ``put`` is called from application threads and must not do slow I/O while
    holding locks that ``take`` needs. All other methods are called by the
    destination's worker (or by ``flush``/``shutdown`` on the caller's thread).
    """

    #: Events offered to the queue so far, kept or dropped (monotonic).
    enqueued: int
    #: Events the full-queue policy dropped (monotonic).
    dropped_full: int

    def put(self, event: Event, /) -> list[Event] | None:
        """Queue ``event``; return the events the full-queue policy dropped."""
        ...

    def take(self, max_events: int, max_bytes: int, /) -> list[QueuedEvent]:
        """Remove up to ``max_events``/``max_bytes`` from the head (now in flight)."""
        ...

    def done(self, items: t.Sequence[QueuedEvent], /) -> None:
        """Mark in-flight items settled."""
        ...

    def depth(self) -> int: ...

    def oldest_time(self) -> float | None:
        """Wall-clock time of the oldest queued event (for interval batching)."""
        ...

    def nbytes(self) -> int: ...

    def in_flight(self) -> int: ...

    def last_seq(self) -> int:
        """The sequence number of the most recently accepted event (0: none)."""
        ...

    def pending_floor(self) -> int:
        """The lowest sequence number not yet settled (``last_seq()+1`` if none)."""
        ...

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's events and recreate locks."""
        ...

    def close(self) -> None: ...


class MemoryQueue:
    """A bounded in-memory FIFO (by event count and by approximate bytes).

    The default bound holds a burst of 100,000 ordinary events (up to about
    670 counted bytes each; a ``track()`` call with a few properties counts
    about 160, a page event with its request context about 400) even when
    the worker sends none of them meanwhile, and stays bounded at 64 MiB of
    counted event bytes (the Python objects take roughly 1.5-3x that; the
    figures: docs/architecture/event.md). It was 10,000 events / 8 MiB.

    Args:
        max_events: most events held (default 100,000).
        max_bytes: most approximate bytes held (default 64 MiB).
        policy: what ``put`` does when full: ``drop_oldest`` (default; the
            newest events usually matter most), ``drop_newest``, or ``block``
            (wait up to ``block_timeout`` seconds for space, then drop the new
            event).
        block_timeout: the longest ``put`` waits under ``block``.
    """

    def __init__(
        self,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        policy: str = "drop_oldest",
        block_timeout: float = 0.1,
    ) -> None:
        if policy not in QUEUE_FULL_POLICIES:
            raise ConfigurationError(
                f"queue_full_policy must be one of {QUEUE_FULL_POLICIES}, "
                f"not {policy!r}"
            )
        if max_events < 1 or max_bytes < 1:
            raise ConfigurationError("max_queue_size and max_queue_bytes must be >= 1")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.policy = policy
        self.block_timeout = block_timeout
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        # Events only, no (seq, event) pairs: items leave from the head only,
        # so the head's sequence number is ``_seq - len(_items) + 1``. One
        # object less per queued event for the allocator and the GC.
        self._items: collections.deque[Event] = collections.deque()
        self._inflight: set[int] = set()  # sequence numbers taken, not yet done
        self._bytes = 0
        self._seq = 0
        self.enqueued = 0
        self.dropped_full = 0

    def put(self, event: Event, /) -> list[Event] | None:
        size: int = event[SIZE_SLOT]
        with self._lock:
            # Counted on every offer, kept or not, so that
            # enqueued == settled + dropped + queued + in flight.
            self.enqueued += 1
            items = self._items
            total = self._bytes + size
            if len(items) < self.max_events and total <= self.max_bytes:
                # The common case: room for it.
                self._seq += 1
                items.append(event)
                self._bytes = total
                return None
            dropped = self._make_room(event, size)
            if dropped and dropped[-1] is event:
                return dropped
            self._seq += 1
            items.append(event)
            self._bytes += size
            return dropped

    def put_many(self, events: list[Event], /) -> list[Event] | None:
        """:meth:`put` for each of ``events``, in order, under one lock
        acquisition when they all fit."""
        size = 0
        for event in events:
            size += event[SIZE_SLOT]
        n = len(events)
        with self._lock:
            items = self._items
            total = self._bytes + size
            if len(items) + n <= self.max_events and total <= self.max_bytes:
                self.enqueued += n
                self._seq += n
                items.extend(events)
                self._bytes = total
                return None
        dropped: list[Event] = []
        for event in events:
            lost = self.put(event)
            if lost:
                dropped.extend(lost)
        return dropped

    def _make_room(self, event: Event, size: int) -> list[Event]:
        """Called with the lock held and the queue full. Returns dropped events."""
        items = self._items
        if size > self.max_bytes:
            # Larger than the whole queue: only this event can go.
            self.dropped_full += 1
            return [event]
        if self.policy == "drop_oldest":
            dropped: list[Event] = []
            while items and (
                len(items) >= self.max_events or self._bytes + size > self.max_bytes
            ):
                old = items.popleft()
                self._bytes -= old[SIZE_SLOT]
                dropped.append(old)
            self.dropped_full += len(dropped)
            return dropped
        if self.policy == "block" and self._space.wait_for(
            lambda: (
                len(items) < self.max_events and self._bytes + size <= self.max_bytes
            ),
            timeout=self.block_timeout,
        ):
            return []
        self.dropped_full += 1
        return [event]

    def take(self, max_events: int, max_bytes: int, /) -> list[QueuedEvent]:
        with self._lock:
            items = self._items
            first = self._seq - len(items) + 1
            n = min(max_events, len(items))
            if n == len(items) and self._bytes <= max_bytes:
                # The whole queue fits in one batch: take it in one step.
                events = list(items)
                items.clear()
                total = self._bytes
            else:
                events = []
                append = events.append
                popleft = items.popleft
                total = 0
                for _ in range(n):
                    size: int = items[0][SIZE_SLOT]
                    if events and total + size > max_bytes:
                        break
                    append(popleft())
                    total += size
            seqs = range(first, first + len(events))
            self._inflight.update(seqs)
            self._bytes -= total
            if events and self.policy == "block":
                self._space.notify_all()
        return list(zip(seqs, events, strict=True))

    def done(self, items: t.Sequence[QueuedEvent], /) -> None:
        with self._lock:
            self._inflight.difference_update([item[0] for item in items])

    def depth(self) -> int:
        return len(self._items)

    def oldest_time(self) -> float | None:
        try:
            return t.cast(float, self._items[0][TIME_SLOT])
        except IndexError:
            return None

    def nbytes(self) -> int:
        return self._bytes

    def in_flight(self) -> int:
        return len(self._inflight)

    def last_seq(self) -> int:
        return self._seq

    def pending_floor(self) -> int:
        with self._lock:
            floor = self._seq - len(self._items) + 1
            if self._inflight:
                floor = min(floor, min(self._inflight))
            return floor

    def reset_after_fork(self) -> None:
        # The parent still owns (and will deliver) what was queued before the
        # fork; the child starts empty so nothing is sent twice.
        self._init_state()

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return (
            f"<MemoryQueue depth={len(self._items)} in_flight={len(self._inflight)} "
            f"policy={self.policy}>"
        )
