"""How long the intake thread's build of one gathered batch of page events
holds the interpreter (the p99 question of issue 16, target 3).

Records the page events of ``--requests`` Starlette requests (a returning
visitor) while the intake thread is kept from draining, then times one
``drain()`` of them on this thread: what the intake thread does every
``GATHER`` (50 ms) under load, holding the GIL throughout. Prints the CPU
time of the drain (``time.thread_time``: other processes' load left out),
median and spread over ``--repeat`` batches, and per event.

Run: ``.venv-bench/bin/python bench/intake_drain.py [--requests 150]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import typing as t

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import BASE_SCOPE, HEADERS, SECRET, NullExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import trackware
from trackware import _intake
from trackware.integrations.asgi import TrackwareMiddleware


async def item(request: Request) -> Response:
    return PlainTextResponse("ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    _intake.GATHER = 3600.0  # the intake thread never drains by itself here
    tracker = trackware.Tracker(
        [NullExporter()], dead_letter=None, register_atexit=False
    )
    app = TrackwareMiddleware(
        Starlette(routes=[Route("/items/{item_id}", item)]),
        tracker=tracker,
        cookie_secret=SECRET,
    )
    cookies: list[bytes] = []

    async def receive() -> dict[str, t.Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: t.Any) -> None:
        if message["type"] == "http.response.start":
            cookies.extend(v for k, v in message["headers"] if k == b"set-cookie")

    loop = asyncio.new_event_loop()

    async def requests(n: int, headers: list[tuple[bytes, bytes]]) -> None:
        for _ in range(n):
            await app(dict(BASE_SCOPE, headers=headers), receive, send)

    loop.run_until_complete(requests(1, HEADERS))
    jar = b"; ".join(c.split(b";", 1)[0] for c in cookies)
    headers = [*HEADERS, (b"cookie", jar)]
    cpu: list[float] = []
    for _ in range(args.repeat + 3):
        loop.run_until_complete(requests(args.requests, headers))
        t0 = time.thread_time()  # CPU time: other processes' load left out
        tracker._drain()  # what the intake thread runs, here on this thread
        cpu.append(time.thread_time() - t0)
        tracker.flush(10)
    cpu = sorted(cpu[3:])
    med = statistics.median(cpu)
    print(
        f"one intake batch of {args.requests} page events holds the GIL for "
        f"{med * 1e3:.3f} ms of CPU (median of {args.repeat}; "
        f"{med / args.requests * 1e6:.2f} us/event; min {cpu[0] * 1e3:.3f} ms, "
        f"max {cpu[-1] * 1e3:.3f} ms); GIL switch interval "
        f"{sys.getswitchinterval() * 1e3:g} ms"
    )
    tracker.shutdown(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
