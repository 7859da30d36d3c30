"""``trackware status`` against a real Redis: per destination the stream
length, backlog, pending entries, oldest pending age, consumers with their
idle time, dead letters and trimmed entries; a table, or JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing as t

import pytest

import trackware
from trackware import _streams
from trackware.exporters import HTTPExporter
from trackware.worker import main

if t.TYPE_CHECKING:
    import redis


@pytest.fixture
def populated(redis_url: str, redis_namespace: str, redis_client: redis.Redis) -> str:
    """20 events for ``sink``: a consumer ``ghost`` holds 5, 2 dead letters,
    3 trimmed."""
    tracker = trackware.Tracker(
        [HTTPExporter("http://127.0.0.1:9/events", name="sink")],
        queue=redis_url,
        redis_namespace=redis_namespace,
        register_atexit=False,
    )
    for i in range(20):
        tracker.track("e", {"i": i}, user_id="u")
    assert tracker.flush(30)
    tracker.shutdown(10)
    key = _streams.stream_key(redis_namespace, "sink")
    redis_client.xgroup_create(key, _streams.GROUP, id="0")
    redis_client.xreadgroup(_streams.GROUP, "ghost", {key: ">"}, count=5)
    dead = _streams.dead_key(redis_namespace, "sink")
    for _ in range(2):
        redis_client.xadd(
            dead, {_streams.ID_FIELD: "x", _streams.DEAD_FIELD_ERROR: "e"}
        )
    redis_client.set(_streams.trimmed_key(redis_namespace, "sink"), 3)
    return redis_namespace


def test_status_json(
    populated: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["status", "--redis", redis_url, "--namespace", populated, "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["namespace"] == populated
    info = report["destinations"]["sink"]
    assert info["stream_length"] == 20
    assert info["backlog"] == 15
    assert info["pending"] == 5
    assert 0 <= info["oldest_pending_age"] < 600
    assert [c["name"] for c in info["consumers"]] == ["ghost"]
    assert info["consumers"][0]["pending"] == 5
    assert info["consumers"][0]["idle"] >= 0
    assert info["dead_letters"] == 2
    assert info["trimmed"] == 3
    # The dead-letter stream is not a destination of its own.
    assert list(report["destinations"]) == ["sink"]


def test_status_table_from_the_command_line(populated: str, redis_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trackware.worker", "status", "--namespace", populated],
        env={**os.environ, "TRACKWARE_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "destination", "length", "backlog", "pending", "oldest", "pending",
        "dead", "letters", "trimmed", "consumers",
    ]  # fmt: skip
    assert lines[1].split()[:4] == ["sink", "20", "15", "5"]
    assert lines[1].split()[-3:] == ["2", "3", "1"]
    assert "sink consumers:" in out.stdout
    assert any(line.strip().startswith("ghost  pending 5  idle") for line in lines)


def test_status_of_an_empty_namespace(
    redis_url: str, redis_namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--redis", redis_url, "--namespace", redis_namespace]) == 0
    assert capsys.readouterr().out == f"no streams in namespace {redis_namespace!r}\n"


def test_status_and_worker_need_a_redis_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TRACKWARE_REDIS_URL", raising=False)
    assert main(["status"]) == 2
    assert main(["worker", "--config", "x:y"]) == 2
    err = capsys.readouterr().err
    assert "trackware status: give --redis URL" in err
    assert "trackware worker: give --redis URL" in err


def test_worker_config_errors_are_reported(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", "--config", "no_colon_here", "--redis", redis_url]) == 2
    assert "package.module:factory" in capsys.readouterr().err
    assert main(["worker", "--config", "no_such_module_x:f", "--redis", redis_url]) == 2
    assert "cannot import no_such_module_x" in capsys.readouterr().err
    assert (
        main(["worker", "--config", "trackware:no_such_name", "--redis", redis_url])
        == 2
    )
    assert "trackware has no 'no_such_name'" in capsys.readouterr().err


def test_status_and_worker_say_when_redis_is_away(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from _support import free_port

    url = f"redis://:hunter2-password@127.0.0.1:{free_port()}/0"
    assert main(["status", "--redis", url]) == 1
    assert (
        main(
            ["worker", "--config", "trackware.testing:InMemoryExporter", "--redis", url]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "trackware status: Redis failed: ConnectionError" in err
    assert "trackware worker: Redis failed: ConnectionError" in err
    assert "hunter2" not in err
