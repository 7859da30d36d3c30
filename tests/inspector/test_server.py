"""The inspector sidecar over real sockets: who may talk to it, what it serves,
its bounded memory, its live stream and its command line."""

from __future__ import annotations

import re
import subprocess
import sys
import typing as t

import httpx
import pytest

from trackware.inspector import InspectorServer, InspectorState, main
from trackware.inspector._server import STATIC

PROCESS = {"id": "host:1:1", "pid": 1, "host": "host", "app": "shop:app"}


def event_record(i: int) -> dict[str, t.Any]:
    return {
        "kind": "event",
        "event_id": f"ev-{i}",
        "name": "page",
        "timestamp": "2026-01-01T00:00:00Z",
        "user_id": "u",
        "data": {"properties": {"i": i}},
        "routing": {"mxo": "queued"},
    }


def ingest(url: str, records: list[t.Any], **kwargs: t.Any) -> httpx.Response:
    return httpx.post(
        f"{url}/api/ingest",
        json={"process": PROCESS, "records": records, "results": []},
        timeout=5,
        **kwargs,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_another_interface_is_refused_without_a_token(
    host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="token"):
        InspectorServer(host, 0)
    assert main(["--host", host, "--port", "0"]) == 2
    assert "without a token" in capsys.readouterr().err


def test_with_a_token_apps_and_browsers_must_bring_it() -> None:
    with InspectorServer("127.0.0.1", 0, token="s3cret-token") as server:
        url = server.url
        assert ingest(url, [event_record(1)]).status_code == 403
        wrong = {"Authorization": "Bearer nope"}
        assert ingest(url, [event_record(1)], headers=wrong).status_code == 403
        right = {"Authorization": "Bearer s3cret-token"}
        assert ingest(url, [event_record(1)], headers=right).status_code == 200
        assert httpx.get(f"{url}/api/events").status_code == 403
        assert httpx.get(f"{url}/").status_code == 403
        # The page opened once with the token: a cookie, and the token leaves
        # the address bar.
        first = httpx.get(f"{url}/?token=s3cret-token")
        assert first.status_code == 303 and first.headers["location"] == "/"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        with httpx.Client(base_url=url, cookies=first.cookies) as browser:
            assert browser.get("/").status_code == 200
            events = browser.get("/api/events").json()["events"]
            assert [e["event_id"] for e in events] == ["ev-1"]


def test_other_sites_cannot_reach_a_loopback_inspector() -> None:
    with InspectorServer(port=0) as server:
        url = server.url
        rebound = httpx.get(f"{url}/api/events", headers={"Host": "evil.example"})
        assert rebound.status_code == 403
        cross = httpx.post(
            f"{url}/api/replay",
            json={"process": PROCESS["id"], "keys": ["k"]},
            headers={"Origin": "http://evil.example"},
        )
        assert cross.status_code == 403
        assert ingest(url, [event_record(1)]).status_code == 200
        same = httpx.post(
            f"{url}/api/replay",
            json={"process": PROCESS["id"], "destination": "mxo", "keys": ["k"]},
            headers={"Origin": url},
        )
        assert same.status_code == 202
        # The command reaches the app in the answer to its next POST.
        commands = ingest(url, []).json()["commands"]
        assert commands == [
            {
                "id": same.json()["id"],
                "op": "replay",
                "destination": "mxo",
                "keys": ["k"],
            }
        ]


def test_memory_is_bounded() -> None:
    state = InspectorState(max_events=10)
    for i in range(50):
        state.ingest({"process": PROCESS, "records": [event_record(i)]})
    listed = state.list_events(1000)
    assert [e["event_id"] for e in listed] == [f"ev-{i}" for i in range(49, 39, -1)]


def test_the_page_is_self_contained() -> None:
    with InspectorServer(port=0) as server:
        page = httpx.get(f"{server.url}/")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for path in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            assert path.startswith("/static/"), path
            assert httpx.get(f"{server.url}{path}").status_code == 200
    for file in STATIC.iterdir():
        text = file.read_text()
        assert not re.search(r"https?://", text), (
            f"{file.name} fetches from the internet"
        )
        assert "innerHTML" not in text


def test_the_stream_pushes_each_event_as_it_arrives() -> None:
    with InspectorServer(port=0) as server:
        with httpx.stream("GET", f"{server.url}/api/stream", timeout=10) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            ingest(server.url, [event_record(7)])
            seen = []
            for line in lines:
                seen.append(line)
                if line.startswith("data:") and "ev-7" in line:
                    break
            assert "event: event" in seen


def test_the_command_serves_until_stopped() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trackware.inspector", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"open (http://127\.0\.0\.1:\d+)/", first)
        assert match, first
        health = httpx.get(f"{match.group(1)}/health", timeout=5)
        assert health.json()["ok"] is True
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
