"""A destination: one exporter, its queue, its worker thread, its accounting.

Destinations are isolated from each other: each has its own bounded queue, its
own worker thread (started lazily on the first event), its own retry state and
circuit breaker. A vendor that hangs, rate-limits or is down delays only its
own events.
"""

from __future__ import annotations

import collections
import itertools
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
from .exporters._base import Exporter, ExportResult

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


class _RetryBatch:
    __slots__ = ("abandoned", "attempts", "first_attempt", "items", "next_at", "result")

    def __init__(self, items: list[QueuedEvent], first_attempt: float) -> None:
        self.abandoned = False  # given up by shutdown() while the worker had it
        self.items = items
        self.attempts = 0
        self.first_attempt = first_attempt
        self.next_at = 0.0
        self.result: ExportResult | None = None


class Destination:
    """Delivers one exporter's events in the background. Created by the Tracker."""

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
        self._retry: _RetryBatch | None = None
        self._current: _RetryBatch | None = None  # being exported right now
        self._settle_lock = threading.Lock()
        self._shutdown_deadline: float | None = None
        self._shutdown_base = 0
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
        now = time.monotonic()
        retry = self._retry
        if retry is not None:
            due = max(retry.next_at, self._breaker_due())
            if self._stopping and not self._deadline_allows(due):
                self._abandon(retry, "shutdown before retry was due")
                return True
            if now >= due and self.breaker.allow(now):
                self._attempt(retry)
                return True
            self._wait(due - now)
            return True
        if self.queue.depth():
            if not self.breaker.allow(now):
                if self._stopping and not self._deadline_allows(
                    self.breaker.open_until
                ):
                    self._drain_to_dead_letter()
                    return True
                self._wait(self.breaker.open_until - now)
                return True
            if (
                self._stopping
                or self._flush_requests
                or self.queue.depth() >= self.max_batch_size
                or self.queue.nbytes() >= self.max_batch_bytes
                or self._head_age() >= self.flush_interval
            ):
                items = self.queue.take(self.max_batch_size, self.max_batch_bytes)
                if items:
                    self._attempt(_RetryBatch(items, now))
                return True
            self._wait(max(0.0, self.flush_interval - self._head_age()))
            return True
        if self._stopping:
            return False
        self._wait(self.flush_interval if self.flush_interval > 0 else 1.0)
        return True

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

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(min(seconds, 60.0))
        self._wake.clear()

    def _deadline_allows(self, when: float) -> bool:
        deadline = self._shutdown_deadline
        return deadline is None or when <= deadline

    def _attempt(self, batch: _RetryBatch) -> None:
        with self._settle_lock:
            if batch.abandoned:
                return
            self._current = batch
        events = [item[1] for item in batch.items]
        batch.attempts += 1
        try:
            result = self.exporter.export(events)
        except Exception as exc:  # exporters should not raise; be safe if they do
            _log.error(
                f"export-raised:{self.name}",
                "trackware: exporter %r raised %s; the batch will be retried",
                self.name,
                type(exc).__name__,
                exc_info=True,
            )
            result = ExportResult.failure(events, f"{type(exc).__name__}: {exc}")
        with self._settle_lock:
            self._current = None
            if batch.abandoned:
                # shutdown() already dead-lettered and counted this batch.
                return
            self._settle(batch, result)

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
        self._retry = None
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

    def _settle_mixed(self, batch: _RetryBatch, result: ExportResult) -> None:
        now = time.monotonic()
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
        rejected_items = [(r, by_id.pop(id(r.event), None)) for r in result.rejected]
        self.not_applicable += len(skipped)
        settled.extend(sent)
        settled.extend(skipped)
        if sent:
            self._count_sent(sent)
        if rejected_items:
            rejections = [r for r, _ in rejected_items]
            self.rejected += len(rejections)
            self._dead_letter(
                [
                    DeadLetterRecord(
                        self.name, r.reason, r.event, r.status, r.body, batch.attempts
                    )
                    for r in rejections
                ]
            )
            settled.extend(item for _, item in rejected_items if item is not None)
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
        # Whatever the exporter did not account for is retried with the rest.
        retry_items = take(result.retry)
        leftover = list(by_id.values())
        retry_items += leftover
        if leftover and not result.retry:
            result.error = result.error or "exporter returned no outcome"
        if retry_items:
            if sent:
                self.breaker.record_success()
            else:
                self.breaker.record_failure(now)
            self.last_error = _log.scrub(result.error or "retryable failure")
            policy = self.retry_policy
            exhausted = (
                policy.max_attempts is not None
                and batch.attempts >= policy.max_attempts
            ) or (now - batch.first_attempt >= policy.max_retry_time)
            batch.items = retry_items
            batch.result = result
            if exhausted:
                self._give_up(batch, "retries_exhausted", self.last_error)
            else:
                self.retried += len(retry_items)
                batch.next_at = now + policy.backoff(batch.attempts, result.retry_after)
                self._retry = batch
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
            self._retry = None
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
        """From shutdown(): give up the batch the worker holds, if any."""
        with self._settle_lock:
            batch = self._current or self._retry
            if batch is None or batch.abandoned:
                return
            batch.abandoned = True
            detail = (
                "in flight when the shutdown budget ran out (it may have been "
                "delivered)"
                if batch is self._current
                else "retry pending at shutdown"
            )
            self._give_up(batch, "shutdown", detail)

    def _give_up(self, batch: _RetryBatch, reason: str, detail: str | None) -> None:
        result = batch.result
        events = [item[1] for item in batch.items]
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
        self._retry = None
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
        except Exception:
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
                if self._retry is None and not self.queue.depth():
                    return True
                if not self._step_inline(deadline):
                    return False
            return self.queue.pending_floor() > (target or self.queue.last_seq())
        finally:
            suppressed.reset(token)

    def _step_inline(self, deadline: float) -> bool:
        now = time.monotonic()
        retry = self._retry
        if retry is not None:
            due = max(retry.next_at, self._breaker_due())
            if due > deadline:
                return False
            if due > now:
                time.sleep(due - now)
            self.breaker.allow(time.monotonic())
            self._attempt(retry)
            return True
        if not self.breaker.allow(now):
            if self.breaker.open_until > deadline:
                return False
            time.sleep(max(0.0, self.breaker.open_until - now))
            return True
        items = self.queue.take(self.max_batch_size, self.max_batch_bytes)
        if items:
            self._attempt(_RetryBatch(items, now))
        return True

    def request_stop(self, deadline: float) -> None:
        """Tell the worker to drain what is queued, promptly, then stop."""
        if not self._stopping:
            self._shutdown_base = self.dropped["shutdown"]
        if self._shutdown_deadline is None or deadline < self._shutdown_deadline:
            self._shutdown_deadline = deadline
        self._stopping = True
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
            thread.join(max(0.0, deadline - time.monotonic()))
            ok = not thread.is_alive()
        elif thread is None:
            ok = self._drain_inline(deadline)
        self._stopped = True
        if not ok or self.queue.depth() or self._retry is not None:
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
