"""``trackware inspect``: the local inspector sidecar and its page.

Apps configured with ``inspector=URL`` (or ``TRACKWARE_INSPECTOR``) send it a
copy of each event, the vendor payloads and the outcomes (see
``trackware._inspect``); the page at ``/`` shows them live. See
docs/inspector.md.
"""

from __future__ import annotations

from ._cli import main, register
from ._server import DEFAULT_PORT, InspectorServer, is_loopback
from ._state import InspectorState

__all__ = [
    "DEFAULT_PORT",
    "InspectorServer",
    "InspectorState",
    "is_loopback",
    "main",
    "register",
]
