"""Dead letters: events a destination refused or gave up on, kept with the reason.

:class:`JSONLinesDeadLetter` appends one JSON line per event (destination,
reason, status, scrubbed response, attempts, the event) to a private file it
rotates past a size bound; :class:`MemoryDeadLetter` keeps them in memory.
Records never hold credentials: reason and response pass the secret scrubber.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import threading
import time
import typing as t
import uuid

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

    Each line carries a ``key`` (a random UUID) that :meth:`list` reports and
    :meth:`remove` takes; a line written before keys existed gets one derived
    from its content. Several processes may share the file (the workers of a
    prefork server): every write, rotation and rewrite holds an exclusive
    ``fcntl`` lock on ``<path>.lock``, and :meth:`remove`/:meth:`purge` write
    the kept lines to a new file that replaces the old one (``os.replace``),
    so a record appended concurrently is never lost and a reader never sees
    a half-written file.

    Args:
        path: the file (created with its folder on first write, mode 0600).
        max_bytes: rotate when the file would grow past this size.
        backups: rotated files to keep (``<path>.1`` the newest).
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

    @property
    def lock_path(self) -> pathlib.Path:
        """The file whose ``fcntl`` lock every writer of :attr:`path` takes."""
        return self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _locked(self, *, create: bool) -> t.Iterator[bool]:
        """This process's lock, then the file lock shared with other
        processes. Yields False (unlocked) when the folder does not exist and
        ``create`` is off: there is nothing to read or rewrite."""
        with self._lock:
            if create:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:
                if create:
                    raise
                yield False
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield True
            finally:
                os.close(fd)  # closing releases the lock

    def write(self, records: t.Sequence[DeadLetterRecord], /) -> None:
        if not records:
            return
        data = "".join(
            dumps({"key": uuid.uuid4().hex, **r.to_dict()}) + "\n" for r in records
        ).encode("utf-8")
        with self._locked(create=True):
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
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def files(self) -> list[pathlib.Path]:
        """The files holding records, oldest first: the rotated backups
        (``<path>.N`` ... ``<path>.1``), then :attr:`path`."""
        found = [
            self.path.with_name(f"{self.path.name}.{i}")
            for i in range(self.backups, 0, -1)
        ]
        found.append(self.path)
        return [p for p in found if p.is_file()]

    def list(self, destination: str | None = None) -> list[StoredDeadLetter]:
        """The records of every file (backups first, oldest first), or of
        ``destination`` only. Lines that are not records (cut short by a crash
        mid-write) are skipped."""
        out: list[StoredDeadLetter] = []
        for path in self.files():
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # rotated away meanwhile
                continue
            for line in data.splitlines():
                stored = _parse_line(line)
                if stored is not None and (
                    destination is None or stored.destination == destination
                ):
                    out.append(stored)
        return out

    def remove(self, keys: t.Collection[str], /) -> int:
        """Remove the records with these keys; returns how many were removed."""
        wanted = frozenset(keys)
        if not wanted:
            return 0
        return self._rewrite(lambda line: _line_key(line) in wanted)

    def purge(self, destination: str | None = None) -> int:
        """Remove every record (of ``destination`` only, when given); returns
        how many were removed. Without ``destination``, lines that are not
        records go too (they are not counted)."""
        if destination is None:
            return self._rewrite(lambda line: _line_key(line) is not None or None)

        def mine(line: bytes) -> bool:
            stored = _parse_line(line)
            return stored is not None and stored.destination == destination

        return self._rewrite(mine)

    def _rewrite(self, drop: t.Callable[[bytes], bool | None]) -> int:
        """Rewrite each file without the lines ``drop`` picks: True drops a
        record (counted), None a line that is not one, False keeps it."""
        removed = 0
        with self._locked(create=False) as locked:
            if not locked:
                return 0
            for path in self.files():
                data = path.read_bytes()
                kept: list[bytes] = []
                dropped = 0
                for line in data.splitlines():
                    if not line.strip():
                        continue
                    verdict = drop(line)
                    if verdict is False:
                        kept.append(line + b"\n")
                    elif verdict:
                        dropped += 1
                if len(kept) == sum(1 for x in data.splitlines() if x.strip()):
                    continue  # nothing of this file goes
                removed += dropped
                _replace(path, b"".join(kept))
        return removed

    def __repr__(self) -> str:
        return f"JSONLinesDeadLetter({str(self.path)!r})"


def _replace(path: pathlib.Path, data: bytes) -> None:
    """``path``'s content becomes ``data``, at once (a reader sees the old
    file or the new one, never a mix)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


_KEY_LEAD = b'{"key":"'


def _line_key(line: bytes) -> str | None:
    """The key of a record's line, or None when it is not a record. A line
    this class wrote starts with its key: read without parsing the JSON
    (a pruning pass over a large file would spend most of its time there)."""
    line = line.rstrip(b"\r\n")
    if line.startswith(_KEY_LEAD) and line.endswith(b"}"):
        end = line.find(b'"', len(_KEY_LEAD))
        if end > len(_KEY_LEAD):
            return line[len(_KEY_LEAD) : end].decode("ascii", "replace")
    stored = _parse_line(line)
    return None if stored is None else stored.key


def _parse_line(line: bytes) -> StoredDeadLetter | None:
    """One line of a dead-letter file as a record, or None (not a record)."""
    try:
        data = json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(data, dict):
        return None
    key = data.get("key")
    if not isinstance(key, str) or not key:
        # Written before records had keys: one derived from the line itself.
        key = "h" + hashlib.sha256(line.rstrip(b"\r\n")).hexdigest()[:31]
    return _stored(key, data)


def _stored(key: str, data: t.Mapping[str, t.Any]) -> StoredDeadLetter | None:
    event = data.get("event")
    destination = data.get("destination")
    if not isinstance(event, dict) or not isinstance(destination, str):
        return None
    status = data.get("status")
    response = data.get("response")
    attempts = data.get("attempts")
    return StoredDeadLetter(
        key=key,
        time=str(data.get("time") or ""),
        destination=destination,
        reason=str(data.get("reason") or ""),
        status=status if isinstance(status, int) else None,
        response=response if isinstance(response, str) else None,
        attempts=attempts if isinstance(attempts, int) else 0,
        event=event,
    )


class MemoryDeadLetter:
    """Keeps the most recent ``maxlen`` dead letters in memory (tests, demos).

    :attr:`records` holds them in order; :meth:`list` gives each a key
    (unique within this object) that :meth:`remove` takes.
    """

    def __init__(self, maxlen: int = 10_000) -> None:
        self.records: collections.deque[DeadLetterRecord] = collections.deque(
            maxlen=maxlen
        )
        # (key, time) of each record, in step with ``records``.
        self._meta: collections.deque[tuple[str, str]] = collections.deque(
            maxlen=maxlen
        )
        self._lock = threading.Lock()

    def write(self, records: t.Sequence[DeadLetterRecord], /) -> None:
        now = iso_time(time.time())
        with self._lock:
            self.records.extend(records)
            self._meta.extend((uuid.uuid4().hex, now) for _ in records)

    def read(self) -> list[dict[str, t.Any]]:
        return [r.to_dict() for r in builtins.list(self.records)]

    def list(self, destination: str | None = None) -> list[StoredDeadLetter]:
        with self._lock:
            pairs = builtins.list(zip(self._meta, self.records, strict=True))
        out: list[StoredDeadLetter] = []
        for (key, when), record in pairs:
            if destination is not None and record.destination != destination:
                continue
            data = record.to_dict()
            data["time"] = when
            stored = _stored(key, data)
            if stored is not None:
                out.append(stored)
        return out

    def remove(self, keys: t.Collection[str], /) -> int:
        wanted = frozenset(keys)
        return self._keep(lambda key, record: key not in wanted)

    def purge(self, destination: str | None = None) -> int:
        return self._keep(
            lambda key, record: (
                destination is not None and record.destination != destination
            )
        )

    def _keep(self, keep: t.Callable[[str, DeadLetterRecord], bool]) -> int:
        with self._lock:
            pairs = builtins.list(zip(self._meta, self.records, strict=True))
            kept = [(m, r) for m, r in pairs if keep(m[0], r)]
            self._meta.clear()
            self.records.clear()
            self._meta.extend(m for m, _ in kept)
            self.records.extend(r for _, r in kept)
        return len(pairs) - len(kept)

    def after_fork(self) -> None:
        """In a forked child: a parent thread may have held the lock."""
        self._lock = threading.Lock()
