"""Stopping test HTTP servers without waiting out their poll interval."""

from __future__ import annotations

import socket
import threading
import typing as t

import pytest
from _support import Sink


def stop_quickly(sink: Sink) -> None:
    """``sink.stop()``, minus the up-to-0.5 s wait for ``serve_forever`` to poll.

    ``shutdown()`` runs on a helper thread while this one connects to the
    server, which wakes its ``select`` so it sees the shutdown request at once.
    """
    stopper = threading.Thread(target=sink.server.shutdown, daemon=True)
    stopper.start()
    while stopper.is_alive():
        try:
            socket.create_connection(("127.0.0.1", sink.port), timeout=0.5).close()
        except OSError:
            pass
        stopper.join(0.01)
    sink.server.server_close()


@pytest.fixture
def sink() -> t.Iterator[Sink]:
    s = Sink()
    yield s
    stop_quickly(s)
