"""Outcome accounting of one destination: what became of each event.

A :class:`Ledger` holds a destination's counters, its retry state (the
batches waiting for a retry, the one being exported, the circuit breaker, a
vendor's pause) and records every outcome: sent, skipped, rejected, retried
or given up (dead-lettered and announced), then settled in the queue so that
``flush()`` sees it. The worker (:mod:`trackware._worker`) decides when to
attempt what; the ledger records what came of it.
"""

from __future__ import annotations

import collections
import itertools
import operator
import threading
import time
import typing as t

from . import _log, signals
from ._deadletter import DeadLetter, DeadLetterRecord
from ._event import Event
from ._queue import EventQueue, QueuedEvent
from ._retry import CircuitBreaker, RetryPolicy
from .exporters import ExportResult

__all__ = ["Batch", "Decided", "Ledger", "count_value"]


def count_value(counter: itertools.count[int]) -> int:
    """The next value an ``itertools.count`` would return, without consuming it."""
    # repr is "count(N)"; reading it is the one way that is neither deprecated
    # nor racy (next() on a count is atomic in CPython, which is why we use it).
    return int(repr(counter)[6:-1])


class Batch:
    """Events taken from the queue together, and their retry state."""

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
        #: Ledger.batches when this batch's last attempt began: a higher
        #: count later means other batches got through since it failed.
        self.mark = mark
        #: A half of a split batch that has not been attempted yet (its mark
        #: is the split's, so a sibling's success counts as evidence).
        self.split = False
        #: Split because other batches got through: its failures say something
        #: about its content, not about the vendor (the breaker ignores them).
        self.narrowed = False
        #: What the exporter reported as decided during the export under way
        #: (see trackware.exporters.report_progress), for a shutdown that gives
        #: the batch up before export() returns.
        self.partial: ExportResult | None = None

    def half(self, items: list[QueuedEvent], mark: int) -> Batch:
        """One half of this batch, to be retried on its own."""
        child = Batch(items, self.first_attempt, mark)
        child.attempts = self.attempts
        child.result = self.result
        child.next_at = self.next_at
        child.split = True
        child.narrowed = True
        return child


class Decided(t.NamedTuple):
    """What :meth:`Ledger.account` decided of a batch."""

    #: The items decided (sent, skipped or rejected), for :meth:`Ledger.settled`.
    settled: list[QueuedEvent]
    #: Whether any event was sent (the vendor is up).
    any_sent: bool


class Ledger:
    """The accounts and retry state of one destination.

    Args:
        name: the destination's name (in log lines and signals).
        sender: the sender the delivery signals name (the tracker).
        queue: the destination's queue (items are settled there).
        dead_letter: where given-up and rejected events go, if anywhere.
        policy: when to retry and when to give up.
    """

    def __init__(
        self,
        name: str,
        sender: object,
        queue: EventQueue,
        dead_letter: DeadLetter | None,
        policy: RetryPolicy,
    ) -> None:
        self.name = name
        self.sender = sender
        self.queue = queue
        self.dead_letter = dead_letter
        self.policy = policy
        self.breaker = CircuitBreaker(policy)
        #: A vendor's Retry-After / RateLimit-Reset pauses the whole
        #: destination (nothing is sent before this), not only its batch.
        self.paused_until = 0.0
        #: Shutdown told the exporter to stop sending: what fails is given up.
        self.halted = False
        #: Guards ``retries``, ``current`` and each batch's ``abandoned`` /
        #: ``partial`` between the worker and shutdown().
        self.lock = threading.Lock()
        #: Batches waiting for their retry.
        self.retries: list[Batch] = []
        #: The batch being exported right now.
        self.current: Batch | None = None
        #: Notified whenever items settle (flush() waits on it).
        self.progress = threading.Condition(threading.Lock())
        self.sent = 0
        self.retried = 0
        self.rejected = 0
        self.failed = 0
        self.dead_lettered = 0
        self.not_applicable = 0
        self.batches = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        # Events the exporter's applies() declined, or the destination's filter
        # left out (or whose check raised), at track() time: counted on the
        # caller's thread with atomic itertools.counts (no lock).
        self._declined = itertools.count()
        self.count_not_applicable = self._declined.__next__
        self._filtered = itertools.count()
        self.count_filtered = self._filtered.__next__

    def waiting(self) -> int:
        """Events waiting for a retry."""
        return sum(len(b.items) for b in self.retries)

    # --- application side ------------------------------------------------------------
    def queue_full(self, dropped: list[Event]) -> None:
        """The queue's full-queue policy dropped ``dropped``: warn and announce."""
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
                    self.sender,
                    event=ev,
                    reason="queue_full",
                    destination=self.name,
                    detail=None,
                )

    # --- an attempt ------------------------------------------------------------------
    def begin(self, batch: Batch) -> bool:
        """``batch`` is about to be exported (False: shutdown gave it up)."""
        with self.lock:
            if batch.abandoned:
                return False
            self.current = batch
            if batch in self.retries:
                self.retries.remove(batch)
        if batch.split:
            batch.split = False  # keeps the split's mark for this attempt
        else:
            batch.mark = self.batches
        batch.attempts += 1
        batch.partial = None
        return True

    def report(self, batch: Batch, outcome: ExportResult) -> bool:
        """``trackware.exporters.report_progress`` for ``batch``: keep what is
        decided, say whether to go on."""
        with self.lock:
            if batch.abandoned:
                return False
            if outcome.sent or outcome.rejected or outcome.skipped:
                partial = batch.partial
                if partial is None:
                    partial = batch.partial = ExportResult()
                partial.sent.extend(outcome.sent)
                partial.rejected.extend(outcome.rejected)
                partial.skipped.extend(outcome.skipped)
            return not self.halted

    def finish(self, batch: Batch, result: ExportResult) -> None:
        """The export of ``batch`` returned ``result``: settle it."""
        with self.lock:
            self.current = None
            batch.partial = None  # the result has the final word
            if batch.abandoned:
                # shutdown() already dead-lettered and counted this batch.
                return
            items = batch.items
            if (
                len(result.sent) == len(items)
                and not result.retry
                and not result.rejected
                and not result.skipped
                and all(map(operator.is_, result.sent, [i[1] for i in items]))
            ):
                # The common case: the whole batch was delivered, in order.
                self.breaker.record_success()
                self.count_sent(items)
                self.settled(items)
                return
            self._settle_mixed(batch, result)

    def _settle_mixed(self, batch: Batch, result: ExportResult) -> None:
        """Account for what ``result`` decided; schedule the undecided rest
        for a retry, or give it up (attempts or time exhausted, or halted)."""
        now = time.monotonic()
        decided = self.account(batch, result)
        # Whatever the exporter did not account for is retried with the rest.
        retry_items = batch.items
        if retry_items:
            if not result.retry:
                result.error = result.error or "exporter returned no outcome"
            if decided.any_sent:
                self.breaker.record_success()
            elif not batch.narrowed:
                # (A narrowed batch fails because of what it holds: one poison
                # event retried alone must not open the circuit for the rest.)
                self.breaker.record_failure(now)
            error = self.last_error = _log.scrub(result.error or "retryable failure")
            policy = self.policy
            exhausted = (
                policy.max_attempts is not None
                and batch.attempts >= policy.max_attempts
            ) or (now - batch.first_attempt >= policy.max_retry_time)
            batch.result = result
            if self.halted:
                self.give_up(batch, "shutdown", "stopped sending at shutdown")
            elif exhausted:
                self.give_up(batch, "retries_exhausted", error)
            else:
                batch.next_at = now + policy.backoff(batch.attempts, result.retry_after)
                if result.retry_after is not None:
                    # The vendor asked for a pause: no other batch goes out
                    # before it is over either.
                    self.paused_until = max(
                        self.paused_until,
                        now + min(result.retry_after, policy.max_retry_after),
                    )
                self._will_retry(batch, error, result.status)
        else:
            self.breaker.record_success()
        self.settled(decided.settled)

    # --- outcomes --------------------------------------------------------------------

    def count_sent(self, items: list[QueuedEvent]) -> None:
        """Count a delivered batch (non-empty) and announce it."""
        self.sent += len(items)
        self.batches += 1
        if signals.batch_exported.receivers:
            signals.batch_exported.send(
                self.sender, destination=self.name, events=[i[1] for i in items]
            )

    def account(self, batch: Batch, result: ExportResult) -> Decided:
        """Count what ``result`` decided for ``batch`` (sent, skipped,
        rejected: dead-lettered). ``batch.items`` keeps the undecided rest, in
        order."""
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
            self.count_sent(sent)
        if rejections:
            self.rejected += len(rejections)
            self.write_dead_letters(
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
            self.signal_failed(
                [r.event for r in rejections], first.reason, first.status, True
            )
        batch.items = list(by_id.values())
        return Decided(settled, bool(sent))

    def _will_retry(self, batch: Batch, error: str, status: int | None) -> None:
        """``batch`` (its ``next_at`` set) waits for its retry: count it, keep
        it, warn and announce (``error``: why it failed)."""
        items = batch.items
        self.retried += len(items)
        self.retries.append(batch)
        _log.warn(
            f"retry:{self.name}",
            "trackware: %s: %s; %d event(s) will be retried (attempt %d)",
            self.name,
            error,
            len(items),
            batch.attempts,
        )
        self.signal_failed([i[1] for i in items], error, status, False)

    def give_up(self, batch: Batch, reason: str, detail: str | None) -> None:
        """Dead-letter what ``batch`` holds, counted under ``reason``
        (``retries_exhausted`` counts as failed, any other as dropped)."""
        if batch in self.retries:
            self.retries.remove(batch)
        result = batch.result
        events = [item[1] for item in batch.items]
        if not events:
            return
        if reason == "retries_exhausted":
            self.failed += len(events)
        else:
            self.dropped[reason] += len(events)
        text = f"{reason}: {detail}" if detail else reason
        self.write_dead_letters(
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
        self.signal_failed(events, text, result.status if result else None, True)
        self.settled(batch.items)

    # --- giving up at shutdown -------------------------------------------------------
    def abandon(self, batch: Batch, detail: str) -> None:
        """Give ``batch`` up for shutdown, once, whichever thread gets there first."""
        with self.lock:
            if batch.abandoned:
                return
            batch.abandoned = True
            self.give_up(batch, "shutdown", detail)

    def abandon_pending(self) -> None:
        """From shutdown(): give up the batches the worker holds, if any.

        Of a batch being exported right now, the events the exporter already
        reported as sent (or rejected) are counted as such; only the others
        go to the dead letter.
        """
        with self.lock:
            current = self.current
            if current is not None and not current.abandoned:
                current.abandoned = True
                if current.partial is not None:
                    self.settled(self.account(current, current.partial).settled)
                if current.items:
                    self.give_up(
                        current,
                        "shutdown",
                        "in flight when the shutdown budget ran out (it may have "
                        "been delivered)",
                    )
            for batch in list(self.retries):
                if not batch.abandoned:
                    batch.abandoned = True
                    self.give_up(batch, "shutdown", "retry pending at shutdown")

    def give_up_all(self, detail: str) -> None:
        """Dead-letter every waiting batch and everything queued (shutdown)."""
        for batch in list(self.retries):
            self.abandon(batch, detail)
        self.give_up_queued(detail)

    def give_up_queued(
        self, detail: str = "destination unavailable at shutdown"
    ) -> None:
        """Dead-letter everything still queued (shutdown), unless the queue is
        durable (the spool: its file keeps the events, and the next process on
        the folder, or a live sibling, adopts and delivers them)."""
        if getattr(self.queue, "durable", False):
            return
        items = self.queue.take(1 << 30, 1 << 62)
        if items:
            self.give_up(Batch(items, time.monotonic()), "shutdown", detail)

    # --- records and announcements ---------------------------------------------------
    def write_dead_letters(self, records: list[DeadLetterRecord]) -> None:
        """Keep ``records`` in the dead letter, if there is one (never raises)."""
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
                    self.write_dead_letters([record])
                return
            _log.error(
                f"dead-letter:{self.name}",
                "trackware: could not write %d dead letter(s) for %s",
                len(records),
                self.name,
                exc_info=True,
            )

    def signal_failed(
        self, events: list[Event], reason: str, status: int | None, final: bool
    ) -> None:
        """Send ``export_failed`` (``final``: the events are given up)."""
        if signals.export_failed.receivers:
            signals.export_failed.send(
                self.sender,
                destination=self.name,
                events=events,
                reason=_log.scrub(reason),
                status=status,
                final=final,
            )

    def settled(self, items: t.Sequence[QueuedEvent]) -> None:
        """Mark ``items`` settled in the queue, and wake flush() waiters."""
        self.queue.done(items)
        with self.progress:
            self.progress.notify_all()

    def stats(self) -> dict[str, t.Any]:
        """The figures of ``stats()['destinations'][name]``."""
        queue = self.queue
        dropped = dict(self.dropped)
        if queue.dropped_full:
            dropped["queue_full"] = queue.dropped_full
        # A queue that drops for reasons of its own (Redis Streams trimming
        # a stream, say) names them.
        more = getattr(queue, "dropped_by_reason", None)
        if more is not None:
            for reason, count in more().items():
                dropped[reason] = dropped.get(reason, 0) + count
        return {
            "enqueued": queue.enqueued,
            "sent": self.sent,
            "retried": self.retried,
            "rejected": self.rejected,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "dropped": dropped,
            "not_applicable": self.not_applicable + count_value(self._declined),
            "filtered": count_value(self._filtered),
            "queue_depth": queue.depth(),
            "queue_bytes": queue.nbytes(),
            "in_flight": queue.in_flight(),
            "circuit": self.breaker.state,
            "last_error": self.last_error,
            "batches": self.batches,
        }
