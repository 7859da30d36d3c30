"""Which queue each destination gets: the options' checks (the spool and Redis
Streams suites test the queues themselves)."""

from __future__ import annotations

import io

import pytest

from trackware import ConfigurationError, Tracker
from trackware._deadletter import MemoryDeadLetter
from trackware._queue import MemoryQueue
from trackware.exporters import ConsoleExporter


def _tracker(**options: object) -> Tracker:
    return Tracker(
        [ConsoleExporter(io.StringIO(), name="a")],
        dead_letter=MemoryDeadLetter(),
        register_atexit=False,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"durability": "sometimes"}, "durability must be one of"),
        ({"queue": "http://127.0.0.1:6379"}, "queue= takes a Redis URL"),
        ({"queue": "127.0.0.1:6379"}, "queue= takes a Redis URL"),
        (
            {"queue_factory": lambda e: MemoryQueue(), "spool": "/tmp/x"},
            "give either it or spool=/queue=",
        ),
        (
            {"queue_factory": lambda e: MemoryQueue(), "queue": "redis://h:1/0"},
            "give either it or spool=/queue=",
        ),
        ({"spool": {"nope": "/tmp/x"}}, "spool names unknown destination(s) ['nope']"),
        ({"spool": ""}, "spool must be a folder path"),
        ({"spool": 5}, "spool must be a folder path"),
        ({"queue_full_policy": "later"}, "queue_full_policy must be one of"),
    ],
)
def test_bad_queue_options_name_the_fix(options: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        _tracker(**options)
    assert words in str(info.value)


def test_memory_is_the_default_and_stats_carry_the_spool_fields() -> None:
    tracker = _tracker()
    try:
        assert type(tracker.destinations[0].queue) is MemoryQueue
        stats = tracker.stats()["destinations"]["a"]
        assert (stats["spooled"], stats["recovered"], stats["spool_bytes"]) == (0, 0, 0)
        assert stats["backend"] == {}
        assert tracker.pages_deferred
    finally:
        tracker.shutdown()


def test_a_spool_mapping_may_keep_a_destination_in_memory() -> None:
    tracker = _tracker(spool={"a": None})
    try:
        assert type(tracker.destinations[0].queue) is MemoryQueue
    finally:
        tracker.shutdown()
