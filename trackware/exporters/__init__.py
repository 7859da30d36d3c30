"""Exporters: where events go.

Built in: :class:`HTTPExporter` (any JSON endpoint), :class:`ConsoleExporter`,
:class:`JSONLinesExporter`. Vendor exporters live in their own modules:
``trackware.exporters.cardlytics``, ``.mxo``, ``.synerise`` and ``.yotpo``.
Write your own by subclassing :class:`BaseExporter` (or
:class:`BaseHTTPExporter` for HTTP APIs, authenticated through
:meth:`BaseHTTPExporter.credentials`: :class:`CachedToken` over a
:class:`~trackware.TokenCache`).

Every name is imported on first use (``_EXPORTS``): the interface
(``BaseExporter``, ``ExportResult``...) costs little, while the HTTP
exporters bring httpx, which is imported when an app first names one (at
configuration, on its main thread: see ``_client``'s note on fork safety).
The vendor packages are imported when first named, as attributes too
(``trackware.exporters.mxo``).
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing costs more than the rest of
# this module (type checkers take any name TYPE_CHECKING as true).
TYPE_CHECKING = False

#: Public name -> the module (relative to this package) that defines it; a
#: vendor package maps to itself. Adding a public name is one line here (and
#: its typing import below: tests/core/test_exports.py keeps both in step).
_EXPORTS: dict[str, str] = {
    "BaseExporter": "._base",
    "BaseHTTPExporter": "._http",
    "CachedToken": "trackware._auth",
    "ConsoleExporter": "._local",
    "Credentials": "trackware._auth",
    "ExportResult": "._base",
    "Exporter": "._base",
    "HTTPExporter": "._webhook",
    "HTTPRequest": "._http",
    "JSONLinesExporter": "._local",
    "Rejection": "._base",
    "TokenAuth": "trackware._auth",
    "bearer": "trackware._auth",
    "no_credentials": "trackware._auth",
    "report_progress": "._base",
}

#: The vendor packages: imported on first use as attributes too.
_VENDORS = ("cardlytics", "mxo", "synerise", "yotpo")

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    import typing as t

    from .._auth import CachedToken as CachedToken
    from .._auth import Credentials as Credentials
    from .._auth import TokenAuth as TokenAuth
    from .._auth import bearer as bearer
    from .._auth import no_credentials as no_credentials
    from ._base import BaseExporter as BaseExporter
    from ._base import Exporter as Exporter
    from ._base import ExportResult as ExportResult
    from ._base import Rejection as Rejection
    from ._base import report_progress as report_progress
    from ._http import BaseHTTPExporter as BaseHTTPExporter
    from ._http import HTTPRequest as HTTPRequest
    from ._local import ConsoleExporter as ConsoleExporter
    from ._local import JSONLinesExporter as JSONLinesExporter
    from ._webhook import HTTPExporter as HTTPExporter


del TYPE_CHECKING


def __getattr__(name: str) -> t.Any:
    """Import a public name's module on first use and keep the name here."""
    where = _EXPORTS.get(name)
    if where is None:
        if name in _VENDORS:
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_VENDORS))
