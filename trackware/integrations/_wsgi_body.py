"""WSGI response bodies of the Flask integration: whether a body is complete
when ``wsgi_app`` returns it (a list, a file, werkzeug's error page) or is
produced while it is sent, and :class:`ClosingBody`, which binds the
request's scope while a streamed body runs and records the page event when
it is closed (or garbage-collected unclosed).
"""

from __future__ import annotations

import gc
import typing as t

from werkzeug.wrappers import Response
from werkzeug.wsgi import ClosingIterator as _ClosingIterator
from werkzeug.wsgi import FileWrapper as _FileWrapper

from .._context import Scope, scope_var

if t.TYPE_CHECKING:
    from ._flask_wsgi import TrackwareWSGI

__all__ = ["ClosingBody", "body_complete", "list_body", "streamed"]


def list_body(body: t.Any) -> bool:
    """Is ``body`` the ``ClosingIterator`` of a werkzeug response made from a
    list (the common case: complete, nothing runs while it is sent)?

    werkzeug exposes no public way to reach the response behind the
    iterator its ``Response.__call__`` returns: its close callbacks
    (``ClosingIterator._callbacks``) end with the response's bound
    ``close``. Any surprise (another werkzeug) answers ``False``: the body
    is then treated as streamed (the page event waits for ``close()``),
    never lost.
    """
    try:
        close: t.Any = body._callbacks[-1]  # the werkzeug response's close
        return type(close.__self__.response) is list
    except Exception:
        return False


def streamed(body: t.Any) -> bool:
    """Is this werkzeug response body produced while it is sent (an app's
    generator; files are not)?"""
    try:
        response = body._callbacks[-1].__self__
    except (AttributeError, IndexError):
        return True
    if not isinstance(response, Response):
        return True
    inner = response.response
    if type(inner) is list:  # the common case
        return False
    if type(inner) is _ClosingIterator:
        # Flask made the response by running a WSGI app (``force_type``):
        # werkzeug's error page for an unhandled HTTP error or exception
        # (raise -> 500, abort(404), unknown URLs), or an app the view
        # returned. Such a response is marked streamed, but what it wraps
        # may be complete already (the error page's is a list).
        return not _wrapsbody_complete(inner)
    return response.is_streamed and not response.direct_passthrough


def _wrapsbody_complete(iterator: _ClosingIterator) -> bool:
    """Does this ``ClosingIterator`` of ``run_wsgi_app`` wrap a body that is
    complete (a werkzeug response made from a list)?

    Each ``ClosingIterator`` ends its close callbacks with the close of what
    it wraps: another ``ClosingIterator`` (``run_wsgi_app`` wraps the app's
    iterator) or the response that made it (``Response.__call__``). Followed
    a few levels down, to a response's own body: a list or tuple is
    complete; anything else (a generator, a file, an unknown object) may run
    app code as it is sent, so the page event waits for ``close()``.
    """
    current: t.Any = iterator
    for _ in range(4):
        try:
            owner = current._callbacks[-1].__self__
        except (AttributeError, IndexError):
            return False
        if type(owner) is _ClosingIterator:
            current = owner
        elif isinstance(owner, Response):
            inner = owner.response
            if type(inner) is list or type(inner) is tuple:
                return True
            if type(inner) is not _ClosingIterator:
                return False
            current = inner
        else:
            return False
    return False


def body_complete(body: t.Any, environ: dict[str, t.Any]) -> bool:
    """A body that is not an app's generator: a list, or a file sent as is."""
    if type(body) is list or type(body) is tuple:
        return True
    if type(body) is _ClosingIterator:
        return not streamed(body)
    file_wrapper = environ.get("wsgi.file_wrapper", _FileWrapper)
    return isinstance(body, _FileWrapper) or (
        isinstance(file_wrapper, type) and isinstance(body, file_wrapper)
    )


class ClosingBody:
    """A streamed response body: the request's scope is bound while each chunk
    is produced, and ``on_close`` (the page event) runs once when the server
    closes it, or when the body is garbage-collected unclosed (see
    :meth:`__del__`)."""

    __slots__ = ("_body", "_iterator", "_on_close", "_owner", "_scope")

    def __init__(
        self,
        body: t.Any,
        scope: Scope,
        on_close: t.Callable[[], None] | None,
        owner: TrackwareWSGI | None = None,
    ) -> None:
        self._body = body
        self._scope = scope
        self._on_close = on_close
        self._owner = owner
        self._iterator: t.Iterator[bytes] | None = None

    def __iter__(self) -> ClosingBody:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._body)
        token = scope_var.set(self._scope)
        try:
            return next(self._iterator)
        finally:
            scope_var.reset(token)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                token = scope_var.set(self._scope)
                try:
                    close()
                finally:
                    scope_var.reset(token)
        finally:
            on_close = self._on_close
            if on_close is not None:
                self._on_close = None
                on_close()

    def __del__(self) -> None:
        """Garbage-collected without ``close()`` (which a WSGI server must
        call; Flask's test client does not): count it, and track the page
        event (status as sent, duration until now) rather than lose it.

        Where the last reference goes (CPython's reference counting: the
        server's or the test's code) the event is tracked at once. The
        cyclic collector, though, may run at any allocation, also inside a
        lock trackware holds; then only lock-free work happens here (a
        counter, a deque) and the app's next request, or ``stats()``,
        tracks the event. Never raises.
        """
        try:
            on_close = self._on_close
            owner = self._owner
            if on_close is None or owner is None:  # closed, or not tracked
                return
            self._on_close = None
            state = owner.app_state
            next(state.unclosed)
            if _collecting:
                state.orphans.append(on_close)
                owner.seen_views = -1  # the next request runs _refresh()
            else:
                on_close()
        except Exception:  # pragma: no cover - defensive (e.g. at interpreter exit)
            pass


#: True while the cyclic garbage collector runs (see ``ClosingBody.__del__``).
_collecting = False


def _on_gc(phase: str, info: dict[str, t.Any]) -> None:
    global _collecting
    _collecting = phase == "start"


gc.callbacks.append(_on_gc)
