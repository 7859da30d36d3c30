"""The Flask integration under real servers and process models (subprocesses).

gunicorn sync workers with ``--preload`` (the tracker is created in the master
and inherited by forked workers), gthread workers without it, and the
``flask run`` development server. Each run ends the way operators end it
(SIGTERM for gunicorn, Ctrl-C for ``flask run``) and checks that every page
event arrived at a real HTTP sink exactly once.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import typing as t

import httpx
import pytest
from _support import Sink, free_port, wait_until_serving

pytestmark = pytest.mark.slow

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/130"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(command: list[str], sink: Sink, port: int) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["TRACKWARE_TEST_SINK_URL"] = sink.url
    env["PYTHONFAULTHANDLER"] = "1"  # a server that hangs shows where (SIGABRT)
    env["PYTHONPATH"] = APPS + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        command,
        cwd=APPS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C as a terminal sends it: a test run started in the background
        # of a non-interactive shell (`make test &`) ignores SIGINT, and a
        # child inherits that (Python keeps an ignored SIGINT ignored).
        preexec_fn=_default_sigint,
    )
    try:  # its readiness probe is untracked
        wait_until_serving(proc, f"http://127.0.0.1:{port}/ready")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        raise
    return proc


def send_requests(port: int, total: int, clients: int = 4) -> set[int]:
    """``total`` tracked requests from ``clients`` concurrent browsers; the pids."""

    def browse(first: int) -> list[int]:
        pids = []
        headers = {"User-Agent": BROWSER, "X-Test-User": f"user-{first}"}
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=headers
        ) as client:
            for i in range(first, total, clients):
                response = client.get(f"/items/{i}", timeout=30)
                assert response.status_code == 200
                assert response.json()["item"] == i
                pids.append(response.json()["pid"])
        return pids

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(browse, range(clients)))
    return {pid for pids in results for pid in pids}


def stop(proc: subprocess.Popen[str], sig: signal.Signals) -> str:
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"server did not exit within 60 s of {sig.name}:\n{out[-8000:]}")
    return out


def page_events(sink: Sink) -> list[dict[str, t.Any]]:
    with sink.cond:
        bodies = list(sink.bodies)
    return [e for body in bodies for e in body["events"] if e["name"] == "page"]


def check_exactly_once(sink: Sink, total: int, output: str) -> None:
    pages = page_events(sink)
    ids = [e["event_id"] for e in pages]
    assert len(set(ids)) == len(ids), "duplicate page events"
    paths = sorted(e["properties"]["path"] for e in pages)
    assert paths == sorted(f"/items/{i}" for i in range(total)), output[-3000:]
    assert {e["properties"]["route"] for e in pages} == {"/items/<int:item_id>"}
    assert {e["properties"]["status"] for e in pages} == {200}
    # One visitor per browser, whichever worker or thread served it, and each
    # visitor's events carry that browser's user only.
    users_of: dict[str, set[str]] = {}
    for event in pages:
        users_of.setdefault(event["anonymous_id"], set()).add(event["user_id"])
    assert sorted(sorted(users) for users in users_of.values()) == [
        [f"user-{i}"] for i in range(4)
    ]


def gunicorn(port: int, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        "2",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "30",
        *options,
        "served_app:app",
    ]


def test_gunicorn_sync_workers_with_preload_deliver_every_page_once(
    sink: Sink,
) -> None:
    port = free_port()
    proc = start(gunicorn(port, "--preload"), sink, port)
    pids = send_requests(port, 200)
    assert len(pids) == 2  # both forked workers served and tracked
    output = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, output
    check_exactly_once(sink, 200, output)


def test_gunicorn_gthread_workers_without_preload_deliver_every_page_once(
    sink: Sink,
) -> None:
    port = free_port()
    proc = start(
        gunicorn(port, "--worker-class", "gthread", "--threads", "4"), sink, port
    )
    send_requests(port, 200)
    output = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, output
    check_exactly_once(sink, 200, output)


def test_flask_run_development_server_delivers_on_ctrl_c(sink: Sink) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "served_app",
        "run",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--no-reload",
    ]
    proc = start(command, sink, port)
    send_requests(port, 40)
    output = stop(proc, signal.SIGINT)
    check_exactly_once(sink, 40, output)
