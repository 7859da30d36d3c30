"""Dead letters: events a destination refused or gave up on, kept with the reason.

:class:`JSONLinesDeadLetter` appends one JSON line per event (destination,
reason, status, scrubbed response, attempts, the event) to a private file it
rotates past a size bound; :class:`MemoryDeadLetter` keeps them in memory.
Records never hold credentials: reason and response pass the secret scrubber.
"""

from __future__ import annotations

import collections
import os
import pathlib
import threading
import time
import typing as t

from . import _log
from ._event import Event, iso_time
from ._json import dumps

__all__ = [
    "DeadLetter",
    "DeadLetterRecord",
    "JSONLinesDeadLetter",
    "DeadLetterStore",
    "MemoryDeadLetter",
    "StoredDeadLetter",
    "default_dead_letter_path",
]

_MAX_BODY = 4096


class DeadLetterRecord(t.NamedTuple):
    destination: str
    reason: str
    event: Event
    status: int | None = None
    response: str | None = None
    attempts: int = 0

    def to_dict(self) -> dict[str, t.Any]:
        body = self.response
        if body is not None:
            body = _log.scrub(body[:_MAX_BODY])
        return {
            "time": iso_time(time.time()),
            "destination": self.destination,
            "reason": _log.scrub(self.reason),
            "status": self.status,
            "response": body,
            "attempts": self.attempts,
            "event": self.event.to_dict(),
        }


@t.runtime_checkable
class DeadLetter(t.Protocol):
    """**Protocol:** somewhere to keep events that could not be delivered."""

    def write(self, records: t.Sequence[DeadLetterRecord], /) -> None: ...


class StoredDeadLetter(t.NamedTuple):
    """One dead letter read back from a :class:`DeadLetterStore`."""

    key: str  # stable id of the record within its store (used by remove)
    time: str  # ISO-8601 UTC time it was dead-lettered
    destination: str
    reason: str
    status: int | None
    response: str | None  # scrubbed vendor answer (truncated)
    attempts: int
    event: dict[str, t.Any]  # Event.to_dict() form; Event.from_dict keeps the id


@t.runtime_checkable
class DeadLetterStore(DeadLetter, t.Protocol):
    """A dead letter that can be read back and pruned (replay, CLI, inspector)."""

    def list(self, destination: str | None = None) -> list[StoredDeadLetter]: ...

    def remove(self, keys: t.Collection[str], /) -> int: ...

    def purge(self, destination: str | None = None) -> int: ...


def default_dead_letter_path() -> pathlib.Path:
    """``$TRACKWARE_DEAD_LETTER_PATH``, else the XDG state folder's
    ``trackware/dead-letter.jsonl``."""
    env = os.environ.get("TRACKWARE_DEAD_LETTER_PATH")
    if env:
        return pathlib.Path(env)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return pathlib.Path(state) / "trackware" / "dead-letter.jsonl"


class JSONLinesDeadLetter:
    """Appends dead letters to a JSON-lines file, rotating it past ``max_bytes``.

    Args:
        path: the file (created with its folder on first write, mode 0600).
        max_bytes: rotate when the file would grow past this size.
        backups: rotated files to keep.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        backups: int = 3,
    ) -> None:
        self.path = (
            pathlib.Path(path) if path is not None else default_dead_letter_path()
        )
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()

    def write(self, records: t.Sequence[DeadLetterRecord], /) -> None:
        if not records:
            return
        data = "".join(dumps(r.to_dict()) + "\n" for r in records).encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(data) > self.max_bytes:
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def after_fork(self) -> None:
        """In a forked child (called by its trackers): a parent thread may
        have been writing when the process forked, holding the lock."""
        self._lock = threading.Lock()

    def _rotate(self) -> None:
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()

    def read(self) -> list[dict[str, t.Any]]:
        """Every record currently in the file (not the rotated backups)."""
        import json

        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return f"JSONLinesDeadLetter({str(self.path)!r})"


class MemoryDeadLetter:
    """Keeps the most recent ``maxlen`` dead letters in memory (tests, demos)."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self.records: collections.deque[DeadLetterRecord] = collections.deque(
            maxlen=maxlen
        )

    def write(self, records: t.Sequence[DeadLetterRecord], /) -> None:
        self.records.extend(records)

    def read(self) -> list[dict[str, t.Any]]:
        return [r.to_dict() for r in list(self.records)]
