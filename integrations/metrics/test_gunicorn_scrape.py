"""Prometheus under gunicorn with 2 workers (multi-process mode): a real
scrape over HTTP, parsed with prometheus_client.parser, matches stats()
summed over the workers."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import textwrap
import time
import typing as t

import httpx
import pytest
from _support import free_port, serving
from metrics.expect import assert_matches, key, parsed_samples, prometheus_expected

TESTS = pathlib.Path(__file__).resolve().parents[2] / "tests"

APP = """
import json, os, types, urllib.parse
from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess,
)
from metrics.expect import busy_tracker
import trackware.metrics

sink = types.SimpleNamespace(url=os.environ["SINK_URL"])
tracker = busy_tracker(sink, os.environ["DEAD_LETTER"])
metrics = trackware.metrics.prometheus(tracker, interval=0.05)
assert metrics.multiprocess


def app(environ, start_response):
    path = environ["PATH_INFO"]
    ctype = "text/plain"
    if path == "/track":
        query = urllib.parse.parse_qs(environ["QUERY_STRING"], keep_blank_values=True)
        tracker.track(query["name"][0])
        body = str(os.getpid())
    elif path == "/stats":
        tracker.flush(10)
        body = json.dumps({"pid": os.getpid(), "stats": tracker.stats()})
        ctype = "application/json"
    elif path == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry).decode()
        ctype = CONTENT_TYPE_LATEST
    else:
        body = "ok"
    data = body.encode()
    headers = [("Content-Type", ctype), ("Content-Length", str(len(data)))]
    start_response("200 OK", headers)
    return [data]
"""

CONFIG = """
from prometheus_client import multiprocess


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
"""

NAMES = ["offer.viewed", "internal.ping", "order.placed", "", "offer.clicked"]


def get_all(client: httpx.Client, url: str, count: int) -> list[httpx.Response]:
    """``count`` GETs of ``url`` at once (sync workers: spread over both)."""
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: client.get(url), range(count)))


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True], ids=["per-worker", "preload"])
def test_a_scrape_over_http_matches_stats_summed_over_the_workers(
    sink: t.Any, tmp_path: pathlib.Path, preload: bool
) -> None:
    (tmp_path / "metricsapp.py").write_text(textwrap.dedent(APP))
    (tmp_path / "gunicorn_conf.py").write_text(textwrap.dedent(CONFIG))
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = dict(os.environ)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    env["SINK_URL"] = sink.url
    env["DEAD_LETTER"] = str(tmp_path / "dead.jsonl")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(TESTS)])
    port = free_port()
    args = ["gunicorn", "-c", str(tmp_path / "gunicorn_conf.py"), "-w", "2"]
    args += ["-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path)]
    args += ["--preload"] if preload else []
    base = f"http://127.0.0.1:{port}"
    sink.script.extend([400, 503])  # a batch rejected, one retried
    client = httpx.Client(timeout=30)
    with client, serving([*args, "metricsapp:app"], env, port):
        # Traffic until both workers have had some.
        pids: set[str] = set()
        deadline = time.monotonic() + 20
        i = 0
        while len(pids) < 2 or i < 10:
            assert time.monotonic() < deadline, f"one worker only: {pids}"
            name = NAMES[i % len(NAMES)]
            pids.update(r.text for r in get_all(client, f"{base}/track?name={name}", 4))
            i += 1
        # Each worker's own stats(), after a flush.
        workers: dict[int, t.Any] = {}
        while len(workers) < 2:
            assert time.monotonic() < deadline + 20, f"stats of {list(workers)}"
            for r in get_all(client, f"{base}/stats", 2):
                workers[r.json()["pid"]] = r.json()["stats"]
        assert {str(p) for p in workers} == pids
        want = prometheus_expected(workers.values())
        assert want[key("trackware_dropped_events_total", reason="invalid")] > 0
        # Each worker brings its files up to stats() every 0.05 s.
        scraped: dict[t.Any, float] = {}
        until = time.monotonic() + 10
        while True:
            scraped = parsed_samples(client.get(f"{base}/metrics").text)
            try:
                assert_matches(scraped, want)
                break
            except AssertionError:
                if time.monotonic() > until:
                    raise
                time.sleep(0.05)
    # Every event both workers tracked is counted, by outcome.
    events = sum(v for k, v in scraped.items() if k[0] == "trackware_events_total")
    tracked = sum(s["tracked"] for s in workers.values())
    assert events == tracked * 2  # two destinations, nothing left queued
    # One observation per call of the exporter, over both workers.
    duration = key("trackware_export_duration_seconds_count", destination="sink")
    assert scraped[duration] == sink.requests
