"""The spool's files: names, creation (0600, locked), the schema, and what an
SQLite error means. docs/architecture/spool.md describes the format.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pathlib
import secrets
import sqlite3
import typing as t

__all__ = [
    "MAX_BUFFER",
    "ROW_OVERHEAD",
    "PREFIX",
    "SCHEMA",
    "SUFFIX",
    "classify",
    "connect",
    "create_own",
    "is_corrupt",
    "lock_existing",
    "make_folder",
    "move_aside",
    "remove_files",
    "spool_files",
]

PREFIX = "spool-"
SUFFIX = ".sqlite3"
#: The SQLite side files (WAL mode).
SIDE_FILES = ("-wal", "-shm")

SCHEMA = """
CREATE TABLE IF NOT EXISTS destinations (
    bit  INTEGER PRIMARY KEY,      -- bit number in events.pending (0..62)
    name TEXT NOT NULL UNIQUE      -- the destination (exporter) name
);
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY,   -- order of acceptance in this file
    pending INTEGER NOT NULL,      -- bit set: destinations that still owe it
    size    INTEGER NOT NULL,      -- the event's approximate size, bytes
    time    REAL NOT NULL,         -- the event's timestamp (Unix seconds)
    body    BLOB NOT NULL          -- trackware._codec.encode(event)
);
"""

_FILE_MODE = 0o600
#: Bytes a row costs beyond the event's own size (row header, index, page slack).
ROW_OVERHEAD = 64
#: Most (row, destination) entries waiting for the writer in batch mode;
#: beyond it the application thread that puts commits them itself.
MAX_BUFFER = 20_000


def make_folder(folder: pathlib.Path) -> None:
    """Create ``folder`` (0700) if it does not exist."""
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)


def spool_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """The spool files in ``folder`` (any process's), oldest name first."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [
        folder / n for n in sorted(names) if n.startswith(PREFIX) and n.endswith(SUFFIX)
    ]


def _touch(path: str) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    try:
        os.fchmod(fd, _FILE_MODE)  # whatever the umask
    finally:
        os.close(fd)


def create_own(folder: pathlib.Path) -> tuple[pathlib.Path, int]:
    """A new spool file for this process, locked (``flock``) before anyone can
    see it under a spool name. Returns its path and the lock's descriptor
    (hold it open as long as the file is in use)."""
    name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
    path = folder / name
    tmp = folder / f".{name}.new"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
    try:
        os.fchmod(fd, _FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # SQLite creates its side files with the database file's mode; made
        # here first all the same, so no umask ever widens them.
        for side in SIDE_FILES:
            _touch(f"{path}{side}")
        os.rename(tmp, path)  # the lock is on the inode: it stays held
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path, fd


def lock_existing(path: pathlib.Path) -> int | None:
    """Lock another process's spool file if its lock is free (the process is
    gone). Returns the lock's descriptor, or None (held, or gone meanwhile)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Another adopter may have finished and removed it between our open
        # and our lock: then ours is an orphaned inode.
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            raise OSError(errno.ENOENT, "replaced")
    except OSError:
        os.close(fd)
        return None
    return fd


def connect(path: pathlib.Path, *, fsync: bool, create: bool) -> sqlite3.Connection:
    """An autocommit connection in WAL mode (``create=False``: never creates
    the file; ``mode=rw``)."""
    uri = f"file:{path}?mode={'rwc' if create else 'rw'}"
    conn = sqlite3.connect(
        uri, uri=True, isolation_level=None, check_same_thread=False, timeout=5.0
    )
    try:
        if create:
            # Only this process ever opens its own file while it lives: no
            # lock calls per transaction, no shared-memory index (about half
            # the cost of a one-row commit). Adopters open dead files only.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        conn.execute("PRAGMA journal_size_limit=4194304")
        if create:
            conn.executescript(SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def remove_files(path: pathlib.Path) -> None:
    """Delete a spool file and its side files (missing ones are fine)."""
    for suffix in ("", *SIDE_FILES):
        with contextlib.suppress(OSError):
            os.unlink(f"{path}{suffix}")


def move_aside(path: pathlib.Path) -> pathlib.Path:
    """Rename a corrupt spool file (and its side files) to ``*.corrupt``."""
    target = pathlib.Path(f"{path}.corrupt")
    for suffix in ("", *SIDE_FILES):
        with contextlib.suppress(OSError):
            os.rename(f"{path}{suffix}", f"{target}{suffix}")
    return target


_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def is_corrupt(exc: BaseException) -> bool:
    """The file is not (or no longer) a readable database."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    if name.startswith(_CORRUPT):
        return True
    text = str(exc)
    return "malformed" in text or "not a database" in text


def classify(exc: BaseException) -> str:
    """A short reason for a spool failure, for stats and the log."""
    if is_corrupt(exc):
        return "corrupt"
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    if name == "SQLITE_FULL" or code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return "disk_full"
    if "disk is full" in text:
        return "disk_full"
    if name == "SQLITE_IOERR_WRITE":
        # The OS refused a write: a file-size limit (EFBIG), a quota, EIO.
        return "write_failed"
    if name.startswith("SQLITE_READONLY") or code in (errno.EROFS, errno.EACCES):
        return "read_only"
    if "readonly" in text or "read-only" in text or "permission denied" in text:
        return "read_only"
    if name == "SQLITE_CANTOPEN" or "unable to open" in text:
        return "cannot_open"
    return "io_error"


def count_rows(conn: sqlite3.Connection, mask: int) -> tuple[int, int, int, int]:
    """``(count, bytes, min seq, max seq)`` of rows pending for ``mask``."""
    row = conn.execute(
        "SELECT count(*), coalesce(sum(size), 0), coalesce(min(seq), 0), "
        "coalesce(max(seq), 0) FROM events WHERE pending & ?",
        (mask,),
    ).fetchone()
    return t.cast("tuple[int, int, int, int]", tuple(row))
