"""Process exit by SIGTERM: the trackers' shutdown runs before the process ends.

Trackers registered for exit are shut down (queued events delivered within
their budget, the rest dead-lettered) by an atexit hook, and by
multiprocessing's exit finalizers in its child processes. A process that ends
by SIGTERM runs neither: at its default action SIGTERM ends the process at
once, and uvicorn, after its graceful shutdown, restores the handler it found
and raises SIGTERM again, so that the process ends the way it was asked to.

:func:`install` is called when a tracker registered for exit is created; on
the main thread it acts once, on the SIGTERM disposition it finds:

* **The default action** (a plain process; uvicorn with one process, which
  imports the app before it installs its own handler, saves ours and puts it
  back before its re-raise): our handler runs the exit hook (bounded by the
  trackers' budgets), restores the default action and raises SIGTERM again,
  so the process still ends by the signal, with the same status.
* **A Python handler** (uvicorn's worker processes, which import the app while
  their handler is installed; gunicorn workers without ``--preload``): it is
  chained. When SIGTERM arrives, ours blocks SIGTERM on the main thread, then
  calls the previous handler as before. A server that re-raises SIGTERM after
  its graceful shutdown (uvicorn) leaves it pending instead of dying at once;
  the server returns normally, the exit hooks run (atexit, or
  multiprocessing's finalizers in a worker process), shut the trackers down
  and then call :func:`release_held`, which lets the pending SIGTERM through
  at its default action: the process ends by it, as it would have. A server
  that does not re-raise (gunicorn's workers call ``sys.exit``) exits as
  before. While SIGTERM is blocked on the main thread, another SIGTERM sent
  to the process is still received (by another thread) and handled as usual.
* **Ignored, or set outside Python**: left alone.

What this cannot cover: SIGKILL (and a crash) ends the process with its
in-memory queues; and a process whose main thread is stuck in C code runs
Python signal handlers only when it returns to Python.
"""

from __future__ import annotations

import signal
import threading
import typing as t

__all__ = ["install", "release_held"]

_Handler = t.Callable[[int, t.Any], t.Any]

#: Whether install() has acted (in this process or a parent it was forked from).
_installed = False
#: Signals a chained handler blocked on the main thread (see release_held).
_held: set[int] = set()
#: What runs before the process ends by SIGTERM, and the seconds it may take.
_exit_hook: t.Callable[[], None] | None = None
_budget: t.Callable[[], float] = float


def install(exit_hook: t.Callable[[], None], budget: t.Callable[[], float]) -> None:
    """Make ``exit_hook`` run before the process ends by SIGTERM (see the
    module docstring). Does nothing off the main thread (a later call from it
    installs), after it has acted once, or where there is no SIGTERM."""
    global _installed, _exit_hook, _budget
    if _installed or not hasattr(signal, "SIGTERM"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    _exit_hook = exit_hook
    _budget = budget
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminate)
        elif callable(current) and hasattr(signal, "pthread_sigmask"):
            signal.signal(signal.SIGTERM, _chain(current))
    except (ValueError, OSError):  # pragma: no cover - e.g. an embedded interpreter
        return
    _installed = True


def _terminate(signum: int, frame: t.Any) -> None:
    """SIGTERM at its default action: shut the trackers down, then end by it."""
    _run_exit_hook()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def _chain(previous: _Handler) -> _Handler:
    def chained(signum: int, frame: t.Any) -> t.Any:
        # Python runs signal handlers on the main thread: this blocks the
        # signal there, where a server's re-raise (raise() is aimed at the
        # calling thread) is then held until release_held().
        signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
        _held.add(signum)
        return previous(signum, frame)

    chained.__wrapped__ = previous  # type: ignore[attr-defined]
    return chained


def _run_exit_hook() -> None:
    """Run the exit hook on a thread of its own, waiting at most the budget.

    Not on the main thread itself: the signal may have interrupted it while it
    held a lock the shutdown needs; then the process still ends, on time.
    """
    hook = _exit_hook
    if hook is None:
        return
    thread = threading.Thread(target=hook, name="trackware-exit", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # pragma: no cover - interpreter shutting down
        hook()
        return
    thread.join(_budget() + 1.0)


def release_held() -> None:
    """From the exit hooks, once the trackers are shut down: unblock what a
    chained handler blocked. A SIGTERM pending meanwhile (the server's
    re-raise) is then delivered at its default action: the process ends by
    it, with the status it would have had."""
    if not _held or threading.current_thread() is not threading.main_thread():
        return
    for signum in sorted(_held):
        _held.discard(signum)
        try:
            if signum in signal.sigpending():
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        except (ValueError, OSError):  # pragma: no cover - defensive
            pass
