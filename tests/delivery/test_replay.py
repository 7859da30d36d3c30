"""Replay of dead letters through real exporters to real local servers."""

from __future__ import annotations

import pathlib
import typing as t

import pytest
from _support import Sink

from trackware import (
    DeadLetterRecord,
    Event,
    JSONLinesDeadLetter,
    MemoryDeadLetter,
    Tracker,
)
from trackware._deadletter import DeadLetterStore
from trackware._replay import ReplayReport, replay
from trackware.exceptions import ConfigurationError
from trackware.exporters import HTTPExporter
from trackware.exporters._base import BaseExporter, ExportResult
from trackware.exporters.synerise import SyneriseExporter
from trackware.testing.emulators import VendorEmulator

GOOD_KEY = "test-synerise-api-key"


def dead(
    dest: str, event: Event, reason: str = "rejected: HTTP 400"
) -> DeadLetterRecord:
    return DeadLetterRecord(dest, reason, event, status=400, response="{}", attempts=1)


def by_outcome(report: ReplayReport) -> dict[str, list[str | None]]:
    out: dict[str, list[str | None]] = {}
    for o in report.outcomes:
        out.setdefault(o.outcome, []).append(o.event_id)
    return out


def test_events_refused_for_a_wrong_key_arrive_with_their_ids_after_the_fix(
    emulator: VendorEmulator, tmp_path: pathlib.Path
) -> None:
    """The first tracker has a wrong API key: Synerise answers 401, the events
    are dead-lettered; a replay through an exporter with the right key
    delivers them with their original ids (Synerise's eventSalt) and empties
    the dead letter."""
    store = JSONLinesDeadLetter(tmp_path / "dead.jsonl")
    wrong = SyneriseExporter("wrong-key", base_url=emulator.url)
    tracker = Tracker([wrong], dead_letter=store)
    ids = [
        tracker.track("shop.order", {"n": n}, user_id=f"u{n}").event_id
        for n in range(5)
    ]
    assert tracker.shutdown(timeout=10)
    assert emulator.synerise.events == []
    listed = store.list()
    assert sorted(s.event["event_id"] for s in listed) == sorted(ids)
    assert {s.status for s in listed} == {401}
    assert "invalid API key" in (listed[0].response or listed[0].reason)

    right = SyneriseExporter(GOOD_KEY, base_url=emulator.url)
    try:
        report = replay(store, [right])
    finally:
        right.close()
    assert report.ok and report.counts() == {"delivered": 5} and report.removed == 5
    assert sorted(e["eventSalt"] for e in emulator.synerise.events) == sorted(ids)
    assert store.list() == []


def test_each_record_gets_its_outcome_and_only_delivered_ones_leave(
    sink: Sink,
) -> None:
    store = MemoryDeadLetter()
    events = [Event("e", {"n": n}, event_id=f"id-{n}") for n in range(6)]
    store.write([dead("sink", e) for e in events])
    store.write([dead("sink", events[0])])  # the same event dead-lettered twice
    store.write([dead("gone", Event("x", event_id="id-gone"))])
    # Batches of two: [0, 1] accepted, [2, 3] refused, [4, 5] a 503.
    sink.script.extend([200, 400, 503])
    exporter = HTTPExporter(sink.url, name="sink")
    try:
        report = replay(store, [exporter], batch_size=2)
    finally:
        exporter.close()
    assert by_outcome(report) == {
        "delivered": ["id-0", "id-1", "id-0"],
        "rejected": ["id-2", "id-3"],
        "failed": ["id-4", "id-5"],
        "no_exporter": ["id-gone"],
    }
    assert sink.ids == ["id-0", "id-1"]  # the duplicate record was sent once
    assert [len(b["events"]) for b in sink.bodies] == [2]
    rejected = [o for o in report.outcomes if o.outcome == "rejected"]
    assert {o.status for o in rejected} == {400}
    assert all("scripted 400" in (o.detail or "") for o in rejected)
    failed = [o for o in report.outcomes if o.outcome == "failed"]
    assert {o.status for o in failed} == {503}
    assert report.removed == 3 and not report.ok
    left = sorted(s.event["event_id"] for s in store.list())
    assert left == ["id-2", "id-3", "id-4", "id-5", "id-gone"]
    assert report.summary() == (
        "replayed 8: delivered 3, rejected 2, failed 2, no_exporter 1"
    )


def test_a_destination_or_some_keys_only(sink: Sink) -> None:
    store = MemoryDeadLetter()
    store.write([dead("sink", Event("e", event_id=f"id-{n}")) for n in range(3)])
    store.write([dead("other", Event("e", event_id="id-other"))])
    keys = [s.key for s in store.list()]
    exporter = HTTPExporter(sink.url, name="sink")
    try:
        report = replay(store, [exporter], keys=[keys[1], "no-such-key"])
        assert by_outcome(report) == {"delivered": ["id-1"], "not_found": [None]}
        report = replay(store, [exporter], destination="sink")
        assert by_outcome(report) == {"delivered": ["id-0", "id-2"]}
    finally:
        exporter.close()
    assert [s.event["event_id"] for s in store.list()] == ["id-other"]


class Raising(BaseExporter):
    default_name = "sink"

    def export(self, events: t.Sequence[Event], /) -> ExportResult:
        raise RuntimeError("bug in a custom exporter")


class Picky(BaseExporter):
    """Takes only some events, skips the others, reports nothing for some."""

    default_name = "sink"

    def export(self, events: t.Sequence[Event], /) -> ExportResult:
        result = ExportResult()
        for e in events:
            if e.name == "ok":
                result.sent.append(e)
            elif e.name == "skip":
                result.skipped.append(e)
        return result


def test_an_exporter_raising_or_leaving_events_out_fails_them_without_raising() -> None:
    store = MemoryDeadLetter()
    store.write([dead("sink", Event(n, event_id=n)) for n in ("ok", "skip", "lost")])
    report = replay(store, [Raising()])
    assert by_outcome(report) == {"failed": ["ok", "skip", "lost"]}
    assert "RuntimeError: bug in a custom exporter" in (report.outcomes[0].detail or "")
    report = replay(store, [Picky(events=["ok", "skip", "lost"])])
    assert by_outcome(report) == {
        "delivered": ["ok"],
        "not_applicable": ["skip"],
        "failed": ["lost"],
    }
    report = replay(store, [Picky(events=["ok"])])  # events= no longer lists them
    assert by_outcome(report) == {"not_applicable": ["skip", "lost"]}
    assert [s.event["name"] for s in store.list()] == ["skip", "lost"]


def test_an_unreadable_record_is_reported_and_kept(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "dead.jsonl"
    path.write_text(
        '{"key": "k1", "destination": "sink", "reason": "r", '
        '"event": {"properties": {}}}\n'
    )
    store = JSONLinesDeadLetter(path)
    report = replay(store, [Picky()])
    assert [(o.key, o.outcome) for o in report.outcomes] == [("k1", "invalid")]
    assert "KeyError" in (report.outcomes[0].detail or "")
    assert [s.key for s in store.list()] == ["k1"]


def test_a_tracker_target_uses_its_destinations_and_batch_bound(sink: Sink) -> None:
    store = MemoryDeadLetter()
    store.write([dead("sink", Event("e", event_id=f"id-{n}")) for n in range(5)])
    tracker = Tracker(
        [HTTPExporter(sink.url, name="sink")], max_batch_size=2, dead_letter=None
    )
    try:
        report = replay(store, tracker)
    finally:
        tracker.shutdown(timeout=5)
    assert report.counts() == {"delivered": 5}
    assert [len(b["events"]) for b in sink.bodies] == [2, 2, 1]
    assert store.list() == []


@pytest.mark.parametrize(
    ("store", "target", "kwargs", "message"),
    [
        ([], [], {}, "a DeadLetterStore"),
        (MemoryDeadLetter(), 42, {}, "a Tracker or an iterable of exporters"),
        (MemoryDeadLetter(), [object()], {}, "every exporter must have"),
        (MemoryDeadLetter(), [Picky(), Picky()], {}, "two exporters are named 'sink'"),
        (MemoryDeadLetter(), [], {"batch_size": 0}, "batch_size must be >= 1"),
        (MemoryDeadLetter(), [], {"keys": "abc"}, "not str"),
    ],
)
def test_bad_arguments_raise_configuration_error(
    store: DeadLetterStore, target: t.Any, kwargs: dict[str, t.Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        replay(store, target, **kwargs)


def test_keys_may_be_abbreviated_to_a_unique_start() -> None:
    from trackware.deadletter import resolve_keys

    store = MemoryDeadLetter()
    store.write([dead("sink", Event("e", event_id=f"id-{n}")) for n in range(2)])
    records = [
        r._replace(key=k) for r, k in zip(store.list(), ["abc1", "abd2"], strict=True)
    ]
    assert resolve_keys(["abc1", "abd", "abc"], records) == ["abc1", "abd2", "abc1"]
    with pytest.raises(KeyError, match="'ab' is the start of 2 keys"):
        resolve_keys(["ab"], records)
    with pytest.raises(KeyError, match="no dead letter has the key ''"):
        resolve_keys([""], records)


class Interrupted(BaseExporter):
    """Accepts batches of two; the user presses Ctrl-C during call ``stop_at``."""

    default_name = "sink"

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__(max_batch_size=2)
        self.calls = 0
        self.stop_at = stop_at

    def export(self, events: t.Sequence[Event], /) -> ExportResult:
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return ExportResult.success(events)


def test_an_interrupted_replay_still_removes_what_was_delivered(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JSONLinesDeadLetter(tmp_path / "dead.jsonl")
    store.write([dead("sink", Event("e", event_id=f"id-{n}")) for n in range(8)])
    with pytest.raises(KeyboardInterrupt):
        replay(store, [Interrupted(stop_at=3)])
    left = [s.event["event_id"] for s in store.list()]
    assert left == ["id-4", "id-5", "id-6", "id-7"]
    # Removal in chunks (every REMOVE_EVERY delivered records, and at the end).
    removes: list[int] = []
    original = store.remove

    def counting(keys: t.Collection[str], /) -> int:
        removes.append(len(keys))
        return original(keys)

    monkeypatch.setattr(store, "remove", counting)
    monkeypatch.setattr("trackware._replay.REMOVE_EVERY", 3)
    store.write([dead("sink", Event("e", event_id=f"id-{n}")) for n in range(8, 11)])
    report = replay(store, [Picky()], batch_size=2)
    assert report.removed == 0 and removes == []  # nothing named "ok"
    report = replay(store, [Interrupted()])
    assert report.counts() == {"delivered": 7} and report.removed == 7
    assert removes == [4, 3] and store.list() == []
