"""The repository-wide secret scan.

Every exporter (the four vendors' five and ``HTTPExporter`` with credentials in
its URL) runs against real loopback servers, with DEBUG logging on for every
logger (trackware, httpx, httpcore), through success, 401, 500 and timeouts.
No configured secret and no token a vendor issued may appear in what trackware
produces: log records, reprs, exceptions, stats, dead letters, CLI output.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import typing as t

import pytest
from _support import Sink

import trackware
from trackware import JSONLinesDeadLetter, RetryPolicy
from trackware.exporters import HTTPExporter
from trackware.exporters.cardlytics import ClientEventExporter
from trackware.exporters.mxo import InteractionExporter, LightweightExporter
from trackware.exporters.synerise import SyneriseExporter
from trackware.exporters.yotpo import CustomEventExporter
from trackware.testing.emulators import VendorEmulator

SITE_KEY = "ONE-NX8P2RSAAU-1813"
URL_PASSWORD = "url-pass-5f4e3d2c1b0a"
URL_API_KEY = "url-apikey-0a1b2c3d4e5f"
#: The credentials every exporter is configured with (the emulator's own).
CONFIGURED = {
    "cardlytics": "cardlytics-test-secret",
    "cardlytics_hmac": "hmac-key-for-customers",
    "mxo": "mxo-client-secret",
    "synerise": "test-synerise-api-key",
    "yotpo": "yotpo-test-secret-0001",
    "url_password": URL_PASSWORD,
    "url_api_key": URL_API_KEY,
}
#: One event per destination, mapped to it.
EVENTS = {
    "offer.activated": {"serveToken": "st-1", "section": "LatestOffers"},
    "page": {"path": "/"},
    "cart.added": {"sku": "p-1"},
    "product.viewed": {"sku": "p-1"},
    "order.shipped": {"order_id": "o-1"},
}
VENDORS = ("cardlytics", "mxo", "synerise", "yotpo")


def exporters(emulator_url: str, sink_url: str, timeout: float) -> list[t.Any]:
    scheme, rest = sink_url.split("://", 1)
    url = f"{scheme}://ingest:{URL_PASSWORD}@{rest}/events?api_key={URL_API_KEY}"
    return [
        ClientEventExporter(
            base_url=emulator_url,
            client_id="cardlytics-test-client",
            client_secret=CONFIGURED["cardlytics"],
            customer_id_key=CONFIGURED["cardlytics_hmac"],
            mapping={"offer.activated": "ActivateOffer"},
            session_event=None,
            timeout=timeout,
        ),
        InteractionExporter(
            base_url=emulator_url,
            client_id="mxo-client-id",
            client_secret=CONFIGURED["mxo"],
            site_key=SITE_KEY,
            touchpoints={"page": "web://shop/page"},
            timeout=timeout,
        ),
        LightweightExporter(
            base_url=emulator_url,
            site_key=SITE_KEY,
            touchpoints={"cart.added": "web://shop/cart"},
            timeout=timeout,
        ),
        SyneriseExporter(
            api_key=CONFIGURED["synerise"],
            base_url=emulator_url,
            tracker_key="test-tracker-key-0001",
            actions={"product.viewed": "product.view"},
            send_unmapped=False,
            timeout=timeout,
        ),
        CustomEventExporter(
            "yotpo-test-store",
            CONFIGURED["yotpo"],
            base_url=emulator_url,
            event_names={"order.shipped": "order_shipped"},
            rate_limit=None,
            timeout=timeout,
        ),
        HTTPExporter(url, events=["page"], timeout=timeout),
    ]


def issued_tokens(emulator: VendorEmulator, sink: Sink) -> set[str]:
    """Every credential that crossed the wire: header values we sent and the
    token fields the vendors answered with."""
    found: set[str] = set()

    def walk(value: t.Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if "token" in key.lower() and isinstance(item, str) and len(item) >= 8:
                    found.add(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    headers = [r.headers for r in emulator.recorded()] + sink.headers
    for header_map in headers:
        for key, value in header_map.items():
            if key.lower() in ("authorization", "x-yotpo-token", "api-key"):
                found.add(value.split(" ", 1)[-1])
    for request in emulator.recorded():
        walk(request.reply)
        try:
            walk(request.json())
        except ValueError:
            pass
    return {tok for tok in found if len(tok) >= 8}


def scan(texts: dict[str, str], secrets: t.Iterable[str]) -> list[str]:
    return [
        f"{where} contains {secret[:6]}…"
        for where, text in texts.items()
        for secret in secrets
        if secret in text
    ]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["ok", "401", "500", "timeout"])
def test_no_secret_or_token_leaks_anywhere(
    scenario: str,
    emulator: VendorEmulator,
    sink: Sink,
    tmp_path: t.Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: trackware, httpx, httpcore
    emulator.yotpo.rate_limit = None
    timeout = 5.0
    if scenario in ("401", "500"):
        for vendor in VENDORS:
            emulator.fault(vendor, status=int(scenario), times=None)
        sink.default_status = int(scenario)
    elif scenario == "timeout":
        timeout = 0.2
        for vendor in VENDORS:
            emulator.fault(vendor, delay=0.6, times=None)
        sink.script.extend([("sleep", 0.6)] * 20)
    dead_path = tmp_path / "dead.jsonl"
    tracker = trackware.Tracker(
        exporters(emulator.url, sink.url, timeout),
        dead_letter=JSONLinesDeadLetter(dead_path),
        retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02),
        flush_interval=0.01,
    )
    for name, props in EVENTS.items():
        tracker.track(name, props, user_id="c-42", email="c42@example.com")
    assert tracker.flush(timeout=60)
    stats = tracker.stats()
    reprs = [repr(tracker)] + [repr(d.exporter) for d in tracker.destinations]
    tracker.shutdown()

    rows = stats["destinations"]
    if scenario == "ok":
        assert all(row["sent"] >= 1 for row in rows.values()), rows
        assert not dead_path.exists() or not dead_path.read_text().strip()
    else:
        # Every destination failed and kept the evidence (so the scan below
        # reads real failure output, not an empty file).
        assert all(row["dead_lettered"] >= 1 for row in rows.values()), rows
    tokens = issued_tokens(emulator, sink)
    if scenario == "ok":
        assert len(tokens) >= 3, tokens  # MXO, Synerise and Yotpo tokens at least
    problems = scan(
        {
            "log": caplog.text,
            "log records": "\n".join(
                f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
            ),
            "dead letter": dead_path.read_text() if dead_path.exists() else "",
            "reprs": "\n".join(reprs),
            "stats": json.dumps(stats, default=str),
        },
        set(CONFIGURED.values()) | tokens,
    )
    assert problems == []


def test_cli_send_test_output_has_no_secret(emulator: VendorEmulator) -> None:
    """``trackware send-test`` through an accepted event and a refusal."""
    base = dict(os.environ)
    runs = []
    for secret in ("yotpo-test-secret-0001", "yotpo-wrong-secret-42"):
        env = dict(
            base,
            TRACKWARE_YOTPO_STORE_ID="yotpo-test-store",
            TRACKWARE_YOTPO_SECRET=secret,
            TRACKWARE_YOTPO_BASE_URL=emulator.url,
        )
        proc = subprocess.run(
            [sys.executable, "-m", "trackware._cli", "send-test", "yotpo"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        runs.append((secret, proc))
    assert runs[0][1].returncode == 0, runs[0][1].stderr
    assert runs[1][1].returncode != 0
    tokens = {
        value
        for request in emulator.recorded()
        for key, value in request.headers.items()
        if key.lower() == "x-yotpo-token"
    }
    assert tokens  # the accepted run used one
    for secret, proc in runs:
        output = proc.stdout + proc.stderr
        assert scan({"cli": output}, {secret, *tokens}) == []
