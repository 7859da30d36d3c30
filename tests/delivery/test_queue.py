"""MemoryQueue: count and byte bounds, full-queue policies, order, sequence numbers."""

from __future__ import annotations

import threading
import time

import pytest

from trackware import ConfigurationError, Event, EventQueue, MemoryQueue
from trackware._queue import DEFAULT_MAX_BYTES


def events(n: int, prefix: str = "e") -> list[Event]:
    return [Event(f"{prefix}{i}", {"i": i}) for i in range(n)]


def names(items: list[Event] | None) -> list[str]:
    return [e.name for e in items or []]


def test_memory_queue_is_an_event_queue() -> None:
    assert isinstance(MemoryQueue(), EventQueue)


def test_take_returns_events_in_order_with_consecutive_sequence_numbers() -> None:
    q = MemoryQueue()
    evs = events(5)
    for ev in evs:
        assert q.put(ev) is None
    assert q.depth() == 5
    assert q.nbytes() == sum(e.size for e in evs)
    items = q.take(3, 1 << 30)
    assert [seq for seq, _ in items] == [1, 2, 3]
    assert [ev for _, ev in items] == evs[:3]
    rest = q.take(10, 1 << 30)
    assert [seq for seq, _ in rest] == [4, 5]
    assert [ev for _, ev in rest] == evs[3:]
    assert q.depth() == 0
    assert q.nbytes() == 0
    assert q.in_flight() == 5


def test_take_respects_the_byte_limit_but_always_takes_one() -> None:
    q = MemoryQueue()
    evs = events(4)
    for ev in evs:
        q.put(ev)
    two = evs[0].size + evs[1].size
    assert [ev for _, ev in q.take(10, two)] == evs[:2]
    # A limit below one event's size still takes the head event, alone.
    assert [ev for _, ev in q.take(10, 1)] == evs[2:3]
    assert q.nbytes() == evs[3].size


def test_drop_oldest_keeps_the_newest_events_and_counts_the_drops() -> None:
    q = MemoryQueue(max_events=3, policy="drop_oldest")
    evs = events(5)
    dropped: list[Event] = []
    for ev in evs:
        dropped += q.put(ev) or []
    assert dropped == evs[:2]
    assert q.dropped_full == 2
    assert q.enqueued == 5
    assert q.depth() == 3
    assert [ev for _, ev in q.take(10, 1 << 30)] == evs[2:]


def test_drop_newest_keeps_the_oldest_events_and_counts_the_drops() -> None:
    q = MemoryQueue(max_events=3, policy="drop_newest")
    evs = events(5)
    assert [q.put(ev) for ev in evs[:3]] == [None, None, None]
    assert q.put(evs[3]) == [evs[3]]
    assert q.put(evs[4]) == [evs[4]]
    assert q.dropped_full == 2
    assert q.enqueued == 5
    assert [ev for _, ev in q.take(10, 1 << 30)] == evs[:3]


def test_the_byte_bound_drops_oldest_until_the_new_event_fits() -> None:
    evs = events(3)
    limit = evs[0].size + evs[1].size
    q = MemoryQueue(max_events=100, max_bytes=limit, policy="drop_oldest")
    q.put(evs[0])
    q.put(evs[1])
    assert q.put(evs[2]) == [evs[0]]
    assert q.nbytes() == evs[1].size + evs[2].size
    assert q.nbytes() <= limit
    assert q.dropped_full == 1


def test_an_event_bigger_than_the_whole_queue_is_dropped_alone() -> None:
    small = Event("small")
    big = Event("big", {"blob": "x" * 1000})
    q = MemoryQueue(max_bytes=small.size * 3)
    assert big.size > small.size * 3
    q.put(small)
    assert q.put(big) == [big]
    assert q.dropped_full == 1
    assert [ev for _, ev in q.take(10, 1 << 30)] == [small]


def test_block_policy_waits_for_space_then_keeps_the_event() -> None:
    q = MemoryQueue(max_events=1, policy="block", block_timeout=60.0)
    first, second = events(2)
    q.put(first)
    result: list[list[Event] | None] = []
    putter = threading.Thread(target=lambda: result.append(q.put(second)))
    putter.start()
    # put() counts the offer before it waits for space (under the lock it
    # then releases): once enqueued is 2, the putter is waiting.
    while q.enqueued < 2:
        time.sleep(0.001)
    assert putter.is_alive()
    assert [ev for _, ev in q.take(1, 1 << 30)] == [first]
    putter.join(60)
    assert result == [[]]  # it waited, and nothing was dropped
    assert [ev for _, ev in q.take(1, 1 << 30)] == [second]
    assert q.dropped_full == 0


def test_block_policy_drops_the_new_event_when_no_space_comes() -> None:
    q = MemoryQueue(max_events=1, policy="block", block_timeout=0.0)
    first, second = events(2)
    q.put(first)
    assert q.put(second) == [second]
    assert q.dropped_full == 1
    assert [ev for _, ev in q.take(10, 1 << 30)] == [first]


def test_put_many_keeps_order_and_numbers_when_all_fit() -> None:
    q = MemoryQueue()
    q.put(Event("before"))
    evs = events(4)
    assert q.put_many(evs) is None
    assert q.enqueued == 5
    assert q.last_seq() == 5
    assert q.nbytes() == Event("before").size + sum(e.size for e in evs)
    items = q.take(10, 1 << 30)
    assert [seq for seq, _ in items] == [1, 2, 3, 4, 5]
    assert [ev for _, ev in items][1:] == evs


def test_put_many_applies_the_policy_event_by_event_when_full() -> None:
    q = MemoryQueue(max_events=3, policy="drop_oldest")
    evs = events(5)
    assert names(q.put_many(evs)) == ["e0", "e1"]
    assert q.enqueued == 5
    assert q.dropped_full == 2
    assert [ev for _, ev in q.take(10, 1 << 30)] == evs[2:]


def test_pending_floor_passes_a_sequence_number_only_once_it_is_settled() -> None:
    """What flush() relies on: floor > n exactly when events 1..n are settled."""
    q = MemoryQueue()
    assert q.last_seq() == 0
    assert q.pending_floor() == 1
    for ev in events(3):
        q.put(ev)
    assert q.last_seq() == 3
    assert q.pending_floor() == 1
    first_two = q.take(2, 1 << 30)
    assert q.in_flight() == 2
    assert q.pending_floor() == 1
    q.done(first_two[1:])  # the second settles before the first
    assert q.pending_floor() == 1
    q.done(first_two[:1])
    assert q.pending_floor() == 3  # the third is still queued
    last = q.take(1, 1 << 30)
    assert q.pending_floor() == 3  # ...and now in flight
    q.done(last)
    assert q.pending_floor() == 4 == q.last_seq() + 1
    assert q.in_flight() == 0


def test_events_dropped_from_the_head_are_not_pending() -> None:
    q = MemoryQueue(max_events=2, policy="drop_oldest")
    for ev in events(3):
        q.put(ev)
    # Event 1 was dropped: the floor is the head's number, 2.
    assert q.last_seq() == 3
    assert q.pending_floor() == 2
    assert [seq for seq, _ in q.take(10, 1 << 30)] == [2, 3]


def test_accounting_identity_holds() -> None:
    """enqueued == settled + dropped + queued + in flight."""
    q = MemoryQueue(max_events=4, policy="drop_newest")
    for ev in events(7):
        q.put(ev)
    taken = q.take(3, 1 << 30)
    q.done(taken[:1])
    settled = 1
    assert q.enqueued == settled + q.dropped_full + q.depth() + q.in_flight()
    assert (q.enqueued, q.dropped_full, q.depth(), q.in_flight()) == (7, 3, 1, 2)


def test_oldest_time_is_the_head_events_time() -> None:
    q = MemoryQueue()
    assert q.oldest_time() is None
    q.put(Event("a", timestamp=1_000.0))
    q.put(Event("b", timestamp=2_000.0))
    assert q.oldest_time() == 1_000.0
    q.take(1, 1 << 30)
    assert q.oldest_time() == 2_000.0


def test_reset_after_fork_forgets_the_parents_events() -> None:
    q = MemoryQueue()
    for ev in events(3):
        q.put(ev)
    q.take(1, 1 << 30)
    q.reset_after_fork()
    assert (q.depth(), q.in_flight(), q.nbytes(), q.last_seq()) == (0, 0, 0, 0)
    assert (q.enqueued, q.dropped_full) == (0, 0)
    q.put(Event("child"))
    assert q.take(10, 1 << 30)[0][0] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"policy": "drop_random"},
        {"max_events": 0},
        {"max_bytes": 0},
    ],
)
def test_bad_settings_are_configuration_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        MemoryQueue(**kwargs)  # type: ignore[arg-type]


ORDINARY = {
    "track() with a few properties": Event(
        "offer.activated",
        {"offer_id": "o-1001", "amount": 3, "channel": "OLB"},
        user_id="c-42",
    ),
    "a page event with its request context": Event(
        "page.viewed",
        {"title": "Offers"},
        anonymous_id="0b9f0f7c-2d1e-4a55-9b1e-3f1c2b1e8d0c",
        context={
            "path": "/offers/1001",
            "route": "/offers/<offer_id>",
            "method": "GET",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
            "Chrome/120 Safari/537.36",
            "referrer": "https://shop.example/",
            "session_id": "5f0c6b3e9a1d4e2f8b7c6d5e4f3a2b1c",
            "status": 200,
        },
    ),
}


@pytest.mark.parametrize("name", list(ORDINARY))
def test_the_default_bound_holds_a_100k_burst_of_ordinary_events(name: str) -> None:
    """Even when the worker sends nothing meanwhile (a slow vendor), 100,000
    ordinary events fit whole at the defaults: none is dropped."""
    q = MemoryQueue()
    event = ORDINARY[name]
    for _ in range(100_000):
        assert q.put(event) is None
    assert q.depth() == 100_000
    assert q.dropped_full == 0
    assert q.nbytes() == 100_000 * event.size <= DEFAULT_MAX_BYTES
    # One more is one too many: the oldest goes (drop_oldest).
    assert q.put(event.replace(event_id="one-more")) == [event]
    assert q.depth() == 100_000


def test_the_default_bound_stays_bounded_in_bytes() -> None:
    """Large events meet the 64 MiB bound long before the count bound."""
    big = Event("export.ready", {"blob": "x" * (1 << 20)})
    q = MemoryQueue()
    fits = DEFAULT_MAX_BYTES // big.size
    for _ in range(fits):
        assert q.put(big) is None
    assert q.put(big.replace(event_id="one-more")) == [big]
    assert q.depth() == fits
    assert q.nbytes() <= DEFAULT_MAX_BYTES
