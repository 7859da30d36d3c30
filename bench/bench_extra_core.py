"""Core rows of the performance issue (targets 4, 5 and 6), each beside its
anchor measured in the same run:

* ``import trackware``: instructions above bare Python (callgrind) and
  milliseconds (median of fresh interpreters, interleaved), beside
  ``import flask``; also what ``track()`` needs (``Tracker`` and ``track``),
  and what the Flask and ASGI integrations add over their frameworks.
* ``track()``: instructions per call (``bench/callgrind.py``'s track row).
* delivery: events/s end to end (100k ``track()`` calls, one worker,
  ``HTTPExporter`` to a loopback sink in another process, the queue holding
  the burst) beside a bare ``queue.SimpleQueue`` + ``httpx`` + stdlib
  ``json`` pipeline (same batch size, same sink), interleaved rounds;
  trackware with orjson (when installed) and without it.
* JSON: one event's encoding, stdlib ``json`` against ``orjson``.
* a 100k burst at default settings: how many dropped, the bound in bytes.

Run: ``.venv/bin/python bench/bench_extra_core.py [--quick]`` (``bench/run.py``
runs it). Prints a markdown table: row, value, anchor, target, met/missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t

HERE = os.path.dirname(os.path.abspath(__file__))
TREE = os.path.dirname(HERE)
sys.path.insert(0, HERE)

PROPS = {"offer_id": "o-1", "amount": 3, "channel": "OLB"}
#: The 100k burst and the delivery run.
BURST = 100_000
#: HTTPExporter's default batch: the bare pipeline batches the same.
BATCH = 500


# --- children (each measurement in a fresh interpreter) ---------------------------
def child_deliver(kind: str, url: str, n: int, drain: bool) -> dict[str, t.Any]:
    """``n`` events delivered by one worker. End to end (``drain`` false):
    tracked as fast as the caller can, timed until the last is acknowledged.
    Drain: the backlog is queued first (the worker held at a gate), timed
    from the gate opening."""
    if kind == "trackware-stdlib":
        sys.modules["orjson"] = None  # type: ignore[assignment]  # import fails
    if kind == "bare":
        return _bare_pipeline(url, n, drain)
    import threading

    import trackware
    from trackware import _json
    from trackware.exporters import HTTPExporter

    gate = threading.Event()
    if not drain:
        gate.set()

    class Gated(HTTPExporter):
        def export(self, events: t.Sequence[trackware.Event], /) -> t.Any:
            gate.wait(600)
            return super().export(events)

    tracker = trackware.Tracker(
        [Gated(url + "/events", name="http")],
        max_queue_size=n + 10,
        max_queue_bytes=1 << 31,
        dead_letter=None,
        register_atexit=False,
    )
    track = tracker.track
    t0 = time.perf_counter()
    for i in range(n):
        track("offer.activated", {"i": i, **PROPS})
    if drain:
        t0 = time.perf_counter()
        gate.set()
    tracker.flush(300)
    elapsed = time.perf_counter() - t0
    stats = tracker.stats()["destinations"]["http"]
    tracker.shutdown(10)
    return {"rate": n / elapsed, "sent": stats["sent"], "orjson": _json.ORJSON}


def _bare_pipeline(url: str, n: int, drain: bool) -> dict[str, t.Any]:
    """The floor: a dict per event (uuid4 id, ISO time) put on a SimpleQueue;
    one thread takes up to ``BATCH``, ``json.dumps`` the batch and posts it
    with httpx (drain: the thread starts once all are queued)."""
    import datetime
    import queue
    import threading
    import uuid

    import httpx

    q: queue.SimpleQueue[dict[str, t.Any] | None] = queue.SimpleQueue()
    sent = [0]
    client = httpx.Client(timeout=10)

    def consume() -> None:
        done = False
        while not done:
            first = q.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < BATCH:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            body = json.dumps({"events": batch}).encode()
            response = client.post(
                url + "/events",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            if response.status_code == 200:
                sent[0] += len(batch)

    worker = threading.Thread(target=consume)
    if not drain:
        worker.start()
    utc = datetime.timezone.utc
    t0 = time.perf_counter()
    for i in range(n):
        q.put(
            {
                "event_id": str(uuid.uuid4()),
                "name": "offer.activated",
                "timestamp": datetime.datetime.now(utc).isoformat(),
                "properties": {"i": i, **PROPS},
            }
        )
    q.put(None)
    if drain:
        t0 = time.perf_counter()
        worker.start()
    worker.join()
    elapsed = time.perf_counter() - t0
    client.close()
    return {"rate": n / elapsed, "sent": sent[0]}


def child_burst(url: str, n: int) -> dict[str, t.Any]:
    """``n`` events at once into a tracker at default settings while its
    worker sends nothing (held at a gate in its first export: a slow
    vendor, the worst case); how many it dropped, then all delivered."""
    import threading

    import trackware
    from trackware.exporters import HTTPExporter

    gate = threading.Event()

    class Held(HTTPExporter):
        def export(self, events: t.Sequence[trackware.Event], /) -> t.Any:
            gate.wait(600)
            return super().export(events)

    tracker = trackware.Tracker(
        [Held(url + "/events")], dead_letter=None, register_atexit=False
    )
    queue = tracker.destinations[0].queue
    rss0 = _rss()
    track = tracker.track
    for i in range(n):
        track("offer.activated", {"i": i, **PROPS})
    peak = queue.nbytes()
    rss = _rss() - rss0
    gate.set()
    tracker.flush(300)
    stats = tracker.stats()
    tracker.shutdown(10)
    destination = stats["destinations"]["http"]
    return {
        "dropped": sum(stats["dropped"].values())
        + sum(destination["dropped"].values()),
        "sent": destination["sent"],
        "peak_bytes": peak,
        "rss_growth": rss,
        "max_queue_size": getattr(queue, "max_events", None),
        "max_queue_bytes": getattr(queue, "max_bytes", None),
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child_json(n: int) -> dict[str, t.Any]:
    """ns per event: stdlib json (JSONEncoder, as trackware encoded before),
    trackware's dumps, and encode_checked (orjson when installed)."""
    import trackware
    from trackware import _json

    event = trackware.Event("offer.activated", PROPS, user_id="c-42")
    data = event.to_dict()
    encoder = json.JSONEncoder(
        default=_json.json_default,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    out: dict[str, t.Any] = {"orjson": _json.ORJSON}
    for name, fn in (
        ("json.JSONEncoder", lambda: encoder.encode(data).encode("utf-8")),
        ("trackware dumps", lambda: _json.dumps(data).encode("utf-8")),
        ("encode_checked", lambda: _json.encode_checked(data)),
    ):
        best = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for _ in range(n):
                fn()
            best.append((time.perf_counter_ns() - t0) / n)
        out[name] = min(best)
    return out


def child_drain_regions(kind: str, url: str) -> dict[str, t.Any]:
    """For callgrind (``drain_instructions``): two backlogs, ``DRAIN_N0`` and
    ``DRAIN_N`` events, each drained by one worker (or the bare consumer)
    between two ``os.getloadavg()`` markers."""
    import gc
    import queue
    import threading

    if kind == "trackware-stdlib":
        sys.modules["orjson"] = None  # type: ignore[assignment]
    if kind == "bare":
        import datetime
        import uuid

        import httpx

        client = httpx.Client(timeout=10)
        utc = datetime.timezone.utc
        backlog: queue.SimpleQueue[dict[str, t.Any]] = queue.SimpleQueue()

        def fill(k: int) -> None:
            for i in range(k):
                backlog.put(
                    {
                        "event_id": str(uuid.uuid4()),
                        "name": "offer.activated",
                        "timestamp": datetime.datetime.now(utc).isoformat(),
                        "properties": {"i": i, **PROPS},
                    }
                )

        def drain() -> None:
            while True:
                try:
                    batch = [backlog.get_nowait()]
                except queue.Empty:
                    return
                while len(batch) < BATCH:
                    try:
                        batch.append(backlog.get_nowait())
                    except queue.Empty:
                        break
                client.post(
                    url + "/events",
                    content=json.dumps({"events": batch}).encode(),
                    headers={"Content-Type": "application/json"},
                )

    else:
        import trackware
        from trackware.exporters import HTTPExporter

        gate = threading.Event()

        class Gated(HTTPExporter):
            def export(self, events: t.Sequence[trackware.Event], /) -> t.Any:
                gate.wait(600)
                return super().export(events)

        tracker = trackware.Tracker(
            [Gated(url + "/events", name="http")],
            max_queue_size=1 << 20,
            max_queue_bytes=1 << 34,
            flush_interval=3600.0,
            dead_letter=None,
            register_atexit=False,
        )

        def fill(k: int) -> None:
            tracker.flush(600)
            gate.clear()
            for i in range(k):
                tracker.track("offer.activated", {"i": i, **PROPS})
            time.sleep(0.5)  # the worker waits at the gate

        def drain() -> None:
            gate.set()
            tracker.flush(600)

    fill(1000)
    drain()
    for k in (DRAIN_N0, DRAIN_N):
        fill(k)
        gc.collect()
        gc.disable()
        os.getloadavg()
        drain()
        os.getloadavg()
        gc.enable()
    return {"n0": DRAIN_N0, "n": DRAIN_N}


#: The backlogs of the drain rows under callgrind.
DRAIN_N0, DRAIN_N = 1_000, 6_000


def drain_instructions(url: str) -> dict[str, float]:
    """Instructions per event (all threads) of a backlog drained by one
    worker, batches of ``BATCH``: trackware with and without orjson, and the
    bare consumer."""
    from callgrind import totals

    workdir = tempfile.mkdtemp(prefix="trackware-drain-")
    env = _env()
    out: dict[str, float] = {}
    try:
        for kind in ("bare", "trackware", "trackware-stdlib"):
            dump = os.path.join(workdir, kind)
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--dump-before=getloadavg",
                    f"--callgrind-out-file={dump}",
                    sys.executable,
                    os.path.abspath(__file__),
                    "--child",
                    "drain-regions",
                    kind,
                    url,
                ],
                env=env,
                cwd=workdir,
                check=True,
                capture_output=True,
                timeout=1800,
            )
            first = totals(f"{dump}.2")
            second = totals(f"{dump}.4")
            out[kind] = (second - first) / (DRAIN_N - DRAIN_N0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def _child(args: list[str]) -> int:
    mode = args[0]
    if mode == "drain-regions":
        result = child_drain_regions(args[1], args[2])
        print(json.dumps(result), flush=True)
        os._exit(0)
    if mode == "deliver":
        result = child_deliver(args[1], args[2], int(args[3]), args[4] == "drain")
    elif mode == "burst":
        result = child_burst(args[1], int(args[2]))
    elif mode == "json":
        result = child_json(int(args[1]))
    else:
        raise SystemExit(f"unknown child mode {mode}")
    print(json.dumps(result), flush=True)
    return 0


def run_child(*args: str, env: dict[str, str] | None = None) -> dict[str, t.Any]:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return t.cast("dict[str, t.Any]", json.loads(proc.stdout.strip().splitlines()[-1]))


# --- import --------------------------------------------------------------------------
IMPORTS: dict[str, tuple[str, str]] = {
    # row id: (code, the code it is measured above)
    "bare": ("pass", ""),
    "trackware": ("import trackware", "bare"),
    "track-needs": ("from trackware import Tracker, track", "bare"),
    "flask": ("import flask", "bare"),
    "flask-integration": (
        "import flask; import trackware.integrations.flask",
        "flask",
    ),
    "starlette": ("import starlette.applications", "bare"),
    "asgi-integration": (
        "import starlette.applications; import trackware.integrations.asgi",
        "starlette",
    ),
}


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = TREE + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def import_instructions() -> dict[str, int]:
    """Callgrind's total for a fresh interpreter running each snippet."""
    from callgrind import totals

    workdir = tempfile.mkdtemp(prefix="trackware-import-")
    env = _env()
    out: dict[str, int] = {}
    try:
        for row, (code, _) in IMPORTS.items():
            # Compile the bytecode caches first: counted is the import, not
            # the compiler.
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            dump = os.path.join(workdir, row + ".out")
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={dump}",
                    sys.executable,
                    "-c",
                    code,
                ],
                env=env,
                cwd=workdir,
                check=True,
                capture_output=True,
            )
            out[row] = totals(dump)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def import_ms(rounds: int) -> dict[str, float]:
    """Median milliseconds of each snippet's import statements, timed inside
    fresh interpreters (startup excluded), the rows interleaved."""
    env = _env()
    samples: dict[str, list[float]] = {row: [] for row in IMPORTS}
    for _ in range(rounds):
        for row, (code, _) in IMPORTS.items():
            timed = (
                "import time\nt0 = time.perf_counter()\n"
                + code.replace("; ", "\n")
                + "\nprint((time.perf_counter() - t0) * 1000)"
            )
            proc = subprocess.run(
                [sys.executable, "-c", timed],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            samples[row].append(float(proc.stdout))
    return {row: statistics.median(s) for row, s in samples.items()}


# --- the table -----------------------------------------------------------------------
Row = tuple[str, str, str, str, "bool | None"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["import", "track", "delivery"]
    )
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 3
    rows: list[Row] = []
    have_valgrind = shutil.which("valgrind") is not None

    if "import" not in args.skip:
        rows += import_rows(have_valgrind, 5 if args.quick else 15)
    if "track" not in args.skip:
        rows += track_rows(have_valgrind)
    if "delivery" not in args.skip:
        rows += delivery_rows(rounds)

    print("## Core: import, track(), delivery (trackware/perf-core)")
    print()
    print("| row | value | anchor (same run) | target | verdict |")
    print("|---|---|---|---|---|")
    for name, value, anchor, target, ok in rows:
        verdict = "-" if ok is None else ("met" if ok else "MISSED")
        print(f"| {name} | {value} | {anchor} | {target} | {verdict} |")
    return 0


def import_rows(have_valgrind: bool, rounds: int) -> list[Row]:
    rows: list[Row] = []
    ms = import_ms(rounds)
    ir = import_instructions() if have_valgrind else {}

    def above(row: str) -> float:
        base = IMPORTS[row][1]
        return ir[row] - ir[base]

    flask_ms = ms["flask"]
    for row, label in (
        ("trackware", "`import trackware`"),
        ("track-needs", "`from trackware import Tracker, track` (what track() needs)"),
    ):
        if ir:
            rows.append(
                (
                    f"{label}: instructions above bare Python",
                    f"{above(row) / 1e6:,.0f}M",
                    f"`import flask` {above('flask') / 1e6:,.0f}M",
                    "<= 250M",
                    above(row) <= 250e6,
                )
            )
        rows.append(
            (
                f"{label}: ms",
                f"{ms[row]:.1f}",
                f"`import flask` {flask_ms:.1f}",
                "<= 120 ms (uncontended)",
                ms[row] <= 120,
            )
        )
    for row, framework, label in (
        ("flask-integration", "flask", "Flask integration"),
        ("asgi-integration", "starlette", "ASGI integration"),
    ):
        if ir:
            rows.append(
                (
                    f"{label}: instructions added over `import {framework}`",
                    f"{above(row) / 1e6:,.0f}M",
                    f"{framework} itself {above(framework) / 1e6:,.0f}M",
                    "<= the framework's own",
                    above(row) <= above(framework),
                )
            )
        rows.append(
            (
                f"{label}: ms added over `import {framework}`",
                f"{ms[row] - ms[framework]:.1f}",
                f"{framework} itself {ms[framework]:.1f}",
                "<= the framework's own",
                ms[row] - ms[framework] <= ms[framework],
            )
        )
    return rows


def track_rows(have_valgrind: bool) -> list[Row]:
    if not have_valgrind:
        return [("track(): instructions", "valgrind missing", "", "<= 24k", None)]
    from callgrind import run_all

    tree = os.path.realpath(TREE)
    results = run_all([("track-flat", tree), ("deliver-http", tree)], 1.0, 2, layouts=1)
    flat, http = results["track-flat", tree], results["deliver-http", tree]
    rows: list[Row] = [
        (
            "track(), 3 flat properties: instructions",
            "failed" if flat is None else f"{flat.per_op:,.0f}",
            "27.5k before the renovation",
            "<= 24,000",
            None if flat is None else flat.per_op <= 24_000,
        ),
        (
            "delivery by HTTPExporter (batches of 100): instructions per event",
            "failed" if http is None else f"{http.per_op:,.0f}",
            "",
            "-",
            None,
        ),
    ]
    return rows


def delivery_rows(rounds: int) -> list[Row]:
    from _sink import RemoteSink

    kinds = ["bare", "trackware", "trackware-stdlib"]
    modes = ["end-to-end", "drain"]
    rates: dict[tuple[str, str], list[float]] = {
        (k, m): [] for k in kinds for m in modes
    }
    orjson_on = False
    sink = RemoteSink()
    try:
        for _ in range(rounds):
            for mode in modes:
                for kind in kinds:
                    result = run_child("deliver", kind, sink.url, str(BURST), mode)
                    if result["sent"] != BURST:
                        raise RuntimeError(f"{kind}: sent {result['sent']} of {BURST}")
                    if kind == "trackware":
                        orjson_on = result["orjson"]
                    rates[kind, mode].append(result["rate"])
        burst = run_child("burst", sink.url, str(BURST))
        drain_ir = drain_instructions(sink.url) if shutil.which("valgrind") else {}
    finally:
        sink.stop()
    encode = run_child("json", "20000")
    rows: list[Row] = []
    for mode, what in (
        ("drain", "a backlog drained by one worker"),
        ("end-to-end", "tracked and delivered, one worker"),
    ):
        bare = statistics.median(rates["bare", mode])
        for kind, label in (
            ("trackware", "with orjson" if orjson_on else "orjson not installed"),
            ("trackware-stdlib", "stdlib json"),
        ):
            rate = statistics.median(rates[kind, mode])
            rows.append(
                (
                    f"delivery, {BURST:,} events {what} ({label}): events/s",
                    f"{rate:,.0f} ({rate / bare:.2f}x)",
                    f"bare SimpleQueue + httpx + json {bare:,.0f}",
                    ">= 1.5x the bare pipeline",
                    rate >= 1.5 * bare,
                )
            )
    if drain_ir:
        bare_ir = drain_ir["bare"]
        for kind, label in (
            ("trackware", "with orjson" if orjson_on else "orjson not installed"),
            ("trackware-stdlib", "stdlib json"),
        ):
            ir = drain_ir[kind]
            rows.append(
                (
                    f"delivery, a backlog drained by one worker ({label}): "
                    "instructions per event",
                    f"{ir:,.0f} ({bare_ir / ir:.2f}x the bare pipeline's speed)",
                    f"bare SimpleQueue + httpx + json {bare_ir:,.0f}",
                    ">= 1.5x",
                    bare_ir / ir >= 1.5,
                )
            )
    rows.append(
        (
            "JSON, one event: ns",
            f"orjson {encode['encode_checked']:,.0f}"
            if encode["orjson"]
            else f"trackware dumps {encode['trackware dumps']:,.0f}",
            f"json.JSONEncoder {encode['json.JSONEncoder']:,.0f}; "
            f"trackware dumps {encode['trackware dumps']:,.0f}",
            "-",
            None,
        )
    )
    rows.append(
        (
            f"a {BURST:,} burst at default settings, worker held: dropped",
            f"{burst['dropped']:,}, {burst['sent']:,} delivered (queue "
            f"{burst['peak_bytes'] / 2**20:.1f} MiB counted, "
            f"RSS +{burst['rss_growth'] / 2**20:.0f} MiB)",
            f"bound: {burst['max_queue_size']:,} events, "
            f"{burst['max_queue_bytes'] / 2**20:.0f} MiB per destination",
            "0 dropped",
            burst["dropped"] == 0,
        )
    )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
