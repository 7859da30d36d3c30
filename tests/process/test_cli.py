"""The ``trackware`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing as t

import httpx
import pytest
from _support import free_port

import trackware
from trackware import Tracker, _cli
from trackware.exporters import HTTPExporter
from trackware.testing.emulators import VendorEmulator

SECRET = "cli-test-api-key-must-not-leak"


def trackware_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "trackware", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full,
    )


def test_send_test_reports_the_vendors_acceptance(emulator: VendorEmulator) -> None:
    proc = trackware_cli(
        "send-test",
        "synerise",
        "--user-id",
        "c-42",
        env={
            "TRACKWARE_SYNERISE_API_KEY": "test-synerise-api-key",
            "TRACKWARE_SYNERISE_BASE_URL": emulator.url,
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert "accepted" in proc.stdout
    assert "HTTP 202" in proc.stdout
    (stored,) = emulator.synerise.events
    assert stored["client"] == {"customId": "c-42"}


def test_send_test_shows_a_refusal_without_leaking_the_key(
    emulator: VendorEmulator,
) -> None:
    proc = trackware_cli(
        "send-test",
        "synerise",
        env={
            "TRACKWARE_SYNERISE_API_KEY": SECRET,
            "TRACKWARE_SYNERISE_BASE_URL": emulator.url,
        },
    )
    assert proc.returncode == 1
    assert "rejected" in proc.stdout and "401" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
    assert emulator.synerise.events == []


def test_send_test_names_missing_configuration() -> None:
    env = {k: "" for k in os.environ if k.startswith("TRACKWARE_YOTPO_")}
    proc = trackware_cli("send-test", "yotpo", env=env)
    assert proc.returncode == 2
    assert "TRACKWARE_YOTPO_STORE_ID" in proc.stderr


def test_send_test_every_destination_against_the_emulators(
    emulator: VendorEmulator,
) -> None:
    url = emulator.url
    site_key = "ONE-NX8P2RSAAU-1813"
    envs = {
        "cardlytics": {
            "TRACKWARE_CARDLYTICS_BASE_URL": url,
            "TRACKWARE_CARDLYTICS_CLIENT_ID": "cardlytics-test-client",
            "TRACKWARE_CARDLYTICS_CLIENT_SECRET": "cardlytics-test-secret",
            "TRACKWARE_CARDLYTICS_CUSTOMER_ID_KEY": "hmac-key",
        },
        "mxo": {
            "TRACKWARE_MXO_BASE_URL": url,
            "TRACKWARE_MXO_SITE_KEY": site_key,
            "TRACKWARE_MXO_TOUCHPOINT": "web://test",
            "TRACKWARE_MXO_CLIENT_ID": "mxo-client-id",
            "TRACKWARE_MXO_CLIENT_SECRET": "mxo-client-secret",
        },
        "mxo-lightweight": {
            "TRACKWARE_MXO_BASE_URL": url,
            "TRACKWARE_MXO_SITE_KEY": site_key,
            "TRACKWARE_MXO_TOUCHPOINT": "web://test",
        },
        "yotpo": {
            "TRACKWARE_YOTPO_BASE_URL": url,
            "TRACKWARE_YOTPO_STORE_ID": "yotpo-test-store",
            "TRACKWARE_YOTPO_SECRET": "yotpo-test-secret-0001",
        },
    }
    for destination, env in envs.items():
        proc = trackware_cli("send-test", destination, env=env)
        assert proc.returncode == 0, (destination, proc.stdout, proc.stderr)
        assert "accepted" in proc.stdout, destination
    assert len(emulator.cardlytics.events) == 1
    assert len(emulator.mxo.events) == 2
    assert len(emulator.yotpo.events) == 1


def test_emulate_serves_the_vendor_apis() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trackware", "emulate", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line
        answer = httpx.post(
            f"http://127.0.0.1:{port}/uauth/v2/auth/login/profile",
            json={"apiKey": "test-synerise-api-key"},
            headers={"Api-Version": "4.4"},
        )
        assert answer.status_code == 200 and answer.json()["token"]
        refused = httpx.post(
            f"http://127.0.0.1:{port}/v4/events/custom", json={"action": "a.b"}
        )
        assert refused.status_code in (400, 401)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_dead_letter_prints_records(tmp_path: t.Any) -> None:
    path = tmp_path / "dead.jsonl"
    tracker = Tracker(
        [HTTPExporter(f"http://127.0.0.1:{free_port()}/down")], dead_letter=str(path)
    )
    tracker.track("order.placed", {"order_id": "o-1"})
    tracker.shutdown(timeout=0.2)  # nothing can be delivered: dead-lettered
    proc = trackware_cli("dead-letter", "--path", str(path), "--last", "5")
    assert proc.returncode == 0, proc.stderr
    (record,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert record["event"]["name"] == "order.placed"
    assert record["destination"] == "http"
    assert "1 record(s)" in proc.stderr


def test_send_test_answers_bad_input_without_a_traceback(
    emulator: VendorEmulator,
) -> None:
    env = {
        "TRACKWARE_SYNERISE_API_KEY": "test-synerise-api-key",
        "TRACKWARE_SYNERISE_BASE_URL": emulator.url,
    }
    cases = [
        (["--properties", "{not json"], "--properties is not valid JSON"),
        (["--properties", "[1, 2]"], "--properties must be a JSON object"),
        (["--email", "a\udcffb@example.com"], "invalid event"),
    ]
    for extra, message in cases:
        proc = trackware_cli("send-test", "synerise", *extra, env=env)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
    assert emulator.synerise.events == []


def test_version_and_help() -> None:
    proc = trackware_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"trackware {trackware.__version__}"
    proc = trackware_cli("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: trackware ")
    for command in ("emulate", "send-test", "dead-letter"):
        assert command in proc.stdout
    proc = trackware_cli("send-test", "--help")
    assert proc.returncode == 0 and "--properties" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["send-test", "nowhere"], "invalid choice: 'nowhere'"),
        (["dead-letter", "--last", "-3"], "--last: must be 0 or more"),
        (["dead-letter", "--last", "x"], "--last: not a whole number"),
        (["emulate", "--port", "70000"], "--port: a port is 0..65535"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], message: str) -> None:
    proc = trackware_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_404_is_reported_as_a_wrong_url_not_refused_credentials(
    emulator: VendorEmulator,
) -> None:
    wrong = emulator.url + "/wrong-prefix"
    envs = {
        "cardlytics": {
            "TRACKWARE_CARDLYTICS_BASE_URL": wrong,
            "TRACKWARE_CARDLYTICS_CLIENT_ID": "cardlytics-test-client",
            "TRACKWARE_CARDLYTICS_CLIENT_SECRET": "cardlytics-test-secret",
            "TRACKWARE_CARDLYTICS_CUSTOMER_ID_KEY": "hmac-key",
        },
        "mxo": {
            "TRACKWARE_MXO_BASE_URL": wrong,
            "TRACKWARE_MXO_SITE_KEY": "ONE-NX8P2RSAAU-1813",
            "TRACKWARE_MXO_TOUCHPOINT": "web://test",
            "TRACKWARE_MXO_CLIENT_ID": "mxo-client-id",
            "TRACKWARE_MXO_CLIENT_SECRET": "mxo-client-secret",
        },
        "mxo-lightweight": {
            "TRACKWARE_MXO_BASE_URL": wrong,
            "TRACKWARE_MXO_SITE_KEY": "ONE-NX8P2RSAAU-1813",
            "TRACKWARE_MXO_TOUCHPOINT": "web://test",
        },
        "synerise": {
            "TRACKWARE_SYNERISE_BASE_URL": wrong,
            "TRACKWARE_SYNERISE_API_KEY": "test-synerise-api-key",
        },
        "yotpo": {
            "TRACKWARE_YOTPO_BASE_URL": wrong,
            "TRACKWARE_YOTPO_STORE_ID": "yotpo-test-store",
            "TRACKWARE_YOTPO_SECRET": "yotpo-test-secret-0001",
        },
    }
    for destination, env in envs.items():
        proc = trackware_cli("send-test", destination, env=env)
        assert proc.returncode == 1, (destination, proc.stdout, proc.stderr)
        prefix = "MXO" if destination.startswith("mxo") else destination.upper()
        assert (
            f"{destination}: the vendor answered 404 (not found): the URL is wrong, "
            f"not the credentials: check TRACKWARE_{prefix}_BASE_URL"
        ) in proc.stdout, (destination, proc.stdout)
        assert "authentication refused" not in proc.stdout, destination
        assert "API secret" not in proc.stdout, destination
    assert all(r.status == 404 for r in emulator.requests)


def test_send_test_names_the_url_when_nothing_answers() -> None:
    proc = trackware_cli(
        "send-test",
        "synerise",
        env={
            "TRACKWARE_SYNERISE_API_KEY": "test-synerise-api-key",
            "TRACKWARE_SYNERISE_BASE_URL": f"http://127.0.0.1:{free_port()}",
        },
    )
    assert proc.returncode == 1
    assert "no HTTP answer: check TRACKWARE_SYNERISE_BASE_URL" in proc.stdout


def test_dead_letter_missing_corrupt_or_unreadable(tmp_path: t.Any) -> None:
    missing = tmp_path / "none" / "dead.jsonl"
    proc = trackware_cli("dead-letter", "--path", str(missing))
    assert proc.returncode == 0 and proc.stdout == ""
    assert f"0 record(s): there is no file at {missing}" in proc.stderr

    good = {"event": {"name": "a"}, "destination": "http", "reason": "x"}
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_bytes(
        json.dumps(good).encode()
        + b"\n{cut short\n\xff\xfe\n[1]\n"
        + json.dumps(good).encode()
        + b"\n"
    )
    proc = trackware_cli("dead-letter", "--path", str(corrupt))
    assert proc.returncode == 1
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [good, good]
    assert "2 record(s)" in proc.stderr
    assert "3 line(s)" in proc.stderr and "(line 2, 3, 4)" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = trackware_cli("dead-letter", "--path", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"trackware: dead-letter: cannot read {tmp_path}: Is a directory"
    )


class _Broken:
    """A destination whose from_env() fails in a way the CLI does not expect."""

    @classmethod
    def from_env(cls) -> t.NoReturn:
        raise RuntimeError("boom")


def test_an_unexpected_error_is_one_line_unless_traceback_is_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(_cli.DESTINATIONS, "broken", (__name__, "_Broken", "a", {}))
    assert _cli.main(["send-test", "broken"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "trackware: send-test: unexpected error: RuntimeError: boom (this is a bug "
        "in trackware; --traceback shows where)"
    )
    with pytest.raises(RuntimeError, match="boom"):
        _cli.main(["--traceback", "send-test", "broken"])


class _Interrupted:
    @classmethod
    def from_env(cls) -> t.NoReturn:
        raise KeyboardInterrupt


def test_ctrl_c_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(
        _cli.DESTINATIONS, "interrupted", (__name__, "_Interrupted", "a", {})
    )
    assert _cli.main(["send-test", "interrupted"]) == 130
    assert capsys.readouterr().err == ""


def test_dead_letter_into_a_pipe_closed_early(tmp_path: t.Any) -> None:
    """`trackware dead-letter | head -1`: the reader leaves; no traceback."""
    path = tmp_path / "dead.jsonl"
    record = {"event": {"name": "a", "properties": {"pad": "x" * 200}}}
    path.write_text((json.dumps(record) + "\n") * 2000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "trackware", "dead-letter", "--path", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline()) == record
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(60) == 1
    assert "Traceback" not in err and "bug" not in err and "Exception" not in err
