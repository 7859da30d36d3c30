"""The ASGI middleware's lifespan handling: on ``lifespan.shutdown`` the
tracker is shut down within its budget on a thread, never on the event loop;
apps without lifespan support (Django) get it answered for them.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import typing as t

from .. import _default, _log

if t.TYPE_CHECKING:
    from asgiref.typing import (
        ASGI3Application,
        ASGIReceiveCallable,
        ASGIReceiveEvent,
        ASGISendCallable,
        ASGISendEvent,
    )

    from .._tracker import Tracker

__all__ = ["run_lifespan"]


async def run_lifespan(
    app: ASGI3Application,
    tracker: Tracker | None,
    scope: t.Any,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    marker: str,
) -> None:
    """Run ``app``'s lifespan, shutting ``tracker`` (``None``: the process
    default, if any) down when the server's shutdown completes; ``marker``,
    the middleware's scope key, tells inner middleware to leave it to us."""
    used = [False]

    async def lifespan_receive() -> ASGIReceiveEvent:
        used[0] = True
        return await receive()

    async def lifespan_send(message: ASGISendEvent) -> None:
        used[0] = True
        if message["type"] in (
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
        ):
            await shutdown_tracker(tracker)
        await send(message)

    inner: t.Any = dict(scope)
    inner[marker] = None  # an inner TrackwareMiddleware leaves it to us
    try:
        await app(inner, lifespan_receive, lifespan_send)
    except Exception:
        if used[0]:
            raise
        # The app does not speak lifespan (Django's ASGIHandler raises):
        # answer it ourselves so that the tracker is shut down with it.
    else:
        if used[0]:
            return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown_tracker(tracker)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def shutdown_tracker(tracker: Tracker | None) -> None:
    """Shut the tracker down within its budget on a thread (never blocking
    the loop): delivered or dead-lettered, every event has an outcome.

    A flush is not enough: the app's lifespan ends just before the server
    process does, and uvicorn ends it by re-raising SIGTERM, where no
    atexit hook runs; events a flush could not deliver (vendor down or
    hung) would vanish uncounted. A shutdown dead-letters them.
    """
    if tracker is None:
        tracker = _default.current
    if tracker is None:
        return
    try:
        await _in_thread(tracker.shutdown, tracker.shutdown_timeout)
    except Exception:
        _log.error(
            "asgi-lifespan-shutdown",
            "trackware: shutting the tracker down on lifespan shutdown failed",
            exc_info=True,
        )


async def _in_thread(fn: t.Callable[[float], bool], timeout: float) -> bool:
    """Run ``fn(timeout)`` on a new daemon thread and await its result."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio (e.g. hypercorn -k trio)
        trio = sys.modules.get("trio")
        if trio is None:
            return False
        return t.cast(bool, await trio.to_thread.run_sync(fn, timeout))
    future: asyncio.Future[bool] = loop.create_future()

    def settle(result: bool | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(bool(result))

    def run() -> None:
        try:
            result = fn(timeout)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="trackware-lifespan-flush", daemon=True).start()
    return await future
