"""The process lifecycle registry: what runs in a forked child, and at exit.

Components register callbacks; this module owns the one ``os.register_at_fork``
hook, the one ``atexit`` hook, multiprocessing's exit finalizers and SIGTERM:

* :func:`on_fork` ``(callback)``: run in the child after ``os.fork()``, in
  registration order (:data:`forks` is bumped first).
* :func:`hold_across_fork` ``(lock)``: a fork waits for ``lock`` and holds it
  while it forks (released after, in parent and child).
* :func:`at_exit` ``(callback, budget)``: run at exit (atexit, multiprocessing's
  exit finalizers, and before the process ends by SIGTERM once
  :func:`watch_exit` is called), in registration order; ``budget()`` is the
  longest the callback may take, in seconds.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import typing as t

__all__ = [
    "at_exit",
    "forks",
    "hold_across_fork",
    "on_fork",
    "release_held",
    "watch_exit",
]

_Handler = t.Callable[[int, t.Any], t.Any]
_logger = logging.getLogger("trackware")

#: Forks this process descends from (bumped in the child after every
#: ``os.fork()``, before the callbacks run): compared per event instead of a
#: ``getpid()`` syscall.
forks = 0
_fork_callbacks: list[t.Callable[[], None]] = []
_fork_locks: list[t.Any] = []
_exit_callbacks: list[tuple[t.Callable[[], None], t.Callable[[], float]]] = []
_atexit_registered = False
#: Whether the SIGTERM side has acted (in this process or a parent it was
#: forked from).
_installed = False
#: Signals a chained handler blocked on the main thread (see release_held).
_held: set[int] = set()
#: The process whose multiprocessing exit finalizers run the exit callbacks.
_mp_finalizer_pid = 0


def on_fork(callback: t.Callable[[], None]) -> None:
    """Run ``callback()`` in the child after every ``os.fork()`` (after the
    callbacks registered before it). An exception is logged, never raised."""
    _fork_callbacks.append(callback)


def hold_across_fork(lock: t.Any) -> None:
    """Make every ``os.fork()`` wait for ``lock`` (a ``threading.Lock``) and
    hold it while forking, released after in parent and child: no child
    inherits it held by a thread that does not exist there. Locks are taken
    in registration order, before logging takes its own for the fork."""
    _fork_locks.append(lock)


def at_exit(
    callback: t.Callable[[], None], budget: t.Callable[[], float] = float
) -> None:
    """Run ``callback()`` when the process exits: at interpreter exit, from a
    multiprocessing child's exit finalizers, and before the process ends by
    SIGTERM (see :func:`watch_exit`). ``budget()``: the seconds it may take
    (SIGTERM waits that long at most). Callbacks run in registration order;
    an exception is logged, never raised."""
    global _atexit_registered
    _exit_callbacks.append((callback, budget))
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_run_exit)


def watch_exit() -> None:
    """Arm the exit paths that atexit misses, for a component that must run
    at exit: SIGTERM (on the main thread, once; see docs/architecture/front.md) and
    a spawned multiprocessing child's exit finalizers (a fork child's are
    registered after each fork)."""
    _install_sigterm()
    mp_process = sys.modules.get("multiprocessing.process")
    if mp_process is not None and mp_process.parent_process() is not None:
        _register_mp_finalizer(None)


def _run_exit() -> None:
    """Every exit callback, then a SIGTERM held back until now (a server's
    re-raise) ends the process. Idempotent as its callbacks are."""
    for callback, _ in list(_exit_callbacks):
        try:
            callback()
        except Exception:  # pragma: no cover - never let exit fail
            _logger.error("trackware: an exit callback failed", exc_info=True)
    release_held()


def _budget() -> float:
    return sum(budget() for _, budget in list(_exit_callbacks))


def _before_fork() -> None:
    for lock in _fork_locks:
        lock.acquire()


def _release_fork_locks() -> None:
    for lock in reversed(_fork_locks):
        lock.release()


def _forked() -> None:
    global forks
    forks += 1
    _release_fork_locks()
    for callback in list(_fork_callbacks):
        try:
            callback()
        except Exception:  # pragma: no cover - defensive
            _logger.error("trackware: an after-fork callback failed", exc_info=True)
    # multiprocessing's fork children leave through os._exit(), which skips
    # atexit; its own exit finalizers do run, so run the exit callbacks from
    # there too. Its bootstrap clears finalizers registered before it runs,
    # then calls the "after forkers": register the finalizer from there.
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.register_after_fork(_mp_hook, _register_mp_finalizer)


class _MPHook:
    """A weak-referenceable key for multiprocessing's after-fork registry."""


_mp_hook = _MPHook()


def _register_mp_finalizer(_: object) -> None:
    global _mp_finalizer_pid
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None and _mp_finalizer_pid != os.getpid():
        _mp_finalizer_pid = os.getpid()
        mp_util.Finalize(None, _run_exit, exitpriority=100)


# --- SIGTERM ------------------------------------------------------------------------


def _install_sigterm() -> None:
    """Make the exit callbacks run before the process ends by SIGTERM. Does
    nothing off the main thread (a later call from it installs), after it has
    acted once, or where there is no SIGTERM."""
    global _installed
    if _installed or not hasattr(signal, "SIGTERM"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
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
    """SIGTERM at its default action: run the exit callbacks, then end by it."""
    _run_exit_callbacks_bounded()
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


def _run_exit_callbacks_bounded() -> None:
    """Run the exit callbacks on a thread of their own, waiting at most their
    budget.

    Not on the main thread itself: the signal may have interrupted it while it
    held a lock the shutdown needs; then the process still ends, on time.
    """
    if not _exit_callbacks:
        return
    thread = threading.Thread(target=_run_exit, name="trackware-exit", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # pragma: no cover - interpreter shutting down
        _run_exit()
        return
    thread.join(_budget() + 1.0)


def release_held() -> None:
    """From the exit callbacks' end: unblock what a chained handler blocked. A
    SIGTERM pending meanwhile (the server's re-raise) is then delivered at its
    default action: the process ends by it, with the status it would have had."""
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


if hasattr(os, "register_at_fork"):
    # Registered after logging's own hook (logging is imported above): the
    # "before" hooks run in reverse, so ours runs before logging takes its lock.
    os.register_at_fork(
        before=_before_fork, after_in_parent=_release_fork_locks, after_in_child=_forked
    )
