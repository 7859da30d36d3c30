"""A destination: one exporter, its queue, its worker thread, its accounting.

Destinations are isolated from each other: each has its own bounded queue, its
own worker thread (started lazily on the first event), its own retry state and
circuit breaker. A vendor that hangs, rate-limits or is down delays only its
own events.

Within a destination, one batch never holds up the others: while a batch waits
for its retry, the worker goes on sending newer batches (up to
``Destination.retry_batches`` batches' worth of events wait at once; a vendor
that is really down opens the circuit breaker, and then everything waits). A
batch that fails again while other batches get through is retried in halves,
so the events that can be delivered are, and only the event the vendor keeps
refusing ends in the dead letter. An exporter that raises is bisected the
same way: the event that makes it raise on its own is rejected (an encoding
error) or retried alone (any other exception).
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
import operator
import threading
import time
import typing as t

from . import _log, signals
from ._context import suppressed
from ._deadletter import DeadLetter, DeadLetterRecord
from ._event import Event
from ._queue import EventQueue, QueuedEvent
from ._retry import CircuitBreaker, RetryPolicy
from .exporters._base import Exporter, ExportResult, _export_scope

if t.TYPE_CHECKING:
    from ._tracker import Tracker

__all__ = ["Destination"]


def _count_value(counter: itertools.count[int]) -> int:
    """The next value an ``itertools.count`` would return, without consuming it."""
    # repr is "count(N)"; reading it is the one way that is neither deprecated
    # nor racy (next() on a count is atomic in CPython, which is why we use it).
    return int(repr(counter)[6:-1])


_worker_threads: set[int] = set()


def in_worker_thread() -> bool:
    """True on a trackware worker thread (where flush() must not wait)."""
    return threading.get_ident() in _worker_threads


#: Exceptions that mean "this data cannot be encoded" (what json, str.encode
#: and int-to-text conversion raise): the same event fails the same way on
#: every attempt, so an event that raises one of them alone is rejected, never
#: retried. Any other exception an exporter raises is taken as transient.
_ENCODING_ERRORS = (ValueError, TypeError, OverflowError, RecursionError)


def _exception_text(exc: BaseException) -> str:
    """``Type: message``, short, scrubbed, ASCII (a UnicodeEncodeError quotes
    the very character that cannot be written)."""
    detail = _log.scrub(str(exc).split("\n", 1)[0])[:200]
    detail = detail.encode("ascii", "backslashreplace").decode("ascii")
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class _RetryBatch:
    __slots__ = (
        "abandoned",
        "attempts",
        "first_attempt",
        "items",
        "mark",
        "narrowed",
        "next_at",
        "partial",
        "result",
        "split",
    )

    def __init__(
        self, items: list[QueuedEvent], first_attempt: float, mark: int = 0
    ) -> None:
        self.abandoned = False  # given up by shutdown() while the worker had it
        self.items = items
        self.attempts = 0
        self.first_attempt = first_attempt
        self.next_at = 0.0
        self.result: ExportResult | None = None
        #: Destination.batches when this batch's last attempt began: a higher
        #: count later means other batches got through since it failed.
        self.mark = mark
        #: A half of a split batch that has not been attempted yet (its mark
        #: is the split's, so a sibling's success counts as evidence).
        self.split = False
        #: Split because other batches got through: its failures say something
        #: about its content, not about the vendor (the breaker ignores them).
        self.narrowed = False
        #: What the exporter reported as decided during the export under way
        #: (see exporters._base.report_progress), for a shutdown that gives
        #: the batch up before export() returns.
        self.partial: ExportResult | None = None

    def half(self, items: list[QueuedEvent], mark: int) -> _RetryBatch:
        child = _RetryBatch(items, self.first_attempt, mark)
        child.attempts = self.attempts
        child.result = self.result
        child.next_at = self.next_at
        child.split = True
        child.narrowed = True
        return child


def _next_at(batch: _RetryBatch) -> float:
    return batch.next_at


#: At shutdown, a worker still busy this long before the deadline (or a
#: quarter of the budget, if less) is told to stop sending: a request under
#: way may finish, nothing new starts, and its batch settles exactly (sent
#: events counted as sent, the rest dead-lettered) before the deadline.
_HALT_GRACE = 0.2


class Destination:
    """Delivers one exporter's events in the background. Created by the Tracker."""

    #: How many batches' worth of events may wait for a retry while newer
    #: batches are sent. Beyond it the worker takes nothing new until a
    #: waiting batch settles (memory stays bounded: the queue's limits plus
    #: this many batches).
    retry_batches: t.ClassVar[int] = 4

    def __init__(
        self,
        tracker: Tracker,
        exporter: Exporter,
        queue: EventQueue,
        *,
        max_batch_size: int,
        max_batch_bytes: int,
        flush_interval: float,
        retry: RetryPolicy,
        dead_letter: DeadLetter | None,
        event_filter: t.Callable[[Event], bool] | None = None,
    ) -> None:
        self.tracker = tracker
        self.exporter = exporter
        self.name = exporter.name
        self.queue = queue
        # Looked up once: offer() calls them per event.
        self._put = queue.put
        #: Optional in the EventQueue protocol: one call for a batch.
        self._put_many: t.Callable[[list[Event]], list[Event] | None] | None = getattr(
            queue, "put_many", None
        )
        self._depth = queue.depth
        self.max_batch_size = max(1, min(max_batch_size, exporter.max_batch_size))
        exporter_bytes = getattr(exporter, "max_batch_bytes", None)
        self.max_batch_bytes = min(max_batch_bytes, exporter_bytes or max_batch_bytes)
        self.flush_interval = flush_interval
        self.retry_policy = getattr(exporter, "retry_policy", None) or retry
        self.dead_letter = dead_letter
        self.event_filter = event_filter
        self._init_runtime()
        self._init_counters()

    # --- state that must be rebuilt after fork ---------------------------------------
    def _init_runtime(self) -> None:
        self._wake = threading.Event()
        self._progress = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopping = False
        self._stopped = False
        self._flush_requests = 0
        # Batches waiting for their retry, and the events they hold.
        self._retries: list[_RetryBatch] = []
        self._current: _RetryBatch | None = None  # being exported right now
        self._settle_lock = threading.Lock()
        self._shutdown_deadline: float | None = None
        self._halt_at = math.inf
        self._halted = False  # shutdown told the exporter to stop sending
        self._shutdown_base = 0
        # A vendor's Retry-After / RateLimit-Reset pauses the whole
        # destination, not only the batch it answered.
        self._paused_until = 0.0
        self.breaker = CircuitBreaker(self.retry_policy)

    def _init_counters(self) -> None:
        self.sent = 0
        self.retried = 0
        self.rejected = 0
        self.failed = 0
        self.dead_lettered = 0
        self.not_applicable = 0
        # Events the exporter's applies() declined, or the destination's filter
        # left out (or whose check raised), at track() time: counted on the
        # caller's thread with atomic itertools.counts (no lock).
        self._declined = itertools.count()
        self.count_not_applicable = self._declined.__next__
        self._filtered = itertools.count()
        self.count_filtered = self._filtered.__next__
        self.batches = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None

    def after_fork_in_child(self) -> None:
        self.queue.reset_after_fork()
        self._init_runtime()
        self._init_counters()
        after_fork = getattr(self.exporter, "after_fork", None)
        if after_fork is not None:
            try:
                after_fork()
            except Exception:
                _log.error(
                    f"fork:{self.name}",
                    "trackware: %s after_fork failed",
                    self.name,
                    exc_info=True,
                )

    # --- application side (hot path) -------------------------------------------------
    def offer(self, event: Event) -> None:
        """Queue ``event``; never blocks (unless policy is ``block``), never raises."""
        dropped = self._put(event)
        if dropped:
            self._on_queue_drop(dropped)
        self._nudge()

    def offer_many(self, events: list[Event]) -> None:
        """:meth:`offer` for a batch, in order (the tracker's intake thread)."""
        put_many = self._put_many
        if put_many is None:
            for event in events:
                self.offer(event)
            return
        dropped = put_many(events)
        if dropped:
            self._on_queue_drop(dropped)
        self._nudge()

    def _nudge(self) -> None:
        """After a put: start the worker, or wake it when a batch is full."""
        if self._thread is None:
            self._start()
        elif self._depth() >= self.max_batch_size and not self._wake.is_set():
            self._wake.set()

    def _on_queue_drop(self, dropped: list[Event]) -> None:
        _log.warn(
            f"queue_full:{self.name}",
            "trackware: queue of destination %r is full; dropped %d event(s) "
            "(policy %s). See stats()['destinations'][%r]['dropped'].",
            self.name,
            len(dropped),
            getattr(self.queue, "policy", "?"),
            self.name,
        )
        if signals.event_dropped.receivers:
            for ev in dropped:
                signals.event_dropped.send(
                    self.tracker,
                    event=ev,
                    reason="queue_full",
                    destination=self.name,
                    detail=None,
                )

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stopped:
                return
            thread = threading.Thread(
                target=self._run, name=f"trackware-{self.name}", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:
                # Interpreter shutdown: no new threads. shutdown() drains on the
                # calling thread instead.
                return
            self._thread = thread

    # --- worker ----------------------------------------------------------------------
    def _run(self) -> None:
        _worker_threads.add(threading.get_ident())
        token = suppressed.set(True)
        try:
            while True:
                try:
                    if not self._step():
                        break
                except Exception:  # pragma: no cover - defensive: never die
                    _log.error(
                        f"worker:{self.name}",
                        "trackware: worker of %r hit an internal error",
                        self.name,
                        exc_info=True,
                    )
                    time.sleep(0.1)
        finally:
            suppressed.reset(token)
            _worker_threads.discard(threading.get_ident())

    def _step(self) -> bool:
        """Do one unit of work or wait for some. Returns False to stop."""
        if self._halted:
            # Shutdown told the exporter to stop sending: nothing more goes
            # out; what is left goes to the dead letter.
            self._give_up_all("stopped sending at shutdown")
            return False
        now = time.monotonic()
        hold = self._hold_until()
        wait = math.inf
        # A snapshot: shutdown() may give the waiting batches up meanwhile.
        retries = list(self._retries)
        if retries:
            if self._stopping:
                for batch in retries:
                    if not self._deadline_allows(max(batch.next_at, hold)):
                        self._abandon(batch, "shutdown before retry was due")
                retries = [b for b in retries if not b.abandoned]
            if retries:
                # The batch waiting longest for its turn goes first.
                batch = min(retries, key=_next_at)
                due = max(batch.next_at, hold)
                if now >= due and self.breaker.allow(now):
                    self._retry_batch(batch)
                    return True
                wait = due - now
        if self.queue.depth():
            until = self._paused_until if now < self._paused_until else 0.0
            if not until and not self.breaker.allow(now):
                until = self.breaker.open_until
            if until:
                if self._stopping and not self._deadline_allows(until):
                    self._drain_to_dead_letter()
                    return True
                wait = min(wait, until - now)
            elif self._waiting() >= self.retry_batches * self.max_batch_size:
                # Enough events wait for a retry already: take nothing new
                # until one of those batches settles (wait is its due time).
                pass
            elif (
                self._stopping
                or self._flush_requests
                or self.queue.depth() >= self.max_batch_size
                or self.queue.nbytes() >= self.max_batch_bytes
                or self._head_age() >= self.flush_interval
            ):
                items = self.queue.take(self.max_batch_size, self.max_batch_bytes)
                if items:
                    self._attempt(_RetryBatch(items, now, self.batches))
                return True
            else:
                wait = min(wait, max(0.0, self.flush_interval - self._head_age()))
        elif not retries:
            if self._stopping:
                return False
            wait = self.flush_interval if self.flush_interval > 0 else 1.0
        self._wait(wait)
        return True

    def _waiting(self) -> int:
        """Events waiting for a retry."""
        return sum(len(b.items) for b in self._retries)

    def _head_age(self) -> float:
        # Queue entries carry the event's wall-clock time; interval batching
        # only needs approximate ages.
        oldest = self.queue.oldest_time()
        if oldest is None:
            return self.flush_interval
        return time.time() - oldest

    def _breaker_due(self) -> float:
        return (
            self.breaker.open_until
            if self.breaker.state == CircuitBreaker.OPEN
            else 0.0
        )

    def _hold_until(self) -> float:
        """Nothing is sent before this (open circuit, vendor-requested pause)."""
        return max(self._breaker_due(), self._paused_until)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(min(seconds, 60.0))
        self._wake.clear()

    def _deadline_allows(self, when: float) -> bool:
        deadline = self._shutdown_deadline
        return deadline is None or when <= deadline

    def _retry_batch(self, batch: _RetryBatch) -> None:
        """A waiting batch is due: attempt it, or split it in two."""
        if not batch.split and len(batch.items) > 1 and self.batches > batch.mark:
            # Other batches were delivered since this one last failed: the
            # vendor is up and something in this batch is what it refuses
            # (e.g. a 500 caused by one event). Retry it in halves, both due
            # now, so its good events get through and the failure narrows
            # down to the event causing it. Halves keep the batch's attempt
            # count and first-attempt time: the poison event still gives up
            # after the policy's attempts.
            mid = len(batch.items) // 2
            halves = [
                batch.half(batch.items[:mid], self.batches),
                batch.half(batch.items[mid:], self.batches),
            ]
            with self._settle_lock:
                if batch.abandoned or batch not in self._retries:
                    return
                index = self._retries.index(batch)
                self._retries[index : index + 1] = halves
            return
        self._attempt(batch)

    def _attempt(self, batch: _RetryBatch) -> None:
        with self._settle_lock:
            if batch.abandoned:
                return
            self._current = batch
            if batch in self._retries:
                self._retries.remove(batch)
        if batch.split:
            batch.split = False  # keeps the split's mark for this attempt
        else:
            batch.mark = self.batches
        events = [item[1] for item in batch.items]
        batch.attempts += 1
        batch.partial = None
        scope = _export_scope
        scope.report = functools.partial(self._on_progress, batch)
        try:
            result = self._export(batch, events)
        finally:
            scope.report = None
        with self._settle_lock:
            self._current = None
            batch.partial = None  # the result has the final word
            if batch.abandoned:
                # shutdown() already dead-lettered and counted this batch.
                return
            self._settle(batch, result)

    def _on_progress(self, batch: _RetryBatch, outcome: ExportResult) -> bool:
        """exporters._base.report_progress for ``batch``: keep what is decided,
        say whether to go on."""
        with self._settle_lock:
            if batch.abandoned:
                return False
            if outcome.sent or outcome.rejected or outcome.skipped:
                partial = batch.partial
                if partial is None:
                    partial = batch.partial = ExportResult()
                partial.sent.extend(outcome.sent)
                partial.rejected.extend(outcome.rejected)
                partial.skipped.extend(outcome.skipped)
            return not self._halted

    def _export(self, batch: _RetryBatch, events: list[Event]) -> ExportResult:
        try:
            return self.exporter.export(events)
        except Exception as exc:  # exporters should not raise; be safe if they do
            _log.error(
                f"export-raised:{self.name}",
                "trackware: exporter %r raised %s; exporting the batch in parts "
                "to find the event(s) causing it",
                self.name,
                type(exc).__name__,
                exc_info=True,
            )
            return self._isolate(batch, events, exc)

    def _isolate(
        self, batch: _RetryBatch, events: list[Event], exc: Exception
    ) -> ExportResult:
        """``export(events)`` raised ``exc``: export the halves, recursively, so
        that what exports is delivered and an event that raises alone is
        rejected (encoding error) or retried alone (anything else)."""
        if len(events) == 1:
            text = _exception_text(exc)
            if isinstance(exc, _ENCODING_ERRORS):
                return ExportResult.rejected_all(events, f"could not encode: {text}")
            return ExportResult.failure(events, f"exporter raised {text}")
        result = ExportResult()
        mid = len(events) // 2
        raised: list[tuple[list[Event], Exception]] = []
        for half in (events[:mid], events[mid:]):
            if batch.abandoned or self._halted:
                result.add_retry(half, f"exporter raised {_exception_text(exc)}")
                continue
            try:
                outcome = self.exporter.export(half)
            except Exception as error:
                raised.append((half, error))
                continue
            self._on_progress(batch, outcome)
            result.merge(outcome)
        if len(raised) == 2 and not any(
            isinstance(e, _ENCODING_ERRORS) for _, e in raised
        ):
            # Both halves raise, and not because of their data: the exporter
            # fails as a whole (vendor down, a bug). Retry the batch together
            # rather than exporting it event by event.
            result.add_retry(events, f"exporter raised {_exception_text(raised[0][1])}")
            return result
        for part, failure in raised:
            result.merge(self._isolate(batch, part, failure))
        return result

    def _settle(self, batch: _RetryBatch, result: ExportResult) -> None:
        items = batch.items
        if (
            len(result.sent) == len(items)
            and not result.retry
            and not result.rejected
            and not result.skipped
            and all(map(operator.is_, result.sent, [i[1] for i in items]))
        ):
            # The common case: the whole batch was delivered, in order.
            self._delivered(batch, items)
            return
        self._settle_mixed(batch, result)

    def _delivered(self, batch: _RetryBatch, items: list[QueuedEvent]) -> None:
        self.breaker.record_success()
        self._count_sent(items)
        self._settled(items)

    def _count_sent(self, items: list[QueuedEvent]) -> None:
        """Count a delivered batch (non-empty) and announce it."""
        self.sent += len(items)
        self.batches += 1
        if signals.batch_exported.receivers:
            signals.batch_exported.send(
                self.tracker, destination=self.name, events=[i[1] for i in items]
            )

    def _account(
        self, batch: _RetryBatch, result: ExportResult
    ) -> tuple[list[QueuedEvent], bool]:
        """Count what ``result`` decided for ``batch`` (sent, skipped,
        rejected: dead-lettered). ``batch.items`` keeps the undecided rest, in
        order. Returns the decided items (for ``_settled``) and whether any
        event was sent."""
        by_id = {id(item[1]): item for item in batch.items}
        settled: list[QueuedEvent] = []

        def take(evs: t.Iterable[Event]) -> list[QueuedEvent]:
            out = []
            for ev in evs:
                item = by_id.pop(id(ev), None)
                if item is not None:
                    out.append(item)
            return out

        sent = take(result.sent)
        skipped = take(result.skipped)
        # Only rejections of this batch's undecided events (a progress report
        # and the final result may both carry one).
        rejections = []
        for rejection in result.rejected:
            item = by_id.pop(id(rejection.event), None)
            if item is not None:
                rejections.append(rejection)
                settled.append(item)
        self.not_applicable += len(skipped)
        settled.extend(sent)
        settled.extend(skipped)
        if sent:
            self._count_sent(sent)
        if rejections:
            self.rejected += len(rejections)
            self._dead_letter(
                [
                    DeadLetterRecord(
                        self.name, r.reason, r.event, r.status, r.body, batch.attempts
                    )
                    for r in rejections
                ]
            )
            first = rejections[0]
            self.last_error = _log.scrub(first.reason)
            _log.warn(
                f"rejected:{self.name}",
                "trackware: %s rejected %d event(s): %s",
                self.name,
                len(rejections),
                _log.scrub(first.reason)[:300],
            )
            self._signal_failed(
                [r.event for r in rejections], first.reason, first.status, True
            )
        batch.items = list(by_id.values())
        return settled, bool(sent)

    def _settle_mixed(self, batch: _RetryBatch, result: ExportResult) -> None:
        now = time.monotonic()
        settled, any_sent = self._account(batch, result)
        # Whatever the exporter did not account for is retried with the rest.
        retry_items = batch.items
        if retry_items and not result.retry:
            result.error = result.error or "exporter returned no outcome"
        if retry_items:
            if any_sent:
                self.breaker.record_success()
            elif not batch.narrowed:
                # (A narrowed batch fails because of what it holds: one poison
                # event retried alone must not open the circuit for the rest.)
                self.breaker.record_failure(now)
            self.last_error = _log.scrub(result.error or "retryable failure")
            policy = self.retry_policy
            exhausted = (
                policy.max_attempts is not None
                and batch.attempts >= policy.max_attempts
            ) or (now - batch.first_attempt >= policy.max_retry_time)
            batch.result = result
            if self._halted:
                self._give_up(batch, "shutdown", "stopped sending at shutdown")
            elif exhausted:
                self._give_up(batch, "retries_exhausted", self.last_error)
            else:
                self.retried += len(retry_items)
                batch.next_at = now + policy.backoff(batch.attempts, result.retry_after)
                if result.retry_after is not None:
                    # The vendor asked for a pause: no other batch goes out
                    # before it is over either.
                    self._paused_until = max(
                        self._paused_until,
                        now + min(result.retry_after, policy.max_retry_after),
                    )
                self._retries.append(batch)
                _log.warn(
                    f"retry:{self.name}",
                    "trackware: %s: %s; %d event(s) will be retried (attempt %d)",
                    self.name,
                    self.last_error,
                    len(retry_items),
                    batch.attempts,
                )
                self._signal_failed(
                    [i[1] for i in retry_items],
                    self.last_error,
                    result.status,
                    False,
                )
        else:
            self.breaker.record_success()
        self._settled(settled)

    def _abandon(self, batch: _RetryBatch, detail: str) -> None:
        """Give ``batch`` up for shutdown, once, whichever thread gets there first."""
        with self._settle_lock:
            if batch.abandoned:
                return
            batch.abandoned = True
            self._give_up(batch, "shutdown", detail)

    def _abandon_pending(self) -> None:
        """From shutdown(): give up the batches the worker holds, if any.

        Of a batch being exported right now, the events the exporter already
        reported as sent (or rejected) are counted as such; only the others
        go to the dead letter.
        """
        with self._settle_lock:
            current = self._current
            if current is not None and not current.abandoned:
                current.abandoned = True
                if current.partial is not None:
                    settled, _ = self._account(current, current.partial)
                    self._settled(settled)
                if current.items:
                    self._give_up(
                        current,
                        "shutdown",
                        "in flight when the shutdown budget ran out (it may have "
                        "been delivered)",
                    )
            for batch in list(self._retries):
                if not batch.abandoned:
                    batch.abandoned = True
                    self._give_up(batch, "shutdown", "retry pending at shutdown")

    def _give_up_all(self, detail: str) -> None:
        """Dead-letter every waiting batch and everything queued (shutdown)."""
        for batch in list(self._retries):
            self._abandon(batch, detail)
        items = self.queue.take(1 << 30, 1 << 62)
        if items:
            self._give_up(_RetryBatch(items, time.monotonic()), "shutdown", detail)

    def _give_up(self, batch: _RetryBatch, reason: str, detail: str | None) -> None:
        if batch in self._retries:
            self._retries.remove(batch)
        result = batch.result
        events = [item[1] for item in batch.items]
        if not events:
            return
        if reason == "retries_exhausted":
            self.failed += len(events)
        else:
            self.dropped[reason] += len(events)
        text = f"{reason}: {detail}" if detail else reason
        self._dead_letter(
            [
                DeadLetterRecord(
                    self.name,
                    text,
                    ev,
                    result.status if result else None,
                    result.body if result else None,
                    batch.attempts,
                )
                for ev in events
            ]
        )
        _log.error(
            f"gave-up:{self.name}:{reason}",
            "trackware: %s: gave up on %d event(s) (%s); they are in the dead letter",
            self.name,
            len(events),
            _log.scrub(text)[:300],
        )
        self._signal_failed(events, text, result.status if result else None, True)
        self._settled(batch.items)

    def _drain_to_dead_letter(self) -> None:
        """Give up everything still queued, for shutdown."""
        items = self.queue.take(1 << 30, 1 << 62)
        if items:
            batch = _RetryBatch(items, time.monotonic())
            self._give_up(batch, "shutdown", "destination unavailable at shutdown")

    def _dead_letter(self, records: list[DeadLetterRecord]) -> None:
        if not records or self.dead_letter is None:
            return
        try:
            self.dead_letter.write(records)
            self.dead_lettered += len(records)
            return
        except Exception:
            if len(records) > 1:
                # One record the dead letter cannot store (e.g. an event UTF-8
                # cannot carry) must not cost the others theirs.
                for record in records:
                    self._dead_letter([record])
                return
            _log.error(
                f"dead-letter:{self.name}",
                "trackware: could not write %d dead letter(s) for %s",
                len(records),
                self.name,
                exc_info=True,
            )

    def _signal_failed(
        self, events: list[Event], reason: str, status: int | None, final: bool
    ) -> None:
        if signals.export_failed.receivers:
            signals.export_failed.send(
                self.tracker,
                destination=self.name,
                events=events,
                reason=_log.scrub(reason),
                status=status,
                final=final,
            )

    def _settled(self, items: t.Sequence[QueuedEvent]) -> None:
        self.queue.done(items)
        with self._progress:
            self._progress.notify_all()

    # --- flush and shutdown ----------------------------------------------------------
    def flush(self, deadline: float) -> bool:
        """Wait until everything queued before this call is settled."""
        target = self.queue.last_seq()
        if self.queue.pending_floor() > target:
            return True
        if in_worker_thread():
            return False
        if self._thread is None or not self._thread.is_alive():
            self._start()
            if self._thread is None:
                return self._drain_inline(deadline, target)
        with self._progress:
            self._flush_requests += 1
        self._wake.set()
        try:
            with self._progress:
                while self.queue.pending_floor() <= target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._progress.wait(min(remaining, 0.05))
                    self._wake.set()
            return True
        finally:
            with self._progress:
                self._flush_requests -= 1

    def _drain_inline(self, deadline: float, target: int | None = None) -> bool:
        """Deliver on the calling thread (no worker: e.g. at interpreter exit)."""
        token = suppressed.set(True)
        try:
            while time.monotonic() < deadline:
                if target is not None and self.queue.pending_floor() > target:
                    return True
                if not self._retries and not self.queue.depth():
                    return True
                if not self._step_inline(deadline):
                    return False
            return self.queue.pending_floor() > (target or self.queue.last_seq())
        finally:
            suppressed.reset(token)

    def _step_inline(self, deadline: float) -> bool:
        # No worker: waiting batches first, then the queue, one at a time.
        now = time.monotonic()
        if self._retries:
            retry = min(self._retries, key=_next_at)
            due = max(retry.next_at, self._hold_until())
            if due > deadline:
                return False
            if due > now:
                time.sleep(due - now)
            self.breaker.allow(time.monotonic())
            self._retry_batch(retry)
            return True
        if now < self._paused_until or not self.breaker.allow(now):
            until = max(self._paused_until, self._breaker_due())
            if until > deadline:
                return False
            time.sleep(max(0.0, until - now))
            return True
        items = self.queue.take(self.max_batch_size, self.max_batch_bytes)
        if items:
            self._attempt(_RetryBatch(items, now, self.batches))
        return True

    def request_stop(self, deadline: float) -> None:
        """Tell the worker to drain what is queued, promptly, then stop."""
        if not self._stopping:
            self._shutdown_base = self.dropped["shutdown"]
        if self._shutdown_deadline is None or deadline < self._shutdown_deadline:
            self._shutdown_deadline = deadline
            budget = max(0.0, deadline - time.monotonic())
            self._halt_at = deadline - min(_HALT_GRACE, budget / 4)
        self._stopping = True
        self._wake.set()

    def wait_stopped(self, until: float | None = None) -> bool:
        """Wait for the worker to end, at most until ``until`` (default: the
        moment shutdown tells it to stop sending). True if it has ended."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return thread is None
        thread.join(
            max(0.0, (self._halt_at if until is None else until) - time.monotonic())
        )
        return not thread.is_alive()

    def halt(self) -> None:
        """Shutdown, near its deadline, with the worker still busy: nothing
        new is sent. The exporter is told to stop (``halt()``: its waits end,
        it makes no further request; one under way may finish), the batch in
        hand settles with what was sent counted as sent, and the worker
        dead-letters the rest (reason ``shutdown``) and ends."""
        thread = self._thread
        if thread is None or not thread.is_alive() or self._halted:
            return
        self._halted = True
        halt = getattr(self.exporter, "halt", None)
        if halt is not None:
            try:
                halt()
            except Exception:
                _log.error(
                    f"halt:{self.name}",
                    "trackware: stopping %s failed",
                    self.name,
                    exc_info=True,
                )
        self._wake.set()

    def shutdown(self, deadline: float) -> bool:
        """Deliver what is queued until ``deadline``, then stop.

        Events still queued at the deadline are dead-lettered (reason
        ``shutdown``) so they can be replayed; none is lost silently.
        """
        self.request_stop(deadline)
        thread = self._thread
        ok = True
        if thread is not None and thread is not threading.current_thread():
            if not self.wait_stopped():
                self.halt()
            ok = self.wait_stopped(deadline)
        elif thread is None:
            ok = self._drain_inline(deadline)
        self._stopped = True
        if not ok or self.queue.depth() or self._retries:
            # The worker is stuck (e.g. in a slow request), the budget ran out,
            # or events are left: take over its batch and what it has not
            # started on, so nothing is left unaccounted for when the process
            # exits.
            self._abandon_pending()
            self._drain_to_dead_letter()
        lost = self.dropped["shutdown"] - self._shutdown_base
        return ok and lost == 0 and self.queue.depth() == 0

    def stats(self) -> dict[str, t.Any]:
        dropped = dict(self.dropped)
        if self.queue.dropped_full:
            dropped["queue_full"] = self.queue.dropped_full
        return {
            "enqueued": self.queue.enqueued,
            "sent": self.sent,
            "retried": self.retried,
            "rejected": self.rejected,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "dropped": dropped,
            "not_applicable": self.not_applicable + _count_value(self._declined),
            "filtered": _count_value(self._filtered),
            "queue_depth": self.queue.depth(),
            "queue_bytes": self.queue.nbytes(),
            "in_flight": self.queue.in_flight(),
            "circuit": self.breaker.state,
            "last_error": self.last_error,
            "batches": self.batches,
        }
