"""The SQLite spool in one process: real files, real SQLite, a real HTTP sink.

Process-level behaviour (SIGKILL, adoption, fork, disk faults) is in
test_spool_process.py.
"""

from __future__ import annotations

import logging
import os
import pathlib
import sqlite3
import stat
import threading
import typing as t

import pytest
from _support import Sink

import trackware
from trackware._deadletter import DeadLetterRecord, DeadLetterStore
from trackware._event import Event
from trackware._queue import EventQueue, MemoryQueue
from trackware._spool import Spool, SpoolDeadLetter, SpoolQueue
from trackware.exceptions import ConfigurationError
from trackware.exporters import HTTPExporter


def _events(n: int, name: str = "e") -> list[Event]:
    return [Event(name, {"i": i}) for i in range(n)]


def _drain(q: SpoolQueue, batch: int = 100) -> list[tuple[int, Event]]:
    out = []
    while True:
        items = q.take(batch, 1 << 30)
        if not items:
            return out
        q.done(items)
        out.extend(items)


def _rows(path: pathlib.Path) -> list[tuple[int, int]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute("SELECT seq, pending FROM events ORDER BY seq"))
    finally:
        conn.close()


@pytest.fixture
def spools() -> t.Iterator[list[Spool]]:
    made: list[Spool] = []
    yield made
    for spool in made:
        spool.close()


def _spool(spools: list[Spool], folder: pathlib.Path, **options: t.Any) -> Spool:
    spool = Spool(folder, **options)
    spools.append(spool)
    return spool


@pytest.mark.parametrize("durability", ["batch", "always"])
def test_each_destination_settles_on_its_own(
    tmp_path: pathlib.Path, spools: list[Spool], durability: str
) -> None:
    spool = _spool(spools, tmp_path / "s", durability=durability)
    a, b = spool.queue("a"), spool.queue("b")
    assert isinstance(a, EventQueue)
    events = _events(300)
    for ev in events:
        a.put(ev)
        b.put(ev)
    assert a.depth() == b.depth() == 300
    assert a.last_seq() == b.last_seq() and a.pending_floor() == 1
    got = _drain(a, 64)
    assert [e.event_id for _, e in got] == [e.event_id for e in events]
    assert a.depth() == 0 and a.in_flight() == 0
    assert a.pending_floor() == a.last_seq() + 1
    assert b.depth() == 300 and b.pending_floor() == 1  # b is held back by nobody
    spool.close()
    path = spool.path
    assert path is not None
    rows = _rows(path)
    # One row per event (the body stored once), only b's bit still pending.
    assert len(rows) == 300 and {p for _, p in rows} == {1 << 1}
    assert a.extra_stats()["spooled"] == 300


def test_events_come_back_from_the_file_with_their_ids(
    tmp_path: pathlib.Path, spools: list[Spool]
) -> None:
    # A head of 50 in memory: the rest is read back from the file, in order.
    spool = _spool(spools, tmp_path, memory_events=50)
    q = spool.queue("a")
    events = [Event("e", {"i": i, "when": "x" * i}) for i in range(500)]
    for ev in events:
        q.put(ev)
    got = _drain(q, 37)
    assert [e.event_id for _, e in got] == [e.event_id for e in events]
    assert [e.properties for _, e in got] == [e.properties for e in events]
    assert [s for s, _ in got] == sorted(s for s, _ in got)
    assert q.depth() == 0 and q.pending_floor() > q.last_seq()


def test_files_are_private_and_removed_when_empty(
    tmp_path: pathlib.Path, spools: list[Spool]
) -> None:
    folder = tmp_path / "new" / "spool"
    spool = _spool(spools, folder)
    q = spool.queue("a")
    for ev in _events(10):
        q.put(ev)
    spool.queue("b")
    _drain(q)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    names = os.listdir(folder)
    assert any(n.endswith(".sqlite3") for n in names)
    for name in names:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    spool.close()
    assert os.listdir(folder) == []  # nothing pending: nothing left behind


def test_a_tracker_delivers_through_the_spool(
    tmp_path: pathlib.Path, sink: Sink
) -> None:
    for durability in ("batch", "always"):
        tracker = trackware.Tracker(
            [HTTPExporter(sink.url)],
            spool=tmp_path,
            durability=durability,
            register_atexit=False,
        )
        ids = [tracker.track("e", {"i": i}).event_id for i in range(1000)]
        assert tracker.flush(30)
        stats = tracker.stats()["destinations"]["http"]
        assert stats["sent"] == 1000 and stats["spooled"] == 1000
        assert stats["backend"]["spool_state"] == "ok"
        assert tracker.shutdown(10)
        assert sink.ids[-1000:] == ids
    assert os.listdir(tmp_path) == []


def test_a_spool_queue_for_queue_factory(tmp_path: pathlib.Path, sink: Sink) -> None:
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)],
        queue_factory=lambda e: SpoolQueue(tmp_path, e.name, durability="always"),
        register_atexit=False,
    )
    queue = tracker.destinations[0].queue
    assert isinstance(queue, SpoolQueue)
    ids = [tracker.track("e").event_id for _ in range(50)]
    assert tracker.flush(30)
    assert sink.ids == ids
    assert tracker.stats()["destinations"]["http"]["spooled"] == 50
    tracker.shutdown(5)
    queue.spool.close()


@pytest.mark.parametrize("durability", ["batch", "always"])
@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest", "block"])
def test_a_full_spool_applies_the_policy_and_counts(
    tmp_path: pathlib.Path, spools: list[Spool], policy: str, durability: str
) -> None:
    spool = _spool(
        spools,
        tmp_path,
        max_bytes=64 * 1024,
        policy=policy,
        block_timeout=0.005,
        durability=durability,
    )
    q = spool.queue("a")
    events = [Event("e", {"pad": "x" * 400}) for _ in range(250)]
    dropped: list[Event] = []
    for ev in events:
        dropped.extend(q.put(ev) or [])
    assert dropped and q.dropped_full == len(dropped)
    kept = _drain(q)
    assert len(kept) + len(dropped) == 250 == q.enqueued
    kept_ids = [e.event_id for _, e in kept]
    if policy == "drop_oldest":
        assert kept_ids == [e.event_id for e in events[-len(kept) :]]
    else:
        assert kept_ids == [e.event_id for e in events[: len(kept)]]
    spool.close()
    assert spool.path is not None
    assert not spool.path.exists()  # all settled


@pytest.mark.parametrize("durability", ["batch", "always"])
def test_block_waits_for_settled_events_to_make_room(
    tmp_path: pathlib.Path, spools: list[Spool], durability: str
) -> None:
    spool = _spool(
        spools,
        tmp_path,
        max_bytes=64 * 1024,
        policy="block",
        block_timeout=5.0,
        durability=durability,
    )
    q = spool.queue("a")
    stop = threading.Event()
    got: list[tuple[int, Event]] = []

    def worker() -> None:
        while not stop.is_set() or q.depth():
            items = q.take(20, 1 << 30)
            if items:
                q.done(items)
                got.extend(items)
            else:
                stop.wait(0.001)

    thread = threading.Thread(target=worker)
    thread.start()
    events = [Event("e", {"pad": "x" * 400}) for _ in range(600)]  # 4x the limit
    dropped = [d for ev in events for d in (q.put(ev) or [])]
    stop.set()
    thread.join(30)
    assert dropped == [] and q.dropped_full == 0
    assert [e.event_id for _, e in got] == [e.event_id for e in events]


def test_garbage_and_truncated_files_are_moved_aside_once(
    tmp_path: pathlib.Path,
    spools: list[Spool],
    sink: Sink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A real spool file with events, left by a "process" (its lock is free),
    # then truncated in the middle; and a file of garbage named like a spool.
    donor = _spool(spools, tmp_path)
    dq = donor.queue("http")
    for ev in _events(3000):
        dq.put(ev)
    donor.close()
    assert donor.path is not None
    truncated = donor.path
    os.truncate(truncated, truncated.stat().st_size // 2)
    for side in ("-wal", "-shm"):
        pathlib.Path(f"{truncated}{side}").unlink(missing_ok=True)
    garbage = tmp_path / "spool-999999-deadbeef.sqlite3"
    garbage.write_bytes(os.urandom(8192))
    caplog.set_level(logging.WARNING, logger="trackware")
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)],
        spool=tmp_path,
        spool_adopt_interval=0.05,
        register_atexit=False,
    )
    ids = [tracker.track("e").event_id for _ in range(100)]
    assert tracker.flush(30)
    assert sink.ids[-100:] == ids  # the app's events flow as before
    spool = next(iter(tracker.backends.spools.values()))
    deadline = 200
    while spool.corrupt_files < 2 and deadline:
        deadline -= 1
        sink.wait_for(10**9, 0.05)
    stats = tracker.stats()["destinations"]["http"]
    assert stats["backend"]["spool_corrupt_files"] == 2
    assert stats["backend"]["spool_state"] == "ok"
    assert pathlib.Path(f"{garbage}.corrupt").exists() and not garbage.exists()
    assert pathlib.Path(f"{truncated}.corrupt").exists() and not truncated.exists()
    tracker.shutdown(5)
    moved = [r.getMessage() for r in caplog.records if "moved aside" in r.getMessage()]
    assert len(moved) == 2, moved
    assert any(str(garbage) in m for m in moved)


def test_the_spool_dead_letter_is_a_store(tmp_path: pathlib.Path) -> None:
    store = SpoolDeadLetter(tmp_path / "s")
    assert isinstance(store, DeadLetterStore)
    assert store.list() == [] and store.purge() == 0
    events = _events(3)
    store.write(
        [
            DeadLetterRecord("a", "400 bad", events[0], 400, '{"e":1}', 1),
            DeadLetterRecord("b", "gave up", events[1], None, None, 5),
            DeadLetterRecord("a", "400 bad", events[2], 400, None, 1),
        ]
    )
    assert stat.S_IMODE((tmp_path / "s" / "deadletter.sqlite3").stat().st_mode) == 0o600
    listed = store.list()
    assert [r.destination for r in listed] == ["a", "b", "a"]
    assert [Event.from_dict(r.event).event_id for r in listed] == [
        e.event_id for e in events
    ]
    assert listed[0].status == 400 and listed[0].response == '{"e":1}'
    assert listed[1].attempts == 5
    assert [r.key for r in store.list("a")] == [listed[0].key, listed[2].key]
    assert store.remove([listed[0].key, "nope"]) == 1
    assert store.purge("b") == 1
    assert [r.key for r in SpoolDeadLetter(tmp_path / "s").list()] == [listed[2].key]
    store.close()


def test_the_tracker_keeps_dead_letters_beside_its_spool(
    tmp_path: pathlib.Path, sink: Sink
) -> None:
    sink.default_status = 400
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)], spool=tmp_path, register_atexit=False
    )
    assert isinstance(tracker.dead_letter, SpoolDeadLetter)
    event_id = tracker.track("refused").event_id
    tracker.flush(10)
    tracker.shutdown(5)
    (record,) = SpoolDeadLetter(tmp_path).list()
    assert record.event["event_id"] == event_id and record.status == 400


def test_bad_arguments_name_the_fix(tmp_path: pathlib.Path) -> None:
    cases: list[tuple[dict[str, t.Any], str]] = [
        ({"durability": "never"}, "durability must be one of"),
        ({"policy": "lose"}, "queue_full_policy must be one of"),
        ({"commit_interval": 0}, "spool_commit_interval must be a number"),
        ({"adopt_interval": -1}, "spool_adopt_interval must be a number"),
        ({"max_bytes": 10}, "spool_max_bytes must be an int >= 65536"),
        ({"memory_fallback": 3}, "memory_fallback must be a callable"),
    ]
    for options, words in cases:
        with pytest.raises(ConfigurationError, match=words):
            Spool(tmp_path, **options)
    assert os.listdir(tmp_path) == []  # nothing created for a bad call


def test_an_unusable_folder_falls_back_to_memory(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A spool "folder" that is a file: nothing can be created in it.
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    caplog.set_level(logging.WARNING, logger="trackware")
    spool = Spool(blocker / "spool", memory_fallback=lambda: MemoryQueue(100))
    q = spool.queue("a")
    for ev in _events(150):
        assert isinstance(q.put(ev), (list, type(None)))
    assert q.depth() == 100 and q.dropped_full == 50  # the fallback's bounds
    stats = q.extra_stats()
    assert stats["spool_state"] == "memory" and stats["spool_fallback"] == 150
    assert len(_drain(q)) == 100
    assert q.pending_floor() > q.last_seq()
    spool.close()
    warned = [r for r in caplog.records if "continue in memory" in r.getMessage()]
    assert len(warned) == 1
