"""Dead letters kept beside a spool: ``deadletter.sqlite3`` in the spool
folder, one file shared by every process using the folder (SQLite serialises
their writes). Implements :class:`trackware._deadletter.DeadLetterStore`.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import pathlib
import sqlite3
import threading
import typing as t
import uuid

from .._deadletter import DeadLetterRecord, StoredDeadLetter
from .._json import dumps
from . import _files

__all__ = ["SpoolDeadLetter"]

FILE_NAME = "deadletter.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    key         TEXT PRIMARY KEY,  -- stable id (remove() takes it)
    time        TEXT NOT NULL,     -- ISO-8601 UTC, when it was dead-lettered
    destination TEXT NOT NULL,
    reason      TEXT NOT NULL,     -- scrubbed of registered secrets
    status      INTEGER,           -- the vendor's HTTP status, if any
    response    TEXT,              -- the vendor's answer, scrubbed, truncated
    attempts    INTEGER NOT NULL,
    event       TEXT NOT NULL      -- Event.to_dict() as JSON (same event id)
);
"""


class SpoolDeadLetter:
    """Dead letters in ``<folder>/deadletter.sqlite3`` (0600; folder 0700).

    Writes never raise into delivery beyond what the dead-letter protocol
    allows (the ledger logs and counts a failed write).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = pathlib.Path(os.fspath(folder)).expanduser().absolute()
        self.path = self.folder / FILE_NAME
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        """With ``_lock`` held."""
        if self._conn is None:
            _files.make_folder(self.folder)
            if not self.path.exists():
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                os.fchmod(fd, 0o600)
                os.close(fd)
                for side in _files.SIDE_FILES:
                    fd = os.open(
                        f"{self.path}{side}",
                        os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                        0o600,
                    )
                    os.fchmod(fd, 0o600)
                    os.close(fd)
            conn = sqlite3.connect(
                str(self.path),
                isolation_level=None,
                check_same_thread=False,
                timeout=10.0,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def write(self, records: t.Sequence[DeadLetterRecord], /) -> None:
        if not records:
            return
        rows = []
        for record in records:
            data = record.to_dict()
            rows.append(
                (
                    uuid.uuid4().hex,
                    data["time"],
                    data["destination"],
                    data["reason"],
                    data["status"],
                    data["response"],
                    data["attempts"],
                    dumps(data["event"]),
                )
            )
        with self._lock:
            conn = self._connect()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
                )

    def list(self, destination: str | None = None) -> list[StoredDeadLetter]:
        if not self.path.exists():
            return []
        sql = (
            "SELECT key, time, destination, reason, status, response, attempts, "
            "event FROM dead_letters"
        )
        args: tuple[str, ...] = ()
        if destination is not None:
            sql += " WHERE destination = ?"
            args = (destination,)
        with self._lock:
            rows = self._connect().execute(sql + " ORDER BY rowid", args).fetchall()
        out = []
        for key, time, dest, reason, status, response, attempts, event in rows:
            try:
                data = json.loads(event)
            except ValueError:
                continue
            if isinstance(data, dict):
                out.append(
                    StoredDeadLetter(
                        key, time, dest, reason, status, response, attempts, data
                    )
                )
        return out

    def remove(self, keys: t.Collection[str], /) -> int:
        keys = list(keys)
        if not keys or not self.path.exists():
            return 0
        with self._lock:
            conn = self._connect()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                removed = 0
                for key in keys:
                    removed += conn.execute(
                        "DELETE FROM dead_letters WHERE key = ?", (key,)
                    ).rowcount
        return removed

    def purge(self, destination: str | None = None) -> int:
        if not self.path.exists():
            return 0
        with self._lock:
            conn = self._connect()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                if destination is None:
                    return conn.execute("DELETE FROM dead_letters").rowcount
                return conn.execute(
                    "DELETE FROM dead_letters WHERE destination = ?", (destination,)
                ).rowcount

    def read(self) -> builtins.list[dict[str, t.Any]]:
        """Every record as a dict (like ``JSONLinesDeadLetter.read``)."""
        return [{**r._asdict(), "event": r.event} for r in self.list()]

    def after_fork(self) -> None:
        """In a forked child: a connection of its own (the parent's is left
        alone, never closed here)."""
        if self._conn is not None:
            from ._spool import _inherited

            _inherited.append(self._conn)
        self._conn = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __repr__(self) -> str:
        return f"SpoolDeadLetter({str(self.folder)!r})"
