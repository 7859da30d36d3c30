"""The ``trackware`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing as t

import httpx
from _support import free_port

from trackware import Tracker
from trackware.exporters import HTTPExporter
from trackware.testing.emulators import VendorEmulator

SECRET = "cli-test-api-key-must-not-leak"


def trackware_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "trackware._cli", *args],
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
        [sys.executable, "-m", "trackware._cli", "emulate", "--port", str(port)],
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
