"""The Ledger: what an attempt's ExportResult does to the counters, the retry
state, the dead letter and the queue (no thread, no vendor)."""

from __future__ import annotations

import time
import typing as t

import pytest

from trackware import Event, MemoryDeadLetter, MemoryQueue, RetryPolicy
from trackware._deadletter import DeadLetterRecord
from trackware._settle import Batch, Ledger
from trackware.exporters import ExportResult

POLICY = RetryPolicy(max_attempts=3, failure_threshold=1, open_for=5.0)


class Books(t.NamedTuple):
    ledger: Ledger
    queue: MemoryQueue
    dead: MemoryDeadLetter


def books(policy: RetryPolicy = POLICY) -> Books:
    queue = MemoryQueue()
    dead = MemoryDeadLetter()
    return Books(Ledger("dest", object(), queue, dead, policy), queue, dead)


def attempt(b: Books, n: int = 3) -> tuple[Batch, list[Event]]:
    """Queue ``n`` events, take them as a batch and begin its attempt."""
    events = [Event(f"e{i}") for i in range(n)]
    for ev in events:
        b.queue.put(ev)
    batch = Batch(b.queue.take(n, 1 << 30), time.monotonic(), b.ledger.batches)
    assert b.ledger.begin(batch)
    assert b.ledger.current is batch
    return batch, events


def test_a_delivered_batch_is_counted_and_settled() -> None:
    b = books()
    batch, events = attempt(b)
    b.ledger.finish(batch, ExportResult.success(events))
    stats = b.ledger.stats()
    assert (stats["sent"], stats["batches"], stats["retried"]) == (3, 1, 0)
    assert stats["circuit"] == "closed"
    assert b.ledger.current is None
    assert b.queue.in_flight() == 0
    assert b.queue.pending_floor() > b.queue.last_seq()  # flush would return


def test_a_mixed_result_counts_each_part_and_keeps_the_rest_for_a_retry() -> None:
    b = books()
    batch, (sent, refused, failed) = attempt(b)
    result = ExportResult.success([sent])
    result.reject(refused, "HTTP 400: bad field", status=400, body="{}")
    result.add_retry([failed], "HTTP 503", status=503)
    b.ledger.finish(batch, result)
    stats = b.ledger.stats()
    assert (stats["sent"], stats["rejected"], stats["retried"]) == (1, 1, 1)
    assert stats["dead_lettered"] == 1
    (record,) = b.dead.records
    assert (record.event, record.reason, record.status) == (
        refused,
        "HTTP 400: bad field",
        400,
    )
    # The undecided event waits in its batch, due later; some were sent, so
    # the breaker (threshold 1) stays closed.
    assert b.ledger.retries == [batch]
    assert [ev for _, ev in batch.items] == [failed]
    assert batch.next_at > 0
    assert stats["circuit"] == "closed"
    assert stats["last_error"] == "HTTP 503"
    assert b.queue.in_flight() == 1  # only the waiting event is pending


def test_no_outcome_is_a_failure_and_opens_the_breaker() -> None:
    b = books()
    batch, _ = attempt(b)
    b.ledger.finish(batch, ExportResult())  # no outcome for any event
    assert b.ledger.stats()["last_error"] == "exporter returned no outcome"
    assert b.ledger.breaker.state == "open"
    assert b.ledger.retries == [batch]


def test_a_narrowed_half_does_not_count_towards_the_breaker() -> None:
    b = books()
    batch, events = attempt(b, 1)
    batch.narrowed = True
    b.ledger.finish(batch, ExportResult.failure(events, "HTTP 500"))
    assert b.ledger.breaker.state == "closed"
    assert b.ledger.breaker.failures == 0


def test_exhausted_attempts_give_the_batch_up_as_failed() -> None:
    b = books(RetryPolicy(max_attempts=1))
    batch, events = attempt(b, 2)
    b.ledger.finish(batch, ExportResult.failure(events, "HTTP 502", status=502))
    stats = b.ledger.stats()
    assert (stats["failed"], stats["retried"], stats["dead_lettered"]) == (2, 0, 2)
    assert b.ledger.retries == []
    assert [r.reason for r in b.dead.records] == ["retries_exhausted: HTTP 502"] * 2
    assert [r.status for r in b.dead.records] == [502, 502]
    assert [r.attempts for r in b.dead.records] == [1, 1]
    assert b.queue.in_flight() == 0


def test_after_halt_a_failure_is_given_up_for_shutdown() -> None:
    b = books()
    batch, events = attempt(b, 2)
    b.ledger.halted = True
    b.ledger.finish(batch, ExportResult.failure(events, "timeout"))
    assert b.ledger.stats()["dropped"] == {"shutdown": 2}
    assert [r.reason for r in b.dead.records] == [
        "shutdown: stopped sending at shutdown"
    ] * 2


def test_retry_after_pauses_the_destination_capped_by_the_policy() -> None:
    b = books(RetryPolicy(max_retry_after=60.0))
    batch, events = attempt(b, 1)
    before = time.monotonic()
    b.ledger.finish(batch, ExportResult.failure(events, "429", retry_after=3600.0))
    after = time.monotonic()
    assert before + 60.0 <= b.ledger.paused_until <= after + 60.0
    assert before + 60.0 <= batch.next_at <= after + 60.0


def test_progress_reports_let_shutdown_count_what_was_already_sent() -> None:
    b = books()
    batch, (first, second, third) = attempt(b)
    assert b.ledger.report(batch, ExportResult.success([first])) is True
    b.ledger.abandon_pending()  # shutdown gives the batch up mid-export
    stats = b.ledger.stats()
    assert stats["sent"] == 1
    assert stats["dropped"] == {"shutdown": 2}
    assert [r.event for r in b.dead.records] == [second, third]
    # The export's own result comes too late to count anything twice.
    assert b.ledger.report(batch, ExportResult.success([second])) is False
    b.ledger.finish(batch, ExportResult.success([first, second, third]))
    assert b.ledger.stats()["sent"] == 1
    assert b.queue.in_flight() == 0


def test_begin_takes_a_batch_off_the_waiting_list_unless_abandoned() -> None:
    b = books()
    batch, events = attempt(b, 2)
    b.ledger.finish(batch, ExportResult.failure(events, "HTTP 503"))
    assert b.ledger.retries == [batch]
    assert b.ledger.begin(batch)
    assert b.ledger.retries == []
    assert batch.attempts == 2
    b.ledger.finish(batch, ExportResult.failure(events, "HTTP 503"))
    b.ledger.abandon(batch, "shutdown before retry was due")
    assert not b.ledger.begin(batch)
    assert b.ledger.stats()["dropped"] == {"shutdown": 2}


def test_one_record_the_dead_letter_cannot_store_costs_only_itself() -> None:
    class Picky(MemoryDeadLetter):
        def write(self, records: t.Sequence[DeadLetterRecord], /) -> None:
            if any(r.event.name == "poison" for r in records):
                raise ValueError("cannot store")
            super().write(records)

    dead = Picky()
    queue = MemoryQueue()
    ledger = Ledger("dest", object(), queue, dead, POLICY)
    records = [DeadLetterRecord("dest", "x", Event(n)) for n in ("a", "poison", "b")]
    ledger.write_dead_letters(records)
    assert [r.event.name for r in dead.records] == ["a", "b"]
    assert ledger.dead_lettered == 2


@pytest.mark.parametrize("count", [0, 3])
def test_track_time_counts_show_in_the_stats(count: int) -> None:
    b = books()
    for _ in range(count):
        b.ledger.count_not_applicable()
        b.ledger.count_filtered()
    stats = b.ledger.stats()
    assert (stats["not_applicable"], stats["filtered"]) == (count, count)
