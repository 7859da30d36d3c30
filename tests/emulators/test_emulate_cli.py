"""``trackware emulate`` as a real subprocess: what it prints at start (the
credentials, the ``export`` lines), one flushed line per request, and the page
listing what it received."""

from __future__ import annotations

import contextlib
import os
import pathlib
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import typing as t

import httpx
import pytest

from trackware.testing.emulators import VendorEmulator

DEADLINE = 30.0


class Emulate:
    """``python -m trackware emulate --port 0``, its stdout read line by line
    by a thread (so that a test can wait for a line with a deadline)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trackware", "emulate", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Ctrl-C as a terminal sends it, even from a test run started in
            # the background of a non-interactive shell, which ignores SIGINT
            # (a child inherits that).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next_line(lambda line: "listening on" in line)
        found = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert found, first
        self.url = found.group(0)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, match: t.Callable[[str], bool]) -> str:
        """The next line ``match`` accepts (lines before it are kept in
        ``seen``); fails if none comes within the deadline."""
        deadline = time.monotonic() + DEADLINE
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no matching line within {DEADLINE} s; got {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                assert self.proc.stderr is not None
                pytest.fail(f"emulate exited: {self.seen} {self.proc.stderr.read()}")
            self.seen.append(line)
            if match(line):
                return line

    def until_requests(self) -> list[str]:
        """The start-up block, up to the line announcing the request log."""
        self.next_line(lambda line: line.startswith("Requests"))
        return list(self.seen)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def emulate() -> t.Iterator[Emulate]:
    running = Emulate()
    try:
        yield running
    finally:
        running.stop()


def exports(lines: list[str]) -> dict[str, str]:
    """The variables of the ``export NAME=VALUE`` lines, as a shell reads them."""
    found = {}
    for line in lines:
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            (found[name],) = shlex.split(value)
    return found


def test_start_prints_credentials_and_the_export_lines(emulate: Emulate) -> None:
    block = emulate.until_requests()
    text = "\n".join(block)
    for credential in (
        "cardlytics-test-client",
        "cardlytics-test-secret",
        "mxo-client-id",
        "mxo-client-secret",
        "test-synerise-api-key",
        "test-tracker-key-0001",
        "yotpo-test-store",
        "yotpo-test-secret-0001",
    ):
        assert credential in text
    env = exports(block)
    url = emulate.url
    for vendor in ("CARDLYTICS", "MXO", "SYNERISE", "YOTPO"):
        assert env[f"TRACKWARE_{vendor}_BASE_URL"] == url
    assert env["TRACKWARE_EMULATOR_URL"] == url
    assert f"{url}/_emulator/received" in text


def test_the_export_lines_make_send_test_work_for_every_destination(
    emulate: Emulate,
) -> None:
    env = dict(os.environ)
    env = {k: v for k, v in env.items() if not k.startswith("TRACKWARE_")}
    env.update(exports(emulate.until_requests()))
    destinations = ["cardlytics", "mxo", "mxo-lightweight", "synerise", "yotpo"]
    for destination in destinations:
        proc = subprocess.run(
            [sys.executable, "-m", "trackware", "send-test", destination],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert proc.returncode == 0, (destination, proc.stdout, proc.stderr)
        assert "accepted" in proc.stdout
        # A warning here would mean an export line names a variable that
        # no from_env() reads.
        assert "did you mean" not in proc.stderr
    received = httpx.get(f"{emulate.url}/_emulator/received").json()["vendors"]
    assert {v: received[v]["events"] for v in received} == {
        "cardlytics": 1,
        "mxo": 2,
        "synerise": 1,
        "yotpo": 1,
    }
    # The page at / lists them too.
    page = httpx.get(emulate.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "synerise: 1 event(s) accepted" in page.text
    assert "trackware-test-user" in page.text  # the last events are shown


def test_one_line_per_request_without_credentials(emulate: Emulate) -> None:
    emulate.until_requests()
    token = "bearer-value-that-must-not-be-logged"
    query_token = "query-token-that-must-not-be-logged"
    answer = httpx.post(
        f"{emulate.url}/v4/events/custom",
        json={"action": "a.b"},
        headers={"Api-Version": "4.4", "Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 401
    line = emulate.next_line(lambda line: "/v4/events/custom" in line)
    assert "synerise synerise.custom POST /v4/events/custom -> 401" in line
    assert "rule: Authorization:" in line
    assert token not in line

    # A 4xx names the rule the emulator says was broken; query values hidden.
    httpx.post(
        f"{emulate.url}/events/v1/single/x?token={query_token}",
        json={},
    )
    line = emulate.next_line(lambda line: "/events/v1/single/x" in line)
    assert "?token=... -> 401 rule: token: unknown tracker key" in line
    assert query_token not in line

    # A token request: the secret in its body stays out of the log too.
    login = httpx.post(
        f"{emulate.url}/uauth/v2/auth/login/profile",
        json={"apiKey": "test-synerise-api-key"},
        headers={"Api-Version": "4.4"},
    )
    assert login.status_code == 200
    line = emulate.next_line(lambda line: "/uauth/" in line)
    assert "-> 200" in line and "test-synerise-api-key" not in line
    assert login.json()["token"] not in "\n".join(emulate.seen)

    httpx.get(f"{emulate.url}/no/such/path")
    line = emulate.next_line(lambda line: "/no/such/path" in line)
    assert "- - GET /no/such/path -> 404 rule: no such endpoint" in line

    # The emulator's own pages are neither logged nor counted as requests.
    received = httpx.get(f"{emulate.url}/_emulator/received").json()
    assert received["vendors"]["synerise"]["requests"] == 3
    assert received["unrouted"]["requests"] == 1
    rules = [r["rule"] for r in received["vendors"]["synerise"]["last_requests"]]
    assert "token: unknown tracker key" in rules


def test_emulate_on_a_port_in_use_is_one_line_and_exit_2() -> None:
    with contextlib.closing(__import__("socket").socket()) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "trackware", "emulate", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"trackware: emulate: cannot listen on 127.0.0.1:{port}: Address already "
        "in use (another `trackware emulate`? choose another --port)"
    ]


def test_docs_show_the_start_up_block_as_printed() -> None:
    """docs/cli.md shows what `trackware emulate` prints on port 8900."""
    docs = pathlib.Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    text = docs.read_text(encoding="utf-8")
    start = text.index("trackware vendor emulators listening on")
    end = text.index("Requests (one line each):", start)
    shown = text[start:end] + "Requests (one line each):"
    assert shown == VendorEmulator(port=8900).banner()


def test_the_log_marks_injected_faults_and_a_failing_log_breaks_nothing() -> None:
    lines: list[str] = []
    with VendorEmulator(log=lines.append) as emu:
        emu.fault("synerise.custom", status=503)
        emu.fault("synerise.custom", drop=True)
        url = f"{emu.url}/v4/events/custom"
        assert httpx.post(url, json={}).status_code == 503
        with pytest.raises(httpx.TransportError):
            httpx.post(url, json={})
        assert emu.wait_for(lambda: len(emu.requests) == 2)
        assert lines[0].endswith("POST /v4/events/custom -> 503 (fault)")
        assert lines[1].endswith("-> no answer (fault: dropped)")

        def broken(line: str) -> None:
            raise OSError("stdout closed")

        emu.log = broken
        # answered all the same
        assert httpx.post(url, json={}).status_code in (400, 401)


def test_the_log_hides_basic_credentials_but_keeps_the_rule() -> None:
    import base64

    lines: list[str] = []
    encoded = base64.b64encode(b"mxo-client-id:wrong-secret-xyz").decode()
    with VendorEmulator(log=lines.append) as emu:
        answer = httpx.post(
            f"{emu.url}/one/oauth2token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {encoded}"},
        )
        assert answer.status_code == 401
        answer = httpx.post(
            f"{emu.url}/one/oauth2token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": "Basic not-base64-at-all!"},
        )
        assert answer.status_code == 401
    first, second = lines
    assert first.endswith(
        "mxo mxo.token POST /one/oauth2token -> 401 rule: invalid_client: "
        "unknown client id or wrong secret"
    )
    assert encoded not in first
    # The scheme word is not a secret: the rule naming it stays readable.
    assert second.endswith(
        "-> 401 rule: client_authentication: Basic credentials are not base64"
    )
    assert "not-base64-at-all" not in second


def test_ctrl_c_stops_emulate_cleanly(emulate: Emulate) -> None:
    import signal

    emulate.until_requests()
    emulate.proc.send_signal(signal.SIGINT)
    assert emulate.proc.wait(30) == 0
    assert emulate.proc.stderr is not None
    assert "Traceback" not in emulate.proc.stderr.read()
