"""The lifecycle registry (trackware._lifecycle): fork callbacks run in the
child, in order, after the fork counter moves; exit callbacks run at exit, in
order, and a failing one never stops the others (each in a fresh interpreter,
so that the registry under test is that process's own)."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest
from _support import run_script

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork"), reason="fork and SIGTERM are POSIX"
)


def test_fork_callbacks_run_in_the_child_in_order_after_the_counter() -> None:
    proc = run_script(
        """
        import json, os, sys
        from trackware import _lifecycle

        seen = []
        _lifecycle.on_fork(lambda: seen.append(("first", _lifecycle.forks)))

        def broken():
            raise RuntimeError("boom")

        _lifecycle.on_fork(broken)
        _lifecycle.on_fork(lambda: seen.append(("second", _lifecycle.forks)))
        before = _lifecycle.forks
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, json.dumps([before, seen]).encode())
            os._exit(0)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        print(os.read(r, 4096).decode())
        print(json.dumps([_lifecycle.forks, seen]))
        """
    )
    assert proc.returncode == 0, proc.stderr
    child, parent = (json.loads(line) for line in proc.stdout.splitlines())
    before = child[0]
    # In the child: the counter moved first, then every callback, in order,
    # the failing one logged and skipped.
    assert child[1] == [["first", before + 1], ["second", before + 1]]
    assert "an after-fork callback failed" in proc.stderr
    # The parent is untouched.
    assert parent == [before, []]


def test_exit_callbacks_run_at_exit_in_order_despite_a_failure() -> None:
    proc = run_script(
        """
        from trackware import _lifecycle

        def broken():
            raise RuntimeError("boom")

        _lifecycle.at_exit(lambda: print("first", flush=True))
        _lifecycle.at_exit(broken)
        _lifecycle.at_exit(lambda: print("second", flush=True), lambda: 2.5)
        print("main done", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["main", "done", "first", "second"]
    assert "an exit callback failed" in proc.stderr


def test_sigterm_runs_the_exit_callbacks_then_ends_by_the_signal() -> None:
    proc = run_script(
        """
        import os, signal
        from trackware import _lifecycle

        _lifecycle.at_exit(lambda: print("exit callback", flush=True), lambda: 1.0)
        _lifecycle.watch_exit()
        os.kill(os.getpid(), signal.SIGTERM)
        import time
        time.sleep(30)
        print("not reached", flush=True)
        """
    )
    assert proc.returncode == -signal.SIGTERM
    assert proc.stdout.split("\n")[0] == "exit callback"
    assert "not reached" not in proc.stdout


def test_watch_exit_chains_a_python_handler() -> None:
    """A SIGTERM handler found installed is kept and called (a server's)."""
    proc = run_script(
        """
        import os, signal, sys
        from trackware import _lifecycle

        def server(signum, frame):
            print("server handler", flush=True)
            sys.exit(3)

        signal.signal(signal.SIGTERM, server)
        _lifecycle.at_exit(lambda: print("exit callback", flush=True))
        _lifecycle.watch_exit()
        assert signal.getsignal(signal.SIGTERM).__wrapped__ is server
        os.kill(os.getpid(), signal.SIGTERM)
        import time
        time.sleep(30)
        """
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["server handler", "exit callback"]


def test_the_trackers_register_with_the_registry() -> None:
    """The tracker and the process default are fork and exit callbacks of the
    one registry: no os.register_at_fork or atexit of their own."""
    from trackware import _default, _lifecycle, _tracker

    assert _tracker._after_fork_all in _lifecycle._fork_callbacks
    assert _default._after_fork in _lifecycle._fork_callbacks
    assert (_tracker._shutdown_all_at_exit, _tracker._exit_budget) in (
        _lifecycle._exit_callbacks
    )
    assert sys.modules["trackware._lifecycle"] is _lifecycle


def test_a_fork_waits_for_a_held_lock_and_releases_it_on_both_sides() -> None:
    proc = run_script(
        """
        import os, threading, time
        from trackware import _lifecycle

        lock = threading.Lock()
        _lifecycle.hold_across_fork(lock)
        order = []
        lock.acquire()

        def release_later():
            time.sleep(0.3)
            order.append("released by the other thread")
            lock.release()

        threading.Thread(target=release_later).start()
        pid = os.fork()  # waits until the other thread lets the lock go
        if pid == 0:
            os._exit(0 if lock.acquire(timeout=5) else 1)
        order.append("forked")
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), lock.acquire(timeout=5), order)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("0 True ['released by the other thread', 'forked']")
