"""``trackware deadletter list|show|replay|purge`` as real processes, against
the real vendor emulators: events dead-lettered by one process (a wrong key,
a vendor's 400, an unmapped event) are replayed by the command after the fix
and arrive with their original ids."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import typing as t

import pytest

from trackware import DeadLetterRecord, Event, JSONLinesDeadLetter, _cli
from trackware.testing.emulators import VendorEmulator

pytestmark = pytest.mark.slow

GOOD_KEY = "test-synerise-api-key"

#: Tracks N events through Tracker.from_env() (the environment decides the
#: destination and its key), or a Tracker of the exporters a module:factory
#: returns, shuts down, prints the event ids.
TRACK = """
import importlib, json, sys
from trackware import Tracker
if len(sys.argv) > 3:
    module, _, factory = sys.argv[3].partition(":")
    tracker = Tracker(getattr(importlib.import_module(module), factory)())
else:
    tracker = Tracker.from_env()
ids = [tracker.track(sys.argv[1], {"n": n}, user_id=f"u{n}").event_id
       for n in range(int(sys.argv[2]))]
tracker.shutdown(timeout=10)
print(json.dumps(ids))
"""


def run(
    args: t.Sequence[str], env: dict[str, str], cwd: pathlib.Path | None = None
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env)
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full,
        cwd=cwd,
    )


def cli(
    *args: str, env: dict[str, str], cwd: pathlib.Path | None = None
) -> subprocess.CompletedProcess[str]:
    return run(["-m", "trackware", "deadletter", *args], env, cwd)


def track(
    event: str,
    count: int,
    env: dict[str, str],
    config: str | None = None,
    cwd: pathlib.Path | None = None,
) -> list[str]:
    proc = run(
        ["-c", TRACK, event, str(count), *([config] if config else [])], env, cwd
    )
    assert proc.returncode == 0, proc.stderr
    ids: list[str] = json.loads(proc.stdout)
    return ids


def synerise_env(emulator: VendorEmulator, key: str) -> dict[str, str]:
    return {
        "TRACKWARE_SYNERISE_BASE_URL": emulator.url,
        "TRACKWARE_SYNERISE_API_KEY": key,
    }


def listed(path: pathlib.Path, env: dict[str, str], *extra: str) -> list[t.Any]:
    proc = cli("list", "--path", str(path), "--json", *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_replay_after_a_key_fix_delivers_with_the_original_ids(
    emulator: VendorEmulator, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "dead.jsonl"
    env = {"TRACKWARE_DEAD_LETTER_PATH": str(path)}
    ids = track("shop.order", 4, {**env, **synerise_env(emulator, "wrong-key")})
    assert emulator.synerise.events == []
    records = listed(path, env)
    assert sorted(r["event"]["event_id"] for r in records) == sorted(ids)
    assert {(r["destination"], r["status"]) for r in records} == {("synerise", 401)}

    # Replayed with the same wrong key: refused again, nothing leaves.
    proc = cli("replay", env={**env, **synerise_env(emulator, "wrong-key")})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("rejected  ") for line in lines)
    assert all("HTTP 401" in line and "invalid API key" in line for line in lines)
    assert "replayed 4: rejected 4" in proc.stderr
    assert "wrong-key" not in proc.stdout + proc.stderr  # the key is scrubbed
    assert len(listed(path, env)) == 4

    # The key fixed: delivered, with the original ids, and gone from the file.
    proc = cli("replay", env={**env, **synerise_env(emulator, GOOD_KEY)})
    assert proc.returncode == 0, proc.stderr
    assert "replayed 4: delivered 4" in proc.stderr
    assert sorted(e["eventSalt"] for e in emulator.synerise.events) == sorted(ids)
    assert listed(path, env) == []


def test_replay_after_the_vendor_answered_400(
    emulator: VendorEmulator, tmp_path: pathlib.Path
) -> None:
    """The vendor refused the batch with a 400 (scripted at the emulator);
    once it takes it again, replay delivers it and the dead letter empties."""
    path = tmp_path / "dead.jsonl"
    env = {"TRACKWARE_DEAD_LETTER_PATH": str(path), **synerise_env(emulator, GOOD_KEY)}
    answer = {"status": 400, "error": "Bad Request", "message": "params: invalid"}
    emulator.fault("synerise.batch", status=400, body=answer, times=None)
    ids = track("shop.order", 3, env)
    records = listed(path, env)
    assert sorted(r["event"]["event_id"] for r in records) == sorted(ids)
    assert {r["status"] for r in records} == {400}
    assert all("params: invalid" in (r["response"] or "") for r in records)
    emulator.clear_faults()
    proc = cli("replay", "--destination", "synerise", env=env)
    assert proc.returncode == 0, proc.stderr
    assert [line.split("  ")[0] for line in proc.stdout.splitlines()] == [
        "delivered"
    ] * 3
    assert sorted(e["eventSalt"] for e in emulator.synerise.events) == sorted(ids)
    assert listed(path, env) == []


FACTORY = """
from trackware.exporters.synerise import SyneriseExporter

def broken():  # no mapping, and the exporter's own contract check is off
    return [SyneriseExporter({key!r}, base_url={url!r}, strict=False)]

def exporters():  # the fix
    return [SyneriseExporter({key!r}, base_url={url!r},
                             actions={{"order": "shop.order"}})]
"""


def test_replay_after_a_mapping_fix_one_key_at_a_time_through_config(
    emulator: VendorEmulator, tmp_path: pathlib.Path
) -> None:
    """'order' is not a valid Synerise action: the vendor answers 400 naming
    the field. The fix is a mapping, in a factory of the user's (--config
    module:factory); a replay of one abbreviated key sends that event only."""
    path = tmp_path / "dead.jsonl"
    env = {"TRACKWARE_DEAD_LETTER_PATH": str(path)}
    (tmp_path / "fixed.py").write_text(
        textwrap.dedent(FACTORY.format(key=GOOD_KEY, url=emulator.url))
    )
    ids = track("order", 2, env, "fixed:broken", tmp_path)
    records = listed(path, env)
    assert [r["status"] for r in records] == [400, 400]
    assert "[0].action: must be dot-separated lowercase" in records[0]["response"]
    first = records[0]["key"]
    proc = cli(
        "replay",
        "--config",
        "fixed:exporters",
        "--key",
        first[:8],
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("  ")[:2] == ["delivered", first]
    assert [e["eventSalt"] for e in emulator.synerise.events] == [
        records[0]["event"]["event_id"]
    ]
    assert [r["key"] for r in listed(path, env)] == [records[1]["key"]]
    proc = cli("replay", "--config", "fixed:exporters", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(e["eventSalt"] for e in emulator.synerise.events) == sorted(ids)
    assert [e["action"] for e in emulator.synerise.events] == ["shop.order"] * 2


def main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command in this process (quicker than a new interpreter for the
    checks that do not need one): status, stdout, stderr."""
    try:
        status = _cli.main(["deadletter", *args])
    except SystemExit as exc:  # argparse
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_list_show_and_purge(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "dead.jsonl"  # $TRACKWARE_DEAD_LETTER_PATH (conftest)
    assert os.environ["TRACKWARE_DEAD_LETTER_PATH"] == str(path)
    events = [Event("shop.order", {"n": n}, event_id=f"id-{n}") for n in range(2)]
    JSONLinesDeadLetter(path).write(
        [DeadLetterRecord("synerise", "HTTP 401:\n  no", e, status=401) for e in events]
    )
    status, out, err = main(capsys, "list")  # the default: that file
    assert status == 0
    rows = [line.split("  ") for line in out.splitlines()]
    assert [row[2:] for row in rows] == [
        ["synerise", "401", "shop.order", "id-0", "HTTP 401: no"],
        ["synerise", "401", "shop.order", "id-1", "HTTP 401: no"],
    ]
    assert err == f"2 dead letter(s) in {path}\n"
    assert main(capsys, "list", "--destination", "yotpo")[:2] == (0, "")

    status, out, _ = main(capsys, "show", rows[0][0][:6], "--path", str(path))
    assert status == 0
    shown = json.loads(out)
    assert shown["key"] == rows[0][0] and shown["event"]["event_id"] == "id-0"
    assert main(capsys, "show", "nope") == (
        2,
        "",
        f"trackware: deadletter show: no dead letter has the key 'nope' in {path}\n",
    )

    status, _, err = main(capsys, "purge")
    assert status == 2 and "deletes 2 dead letter(s)" in err and "add --yes" in err
    assert len(JSONLinesDeadLetter(path).list()) == 2
    status, _, err = main(capsys, "purge", "--destination", "yotpo", "--yes")
    assert status == 0 and "purged 0 dead letter(s) of yotpo" in err
    status, _, err = main(capsys, "purge", "--yes")
    assert status == 0 and "purged 2 dead letter(s)" in err
    assert JSONLinesDeadLetter(path).list() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "--config", "nowhere"], "give package.module:factory"),
        (["replay", "--config", "no_such_module:f"], "cannot import"),
        (["replay", "--config", "json:no_such_function"], "has no 'no_such_function'"),
        (["replay"], "configuration error: Tracker.from_env(): no destination"),
        (["list", "--path", "a", "--spool", "b"], "not allowed with argument"),
        (["replay", "--batch-size", "0"], "must be 1 or more"),
        (["list", "--path", "/proc/1/mem"], "trackware: deadletter list: cannot"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    for name in os.environ:
        if name.startswith("TRACKWARE_") and "DEAD" not in name:
            monkeypatch.delenv(name)
    status, _, err = main(capsys, *args)
    assert status == 2, err
    assert message in err and "Traceback" not in err


def test_dead_letters_of_a_spool_are_listed_and_replayed(
    emulator: VendorEmulator, tmp_path: pathlib.Path
) -> None:
    """With a spool (TRACKWARE_SPOOL) and no TRACKWARE_DEAD_LETTER_PATH, the
    tracker dead-letters into the spool's store; the command reads it with
    --spool, and by default where TRACKWARE_SPOOL points."""
    spool = tmp_path / "spool"
    env = {"TRACKWARE_SPOOL": str(spool), "TRACKWARE_DEAD_LETTER_PATH": ""}
    ids = track("shop.order", 3, {**env, **synerise_env(emulator, "wrong-key")})
    proc = cli("list", "--spool", str(spool), "--json", env={"TRACKWARE_SPOOL": ""})
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(r["event"]["event_id"] for r in records) == sorted(ids)
    assert {r["status"] for r in records} == {401}
    assert not (tmp_path / "dead.jsonl").exists()  # not the JSON-lines file
    proc = cli("replay", env={**env, **synerise_env(emulator, GOOD_KEY)})
    assert proc.returncode == 0, proc.stderr
    assert "replayed 3: delivered 3" in proc.stderr
    assert sorted(e["eventSalt"] for e in emulator.synerise.events) == sorted(ids)
    assert cli("list", env=env).stdout == ""
    proc = cli("list", "--spool", str(tmp_path / "nothing"), env=env)
    assert proc.returncode == 2
    assert "--spool" in proc.stderr and "there is no folder there" in proc.stderr
