"""What a vendor emulator's handlers see and answer with.

:class:`VendorAPI` declares one vendor's routes; a handler gets a
:class:`Request` and returns a :class:`Reply` or raises :class:`HTTPError`
(the vendor's status and error body). The server is in ``_server``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import typing as t

__all__ = [
    "HTTPError",
    "Headers",
    "Reply",
    "Request",
    "Route",
    "VendorAPI",
    "in_scope",
    "loads_json",
]


def _refuse_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not JSON")


def loads_json(data: bytes) -> t.Any:
    """Parse JSON as strictly as RFC 8259: ``NaN``/``Infinity`` are refused
    (Python's :func:`json.loads` accepts them; a real vendor would not)."""
    return json.loads(data, parse_constant=_refuse_constant)


def in_scope(route_name: str, scope: str) -> bool:
    """``scope`` is ``route_name`` itself or its vendor (``"cardlytics"``)."""
    return route_name == scope or route_name.startswith(scope + ".")


class Headers:
    """Case-insensitive, read-only view of request headers."""

    def __init__(self, items: t.Iterable[tuple[str, str]]) -> None:
        self._items = list(items)
        self._map: dict[str, str] = {}
        for key, value in self._items:
            self._map.setdefault(key.lower(), value)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._map.get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._map

    def __getitem__(self, key: str) -> str:
        return self._map[key.lower()]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def to_dict(self) -> dict[str, str]:
        return dict(self._items)


@dataclasses.dataclass
class Request:
    """One request as a handler sees it.

    ``params`` holds the path parameters captured by the route pattern's named
    groups; ``query`` maps each query parameter to its first value.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes
    params: dict[str, str] = dataclasses.field(default_factory=dict)

    def json(self) -> t.Any:
        """The body as JSON, or :class:`HTTPError` 400 (``malformed JSON``)."""
        try:
            return loads_json(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, {"error": f"malformed JSON: {exc}"}) from None

    def credentials(self, scheme: str) -> str | None:
        """The value of ``Authorization: <scheme> <value>`` (``scheme`` in
        lower case, matched in any case), or None."""
        auth = self.headers.get("Authorization") or ""
        found, _, value = auth.partition(" ")
        if found.lower() != scheme:
            return None
        return value.strip() or None

    @property
    def content_type(self) -> str:
        """The media type without parameters, lowercased (``""`` when absent)."""
        value = self.headers.get("Content-Type") or ""
        return value.split(";", 1)[0].strip().lower()


@dataclasses.dataclass
class Reply:
    """An answer: ``body`` is JSON-encoded unless it is ``bytes`` or ``None``."""

    status: int = 200
    body: t.Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


class HTTPError(Exception):
    """Raised by a handler to answer with an error status and body."""

    def __init__(
        self, status: int, body: t.Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.reply = Reply(status, body, dict(headers or {}))


@dataclasses.dataclass(frozen=True)
class Route:
    """``methods`` a ``pattern`` (a regex matched against the whole path) accepts.

    A path that matches the pattern with another method is answered 405.
    """

    name: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: t.Callable[[Request], Reply]


class VendorAPI:
    """Base of one vendor's emulated API: its routes and its recorded state.

    Subclasses fill ``routes`` in ``__init__`` with :meth:`route`. ``vendor`` is
    the short name used in faults and recorded requests. A subclass that keeps
    accepted items in a list attribute ``events`` has them listed by
    :meth:`EmulatorServer.received`.
    """

    vendor: t.ClassVar[str] = "vendor"

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.lock = threading.RLock()

    def route(
        self,
        name: str,
        methods: str | t.Iterable[str],
        pattern: str,
        handler: t.Callable[[Request], Reply],
    ) -> None:
        if isinstance(methods, str):
            methods = [methods]
        self.routes.append(
            Route(
                name,
                frozenset(m.upper() for m in methods),
                re.compile(pattern),
                handler,
            )
        )

    def reset(self) -> None:
        """Forget recorded events and issued tokens (configuration stays)."""
