"""``trackware inspect``: the local inspector sidecar and its page.

Apps configured with ``inspector=URL`` (or ``TRACKWARE_INSPECTOR``) send it a
copy of each event, the vendor payloads and the outcomes (see
``trackware._inspect``); the page at ``/`` shows them live. See
docs/inspector.md.

The server is imported when first used: the command line builds its parser
(``register``) without loading ``http.server``.
"""

from __future__ import annotations

import importlib
import typing as t

from ._cli import main, register

if t.TYPE_CHECKING:
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

_LAZY = {
    "DEFAULT_PORT": "._server",
    "InspectorServer": "._server",
    "is_loopback": "._server",
    "InspectorState": "._state",
}


def __getattr__(name: str) -> t.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
