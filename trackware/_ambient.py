"""The current visitor scope, as lower layers see it.

The front layer (``trackware._context``) installs the function that returns
the scope of the running request or ``trackware.request_scope()`` block;
exporters read it through :func:`current` (MXO's ``interact()``) without
importing the front layer.
"""

from __future__ import annotations

import typing as t

__all__ = ["AmbientScope", "current", "install", "installed"]


class AmbientScope(t.Protocol):
    """What a lower layer may read of the current scope (``trackware.Scope``)."""

    @property
    def user_id(self) -> str | None: ...
    @property
    def anonymous_id(self) -> str | None: ...
    @property
    def email(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def traits(self) -> t.Mapping[str, t.Any]: ...
    @property
    def context(self) -> t.Mapping[str, t.Any]: ...

    def bind(self, **context: t.Any) -> None: ...


def _none() -> AmbientScope | None:
    return None


_source: t.Callable[[], AmbientScope | None] = _none


def install(source: t.Callable[[], AmbientScope | None]) -> None:
    """Make ``source`` the function :func:`current` asks (the front layer's
    ``current_scope``)."""
    global _source
    _source = source


def installed() -> bool:
    """Whether a source was installed."""
    return _source is not _none


def current() -> AmbientScope | None:
    """The current scope, or ``None`` (outside any, or none installed)."""
    return _source()
