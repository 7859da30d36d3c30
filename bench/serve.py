"""Real servers under a bounded loopback load (issue 16, target 3).

uvicorn (1 worker, httptools) serving Starlette and gunicorn (1 sync worker)
serving Flask, each as a plain app, with the floor (``bench/floor.py``) and
with trackware (page + sessions; ``--also`` adds the p99 experiments of
``bench/serve_apps.py``). Every variant's server runs at once (idle unless
loaded); ``wrk`` loads one at a time, the variants interleaved round after
round, as a returning visitor (the cookies its first response set). Prints
the median req/s and p99 of the rounds, and the targets: trackware >= 0.95x
the floor's req/s and p99 <= 1.5x plain.

Run: ``.venv-bench/bin/python bench/serve.py [--rounds 5] [--seconds 5]``
(needs ``wrk``: ``apt-get install wrk``; uvicorn, httptools, gunicorn from
bench/requirements.txt).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = "/items/42"
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"


class Server:
    """One server process serving one variant on a socket bound here."""

    def __init__(self, kind: str, variant: str) -> None:
        self.kind = kind
        self.variant = variant
        # A free port (uvicorn's --fd takes the socket for a Unix one: no
        # TCP_NODELAY, and Nagle's algorithm would cap it at ~200 req/s).
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        # (A PYTHONPATH given, e.g. another checkout's tree, stays after bench/.)
        path = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, BENCH_SERVE_VARIANT=variant, PYTHONPATH=path)
        bindir = os.path.dirname(sys.executable)
        if kind == "uvicorn":
            cmd = [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "serve_apps:starlette_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--http",
                "httptools",
                "--loop",
                "asyncio",
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        else:
            cmd = [
                os.path.join(bindir, "gunicorn"),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
                "--worker-class",
                "sync",
                "--log-level",
                "warning",
                "serve_apps:flask_app()",
            ]
        self.proc = subprocess.Popen(cmd, env=env, cwd=HERE)
        self.cookie = self._first_visit()

    def _first_visit(self) -> str:
        """The Cookie header of a returning visitor (after two visits)."""
        deadline = time.monotonic() + 60
        jar: dict[str, str] = {}
        while True:
            try:
                for _ in range(2):
                    headers = {"User-Agent": UA}
                    if jar:
                        headers["Cookie"] = "; ".join(
                            f"{k}={v}" for k, v in jar.items()
                        )
                    req = urllib.request.Request(
                        f"http://127.0.0.1:{self.port}{PATH}", headers=headers
                    )
                    with urllib.request.urlopen(req, timeout=5) as resp:
                        resp.read()
                        for value in resp.headers.get_all("Set-Cookie") or ():
                            name, _, rest = value.partition("=")
                            jar[name] = rest.split(";", 1)[0]
                return "; ".join(f"{k}={v}" for k, v in jar.items())
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.kind} {self.variant} did not start"
                    ) from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_LATENCY = re.compile(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def load(server: Server, seconds: float, connections: int) -> tuple[float, float]:
    """One wrk run against ``server``: (requests/s, p99 in ms)."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-H",
        f"User-Agent: {UA}",
        "-H",
        "Referer: https://shop.example/",
    ]
    if server.cookie:
        cmd += ["-H", f"Cookie: {server.cookie}"]
    cmd.append(f"http://127.0.0.1:{server.port}{PATH}")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rate = _RATE.search(out)
    p99 = _LATENCY.search(out)
    if rate is None or p99 is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk: unexpected result:\n{out}")
    return float(rate.group(1)), float(p99.group(1)) * _UNIT[p99.group(2)]


def run(
    kind: str, variants: list[str], rounds: int, seconds: float, connections: int
) -> dict[str, tuple[float, float]]:
    servers = [Server(kind, v) for v in variants]
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    try:
        for server in servers:  # warm up
            load(server, 1, connections)
        for i in range(rounds):
            # Interleaved, the order rotated each round.
            order = servers[i % len(servers) :] + servers[: i % len(servers)]
            for server in order:
                results[server.variant].append(load(server, seconds, connections))
    finally:
        for server in servers:
            server.stop()
    return {
        v: (
            statistics.median(r for r, _ in rs),
            statistics.median(p for _, p in rs),
        )
        for v, rs in results.items()
    }


def report(
    name: str, medians: dict[str, tuple[float, float]]
) -> list[tuple[str, bool]]:
    plain_rate, plain_p99 = medians["plain"]
    print(f"\n## {name} (medians of the rounds)")
    for variant, (rate, p99) in medians.items():
        print(
            f"  {variant:<10} {rate:10,.0f} req/s ({rate / plain_rate:4.2f}x plain)"
            f"   p99 {p99:6.2f} ms ({p99 / plain_p99:4.2f}x plain)"
        )
    rate, p99 = medians["trackware"]
    floor_rate = medians["floor"][0]
    return [
        (
            f"{name}: trackware {rate:,.0f} req/s = {rate / floor_rate:.2f}x the "
            f"floor's {floor_rate:,.0f} (target >= 0.95x)",
            rate >= 0.95 * floor_rate,
        ),
        (
            f"{name}: trackware p99 {p99:.2f} ms = {p99 / plain_p99:.2f}x plain's "
            f"{plain_p99:.2f} ms (target <= 1.5x)",
            p99 <= 1.5 * plain_p99,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["uvicorn", "gunicorn"],
        choices=["uvicorn", "gunicorn"],
    )
    parser.add_argument(
        "--also",
        nargs="*",
        default=[],
        choices=["sessions", "absorb", "inline", "gather0"],
        help="more trackware variants (bench/serve_apps.py): without page "
        "events, with an idle worker, page events built inline, no gathering",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not installed (apt-get install wrk): the server bench is skipped")
        return 0
    variants = ["plain", "floor", "trackware", *args.also]
    checks: list[tuple[str, bool]] = []
    names = {"uvicorn": "uvicorn + Starlette", "gunicorn": "gunicorn (sync) + Flask"}
    for kind in args.servers:
        missing = [
            m
            for m in (("uvicorn", "httptools") if kind == "uvicorn" else ("gunicorn",))
            if importlib.util.find_spec(m) is None
        ]
        if missing:
            print(f"\n({', '.join(missing)} not installed: {kind} skipped)")
            continue
        medians = run(kind, variants, args.rounds, args.seconds, args.connections)
        checks += report(
            f"{names[kind]}, {args.connections} connections, {args.rounds} x "
            f"{args.seconds:g} s rounds",
            medians,
        )
    print("\n## Server targets")
    for text, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
