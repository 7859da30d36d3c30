"""The delivery loop of one destination: its worker thread, batching, attempts, retries.

A :class:`Destination` owns one exporter, its queue and a worker thread
(started on the first event). The worker takes batches, exports them, retries
what failed without holding up newer batches, splits a batch that keeps
failing while others get through, and drains or gives up at shutdown. What
came of each event is recorded by its :class:`~trackware._settle.Ledger`.
"""

from __future__ import annotations

import functools
import math
import threading
import time
import typing as t

from . import _lifecycle, _log, signals
from ._deadletter import DeadLetter
from ._event import Event
from ._queue import EventQueue
from ._retry import RetryPolicy
from ._settle import Batch, Ledger
from .exporters import Exporter, ExportResult
from .exporters._base import export_progress

__all__ = ["Destination", "in_worker_thread"]

_attempted = signals.export_attempted

_worker_threads: set[int] = set()
# A forked child's new threads get the ids of the parent's threads (glibc hands
# their stacks out again): none of them may pass for a worker thread.
_lifecycle.on_fork(_worker_threads.clear)


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


def _next_at(batch: Batch) -> float:
    return batch.next_at


#: At shutdown, a worker still busy this long before the deadline (or a
#: quarter of the budget, if less) is told to stop sending: a request under
#: way may finish, nothing new starts, and its batch settles exactly (sent
#: events counted as sent, the rest dead-lettered) before the deadline.
_HALT_GRACE = 0.2


class Destination:
    """Delivers one exporter's events in the background. Created by the Tracker.

    ``sender`` is what the delivery signals name as their sender (the tracker).
    """

    #: How many batches' worth of events may wait for a retry while newer
    #: batches are sent. Beyond it the worker takes nothing new until a
    #: waiting batch settles (memory stays bounded: the queue's limits plus
    #: this many batches).
    retry_batches: t.ClassVar[int] = 4

    def __init__(
        self,
        sender: object,
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
        self.sender = sender
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
        self._init_state()
        # A queue that gains events by itself (the spool adopting a dead
        # process's file) starts or wakes the worker through this.
        set_waker = getattr(queue, "set_waker", None)
        if set_waker is not None:
            set_waker(self._nudge)

    def _init_state(self) -> None:
        """Threads, locks, retry state and accounts: built anew after fork."""
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopping = False
        self._stopped = False
        self._flush_requests = 0
        self._shutdown_deadline: float | None = None
        self._halt_at = math.inf
        self._shutdown_base = 0
        self.ledger = ledger = Ledger(
            self.name, self.sender, self.queue, self.dead_letter, self.retry_policy
        )
        self.breaker = ledger.breaker
        # Called per event by the tracker's routing (bound once).
        self.count_not_applicable = ledger.count_not_applicable
        self.count_filtered = ledger.count_filtered

    def after_fork_in_child(self) -> None:
        """In a forked child: an empty queue, no thread, fresh accounts."""
        self.queue.reset_after_fork()
        self._init_state()
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
            self.ledger.queue_full(dropped)
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
            self.ledger.queue_full(dropped)
        self._nudge()

    def _nudge(self) -> None:
        """After a put: start the worker, or wake it when a batch is full."""
        if self._thread is None:
            self._start()
        elif self._depth() >= self.max_batch_size and not self._wake.is_set():
            self._wake.set()

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
            _worker_threads.discard(threading.get_ident())

    def _step(self) -> bool:
        """Do one unit of work or wait for some. Returns False to stop."""
        ledger = self.ledger
        if ledger.halted:
            # Shutdown told the exporter to stop sending: nothing more goes
            # out; what is left goes to the dead letter.
            ledger.give_up_all("stopped sending at shutdown")
            return False
        now = time.monotonic()
        hold = self._hold_until()
        wait = math.inf
        # A snapshot: shutdown() may give the waiting batches up meanwhile.
        retries = list(ledger.retries)
        if retries:
            if self._stopping:
                for batch in retries:
                    if not self._deadline_allows(max(batch.next_at, hold)):
                        ledger.abandon(batch, "shutdown before retry was due")
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
            until = ledger.paused_until if now < ledger.paused_until else 0.0
            if not until and not self.breaker.allow(now):
                until = self.breaker.open_until
            if until:
                if self._stopping and not self._deadline_allows(until):
                    ledger.give_up_queued()
                    return True
                wait = min(wait, until - now)
            elif ledger.waiting() >= self.retry_batches * self.max_batch_size:
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
                    self._attempt(Batch(items, now, ledger.batches))
                return True
            else:
                wait = min(wait, max(0.0, self.flush_interval - self._head_age()))
        elif not retries:
            if self._stopping:
                return False
            wait = self.flush_interval if self.flush_interval > 0 else 1.0
        self._wait(wait)
        return True

    def _head_age(self) -> float:
        # Queue entries carry the event's wall-clock time; interval batching
        # only needs approximate ages.
        oldest = self.queue.oldest_time()
        if oldest is None:
            return self.flush_interval
        return time.time() - oldest

    def _hold_until(self) -> float:
        """Nothing is sent before this (open circuit, vendor-requested pause)."""
        return max(self.breaker.blocked_until(), self.ledger.paused_until)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(min(seconds, 60.0))
        self._wake.clear()

    def _deadline_allows(self, when: float) -> bool:
        deadline = self._shutdown_deadline
        return deadline is None or when <= deadline

    def _retry_batch(self, batch: Batch) -> None:
        """A waiting batch is due: attempt it, or split it in two."""
        ledger = self.ledger
        if not batch.split and len(batch.items) > 1 and ledger.batches > batch.mark:
            # Other batches were delivered since this one last failed: the
            # vendor is up and something in this batch is what it refuses
            # (e.g. a 500 caused by one event). Retry it in halves, both due
            # now, so its good events get through and the failure narrows
            # down to the event causing it. Halves keep the batch's attempt
            # count and first-attempt time: the poison event still gives up
            # after the policy's attempts.
            mid = len(batch.items) // 2
            halves = [
                batch.half(batch.items[:mid], ledger.batches),
                batch.half(batch.items[mid:], ledger.batches),
            ]
            with ledger.lock:
                if batch.abandoned or batch not in ledger.retries:
                    return
                index = ledger.retries.index(batch)
                ledger.retries[index : index + 1] = halves
            return
        self._attempt(batch)

    def _attempt(self, batch: Batch) -> None:
        """Export ``batch`` once; its ledger settles the outcome."""
        ledger = self.ledger
        if not ledger.begin(batch):
            return
        events = [item[1] for item in batch.items]
        scope = export_progress
        scope.report = functools.partial(ledger.report, batch)
        # Timed only while someone listens (trackware.metrics).
        started = time.monotonic() if _attempted.receivers else None
        try:
            result = self._export(batch, events)
        finally:
            scope.report = None
        if started is not None:
            # Before the outcome settles: a flush() that returns has seen it.
            _attempted.send(
                self.sender,
                destination=self.name,
                events=events,
                duration=time.monotonic() - started,
            )
        ledger.finish(batch, result)

    def _export(self, batch: Batch, events: list[Event]) -> ExportResult:
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
        self, batch: Batch, events: list[Event], exc: Exception
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
            if batch.abandoned or self.ledger.halted:
                result.add_retry(half, f"exporter raised {_exception_text(exc)}")
                continue
            try:
                outcome = self.exporter.export(half)
            except Exception as error:
                raised.append((half, error))
                continue
            self.ledger.report(batch, outcome)
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
        progress = self.ledger.progress
        with progress:
            self._flush_requests += 1
        self._wake.set()
        try:
            with progress:
                while self.queue.pending_floor() <= target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    progress.wait(min(remaining, 0.05))
                    self._wake.set()
            return True
        finally:
            with progress:
                self._flush_requests -= 1

    def _drain_inline(self, deadline: float, target: int | None = None) -> bool:
        """Deliver on the calling thread (no worker: e.g. at interpreter exit)."""
        while time.monotonic() < deadline:
            if target is not None and self.queue.pending_floor() > target:
                return True
            if not self.ledger.retries and not self.queue.depth():
                return True
            if not self._step_inline(deadline):
                return False
        return self.queue.pending_floor() > (target or self.queue.last_seq())

    def _step_inline(self, deadline: float) -> bool:
        # No worker: waiting batches first, then the queue, one at a time.
        now = time.monotonic()
        retries = self.ledger.retries
        if retries:
            retry = min(retries, key=_next_at)
            due = max(retry.next_at, self._hold_until())
            if due > deadline:
                return False
            if due > now:
                time.sleep(due - now)
            self.breaker.allow(time.monotonic())
            self._retry_batch(retry)
            return True
        paused_until = self.ledger.paused_until
        if now < paused_until or not self.breaker.allow(now):
            until = max(paused_until, self.breaker.blocked_until())
            if until > deadline:
                return False
            time.sleep(max(0.0, until - now))
            return True
        items = self.queue.take(self.max_batch_size, self.max_batch_bytes)
        if items:
            self._attempt(Batch(items, now, self.ledger.batches))
        return True

    def request_stop(self, deadline: float) -> None:
        """Tell the worker to drain what is queued, promptly, then stop."""
        if not self._stopping:
            self._shutdown_base = self.ledger.dropped["shutdown"]
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
        if thread is None or not thread.is_alive() or self.ledger.halted:
            return
        self.ledger.halted = True
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
        ``shutdown``) so they can be replayed; none is lost silently. A
        durable queue (the spool) keeps them instead, for the next process.
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
        ledger = self.ledger
        if not ok or self.queue.depth() or ledger.retries:
            # The worker is stuck (e.g. in a slow request), the budget ran out,
            # or events are left: take over its batch and what it has not
            # started on, so nothing is left unaccounted for when the process
            # exits.
            ledger.abandon_pending()
            ledger.give_up_queued()
        lost = ledger.dropped["shutdown"] - self._shutdown_base
        return ok and lost == 0 and self.queue.depth() == 0

    def stats(self) -> dict[str, t.Any]:
        """The figures of ``stats()['destinations'][name]``."""
        return self.ledger.stats()
