"""Dead letters: records written and read back, rotation, secrets scrubbed, the path."""

from __future__ import annotations

import json
import os
import pathlib
import stat

import pytest

from trackware import (
    DeadLetter,
    DeadLetterRecord,
    Event,
    JSONLinesDeadLetter,
    MemoryDeadLetter,
)
from trackware._deadletter import default_dead_letter_path
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
    probe.unlink()
    probe.parent.rmdir()
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
    assert backups == ["dead.jsonl", "dead.jsonl.1", "dead.jsonl.2"]
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dead.jsonl"]
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
