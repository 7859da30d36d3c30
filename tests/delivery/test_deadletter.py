"""Dead letters: records written and read back, rotation, secrets scrubbed, the path."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest

from trackware import (
    DeadLetter,
    DeadLetterRecord,
    Event,
    JSONLinesDeadLetter,
    MemoryDeadLetter,
)
from trackware._deadletter import (
    DeadLetterStore,
    StoredDeadLetter,
    default_dead_letter_path,
)
from trackware._log import register_secret


def record(n: int = 0, **changes: object) -> DeadLetterRecord:
    fields: dict[str, object] = {
        "destination": "synerise",
        "reason": f"retries_exhausted: HTTP 503 ({n})",
        "event": Event(f"order_{n}", {"n": n}, user_id=f"u{n}"),
        "status": 503,
        "response": "service unavailable",
        "attempts": 10,
    }
    fields.update(changes)
    return DeadLetterRecord(**fields)  # type: ignore[arg-type]


def line_size(tmp_path: pathlib.Path) -> int:
    """The size of one record's line in the file (to pick rotation bounds)."""
    probe = tmp_path / "probe" / "one.jsonl"
    JSONLinesDeadLetter(probe).write([record(0)])
    size = probe.stat().st_size
    shutil.rmtree(probe.parent)
    return size


def test_both_dead_letters_satisfy_the_protocol(tmp_path: pathlib.Path) -> None:
    assert isinstance(JSONLinesDeadLetter(tmp_path / "d.jsonl"), DeadLetter)
    assert isinstance(MemoryDeadLetter(), DeadLetter)


def test_records_are_written_as_json_lines_and_read_back(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "deep" / "folder" / "dead.jsonl"
    dl = JSONLinesDeadLetter(path)
    assert dl.read() == []  # no file yet
    first, second = record(1), record(2, status=None, response=None, attempts=0)
    dl.write([first])
    dl.write([second])
    lines = path.read_text("utf-8").splitlines()
    assert len(lines) == 2
    assert [json.loads(line) for line in lines] == dl.read()
    got = dl.read()
    assert [r["destination"] for r in got] == ["synerise", "synerise"]
    assert got[0]["reason"] == "retries_exhausted: HTTP 503 (1)"
    assert (got[0]["status"], got[0]["response"], got[0]["attempts"]) == (
        503,
        "service unavailable",
        10,
    )
    assert (got[1]["status"], got[1]["response"], got[1]["attempts"]) == (None, None, 0)
    assert got[0]["event"] == first.event.to_dict()
    assert got[1]["event"] == second.event.to_dict()
    assert got[0]["time"].endswith("Z")


def test_the_file_is_private_to_its_owner(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "dead.jsonl"
    JSONLinesDeadLetter(path).write([record()])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_empty_write_creates_nothing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "sub" / "dead.jsonl"
    JSONLinesDeadLetter(path).write([])
    assert not path.parent.exists()


def test_registered_secrets_never_reach_the_file(tmp_path: pathlib.Path) -> None:
    secret = "sk_live_Zq81hdP0x"
    register_secret(secret)
    path = tmp_path / "dead.jsonl"
    dl = JSONLinesDeadLetter(path)
    dl.write(
        [
            record(
                reason=f"HTTP 401: bad key {secret}",
                response=f'{{"error": "key {secret} revoked"}}',
            )
        ]
    )
    text = path.read_text("utf-8")
    assert secret not in text
    (got,) = dl.read()
    assert got["reason"] == "HTTP 401: bad key ***"
    assert got["response"] == '{"error": "key *** revoked"}'


def test_a_long_response_body_is_cut(tmp_path: pathlib.Path) -> None:
    dl = JSONLinesDeadLetter(tmp_path / "dead.jsonl")
    dl.write([record(response="x" * 100_000)])
    (got,) = dl.read()
    assert got["response"] == "x" * 4096


def test_the_file_rotates_past_max_bytes_keeping_the_newest_backups(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "dead.jsonl"
    one_line = line_size(tmp_path)
    dl = JSONLinesDeadLetter(path, max_bytes=one_line * 2 + 10, backups=2)
    for n in range(7):
        dl.write([record(n)])
    backups = sorted(p.name for p in tmp_path.iterdir())
    assert backups == ["dead.jsonl", "dead.jsonl.1", "dead.jsonl.2", "dead.jsonl.lock"]
    assert path.stat().st_size <= dl.max_bytes

    def numbers(p: pathlib.Path) -> list[int]:
        return [
            json.loads(line)["event"]["properties"]["n"]
            for line in p.read_text("utf-8").splitlines()
        ]

    # Two records a file; the oldest (0, 1) rotated out past the last backup.
    assert numbers(path.with_name("dead.jsonl.2")) == [2, 3]
    assert numbers(path.with_name("dead.jsonl.1")) == [4, 5]
    assert numbers(path) == [6]
    assert [r["event"]["properties"]["n"] for r in dl.read()] == [6]


def test_with_no_backups_the_full_file_is_started_over(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "dead.jsonl"
    dl = JSONLinesDeadLetter(path, max_bytes=line_size(tmp_path) + 10, backups=0)
    for n in range(3):
        dl.write([record(n)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dead.jsonl",
        "dead.jsonl.lock",
    ]
    assert [r["event"]["properties"]["n"] for r in dl.read()] == [2]


def test_one_write_larger_than_max_bytes_is_kept_whole(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "dead.jsonl"
    dl = JSONLinesDeadLetter(path, max_bytes=10, backups=1)
    dl.write([record(n) for n in range(3)])
    assert len(dl.read()) == 3


def test_after_fork_gives_a_fresh_lock(tmp_path: pathlib.Path) -> None:
    dl = JSONLinesDeadLetter(tmp_path / "dead.jsonl")
    dl._lock.acquire()  # as if a parent thread held it when the process forked
    dl.after_fork()
    dl.write([record()])  # would deadlock with the old lock
    assert len(dl.read()) == 1


def test_memory_dead_letter_keeps_the_most_recent_records() -> None:
    dl = MemoryDeadLetter(maxlen=3)
    dl.write([record(n) for n in range(5)])
    assert [r.event.name for r in dl.records] == ["order_2", "order_3", "order_4"]
    assert [r["event"]["name"] for r in dl.read()] == ["order_2", "order_3", "order_4"]


def test_default_path_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("TRACKWARE_DEAD_LETTER_PATH", str(tmp_path / "x.jsonl"))
    assert default_dead_letter_path() == tmp_path / "x.jsonl"
    assert JSONLinesDeadLetter().path == tmp_path / "x.jsonl"
    monkeypatch.delenv("TRACKWARE_DEAD_LETTER_PATH")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_dead_letter_path() == (
        tmp_path / "state" / "trackware" / "dead-letter.jsonl"
    )
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_dead_letter_path() == pathlib.Path(
        os.path.join(tmp_path, "home", ".local", "state", "trackware")
    ) / ("dead-letter.jsonl")


# --- reading back and pruning (the DeadLetterStore protocol) -------------------------


@pytest.fixture(params=["jsonl", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> DeadLetterStore:
    if request.param == "jsonl":
        return JSONLinesDeadLetter(tmp_path / "dead.jsonl")
    return MemoryDeadLetter()


def test_both_stores_satisfy_the_store_protocol(store: DeadLetterStore) -> None:
    assert isinstance(store, DeadLetterStore)


def test_records_are_listed_removed_by_key_and_purged(store: DeadLetterStore) -> None:
    assert store.list() == [] and store.remove(["nope"]) == 0 and store.purge() == 0
    other = record(9, destination="yotpo", status=400, response='{"e": "bad"}')
    store.write([record(1), record(2), other])
    listed = store.list()
    assert [s.event["properties"]["n"] for s in listed] == [1, 2, 9]
    assert len({s.key for s in listed}) == 3
    first = listed[0]
    assert isinstance(first, StoredDeadLetter)
    assert (first.destination, first.status, first.response, first.attempts) == (
        "synerise",
        503,
        "service unavailable",
        10,
    )
    assert first.reason == "retries_exhausted: HTTP 503 (1)"
    assert first.time.endswith("Z")
    rebuilt = Event.from_dict(first.event)
    assert rebuilt.name == "order_1" and rebuilt.properties == {"n": 1}
    assert [s.key for s in store.list("yotpo")] == [listed[2].key]
    assert store.list() == listed  # keys are stable between reads
    assert store.remove([listed[0].key, "unknown"]) == 1
    assert [s.key for s in store.list()] == [listed[1].key, listed[2].key]
    assert store.purge("yotpo") == 1
    assert [s.key for s in store.list()] == [listed[1].key]
    store.write([record(3)])
    assert store.purge() == 2 and store.list() == []


def test_a_listed_event_rebuilds_with_its_original_id(store: DeadLetterStore) -> None:
    event = Event("order", {"total": 5}, user_id="u1", event_id="order-77")
    store.write([record(event=event)])
    (stored,) = store.list()
    rebuilt = Event.from_dict(stored.event)
    assert rebuilt.event_id == "order-77"
    assert (rebuilt.name, rebuilt.properties, rebuilt.user_id) == (
        "order",
        {"total": 5},
        "u1",
    )
    assert abs((rebuilt.timestamp - event.timestamp).total_seconds()) < 0.001


def test_lines_without_a_key_get_a_stable_one_and_garbage_is_skipped(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "dead.jsonl"
    dl = JSONLinesDeadLetter(path)
    dl.write([record(1)])
    old = json.loads(path.read_text("utf-8"))
    del old["key"]  # as written by a trackware before keys
    path.write_text(
        json.dumps(old) + "\n" + '{"cut short by a cra' + "\n" + path.read_text("utf-8")
    )
    dl.write([record(2)])
    first = dl.list()
    assert [s.event["properties"]["n"] for s in first] == [1, 1, 2]
    assert first[0].key == dl.list()[0].key != first[1].key
    assert dl.remove([first[0].key]) == 1
    # The line that is not a record stays (the plain `dead-letter` command
    # reports it); only a full purge removes it.
    assert '{"cut short by a cra' in path.read_text("utf-8")
    assert [s.key for s in dl.list()] == [first[1].key, first[2].key]
    assert dl.purge() == 2
    assert path.read_text("utf-8") == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rotated_backups_are_listed_and_pruned_too(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "dead.jsonl"
    dl = JSONLinesDeadLetter(path, max_bytes=line_size(tmp_path) * 2 + 10, backups=5)
    for n in range(5):
        dl.write([record(n)])
    assert path.with_name("dead.jsonl.2").exists()
    listed = dl.list()
    assert [s.event["properties"]["n"] for s in listed] == [0, 1, 2, 3, 4]
    assert dl.remove([listed[0].key, listed[4].key]) == 2
    assert [s.event["properties"]["n"] for s in dl.list()] == [1, 2, 3]
    dl.write([record(5)])  # rotation still works after a rewrite
    assert [s.event["properties"]["n"] for s in dl.list()] == [1, 2, 3, 5]


def test_pruning_a_missing_file_or_folder_creates_nothing(
    tmp_path: pathlib.Path,
) -> None:
    dl = JSONLinesDeadLetter(tmp_path / "no" / "dead.jsonl")
    assert dl.list() == [] and dl.purge() == 0 and dl.remove(["k"]) == 0
    assert not (tmp_path / "no").exists()


_WRITER = """
import sys
from trackware import Event, JSONLinesDeadLetter, DeadLetterRecord
path, who = sys.argv[1], sys.argv[2]
dl = JSONLinesDeadLetter(path, max_bytes=20_000, backups=1000)
for n in range(150):
    dest = "keep" if n % 2 else "gone"
    dl.write([DeadLetterRecord(dest, "r", Event("e", {"n": n}, event_id=f"{who}-{n}"))])
"""


def test_records_appended_by_other_processes_survive_concurrent_removal(
    tmp_path: pathlib.Path,
) -> None:
    """Three processes append (rotating the file often) while this one removes
    and purges records of another destination over and over: every record of
    the kept destination is there once at the end."""
    path = tmp_path / "dead.jsonl"
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), f"w{i}"])
        for i in range(3)
    ]
    dl = JSONLinesDeadLetter(path, max_bytes=20_000, backups=1000)
    rewrites = 0
    while any(w.poll() is None for w in writers):
        gone = [s.key for s in dl.list("gone")]
        dl.remove(gone[: len(gone) // 2])
        dl.purge("gone")
        rewrites += 2
    assert [w.wait() for w in writers] == [0, 0, 0]
    dl.purge("gone")
    kept = [s.event["event_id"] for s in dl.list()]
    assert sorted(kept) == sorted(
        f"w{i}-{n}" for i in range(3) for n in range(1, 150, 2)
    )
    assert rewrites > 2
    assert len(list(tmp_path.glob("dead.jsonl.*"))) > 2  # it did rotate
    assert not list(tmp_path.glob(".dead.jsonl*"))  # no temporary file left


def test_memory_store_after_fork_gives_a_fresh_lock() -> None:
    dl = MemoryDeadLetter()
    dl._lock.acquire()
    dl.after_fork()
    dl.write([record()])
    assert len(dl.list()) == 1
