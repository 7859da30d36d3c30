"""``--config package.module:name``: the user's tracker or exporters, for the
commands that deliver outside the app (``trackware worker``, ``trackware
deadletter replay``)."""

from __future__ import annotations

import importlib
import os
import sys
import typing as t

from .exceptions import ConfigurationError

__all__ = ["resolve"]


def resolve(target: t.Any, *, option: str = "--config") -> t.Any:
    """``target`` imported when it is a ``"package.module:name"`` path (the
    current folder is importable, as for ``python -m``), and called when it
    is a factory (a callable that is neither a Tracker nor an exporter).
    Raises :class:`ConfigurationError` naming what could not be found."""
    from ._tracker import Tracker
    from .exporters import Exporter

    obj = target
    if isinstance(obj, str):
        module_name, sep, attr = obj.partition(":")
        if not sep or not module_name or not attr:
            raise ConfigurationError(
                f"{option} {obj!r}: give package.module:factory (a function "
                "returning a Tracker or a list of exporters, or such an object)"
            )
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            obj = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(
                f"{option}: cannot import {module_name}: {exc}"
            ) from None
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ConfigurationError(
                    f"{option}: {module_name} has no {attr!r}"
                ) from None
    if callable(obj) and not isinstance(obj, (Tracker, Exporter)):
        obj = obj()
    return obj
