"""Test support: a real HTTP sink on 127.0.0.1 that can be scripted to fail."""

from __future__ import annotations

import collections
import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import typing as t

import pytest


class Sink:
    """A real HTTP server that records event ids and can be scripted to fail.

    ``script`` is a deque of answers consumed one per request: an int status,
    a ``(status, headers)`` tuple, ``"drop"`` (close the connection without
    answering), ``"partial"`` (send headers and half the body, then close), or
    ``("sleep", seconds)`` (answer 200 after a delay).
    """

    def __init__(self, port: int = 0) -> None:
        self.ids: list[str] = []
        self.requests = 0
        self.script: collections.deque[t.Any] = collections.deque()
        self.default_status = 200
        self.cond = threading.Condition()
        self.bodies: list[t.Any] = []
        self.times: list[float] = []
        self.headers: list[dict[str, str]] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: t.Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with sink.cond:
                    sink.requests += 1
                    sink.times.append(time.monotonic())
                    sink.headers.append(dict(self.headers))
                    action = (
                        sink.script.popleft() if sink.script else sink.default_status
                    )
                    sink.cond.notify_all()
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "partial":
                    self.close_connection = True
                    self.wfile.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b'Content-Length: 100\r\n\r\n{"ok":'
                    )
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                headers: dict[str, str] = {}
                if isinstance(action, tuple) and action[0] == "echo":
                    # Answer with the request's headers and URL in the body, as a
                    # careless vendor error page might.
                    out = json.dumps(
                        {"path": self.path, "headers": dict(self.headers)}
                    ).encode()
                    self.send_response(int(action[1]))
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                if isinstance(action, tuple) and action[0] == "sleep":
                    time.sleep(action[1])
                    action = 200
                if isinstance(action, tuple):
                    action, headers = action
                status = int(action)
                if 200 <= status < 300:
                    payload = json.loads(body)
                    events = payload["events"] if isinstance(payload, dict) else payload
                    with sink.cond:
                        sink.bodies.append(payload)
                        sink.ids.extend(e["event_id"] for e in events)
                        sink.cond.notify_all()
                    out = b'{"ok":true}'
                else:
                    out = json.dumps({"error": f"scripted {status}"}).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.ids) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
        return True

    def wait_requests(self, count: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.requests < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
        return True

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: t.Callable[[], t.Any], timeout: float = 10.0, what: str | None = None
) -> t.Any:
    """Poll ``predicate`` until it returns something truthy, and return that;
    fail the test, naming ``what`` (or the predicate), after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


def wait_until_serving(proc: t.Any, url: str, timeout: float = 60.0) -> None:
    """Wait until the server ``proc`` answers 2xx at ``url``; fail, with its
    output, if it exits first (the caller stops it if it never answers)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            try:  # workers it left behind may hold the pipe open
                out, _ = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                out = "(its output is still open in a process it left)"
            pytest.fail(f"server exited early ({proc.returncode}):\n{out}")
        try:
            if httpx.get(url, timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer within {timeout} s")
        time.sleep(0.05)


@contextlib.contextmanager
def serving(
    args: t.Sequence[str], env: dict[str, str], port: int
) -> t.Iterator[subprocess.Popen[str]]:
    """``python -m *args`` as a server on ``port`` (its own process group, so
    its workers too; stdout and stderr collected together), ready once
    ``/health`` answers. Killed with its workers if the test leaves it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until_serving(proc, f"http://127.0.0.1:{port}/health")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def mxo_page_ids(emulator: t.Any) -> tuple[list[str], set[str]]:
    """Event ids and touchpoint URIs of the page events the MXO emulator accepted
    through offline batches (the example apps send ``event_id`` as a property)."""
    pages = [e for e in emulator.mxo.events if e["endpoint"] == "mxo.offline_batch"]
    ids = [
        p["value"]
        for e in pages
        for p in e["interaction"]["properties"]
        if p["name"] == "event_id"
    ]
    return ids, {e["interaction"]["uri"] for e in pages}


# --- fixtures shared by tests/ and integrations/ (imported by their conftests) -----


@pytest.fixture
def sink() -> t.Iterator[Sink]:
    s = Sink()
    yield s
    s.stop()


@pytest.fixture
def emulator() -> t.Iterator[t.Any]:
    """All vendor emulators on a free 127.0.0.1 port (``VendorEmulator``)."""
    from trackware.testing.emulators import VendorEmulator

    with VendorEmulator() as emu:
        yield emu


def example_env(emulator_url: str, dead_letter: t.Any) -> dict[str, str]:
    """Environment for an example app in a server process: the emulators' URL
    and a dead-letter path of the test's own."""
    env = dict(os.environ)
    env["TRACKWARE_EMULATOR_URL"] = emulator_url
    env["TRACKWARE_DEAD_LETTER_PATH"] = str(dead_letter)
    return env


@pytest.fixture(autouse=True)
def _isolate(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> t.Iterator[None]:
    """Every test gets its own dead-letter path, no process-default tracker and
    an empty secret registry (a secret one test registers, "client" say, would
    otherwise be scrubbed from the text a later test reads)."""
    monkeypatch.setenv("TRACKWARE_DEAD_LETTER_PATH", str(tmp_path / "dead.jsonl"))
    monkeypatch.delenv("TRACKWARE_DISABLED", raising=False)
    # A developer's exported inspector must not attach to every test tracker.
    monkeypatch.delenv("TRACKWARE_INSPECTOR", raising=False)
    monkeypatch.delenv("TRACKWARE_INSPECTOR_TOKEN", raising=False)
    from trackware import _default, _log

    monkeypatch.setattr(_default, "current", None)
    monkeypatch.setattr(_log, "_throttle", _log._Throttle())
    monkeypatch.setattr(_log, "_secrets", collections.OrderedDict())
    monkeypatch.setattr(_log, "_by_length", ())
    yield


def run_script(
    code: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter that can import the
    test helpers; its output is captured."""
    env = dict(os.environ)
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def mypy_flags(tmp_path: t.Any, good: str, bad: str) -> tuple[str, set[str]]:
    """Run ``mypy --strict`` (for Python 3.10) on two snippets written as
    ``good.py`` and ``bad.py``; assert ``good.py`` is clean and mypy failed,
    and return its output and the line numbers it flagged in ``bad.py``."""
    import pathlib

    import trackware

    root = pathlib.Path(trackware.__file__).parent.parent
    (tmp_path / "good.py").write_text(good)
    (tmp_path / "bad.py").write_text(bad)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--python-version",
            "3.10",
            str(tmp_path / "good.py"),
            str(tmp_path / "bad.py"),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 1, out
    assert "good.py" not in out, out
    flagged = {line.split(":")[1] for line in out.splitlines() if "bad.py:" in line}
    return out, flagged


# --- forged trackware cookies (the Flask and ASGI cookie-forgery suites) ------------

COOKIE_OTHER_SECRET = "someone-elses-secret-key"
COOKIE_RETIRED_SECRET = "a-secret-key-rotated-out-long-ago"
VICTIM_VID = "5a2b7c9d0e1f4a3b8c6d2e0f1a9b8c7d"
VICTIM_TID = "6f1c2b3a-0000-4000-8000-00000000abcd"
VICTIM_SID = "0d9c8b7a6f5e4d3c2b1a09f8e7d6c5b4"


def sign_cookie(secret: str | bytes, name: str, value: str) -> str:
    """The documented scheme, written independently of trackware's code:
    key = HMAC-SHA256(secret, "trackware.cookie.v1"); cookie = value "."
    base64url(HMAC-SHA256(key, name "=" value)), unpadded."""
    import base64
    import hashlib
    import hmac

    raw = secret.encode() if isinstance(secret, str) else secret
    key = hmac.new(raw, b"trackware.cookie.v1", hashlib.sha256).digest()
    mac = hmac.new(key, f"{name}={value}".encode(), hashlib.sha256).digest()
    return f"{value}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def session_payload(sid: str = VICTIM_SID, age: int = 60) -> str:
    """A session cookie's plain value: started ``age`` s ago, seen 5 s ago."""
    now = int(time.time())
    return f"{sid}.{now - age:x}.{now - 5:x}"


def _tweak(v: str) -> str:
    return v[:-1] + ("0" if v[-1] != "0" else "1")


def cookie_forgeries(secret: str) -> dict[str, t.Callable[[str, str], str]]:
    """Ways to forge cookie ``name`` holding ``value`` for an app whose key
    is ``secret``; none may be trusted."""
    return {
        "unsigned (as trackware 0.1.0 wrote the visitor and tid)": lambda n, v: v,
        "signed with another secret": lambda n, v: sign_cookie(
            COOKIE_OTHER_SECRET, n, v
        ),
        "signed with a retired secret": lambda n, v: sign_cookie(
            COOKIE_RETIRED_SECRET, n, v
        ),
        "the signature of another cookie": lambda n, v: sign_cookie(
            secret, "tw_tid" if n != "tw_tid" else "tw_vid", v
        ),
        "another value under a genuine signature": lambda n, v: (
            _tweak(v) + "." + sign_cookie(secret, n, v).rsplit(".", 1)[1]
        ),
        "a truncated signature": lambda n, v: sign_cookie(secret, n, v)[:-2],
        "a signature with its last character changed": lambda n, v: _tweak(
            sign_cookie(secret, n, v)
        ),
        "an empty signature": lambda n, v: v + ".",
        "markup": lambda n, v: '<script>"x"</script>',
        "non-ASCII in the signature": lambda n, v: v + "." + "\xe9" * 43,
    }


def dropped_reasons(tracker: t.Any) -> list[str]:
    """A list that collects the detail of every event ``tracker`` drops (its
    ``event_dropped`` signal), from now on."""
    import trackware

    reasons: list[str] = []

    def receiver(sender: t.Any, /, **kw: t.Any) -> None:
        reasons.append(kw["detail"])

    trackware.signals.event_dropped.connect(receiver, sender=tracker, weak=False)
    return reasons


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)

    run(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=trackware test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    extensions = {
        "server": "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for who, ext in extensions.items():
        (d / f"{who}.ext").write_text(ext + "authorityKeyIdentifier=keyid\n")
        run(
            "req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr",
            "-subj", f"/CN={who}",
        )  # fmt: skip
        run(
            "x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.crt", "-days", "2",
            "-extfile", f"{who}.ext",
        )  # fmt: skip
    names = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
    return {name: str(d / name) for name in names}
