"""The worker side of Redis Streams: a destination's stream read as an EventQueue.

A :class:`StreamConsumerQueue` is what ``trackware worker`` gives each
destination's :class:`~trackware._worker.Destination` instead of a memory
queue, so that the same retry / circuit-breaker / dead-letter machinery
delivers: ``depth()`` reads a batch from the consumer group (``XREADGROUP``,
or ``XAUTOCLAIM`` of entries a dead worker held longer than the visibility
timeout) into a one-batch buffer, ``take()`` hands it out, ``done()``
acknowledges (``XACK``) the settled entries. A heartbeat thread keeps the
entries this worker holds from looking idle (``XCLAIM ... JUSTID``, only
those still its own), so only a dead or stuck worker's entries are taken
over. An entry handed out more than ``max_deliveries`` times, and an entry
that does not decode, goes to the dead-letter stream and is acknowledged.

:class:`StreamDeadLetter` is the worker's dead letter: every record goes to
the destination's dead-letter stream and to the configured dead letter
(JSON lines by default); a record given up *because of shutdown* instead
hands its entry back to the group, at once claimable by another worker.

The stream format is :mod:`trackware._streams`' (docs/architecture/streams.md);
the worker's side of it is docs/worker.md.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time
import typing as t
import uuid

from . import _codec, _log, _streams
from ._deadletter import DeadLetter, DeadLetterRecord
from ._event import SIZE_SLOT, TIME_SLOT, Event, iso_time
from ._queue import QueuedEvent

if t.TYPE_CHECKING:
    import redis

__all__ = [
    "DEAD_MAXLEN",
    "StreamConsumerQueue",
    "StreamDeadLetter",
    "consumer_name",
]

#: The dead-letter streams are trimmed (``MAXLEN ~``) to about this many
#: entries; every record is also in the configured dead letter.
DEAD_MAXLEN = 100_000

_MAX_RESPONSE = 2048
#: Consumers idle this long (seconds) and holding nothing are removed from
#: the group (workers that were stopped or killed long ago).
_FORGET_IDLE = 3600.0
_PRUNE_INTERVAL = 60.0

# Refresh the idle time of the entries this consumer still owns; report the
# ones another consumer took over. KEYS[1] stream; ARGV[1] group, ARGV[2]
# consumer, ARGV[3..] entry ids.
_HEARTBEAT_LUA = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] ~= nil and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""


def consumer_name() -> str:
    """``host:pid:random``: unique per worker process (and per restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _text(value: t.Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _entries(reply: t.Any) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    """The ``(id, fields)`` entries of an ``XREADGROUP`` reply (RESP2 list or
    RESP3 dict, one stream)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        streams = list(reply.values())
        return [e for entries in streams for e in (entries[0] if entries else [])]
    return [e for _key, entries in reply for e in entries]


class StreamConsumerQueue:
    """One destination's stream, consumed by this worker, as an ``EventQueue``.

    Args:
        client: a ``redis.Redis`` (``trackware._streams.connect``).
        namespace: the streams' namespace.
        destination: the exporter's name (the stream is
            ``trackware:{namespace}:{destination}``).
        consumer: this worker's consumer name (:func:`consumer_name`).
        batch_size: entries read at once (the exporter's batch size).
        visibility_timeout: seconds an entry may stay unacknowledged with a
            consumer that no longer refreshes it before another worker takes
            it over.
        max_deliveries: an entry handed out more often goes to the dead letter.
        block: seconds one read waits for new entries (keeps shutdown prompt).
        dead_letter: the worker's dead letter (a :class:`StreamDeadLetter`).
        last_error: the destination's last error, for over-delivered entries.
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        destination: str,
        *,
        consumer: str,
        batch_size: int,
        visibility_timeout: float = 60.0,
        max_deliveries: int = 5,
        block: float = 0.2,
        dead_letter: StreamDeadLetter | None = None,
        last_error: t.Callable[[], str | None] | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.destination = destination
        self.key = _streams.stream_key(namespace, destination)
        self.consumer = consumer
        self.batch_size = max(1, batch_size)
        self.visibility_timeout = visibility_timeout
        self.max_deliveries = max_deliveries
        self.block = block
        self.dead_letter = dead_letter
        self.last_error = last_error or (lambda: None)
        self.claim_interval = max(0.1, min(visibility_timeout / 4, 5.0))
        self.heartbeat_interval = max(0.05, visibility_timeout / 3)
        self._heartbeat = client.register_script(_HEARTBEAT_LUA)
        self._waker: t.Callable[[], None] | None = None
        self._init_state()

    #: What is not delivered stays in Redis (pending or unread) for another
    #: worker: shutdown never dead-letters the queue's content.
    durable = True

    def set_waker(self, waker: t.Callable[[], None]) -> None:
        """The destination's nudge (it starts its worker thread)."""
        self._waker = waker

    def wake(self) -> None:
        """Start the destination's worker: nothing is ever offered to a
        worker's queue, so nothing else would."""
        waker = self._waker
        if waker is not None:
            waker()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        # Read, not yet taken: (seq, entry id, event).
        self._buffer: collections.deque[tuple[int, bytes, Event]] = collections.deque()
        self._bytes = 0
        self._inflight: dict[int, bytes] = {}  # seq -> entry id
        self._release: set[int] = set()  # id(event) to hand back, not ack
        self._unacked: list[bytes] = []  # XACKs that failed, retried
        self._seq = 0
        self._group_ready = False
        self._next_claim = 0.0
        self._next_prune = 0.0
        self._claim_cursor = b"0-0"
        self._stopped = False
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = 0.0
        self.enqueued = 0
        self.dropped_full = 0
        self.claimed = 0
        self.acked = 0
        self.over_delivered = 0
        self.undecodable = 0
        self.handed_back = 0
        self.trimmed_pending = 0
        self.lost_ownership = 0
        self.redis_errors = 0

    # --- the app side: never used in a worker -----------------------------------------
    def put(self, event: Event, /) -> list[Event] | None:
        """A worker's queues only read: an event tracked in the worker process
        is refused (counted as ``queue_full``), never appended to the stream."""
        with self._lock:
            self.enqueued += 1
            self.dropped_full += 1
        _log.warn(
            f"worker-put:{self.destination}",
            "trackware: track() in a worker process is not delivered (the worker "
            "only reads the streams); track in the app",
        )
        return [event]

    # --- reading ---------------------------------------------------------------------
    def depth(self) -> int:
        if not self._buffer and not self._stopped:
            self._fetch()
        return len(self._buffer)

    def _fetch(self) -> None:
        if not self._fetch_lock.acquire(blocking=False):
            return
        try:
            if self._stopped:
                return
            try:
                self._read()
                self._backoff = 0.0
            except Exception as exc:
                self._redis_failed("read", exc)
                self._backoff = min(max(self._backoff * 2, 0.05), 2.0)
                self._closed.wait(self._backoff)
            if self._stopped and self._buffer:
                self._hand_back_buffer()
        finally:
            self._fetch_lock.release()

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        import redis as _redis

        try:
            self.client.xgroup_create(self.key, _streams.GROUP, id="0", mkstream=True)
        except _redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        # Listed (trackware status) from the start, not from its first entry.
        self.client.xgroup_createconsumer(self.key, _streams.GROUP, self.consumer)
        self._group_ready = True
        if self._thread is None:
            thread = threading.Thread(
                target=self._beat,
                name=f"trackware-heartbeat-{self.destination}",
                daemon=True,
            )
            thread.start()
            self._thread = thread

    def _read(self) -> None:
        import redis as _redis

        self._ensure_group()
        try:
            if time.monotonic() >= self._next_claim:
                self._claim()
            if self._buffer:
                return
            reply = self.client.xreadgroup(
                _streams.GROUP,
                self.consumer,
                {self.key: ">"},
                count=self.batch_size,
                block=max(1, round(self.block * 1000)),
            )
        except _redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                self._group_ready = False  # the stream was deleted: recreate
            raise
        self._accept(
            [(entry_id, fields or {}, 1) for entry_id, fields in _entries(reply)]
        )

    def _claim(self) -> None:
        """Take over entries idle longer than the visibility timeout."""
        reply = self.client.xautoclaim(
            self.key,
            _streams.GROUP,
            self.consumer,
            min_idle_time=max(1, round(self.visibility_timeout * 1000)),
            start_id=self._claim_cursor,
            count=self.batch_size,
        )
        cursor, claimed = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        self._claim_cursor = cursor
        if cursor in (b"0-0", "0-0"):
            now = time.monotonic()
            self._next_claim = now + self.claim_interval
            if now >= self._next_prune:
                self._next_prune = now + _PRUNE_INTERVAL
                self._prune_consumers()
        gone = [entry_id for entry_id, fields in claimed if fields is None]
        if deleted or gone:
            # Trimmed from the stream while a dead worker held them: Redis
            # dropped them from the pending list; count them.
            self.trimmed_pending += len(deleted) + len(gone)
            _log.warn(
                f"trimmed-pending:{self.destination}",
                "trackware: %d entr(ies) of %s were trimmed from the stream while "
                "a worker that died held them; they cannot be delivered",
                len(deleted) + len(gone),
                self.destination,
            )
            if gone:
                self.client.xack(self.key, _streams.GROUP, *gone)
        claimed = [(i, f) for i, f in claimed if f is not None]
        if not claimed:
            return
        self.claimed += len(claimed)
        ids = [entry_id for entry_id, _ in claimed]
        with self._lock:
            held = len(self._inflight) + len(self._buffer)
        # This consumer's pending entries between the first and the last
        # claimed one: the claimed ones, and at most all it already held.
        counts = {
            _text(p["message_id"]): int(p["times_delivered"])
            for p in self.client.xpending_range(
                self.key,
                _streams.GROUP,
                min=ids[0],
                max=ids[-1],
                count=len(ids) + held + 100,
                consumername=self.consumer,
            )
        }
        # (An id missing from the answer is delivered: never dead-letter an
        # entry on a count we did not read.)
        self._accept([(i, f, counts.get(_text(i), 0)) for i, f in claimed])

    def _prune_consumers(self) -> None:
        """Forget consumers (workers gone long ago) that hold nothing."""
        for row in self.client.xinfo_consumers(self.key, _streams.GROUP):
            name = _text(row["name"])
            if (
                name != self.consumer
                and int(row["pending"]) == 0
                and int(row["idle"]) > _FORGET_IDLE * 1000
            ):
                self.client.xgroup_delconsumer(self.key, _streams.GROUP, name)

    def _accept(self, entries: list[tuple[bytes, dict[bytes, bytes], int]]) -> None:
        """Decode read entries into the buffer; dead-letter the ones that do
        not decode or were handed out too often."""
        dead: list[tuple[bytes, dict[bytes, bytes], str, Event | None, int]] = []
        keep: list[tuple[bytes, Event]] = []
        for entry_id, fields, deliveries in entries:
            raw = fields.get(_streams.EVENT_FIELD)
            try:
                if raw is None:
                    raise ValueError(f"no {_streams.EVENT_FIELD!r} field")
                event = _codec.decode(raw)
            except ValueError as exc:
                self.undecodable += 1
                dead.append((entry_id, fields, f"undecodable: {exc}", None, deliveries))
                continue
            if deliveries > self.max_deliveries:
                self.over_delivered += 1
                last = self.last_error()
                reason = (
                    f"delivered {deliveries} times without being settled "
                    f"(max_deliveries={self.max_deliveries}: its workers died or "
                    "stalled)"
                )
                if last:
                    reason += f"; last error: {last}"
                dead.append((entry_id, fields, reason, event, deliveries))
                continue
            keep.append((entry_id, event))
        if dead:
            self._dead(dead)
        if keep:
            with self._lock:
                for entry_id, event in keep:
                    self._seq += 1
                    self.enqueued += 1
                    self._buffer.append((self._seq, entry_id, event))
                    self._bytes += event[SIZE_SLOT]

    def _dead(
        self, dead: list[tuple[bytes, dict[bytes, bytes], str, Event | None, int]]
    ) -> None:
        """Dead-letter entries the consumer itself gives up on, then ack them."""
        if self.dead_letter is not None:
            self.dead_letter.write_entries(
                self.destination,
                [(fields, reason, e, n) for _, fields, reason, e, n in dead],
            )
        _log.error(
            f"consumer-dead:{self.destination}",
            "trackware: %s: %d stream entr(ies) dead-lettered by the worker: %s",
            self.destination,
            len(dead),
            _log.scrub(dead[0][2])[:300],
        )
        self._ack([entry_id for entry_id, *_ in dead])

    # --- the worker's side of the protocol -------------------------------------------
    def take(self, max_events: int, max_bytes: int, /) -> list[QueuedEvent]:
        items: list[QueuedEvent] = []
        total = 0
        with self._lock:
            buffer = self._buffer
            while buffer and len(items) < max_events:
                seq, entry_id, event = buffer[0]
                size: int = event[SIZE_SLOT]
                if items and total + size > max_bytes:
                    break
                buffer.popleft()
                total += size
                self._inflight[seq] = entry_id
                items.append((seq, event))
            self._bytes -= total
        return items

    def done(self, items: t.Sequence[QueuedEvent], /) -> None:
        ack: list[bytes] = []
        back: list[bytes] = []
        with self._lock:
            for seq, event in items:
                entry_id = self._inflight.pop(seq, None)
                if entry_id is None:
                    continue
                if id(event) in self._release:
                    self._release.discard(id(event))
                    back.append(entry_id)
                else:
                    ack.append(entry_id)
        if ack:
            self._ack(ack)
        if back:
            self._hand_back(back)

    def release(self, events: t.Iterable[Event]) -> None:
        """These events (given up for shutdown) are handed back, not acked."""
        with self._lock:
            self._release.update(id(e) for e in events)

    def _ack(self, ids: list[bytes]) -> None:
        with self._lock:
            ids = self._unacked + ids
            self._unacked = []
        try:
            self.client.xack(self.key, _streams.GROUP, *ids)
        except Exception as exc:
            self._redis_failed("ack", exc)
            if "NOGROUP" in str(exc):
                # The group (or the stream) is gone, and its pending list with
                # it: there is nothing left to acknowledge.
                return
            with self._lock:
                # Retried by the heartbeat; if they never are, the entries are
                # delivered again after the visibility timeout (at least once).
                self._unacked = ids[-10_000:] + self._unacked
            return
        with self._lock:
            self.acked += len(ids)

    def _hand_back(self, ids: list[bytes]) -> None:
        """Give entries back to the group: idle past the visibility timeout at
        once, so the next ``XAUTOCLAIM`` of any worker takes them."""
        try:
            self.client.xclaim(
                self.key,
                _streams.GROUP,
                self.consumer,
                0,
                list[t.Any](ids),
                idle=round(self.visibility_timeout * 1000) + 1,
                justid=True,
            )
        except Exception as exc:
            # Still pending with this consumer: taken over after the timeout.
            self._redis_failed("hand back", exc)
        with self._lock:
            self.handed_back += len(ids)

    def _hand_back_buffer(self) -> None:
        with self._lock:
            ids = [entry_id for _, entry_id, _ in self._buffer]
            self._buffer.clear()
            self._bytes = 0
        if ids:
            self._hand_back(ids)

    # --- heartbeat -------------------------------------------------------------------
    def _beat(self) -> None:
        while not self._closed.wait(self.heartbeat_interval):
            with self._lock:
                held = list(self._inflight.values())
                held.extend(entry_id for _, entry_id, _ in self._buffer)
                retry_ack = bool(self._unacked)
            try:
                if retry_ack:
                    self._ack([])
                for start in range(0, len(held), 500):
                    chunk = held[start : start + 500]
                    lost = self._heartbeat(
                        keys=[self.key],
                        args=[_streams.GROUP, self.consumer, *chunk],
                    )
                    if lost:
                        with self._lock:
                            self.lost_ownership += len(lost)
            except Exception as exc:
                self._redis_failed("heartbeat", exc)

    def _redis_failed(self, what: str, exc: Exception) -> None:
        with self._lock:
            self.redis_errors += 1
        _log.warn(
            f"consumer-redis:{self.destination}",
            "trackware: worker %s: Redis %s failed (%s: %s); retrying",
            self.destination,
            what,
            type(exc).__name__,
            _log.scrub(str(exc))[:200],
        )

    # --- the rest of EventQueue ------------------------------------------------------
    def oldest_time(self) -> float | None:
        try:
            return t.cast(float, self._buffer[0][2][TIME_SLOT])
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
            floor = self._seq + 1
            if self._buffer:
                floor = self._buffer[0][0]
            if self._inflight:
                floor = min(floor, min(self._inflight))
            return floor

    def reset_after_fork(self) -> None:
        # The parent's entries stay the parent's (its consumer name); a child
        # reads with a name of its own.
        self.consumer = consumer_name()
        self._init_state()

    def stop_reading(self) -> None:
        """Shutdown: read nothing more; hand back what was read but not taken."""
        self._stopped = True
        # A read under way ends within ``block`` (and hands back what it read
        # itself if it ends after this gave up waiting for it).
        if self._fetch_lock.acquire(timeout=self.block + 1.0):
            try:
                self._hand_back_buffer()
            finally:
                self._fetch_lock.release()

    def close(self) -> None:
        """Stop reading and the heartbeat; hand back anything still held."""
        self.stop_reading()
        self._closed.set()
        with self._lock:
            held = list(self._inflight.values())
            self._inflight.clear()
        if held:
            self._hand_back(held)
        if self._unacked:
            self._ack([])
        self._forget_self()
        thread = self._thread
        if thread is not None:
            thread.join(2.0)

    def _forget_self(self) -> None:
        """Leave the group when holding nothing (entries handed back stay
        with this consumer until another worker claims them)."""
        if not self._group_ready:
            return
        try:
            mine = self.client.xpending_range(
                self.key, _streams.GROUP, "-", "+", 1, consumername=self.consumer
            )
            if not mine:
                self.client.xgroup_delconsumer(self.key, _streams.GROUP, self.consumer)
        except Exception as exc:
            self._redis_failed("leave the group", exc)

    def extra_stats(self) -> dict[str, int | str | None]:
        return {
            "redis_consumer": self.consumer,
            "redis_claimed": self.claimed,
            "redis_acked": self.acked,
            "redis_over_delivered": self.over_delivered,
            "redis_undecodable": self.undecodable,
            "redis_handed_back": self.handed_back,
            "redis_trimmed_pending": self.trimmed_pending,
            "redis_lost_ownership": self.lost_ownership,
            "redis_errors": self.redis_errors,
        }

    def __repr__(self) -> str:
        return (
            f"<StreamConsumerQueue {self.key!r} consumer={self.consumer!r} "
            f"buffered={len(self._buffer)} in_flight={len(self._inflight)}>"
        )


class StreamDeadLetter:
    """The worker's dead letter: the destination's dead-letter stream, then
    ``inner`` (the dead letter the user's tracker configured).

    Records given up because of shutdown are not dead-lettered: their entries
    go back to the group for another worker (see
    :meth:`StreamConsumerQueue.release`).
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        inner: DeadLetter | None,
        *,
        consumer: str,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.inner = inner
        self.consumer = consumer
        self.queues: dict[str, StreamConsumerQueue] = {}
        self.handed_back = 0

    def write(self, records: t.Sequence[DeadLetterRecord], /) -> None:
        keep: list[DeadLetterRecord] = []
        for record in records:
            queue = self.queues.get(record.destination)
            if queue is not None and (
                record.reason == "shutdown" or record.reason.startswith("shutdown:")
            ):
                queue.release([record.event])
                self.handed_back += 1
            else:
                keep.append(record)
        if not keep:
            return
        by_dest: dict[str, list[dict[bytes, bytes | str | int]]] = {}
        for record in keep:
            fields: dict[bytes, bytes | str | int] = {
                _streams.ID_FIELD: record.event.event_id,
                _streams.DEAD_FIELD_ERROR: _log.scrub(record.reason)[:2000],
                b"attempts": record.attempts,
                b"consumer": self.consumer,
                b"time": iso_time(time.time()),
            }
            if record.status is not None:
                fields[b"status"] = record.status
            if record.response is not None:
                fields[b"response"] = _log.scrub(record.response[:_MAX_RESPONSE])
            try:
                fields[_streams.EVENT_FIELD] = _codec.encode(record.event)
            except (TypeError, ValueError):
                fields[_streams.EVENT_FIELD] = b""
            by_dest.setdefault(record.destination, []).append(fields)
        self._add(by_dest)
        if self.inner is not None:
            self.inner.write(keep)

    def write_entries(
        self,
        destination: str,
        entries: list[tuple[dict[bytes, bytes], str, Event | None, int]],
    ) -> None:
        """Entries the consumer gave up on (``(fields, reason, event or None,
        deliveries)``): the stream entry as read plus ``error``; the decoded
        ones also to ``inner``."""
        rows: list[dict[bytes, bytes | str | int]] = []
        records: list[DeadLetterRecord] = []
        for fields, reason, event, deliveries in entries:
            row: dict[bytes, bytes | str | int] = dict(fields)
            row[_streams.DEAD_FIELD_ERROR] = _log.scrub(reason)[:2000]
            row[b"deliveries"] = deliveries
            row[b"consumer"] = self.consumer
            row[b"time"] = iso_time(time.time())
            rows.append(row)
            if event is not None:
                records.append(
                    DeadLetterRecord(destination, reason, event, None, None, deliveries)
                )
        self._add({destination: rows})
        if records and self.inner is not None:
            try:
                self.inner.write(records)
            except Exception:
                _log.error(
                    f"dead-letter:{destination}",
                    "trackware: could not write %d dead letter(s) for %s",
                    len(records),
                    destination,
                    exc_info=True,
                )

    def _add(self, by_dest: dict[str, list[dict[bytes, bytes | str | int]]]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for destination, rows in by_dest.items():
                key = _streams.dead_key(self.namespace, destination)
                for row in rows:
                    pipe.xadd(key, row, maxlen=DEAD_MAXLEN, approximate=True)  # type: ignore[arg-type]
            pipe.execute()
        except Exception as exc:
            _log.warn(
                "dead-stream",
                "trackware: could not add to the dead-letter stream (%s); the "
                "records are in the configured dead letter only",
                type(exc).__name__,
            )
