"""The spool across processes: real SIGKILL, real adoption, real fork, real
file-system faults, a real HTTP sink. Sizes are chosen for a loaded 2-core
box; ``TRACKWARE_SPOOL_VOLUME=1000000`` runs the volume test at the issue's
full size (bench/bench_extra_spool.py measures it too).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from _support import Sink, free_port, run_script

import trackware
from trackware.exporters import HTTPExporter

pytestmark = pytest.mark.slow

_TRACK = """
import os, sys, time
import trackware
from trackware.exporters import HTTPExporter

folder, url, durability, mode = sys.argv[1:5]
tracker = trackware.Tracker(
    [HTTPExporter(url, timeout=30)],
    spool=folder,
    durability=durability,
    flush_interval=0.05,
    spool_adopt_interval=0.2,
    retry=trackware.RetryPolicy(base_delay=0.05, max_delay=0.2, max_attempts=None),
)
os.write(1, b"ready\\n")
i = 0
while mode == "track":
    event = tracker.track("tick", {"i": i})
    os.write(1, f"{event.event_id} {time.time():.6f}\\n".encode())
    i += 1
    time.sleep(0.0005)
# Idle: deliver what dead processes left (adopted at start), then say so.
own = os.path.basename(tracker.destinations[0].queue.extra_stats()["spool_file"])
while any(
    n.startswith("spool-") and n.endswith(".sqlite3") and n != own
    for n in os.listdir(folder)
):
    time.sleep(0.05)
os.write(1, b"drained\\n" if tracker.flush(120) else b"not drained\\n")
while True:
    time.sleep(1)
"""


def _start(code: str, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    here = str(pathlib.Path(__file__).parent.parent)
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def _close(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    with proc:  # closes its pipes, waits
        pass


def _wait_ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == b"ready\n", line


def _kill_run(
    folder: pathlib.Path, url: str, durability: str
) -> tuple[list[tuple[str, float]], float]:
    """One child tracking at a steady rate, SIGKILLed at a random moment.
    Returns the (id, time) pairs it wrote (whole lines only) and the kill time."""
    proc = _start(_TRACK, str(folder), url, durability, "track")
    try:
        _wait_ready(proc)
        assert proc.stdout is not None
        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()))  # type: ignore[union-attr]
        reader.start()
        time.sleep(random.uniform(0.1, 0.4))  # the random moment, not a wait
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reader.join(10)
    finally:
        _close(proc)
    data = b"".join(chunks)
    lines = data.split(b"\n")[:-1]  # the last piece may be cut mid-line
    pairs = []
    for line in lines:
        event_id, when = line.decode().split()
        pairs.append((event_id, float(when)))
    return pairs, killed_at


def _recover(folder: pathlib.Path, sink: Sink) -> None:
    """A new process on the folder delivers what the dead ones left."""
    proc = _start(_TRACK, str(folder), sink.url, "batch", "idle")
    watchdog = threading.Timer(180, proc.kill)
    watchdog.start()
    try:
        _wait_ready(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"drained\n"
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGTERM)  # a graceful stop: it shuts down
        try:
            proc.wait(20)
        finally:
            _close(proc)


def test_sigkill_in_always_mode_loses_nothing(
    tmp_path: pathlib.Path, sink: Sink
) -> None:
    # 20 children in turn on one folder, each SIGKILLed at a random moment;
    # the destination is down for every other one (everything it tracked
    # stays in its file). Each child adopts what the ones before left; a last
    # process delivers the rest.
    tracked: list[list[str]] = []
    for rep in range(20):
        sink.default_status = 503 if rep % 2 else 200
        pairs, _ = _kill_run(tmp_path, sink.url, "always")
        assert pairs, "the child tracked nothing before the kill"
        tracked.append([event_id for event_id, _ in pairs])
    sink.default_status = 200
    every = {i for ids in tracked for i in ids}
    _recover(tmp_path, sink)
    received = sink.ids
    counts: dict[str, int] = {}
    for event_id in received:
        counts[event_id] = counts.get(event_id, 0) + 1
    for rep, ids in enumerate(tracked):
        missing = [i for i in ids if i not in counts]
        assert missing == [], f"run {rep}: {len(missing)} of {len(ids)} lost"
    assert max(counts[i] for i in every) <= 2
    assert [n for n in os.listdir(tmp_path) if n.startswith("spool-")] == []


def test_sigkill_in_batch_mode_loses_only_the_last_interval(
    tmp_path: pathlib.Path, sink: Sink
) -> None:
    runs = []
    for rep in range(10):
        sink.default_status = 503 if rep % 2 else 200
        runs.append(_kill_run(tmp_path, sink.url, "batch"))
    sink.default_status = 200
    every = {i for pairs, _ in runs for i, _ in pairs}
    _recover(tmp_path, sink)
    received = set(sink.ids)
    worst = 0.0
    lost_total = 0
    for pairs, killed_at in runs:
        lost = [k for k, (i, _) in enumerate(pairs) if i not in received]
        lost_total += len(lost)
        if lost:
            # What is lost is what had not been committed: the newest
            # events. Everything tracked more than a second before the kill
            # reached the server (the interval is 10 ms; a loaded box may
            # delay the writer thread, never by a second).
            first = pairs[lost[0]][1]
            worst = max(worst, killed_at - first)
            assert killed_at - first < 1.0, (len(lost), killed_at - first)
    print(
        f"batch mode: {lost_total} of {len(every)} events lost over {len(runs)} "
        f"kills; worst case: tracked {worst * 1000:.1f} ms before the kill"
    )
    assert max(sink.ids.count(i) for i in every if i in received) <= 2


_VOLUME = """
import json, os, resource, sys
import trackware
from trackware.exporters import HTTPExporter

folder, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tracker = trackware.Tracker(
    [HTTPExporter(url, timeout=1)],
    spool=folder,
    spool_max_bytes=2 * 1024**3,
    retry=trackware.RetryPolicy(base_delay=0.05, max_delay=0.5, max_attempts=None),
    dead_letter=trackware.MemoryDeadLetter(),
)
rss = []
for i in range(n):
    tracker.track("outage", {"i": i, "page": "/offers", "pad": "x" * 40})
    if i in (n // 10, n // 2, n - 1):
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
stats = tracker.stats()["destinations"]["http"]
spool = next(iter(tracker.backends.spools.values()))
spool.close()  # commits; the file stays for the next process
path = stats["backend"]["spool_file"]
size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
print(json.dumps({"rss": rss, "stats": stats, "size": size}), flush=True)
os._exit(0)  # ends without delivering, like a process killed after commit
"""


def test_a_million_events_wait_in_the_file_not_in_memory(
    tmp_path: pathlib.Path, sink: Sink
) -> None:
    n = int(os.environ.get("TRACKWARE_SPOOL_VOLUME", "200000"))
    down = f"http://127.0.0.1:{free_port()}/events"  # nothing listens
    proc = _start(_VOLUME, str(tmp_path), down, str(n))
    with proc:
        out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0
    result = json.loads(out)
    stats = result["stats"]
    # Every event accounted for: in the spool (queued or in a batch waiting
    # for its retry); none dropped, none sent.
    assert stats["enqueued"] == stats["spooled"] == n
    assert stats["queue_depth"] + stats["in_flight"] == n
    assert stats["sent"] == 0 and stats["dropped"] == {}
    assert result["size"] < 2 * 1024**3
    # Memory (max RSS, KiB): bounded by the in-memory head (10,000 events), the
    # retry batches and the writer's buffer (20,000 entries), not by n: it
    # stops growing once those have filled (flat over the second half).
    rss = result["rss"]
    print(
        f"{n} events spooled: max RSS {rss[0] >> 10} / {rss[1] >> 10} / "
        f"{rss[2] >> 10} MiB at 10 / 50 / 100 %; file {result['size'] >> 20} MiB"
    )
    # Held in memory, the second half (n/2 events, >= 500 bytes each in
    # Python) would add >= 48 MiB at the CI size; allocator noise is a few MiB.
    assert rss[2] - rss[1] < 24 * 1024, rss
    assert rss[2] - rss[0] < 48 * 1024, rss
    # A new process on the folder delivers all of them, each once.
    proc = _start(_TRACK, str(tmp_path), sink.url, "batch", "idle")
    try:
        _wait_ready(proc)
        started = time.monotonic()
        assert sink.wait_for(n, 600), len(sink.ids)
        print(f"delivered after restart: {n / (time.monotonic() - started):.0f}/s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            _close(proc)
    assert len(sink.ids) == len(set(sink.ids)) == n
    assert [f for f in os.listdir(tmp_path) if f.startswith("spool-")] == []


_ADOPTEE = """
import os
import trackware

# TRACKWARE_HTTP_URL, TRACKWARE_SPOOL, TRACKWARE_SPOOL_DURABILITY=always
tracker = trackware.Tracker.from_env()
ids = [tracker.track("left", {"i": i}).event_id for i in range(500)]
os.write(1, ("\\n".join(ids) + "\\nready\\n").encode())
while True:
    os.read(0, 1)
"""


def test_a_live_tracker_adopts_the_file_of_a_killed_process(
    tmp_path: pathlib.Path, sink: Sink
) -> None:
    tracker = trackware.Tracker(
        [HTTPExporter(sink.url)],
        spool=tmp_path,
        spool_adopt_interval=0.3,
        register_atexit=False,
    )
    try:
        down = f"http://127.0.0.1:{free_port()}/events"
        env = dict(os.environ)
        env.update(
            TRACKWARE_HTTP_URL=down,
            TRACKWARE_SPOOL=str(tmp_path),
            TRACKWARE_SPOOL_DURABILITY="always",
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_ADOPTEE)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        ids = []
        for line in proc.stdout:
            if line == b"ready\n":
                break
            ids.append(line.decode().strip())
        assert len(ids) == 500
        time.sleep(0.5)  # a few adopt intervals: its lock keeps the file its own
        assert sink.ids == []
        proc.send_signal(signal.SIGKILL)
        _close(proc)
        # Adopting starts this process's worker (nothing was tracked here).
        assert sink.wait_for(500, 30)
        assert sorted(sink.ids) == sorted(ids)
        stats = tracker.stats()["destinations"]["http"]
        assert stats["recovered"] == 500
        # The dead process's file goes once it is copied (polled: the last
        # step of the adoption may follow the delivery).
        own = os.path.basename(stats["backend"]["spool_file"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            not n.startswith(own) for n in os.listdir(tmp_path)
        ):
            time.sleep(0.05)
        assert [n for n in os.listdir(tmp_path) if not n.startswith(own)] == []
    finally:
        tracker.shutdown(5)


_FORK = """
import json, os, sys
import trackware
from trackware.exporters import HTTPExporter

tracker = trackware.Tracker(
    [HTTPExporter(sys.argv[2], timeout=1)], spool=sys.argv[1], durability="always",
    register_atexit=False,
)
for i in range(10):
    tracker.track("parent", {"i": i})
queue = tracker.destinations[0].queue
parent_file = queue.extra_stats()["spool_file"]
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    for i in range(5):
        tracker.track("child", {"i": i})
    os.write(w, json.dumps(queue.extra_stats() | {"depth": queue.depth()}).encode())
    for spool in tracker.backends.spools.values():
        spool.close()
    os._exit(0)
os.waitpid(pid, 0)
child = json.loads(os.read(r, 65536))
print(json.dumps({
    "parent_file": parent_file, "child": child,
    "parent_now": queue.extra_stats()["spool_file"], "parent_depth": queue.depth(),
}))
for spool in tracker.backends.spools.values():
    spool.close()
"""


def test_a_forked_child_spools_into_a_file_of_its_own(tmp_path: pathlib.Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/events"
    proc = run_script(_FORK, str(tmp_path), down)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["parent_now"] == out["parent_file"]
    assert out["child"]["spool_file"] != out["parent_file"]
    assert out["child"]["spooled"] == 5 and out["child"]["depth"] + 0 <= 5
    assert out["parent_depth"] + 0 <= 10
    counts = {}
    for path in (out["parent_file"], out["child"]["spool_file"]):
        conn = sqlite3.connect(path)
        counts[path] = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        conn.close()
    assert counts == {out["parent_file"]: 10, out["child"]["spool_file"]: 5}


_DISK_FULL = """
import json, resource, signal, sys
import trackware
from trackware.exporters import HTTPExporter

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
import logging
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
tracker = trackware.Tracker(
    [HTTPExporter(sys.argv[2])], spool=sys.argv[1], register_atexit=False,
)
ids = [tracker.track("e", {"i": i, "pad": "y" * 200}).event_id for i in range(3000)]
ok = tracker.flush(60)
stats = tracker.stats()["destinations"]["http"]
tracker.shutdown(10)
print(json.dumps({"ids": ids, "ok": ok, "stats": stats}))
"""


def test_disk_full_falls_back_to_memory(tmp_path: pathlib.Path, sink: Sink) -> None:
    proc = run_script(_DISK_FULL, str(tmp_path), sink.url)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    backend = out["stats"]["backend"]
    assert backend["spool_state"] == "memory"
    assert backend["spool_fallback_reason"] in ("disk_full", "write_failed")
    assert backend["spool_fallback"] > 0
    assert out["ok"] is True
    # Everything tracked reached the server, or waits in the file it left.
    missing = set(out["ids"]) - set(sink.ids)
    assert len(missing) == backend["spool_left"]
    assert proc.stderr.count("continue in memory") == 1


def test_a_read_only_folder_falls_back_to_memory(
    tmp_path: pathlib.Path, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:
        # Permissions do not stop root: a read-only file system does.
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                capture_output=True,
            ).returncode
            == 0
        )
        if not mounted:
            pytest.skip("running as root and cannot mount a read-only tmpfs")
    else:
        folder.chmod(0o500)
    caplog.set_level(logging.WARNING, logger="trackware")
    try:
        tracker = trackware.Tracker(
            [HTTPExporter(sink.url)], spool=folder, register_atexit=False
        )
        ids = [tracker.track("e").event_id for _ in range(200)]
        assert tracker.flush(30)
        stats = tracker.stats()["destinations"]["http"]
        tracker.shutdown(5)
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
    assert sink.ids == ids
    assert stats["backend"]["spool_state"] == "memory"
    assert stats["backend"]["spool_fallback_reason"] == "read_only"
    assert stats["backend"]["spool_fallback"] == 200 and stats["sent"] == 200
    warned = [r for r in caplog.records if "continue in memory" in r.getMessage()]
    assert len(warned) == 1
