"""The durable SQLite spool of one folder, in one process (:class:`Spool`: its
file, its writer thread, adoption of the files of processes that died, the
fall-back to memory when the disk fails) and each destination's queue in it
(:class:`SpoolQueue`). docs/durable.md (guarantees, operation) and
docs/architecture/spool.md (design) describe it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pathlib
import sqlite3
import threading
import time
import typing as t

from .. import _lifecycle, _log
from .._codec import decode, encode
from .._event import SIZE_SLOT, TIME_SLOT, Event
from .._queue import QUEUE_FULL_POLICIES, EventQueue, MemoryQueue, QueuedEvent
from ..exceptions import ConfigurationError
from . import _files
from ._files import MAX_BUFFER, ROW_OVERHEAD

__all__ = ["DURABILITY_MODES", "Spool", "SpoolQueue", "shared_spool"]

DURABILITY_MODES = ("batch", "always")
#: Rows adopted per transaction (the connection is held that long).
ADOPT_CHUNK = 5_000
_MAX_BITS = 62
#: Rows read from the file at a time (they wait in memory, in order).
READ_AHEAD = 2048
#: Most rows one take() reads (shutdown asks for "everything").
MAX_TAKE = 10_000
_UPSERT = (
    "INSERT INTO events (seq, pending, size, time, body) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (seq) DO UPDATE SET pending = pending | excluded.pending"
)
#: Connections inherited across fork: never closed in the child (closing
#: could checkpoint or remove the parent's WAL), never collected.
_inherited: list[object] = []


class Spool:
    """One spool folder's SQLite file in this process, shared by the
    :class:`SpoolQueue` of each destination spooled there (:meth:`queue`).

    Args:
        folder: the spool folder (created 0700). Every process using it has
            its own file there (``spool-<pid>-<random>.sqlite3``, 0600).
        durability: ``"batch"`` (``put`` only appends to memory; a writer
            thread commits at least every ``commit_interval`` seconds) or
            ``"always"`` (``put`` writes the row before it returns).
        commit_interval: batch mode's longest wait between commits, seconds.
        max_bytes: the size limit of this process's file (approximate: the
            events' sizes plus a row overhead); past it ``policy`` applies.
        fsync: ``PRAGMA synchronous=FULL`` (each commit fsynced) instead of
            ``NORMAL`` (written to the OS; safe from a process kill).
        adopt_interval: how often files of dead processes are looked for.
        policy, block_timeout: the full-spool policy, as for ``MemoryQueue``.
        memory_fallback: builds the memory queue a destination falls back to
            when the spool fails (disk full, read-only, corrupt).
        memory_events: most events per destination held in memory (the head
            of its queue; the rest is read from the file when it is due).

    Raises :class:`~trackware.exceptions.ConfigurationError` for bad
    arguments only; file-system trouble is counted and logged, never raised.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        durability: str = "batch",
        commit_interval: float = 0.01,
        max_bytes: int = 256 * 1024 * 1024,
        fsync: bool = False,
        adopt_interval: float = 30.0,
        policy: str = "drop_oldest",
        block_timeout: float = 0.1,
        memory_fallback: t.Callable[[], EventQueue] | None = None,
        memory_events: int = 10_000,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ConfigurationError(
                f"durability must be one of {DURABILITY_MODES}, not {durability!r}"
            )
        if policy not in QUEUE_FULL_POLICIES:
            raise ConfigurationError(
                f"queue_full_policy must be one of {QUEUE_FULL_POLICIES}, "
                f"not {policy!r}"
            )
        for label, number in (
            ("spool_commit_interval", commit_interval),
            ("spool_adopt_interval", adopt_interval),
        ):
            if not isinstance(number, (int, float)) or not number > 0:
                raise ConfigurationError(
                    f"{label} must be a number of seconds > 0, got {number!r}"
                )
        if not isinstance(max_bytes, int) or max_bytes < 64 * 1024:
            raise ConfigurationError(
                f"spool_max_bytes must be an int >= 65536 (64 KiB), got {max_bytes!r}"
            )
        if not isinstance(memory_events, int) or memory_events < 1:
            raise ConfigurationError("memory_events must be an int >= 1")
        if memory_fallback is not None and not callable(memory_fallback):
            raise ConfigurationError(
                "memory_fallback must be a callable returning an EventQueue"
            )
        self.folder = pathlib.Path(os.fspath(folder)).expanduser().absolute()
        self.durability = durability
        self.always = durability == "always"
        self.commit_interval = float(commit_interval)
        self.max_bytes = max_bytes
        self.fsync = bool(fsync)
        self.adopt_interval = float(adopt_interval)
        self.policy = policy
        self.block_timeout = block_timeout
        self.memory_events = memory_events
        self._memory_fallback = memory_fallback or MemoryQueue
        self._queues: dict[str, SpoolQueue] = {}
        self._forks = _lifecycle.forks
        self._init_state()
        self._open()

    # --- state ---------------------------------------------------------------------
    def _init_state(self) -> None:
        #: In-memory state of the spool and all its queues (never held across
        #: SQLite calls; taken inside ``db_lock`` when both are needed).
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)
        #: The connection (and the order of writes to it).
        self.db_lock = threading.Lock()
        self._wake = threading.Event()
        self.puts: list[tuple[int, int, Event]] = []
        self.acks: list[tuple[int, int]] = []
        self.buffer_bytes = 0
        self._memo: dict[int, tuple[Event, int]] = {}
        self.seq = 0
        #: Estimated bytes in the file (measured at each commit, plus what
        #: was put since).
        self.est = 0
        self.file_bytes = 0
        self.conn: sqlite3.Connection | None = None
        self.path: pathlib.Path | None = None
        self._fd = -1
        self.state = "starting"
        self.failure: str | None = None
        self.corrupt_files = 0
        self.adopted_files = 0
        #: Commits an application thread made because the buffer was full.
        self.caller_commits = 0
        self._bits: dict[str, int] = {}
        self.by_bit: dict[int, SpoolQueue] = {}
        self._thread: threading.Thread | None = None
        self._closing = False
        self._next_adopt = 0.0

    def _open(self) -> None:
        try:
            _files.make_folder(self.folder)
            self.path, self._fd = _files.create_own(self.folder)
            self.conn = _files.connect(self.path, fsync=self.fsync, create=True)
        except (OSError, sqlite3.Error) as exc:
            self._fail(exc, [], during="opening")
            return
        self.state = "ok"
        self._measure()
        self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._run, name=f"trackware-spool-{self.folder.name}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # interpreter shutdown
            return
        self._thread = thread

    # --- queues --------------------------------------------------------------------
    def queue(self, destination: str) -> SpoolQueue:
        """The queue of ``destination`` in this spool (one per name)."""
        existing = self._queues.get(destination)
        if existing is not None:
            return existing
        queue = SpoolQueue.__new__(SpoolQueue)
        self.register(queue, destination)
        return queue

    def register(self, queue: SpoolQueue, destination: str) -> None:
        if destination in self._queues:
            raise ConfigurationError(
                f"the spool in {self.folder} already has a queue for {destination!r}"
            )
        with self.db_lock:
            bit = self._bit_for(destination)
            found = (0, 0, 0, 0)
            if self.conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    found = _files.count_rows(self.conn, 1 << bit)
            with self.lock:
                queue.setup(self, destination, bit)
                self._queues[destination] = queue
                self.by_bit[bit] = queue
                if found[0]:
                    queue.attach(found[2], found[3], found[0], found[1])
            if self.state != "ok":
                queue.fall_back([], self.failure or self.state)

    def _bit_for(self, name: str) -> int:
        """Called with ``db_lock`` held."""
        bit = self._bits.get(name)
        if bit is not None:
            return bit
        bit = len(self._bits)
        if bit > _MAX_BITS:
            raise ConfigurationError(
                f"a spool folder holds at most {_MAX_BITS + 1} destinations; "
                f"give {name!r} a folder of its own (spool={{name: folder}})"
            )
        if self.conn is not None:
            try:
                self.conn.execute(
                    "INSERT OR IGNORE INTO destinations (bit, name) VALUES (?, ?)",
                    (bit, name),
                )
            except sqlite3.Error as exc:
                self._fail(exc, [], during="registering a destination")
        self._bits[name] = bit
        return bit

    def rowid(self, event: Event, after: int) -> tuple[int, int]:
        """With ``lock`` held: the row ``event`` goes to (the one another
        destination just put it in, if that keeps this queue's rows in
        order), and the bytes a new row adds (0 for a shared one)."""
        if len(self.by_bit) < 2:  # one destination: no row to share
            self.seq += 1
            return self.seq, event[SIZE_SLOT] + ROW_OVERHEAD
        memo = self._memo
        hit = memo.get(id(event))
        if hit is not None and hit[0] is event and hit[1] > after:
            return hit[1], 0
        self.seq += 1
        if len(memo) >= 4096:
            memo.clear()
        memo[id(event)] = (event, self.seq)
        return self.seq, event[SIZE_SLOT] + ROW_OVERHEAD

    def wake(self) -> None:
        self._wake.set()

    # --- writing ---------------------------------------------------------------------
    def write_now(
        self, rowid: int, mask: int, event: Event, body: bytes | None
    ) -> None:
        """``always`` mode, with ``db_lock`` held: the row is in the file (or
        the spool has fallen back) when this returns. ``body`` is
        ``encode(event)`` (None: the codec refused it)."""
        conn = self.conn
        if conn is None:
            return
        if body is None:
            self._unspoolable([(rowid, mask, event)])
            return
        try:
            conn.execute(
                _UPSERT, (rowid, mask, event[SIZE_SLOT], event[TIME_SLOT], body)
            )
        except sqlite3.Error as exc:
            self._fail(exc, [(rowid, mask, event)], during="writing")

    def commit_locked(self) -> None:
        """With ``db_lock`` held: write what was put and settled since the
        last commit, in one transaction."""
        with self.lock:
            puts, acks = self.puts, self.acks
            if not puts and not acks:
                return
            self.puts, self.acks = [], []
            self.buffer_bytes = 0
        conn = self.conn
        if conn is None:
            return
        rows: dict[int, list[t.Any]] = {}
        for rowid, mask, event in puts:
            row = rows.get(rowid)
            if row is None:
                rows[rowid] = [mask, event]
            else:
                row[0] |= mask
        settled: dict[int, int] = {}
        for rowid, mask in acks:
            row = rows.get(rowid)
            if row is not None and row[0] & mask:
                # Put and settled within one interval: never written.
                row[0] &= ~mask
                if not row[0]:
                    del rows[rowid]
                continue
            settled[rowid] = settled.get(rowid, 0) | mask
        values = []
        bad: list[tuple[int, int, Event]] = []
        for rowid, (mask, event) in rows.items():
            try:
                body = encode(event)
            except (TypeError, ValueError):
                bad.append((rowid, mask, event))
                continue
            values.append((rowid, mask, event[SIZE_SLOT], event[TIME_SLOT], body))
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if values:
                    conn.executemany(_UPSERT, values)
                if settled:
                    # Rows no other destination waits for are deleted, the
                    # others updated: each row is written once (an UPDATE
                    # then a DELETE wrote every row twice).
                    ranges = _ranges(settled)
                    conn.executemany(
                        "DELETE FROM events WHERE seq BETWEEN ? AND ? "
                        "AND pending & ~? = 0",
                        [(lo, hi, mask) for mask, lo, hi in ranges],
                    )
                    if len(self._bits) > 1:
                        conn.executemany(
                            "UPDATE events SET pending = pending & ~? "
                            "WHERE seq BETWEEN ? AND ? AND pending & ?",
                            [(mask, lo, hi, mask) for mask, lo, hi in ranges],
                        )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            unwritten = [(r, m, e) for r, (m, e) in rows.items()]
            self._fail(exc, unwritten, during="committing")
            return
        if bad:
            self._unspoolable(bad)
        self._measure()

    def commit_for_writer(self) -> None:
        """An application thread commits the buffer (it is full)."""
        with self.db_lock:
            if len(self.puts) >= MAX_BUFFER:
                self.caller_commits += 1
                self.commit_locked()

    def _measure(self) -> None:
        """With ``db_lock`` held (or before the thread starts)."""
        conn, path = self.conn, self.path
        if conn is None or path is None:
            return
        try:
            pages, free, size = (
                conn.execute("PRAGMA page_count").fetchone()[0],
                conn.execute("PRAGMA freelist_count").fetchone()[0],
                conn.execute("PRAGMA page_size").fetchone()[0],
            )
        except sqlite3.Error:
            return
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{path}{suffix}").st_size
        with self.lock:
            self.est = (pages - free) * size + self.buffer_bytes
            self.file_bytes = total
            self.room.notify_all()

    def _unspoolable(self, items: list[tuple[int, int, Event]]) -> None:
        """Events the codec cannot write: they stay in memory (counted)."""
        _log.warn(
            f"spool-encode:{self.folder}",
            "trackware: %d event(s) cannot be written to the spool (a value JSON "
            "cannot carry); they are kept in memory",
            len(items),
        )
        with self.lock:
            for rowid, mask, event in items:
                for bit, queue in self.by_bit.items():
                    if mask & (1 << bit):
                        queue.keep_in_memory(rowid, event)

    # --- the writer thread -----------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                if time.monotonic() >= self._next_adopt:
                    self.adopt()
                    self._next_adopt = time.monotonic() + self.adopt_interval
                self._wake.wait(self.commit_interval)
                self._wake.clear()
                with self.db_lock:
                    self.commit_locked()
                if self._closing or self.conn is None:
                    return
            except Exception:  # pragma: no cover - defensive: never die
                _log.error(
                    f"spool-writer:{self.folder}",
                    "trackware: the spool writer hit an internal error",
                    exc_info=True,
                )
                time.sleep(0.1)

    # --- adoption --------------------------------------------------------------------
    def adopt(self) -> int:
        """Take over the files in the folder whose process is gone. Returns
        how many events were adopted."""
        total = 0
        for path in _files.spool_files(self.folder):
            if path == self.path or self.conn is None:
                continue
            fd = _files.lock_existing(path)
            if fd is None:
                continue
            try:
                total += self._adopt_file(path)
            finally:
                os.close(fd)
        return total

    def _adopt_file(self, path: pathlib.Path) -> int:
        try:
            if os.path.getsize(path) == 0:
                # Created and never written (killed while starting).
                _files.remove_files(path)
                return 0
            dead = _files.connect(path, fsync=False, create=False)
        except (OSError, sqlite3.Error) as exc:
            return self._bad_file(path, exc)
        adopted = 0
        try:
            try:
                names = dict(dead.execute("SELECT bit, name FROM destinations"))
            except sqlite3.Error as exc:
                return self._bad_file(path, exc)
            last = 0
            while True:
                try:
                    rows = dead.execute(
                        "SELECT seq, pending, size, time, body FROM events "
                        "WHERE seq > ? AND pending != 0 ORDER BY seq LIMIT ?",
                        (last, ADOPT_CHUNK),
                    ).fetchall()
                except sqlite3.Error as exc:
                    self._bad_file(path, exc)
                    return adopted
                if not rows:
                    break
                last = rows[-1][0]
                if not self._adopt_rows(names, rows):
                    return adopted  # our own file failed; try again later
                adopted += len(rows)
        finally:
            with contextlib.suppress(sqlite3.Error):
                dead.close()
        _files.remove_files(path)
        self.adopted_files += 1
        if adopted:
            _log.logger.info(
                "trackware: adopted %d event(s) from %s (its process is gone)",
                adopted,
                path,
            )
        return adopted

    def _adopt_rows(self, names: dict[int, str], rows: list[t.Any]) -> bool:
        with self.db_lock:
            conn = self.conn
            if conn is None:
                return False
            try:
                remap = {b: 1 << self._bit_for(n) for b, n in names.items()}
            except ConfigurationError:
                remap = {}
            with self.lock:
                lo = self.seq + 1
                self.seq += len(rows)
            values = []
            # Only this file's destinations' bits are looked at (a loop over
            # all 63 bits per row was a third of adopting's cost).
            mine_bits = sorted({m.bit_length() - 1 for m in remap.values()})
            accs = {bit: [0, 0, 0, 0] for bit in mine_bits}
            for i, (_, pending, size, when, body) in enumerate(rows):
                mask = 0
                for bit, mine in remap.items():
                    if pending & (1 << bit):
                        mask |= mine
                if not mask:
                    continue
                seq = lo + i
                values.append((seq, mask, size, when, body))
                for bit in mine_bits:
                    if mask >> bit & 1:
                        acc = accs[bit]
                        if not acc[0]:
                            acc[2] = seq
                        acc[0] += 1
                        acc[1] += size
                        acc[3] = seq
            per_bit = {bit: acc for bit, acc in accs.items() if acc[0]}
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "INSERT INTO events (seq, pending, size, time, body) "
                        "VALUES (?, ?, ?, ?, ?)",
                        values,
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._fail(exc, [], during="adopting")
                return False
            woken = []
            with self.lock:
                for bit, (n, nbytes, first, final) in per_bit.items():
                    queue = self.by_bit.get(bit)
                    if queue is not None:
                        queue.attach(first, final, n, nbytes, recovered=True)
                        woken.append(queue)
            self._measure()
        for queue in woken:
            queue.wake_worker()
        return True

    def _bad_file(self, path: pathlib.Path, exc: BaseException) -> int:
        if _files.is_corrupt(exc):
            target = _files.move_aside(path)
            self.corrupt_files += 1
            _log.warn(
                f"spool-corrupt:{path}",
                "trackware: %s is not a readable spool file (%s); moved aside to %s",
                path,
                exc,
                target,
            )
        else:
            _log.warn(
                f"spool-adopt:{path}",
                "trackware: could not adopt spool file %s (%s); will try again",
                path,
                exc,
            )
        return 0

    # --- failure -------------------------------------------------------------------
    def _fail(
        self,
        exc: BaseException,
        unwritten: list[tuple[int, int, Event]],
        *,
        during: str,
    ) -> None:
        """The own file failed (``db_lock`` held, or not yet shared): every
        destination falls back to memory with what was not in the file."""
        reason = _files.classify(exc)
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        moved = None
        if reason == "corrupt" and self.path is not None:
            moved = _files.move_aside(self.path)
        if self._fd >= 0:
            # Unlocked: a sibling (or the next start) adopts what is in it.
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        self.state = "memory"
        self.failure = reason
        _log.warn(
            f"spool-failed:{self.folder}",
            "trackware: the spool in %s failed while %s (%s: %s); its destinations "
            "continue in memory%s",
            self.folder,
            during,
            reason,
            exc,
            f"; the file was moved aside to {moved}" if moved else "",
        )
        with self.lock:
            puts, self.puts = self.puts, []
            self.acks = []
            queues = list(self._queues.values())
        unwritten = unwritten + puts
        for queue in queues:
            queue.fall_back(unwritten, reason)
        self._wake.set()

    def decode_rows(
        self, rows: list[t.Any]
    ) -> tuple[list[tuple[int, Event]], list[int]]:
        """Rows read back: ``(seq, event)`` pairs, and the seqs that did not
        decode."""
        out = []
        bad = []
        for seq, body in rows:
            try:
                if type(body) is not bytes:
                    raise ValueError("not a blob")
                out.append((seq, decode(body)))
            except ValueError:  # garbage
                bad.append(seq)
        return out, bad

    # --- fork and close --------------------------------------------------------------
    def after_fork(self) -> None:
        """In a forked child (once per fork, from any of its queues): a file,
        a thread and locks of its own; the parent keeps its file and events."""
        if self._forks == _lifecycle.forks:
            return
        self._forks = _lifecycle.forks
        if self.conn is not None:
            _inherited.append(self.conn)
        if self._fd >= 0:
            # Closing the child's copy leaves the parent's lock held.
            with contextlib.suppress(OSError):
                os.close(self._fd)
        queues = list(self._queues.items())
        self._init_state()
        self._open()
        with self.db_lock:
            for name, queue in queues:
                bit = self._bit_for(name)
                queue.setup(self, name, bit)
                self._queues[name] = queue
                self.by_bit[bit] = queue
                if self.state != "ok":
                    queue.fall_back([], self.failure or self.state)

    def close(self) -> None:
        """Commit what is buffered, stop the writer, release the file (removed
        when empty, else left for the next process to adopt). Never raises."""
        try:
            self._closing = True
            self._wake.set()
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(10.0)
            with self.db_lock:
                self.commit_locked()
                conn, self.conn = self.conn, None
                if conn is None:
                    return
                try:
                    left = conn.execute(
                        "SELECT count(*) FROM events WHERE pending != 0"
                    ).fetchone()[0]
                    conn.close()
                except sqlite3.Error:
                    left = 1
                if not left and self.path is not None:
                    _files.remove_files(self.path)
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
                self.state = "closed"
                for queue in self._queues.values():
                    queue.fall_back([], "closed")
        except Exception:
            _log.error(
                f"spool-close:{self.folder}",
                "trackware: closing the spool in %s failed",
                self.folder,
                exc_info=True,
            )

    def __repr__(self) -> str:
        return (
            f"<Spool {str(self.folder)!r} {self.durability} state={self.state} "
            f"file={self.path.name if self.path else None}>"
        )


class SpoolQueue:
    """A destination's queue in a durable SQLite spool (see docs/durable.md).

    ``Tracker(spool=folder)`` builds these (one :class:`Spool` per folder).
    For ``Tracker(queue_factory=...)``, ``SpoolQueue(folder, destination,
    **options)`` uses the process's shared spool of ``folder`` (the options
    are :class:`Spool`'s; the first queue's apply)::

        Tracker(exporters, queue_factory=lambda e: SpoolQueue(folder, e.name))
    """

    #: Queued events survive the process (shutdown need not dead-letter them).
    durable: t.ClassVar[bool] = True

    def __init__(
        self, folder: str | os.PathLike[str], destination: str, **options: t.Any
    ) -> None:
        shared_spool(folder, **options).register(self, destination)

    # --- set-up (the spool calls these with its locks held) ----------------------
    def setup(self, spool: Spool, name: str, bit: int) -> None:
        self.spool = spool
        self.name = name
        self.mask = 1 << bit
        self.policy = spool.policy
        self._forks = _lifecycle.forks
        self._cap = spool.memory_events
        self.enqueued = 0
        self._dropped = 0
        self.spooled = 0
        self.recovered = 0
        self.unreadable = 0
        self.fallback_events = 0
        self.fallback_reason: str | None = None
        self.left = 0
        self._last = 0
        self._depth = 0
        self._bytes = 0
        #: The head of the queue: (seq, event), oldest first.
        self._head: collections.deque[tuple[int, Event]] = collections.deque()
        #: Events from this seq on are only in the file (or the writer's
        #: buffer); None: all untaken events are in ``_head``.
        self._cursor: int | None = None
        self._inflight: set[int] = set()
        #: Events the codec could not write, kept in memory (rare).
        self._side: list[tuple[int, Event]] = []
        self._fb: EventQueue | None = None
        self._fb_base = 0
        if not hasattr(self, "_waker"):
            self._waker: t.Callable[[], None] | None = None

    def attach(
        self, first: int, last: int, count: int, nbytes: int, *, recovered: bool = False
    ) -> None:
        """Rows ``first..last`` (``count`` of them) of this destination are in
        the file and not in memory. With the spool's ``lock`` held."""
        head = self._head
        while head and head[-1][0] >= first:
            head.pop()  # in the file too: read back in order from there
        if self._cursor is None or first < self._cursor:
            self._cursor = first
        self._last = max(self._last, last)
        self._depth += count
        self._bytes += nbytes
        if recovered:
            self.recovered += count
        self.spool.wake()

    def set_waker(self, waker: t.Callable[[], None] | None) -> None:
        """``waker()`` starts or wakes the destination's worker: called when
        events of a dead process are adopted into this queue (the worker may
        not be running: nothing was tracked yet in this process)."""
        self._waker = waker

    def wake_worker(self) -> None:
        """Called with no lock held."""
        waker = self._waker
        if waker is not None:
            try:
                waker()
            except Exception:
                _log.error(
                    f"spool-wake:{self.name}",
                    "trackware: waking the worker of %s failed",
                    self.name,
                    exc_info=True,
                )

    def keep_in_memory(self, seq: int, event: Event) -> None:
        """A row the writer could not encode (spool ``lock`` held)."""
        if any(s == seq for s, _ in self._head) or seq in self._inflight:
            return
        self._side.append((seq, event))

    def fall_back(self, unwritten: list[tuple[int, int, Event]], reason: str) -> None:
        """The spool failed (or closed): from now on this destination queues
        in memory. Events not known to be in the file move there too."""
        spool = self.spool
        fb = spool._memory_fallback()
        move: list[Event] = []
        with spool.lock:
            if self._fb is not None:
                return
            if reason != "closed":
                held = {s for s, _ in self._head}
                mine = sorted(
                    (r, e)
                    for r, m, e in unwritten
                    if m & self.mask and r not in held and r not in self._inflight
                )
                move = [e for _, e in self._head] + [e for _, e in self._side]
                move += [e for _, e in mine]
                self.left = max(0, self._depth - len(move))
                self.fallback_events += len(move)
                self.fallback_reason = reason
            else:
                self.left = max(0, self._depth - len(self._head) - len(self._side))
            self._head.clear()
            self._side.clear()
            self._cursor = None
            self._depth = 0
            self._bytes = 0
            self._fb_base = self._last
            self._fb = fb
        if move:
            put_many = getattr(fb, "put_many", None)
            if put_many is not None:
                put_many(move)
            else:
                for event in move:
                    fb.put(event)

    # --- EventQueue --------------------------------------------------------------
    @property
    def dropped_full(self) -> int:
        fb = self._fb
        return self._dropped + (fb.dropped_full if fb is not None else 0)

    @dropped_full.setter
    def dropped_full(self, value: int) -> None:
        # A settable attribute in the EventQueue protocol.
        fb = self._fb
        self._dropped = value - (fb.dropped_full if fb is not None else 0)

    def put(self, event: Event, /) -> list[Event] | None:
        fb = self._fb
        if fb is not None:
            self.enqueued += 1
            self.fallback_events += 1
            return fb.put(event)
        spool = self.spool
        if spool.always:
            return self._put_always(event)
        if len(spool.puts) >= MAX_BUFFER:
            # The writer is far behind (a burst, a starved thread): this
            # thread commits the buffer itself. Memory stays bounded, nothing
            # is dropped for it.
            spool.commit_for_writer()
        with spool.lock:
            if self._fb is None:
                self.enqueued += 1
                rowid, cost = spool.rowid(event, self._last)
                dropped = None
                if spool.est + cost > spool.max_bytes:
                    dropped = self._make_room(event, cost)
                    if dropped and dropped[-1] is event:
                        return dropped
                spool.puts.append((rowid, self.mask, event))
                spool.est += cost
                spool.buffer_bytes += cost
                self._accept(rowid, event)
                return dropped
        return self.put(event)

    def _put_always(self, event: Event) -> list[Event] | None:
        spool = self.spool
        try:
            body: bytes | None = encode(event)  # before the locks: ~half the cost
        except (TypeError, ValueError):
            body = None  # kept in memory (spool.write_now counts it)
        if self.policy == "block":
            # Wait for room here, not below: settling (which makes room)
            # needs the connection this thread is about to hold.
            need = event[SIZE_SLOT] + ROW_OVERHEAD
            with spool.lock:
                spool.room.wait_for(
                    lambda: spool.est + need <= spool.max_bytes,
                    timeout=spool.block_timeout,
                )
        with spool.db_lock:
            if spool.conn is not None:
                with spool.lock:
                    self.enqueued += 1
                    rowid, cost = spool.rowid(event, self._last)
                    dropped = None
                    if spool.est + cost > spool.max_bytes:
                        dropped = self._make_room(event, cost, wait=False)
                        if dropped and dropped[-1] is event:
                            return dropped
                    spool.est += cost
                    self._accept(rowid, event)
                spool.write_now(rowid, self.mask, event, body)
                return dropped
        return self.put(event)  # the spool fell back meanwhile

    def put_many(self, events: list[Event], /) -> list[Event] | None:
        """:meth:`put` for each of ``events``, in order."""
        dropped: list[Event] = []
        for event in events:
            lost = self.put(event)
            if lost:
                dropped.extend(lost)
        return dropped or None

    def _accept(self, rowid: int, event: Event) -> None:
        """Spool ``lock`` held: ``event`` is this queue's row ``rowid``."""
        self._last = rowid
        self._depth += 1
        self._bytes += event[SIZE_SLOT]
        self.spooled += 1
        if self._cursor is None:
            if len(self._head) < self._cap:
                self._head.append((rowid, event))
            else:
                self._cursor = rowid

    def _make_room(self, event: Event, cost: int, *, wait: bool = True) -> list[Event]:
        """Spool ``lock`` held, the spool full. Returns what was dropped."""
        spool = self.spool
        if cost > spool.max_bytes:
            self._dropped += 1
            return [event]
        if self.policy == "drop_oldest":
            dropped: list[Event] = []
            head = self._head
            while head and spool.est + cost > spool.max_bytes:
                seq, old = head.popleft()
                spool.acks.append((seq, self.mask))
                spool.est -= old[SIZE_SLOT] + ROW_OVERHEAD
                self._depth -= 1
                self._bytes -= old[SIZE_SLOT]
                dropped.append(old)
            if spool.est + cost <= spool.max_bytes:
                self._dropped += len(dropped)
                return dropped
            self._dropped += len(dropped) + 1
            return [*dropped, event]
        if self.policy == "block" and wait:
            spool.wake()
            if spool.room.wait_for(
                lambda: spool.est + cost <= spool.max_bytes, timeout=spool.block_timeout
            ):
                return []
        self._dropped += 1
        return [event]

    def take(self, max_events: int, max_bytes: int, /) -> list[QueuedEvent]:
        fb = self._fb
        if fb is not None:
            base = self._fb_base
            return [(base + s, e) for s, e in fb.take(max_events, max_bytes)]
        spool = self.spool
        with spool.lock:
            if self._side:
                items = self._side[:max_events]
                del self._side[: len(items)]
                return self._hand_out(items)
            if self._head or self._cursor is None:
                return self._hand_out(self._pop(max_events, max_bytes))
        with spool.db_lock:
            conn = spool.conn
            if conn is not None:
                # What the writer has not written yet comes first, so the
                # read sees every row up to now, in order.
                spool.commit_locked()
                conn = spool.conn
            if conn is None or self._fb is not None:
                rows = None
            else:
                cursor = self._cursor or 0
                try:
                    rows = conn.execute(
                        "SELECT seq, body FROM events WHERE seq >= ? AND pending & ? "
                        "ORDER BY seq LIMIT ?",
                        (cursor, self.mask, max(min(max_events, MAX_TAKE), READ_AHEAD)),
                    ).fetchall()
                except Exception as exc:  # sqlite3.Error
                    spool._fail(exc, [], during="reading")
                    rows = None
            if rows is not None:
                events, bad = spool.decode_rows(rows)
                with spool.lock:
                    self._head.extend(events)
                    for seq in bad:
                        spool.acks.append((seq, self.mask))
                    self.unreadable += len(bad)
                    self._depth -= len(bad)
                    if rows:
                        self._cursor = rows[-1][0] + 1
                    if not rows or t.cast(int, self._cursor) > self._last:
                        self._cursor = None
                    return self._hand_out(self._pop(max_events, max_bytes))
        return self.take(max_events, max_bytes)

    def _pop(self, max_events: int, max_bytes: int) -> list[tuple[int, Event]]:
        head = self._head
        out: list[tuple[int, Event]] = []
        total = 0
        while head and len(out) < max_events:
            size: int = head[0][1][SIZE_SLOT]
            if out and total + size > max_bytes:
                break
            out.append(head.popleft())
            total += size
        return out

    def _hand_out(self, items: list[tuple[int, Event]]) -> list[QueuedEvent]:
        """Spool ``lock`` held."""
        if items:
            self._inflight.update(s for s, _ in items)
            self._depth -= len(items)
            self._bytes -= sum(e[SIZE_SLOT] for _, e in items)
        return items

    def done(self, items: t.Sequence[QueuedEvent], /) -> None:
        if not items:
            return
        spool = self.spool
        base = self._fb_base if self._fb is not None else None
        later: list[QueuedEvent] = []
        with spool.lock:
            acks = spool.acks
            mask = self.mask
            for item in items:
                seq = item[0]
                if base is not None and seq > base:
                    later.append((seq - base, item[1]))
                    continue
                self._inflight.discard(seq)
                acks.append((seq, mask))
        if later and self._fb is not None:
            self._fb.done(later)
        elif spool.always:
            # Settled means settled in the file too, before the worker moves
            # on: a kill now re-sends nothing that was delivered.
            with spool.db_lock:
                spool.commit_locked()

    def depth(self) -> int:
        fb = self._fb
        return self._depth + (fb.depth() if fb is not None else 0)

    def oldest_time(self) -> float | None:
        fb = self._fb
        if fb is not None:
            return fb.oldest_time()
        try:
            return t.cast(float, self._head[0][1][TIME_SLOT])
        except IndexError:
            # Only in the file: old enough to take now.
            return 0.0 if self._depth else None

    def nbytes(self) -> int:
        fb = self._fb
        return self._bytes + (fb.nbytes() if fb is not None else 0)

    def in_flight(self) -> int:
        fb = self._fb
        return len(self._inflight) + (fb.in_flight() if fb is not None else 0)

    def last_seq(self) -> int:
        fb = self._fb
        if fb is not None:
            return self._fb_base + fb.last_seq()
        return self._last

    def pending_floor(self) -> int:
        with self.spool.lock:
            fb = self._fb
            if fb is not None:
                floor = self._fb_base + fb.pending_floor()
            elif self._side:
                floor = self._side[0][0]
            elif self._head:
                floor = self._head[0][0]
            elif self._cursor is not None:
                floor = self._cursor
            else:
                floor = self._last + 1
            if self._inflight:
                floor = min(floor, min(self._inflight))
            return floor

    def extra_stats(self) -> dict[str, int | str | None]:
        """The spool's figures for ``stats()['destinations'][name]``."""
        spool = self.spool
        return {
            "spooled": self.spooled,
            "recovered": self.recovered,
            "spool_bytes": spool.file_bytes,
            "spool_state": "memory" if self._fb is not None else spool.state,
            "spool_fallback": self.fallback_events,
            "spool_fallback_reason": self.fallback_reason,
            "spool_left": self.left,
            "spool_unreadable": self.unreadable,
            "spool_corrupt_files": spool.corrupt_files,
            "spool_caller_commits": spool.caller_commits,
            "spool_file": str(spool.path) if spool.path else None,
        }

    def reset_after_fork(self) -> None:
        """In a forked child: the parent keeps (and delivers) what it queued;
        the child gets a file, a thread and locks of its own."""
        if self._forks == _lifecycle.forks:
            return
        self.spool.after_fork()  # sets up every queue of the spool anew

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return (
            f"<SpoolQueue {self.name!r} depth={self.depth()} "
            f"in_flight={self.in_flight()} state={self.extra_stats()['spool_state']}>"
        )


def _ranges(settled: dict[int, int]) -> list[tuple[int, int, int]]:
    """``(mask, first, last)`` runs of consecutive seqs settled for the same
    destinations: a batch usually settles one run (one statement, not one per
    row)."""
    out: list[tuple[int, int, int]] = []
    for seq in sorted(settled):
        mask = settled[seq]
        if out and out[-1][0] == mask and out[-1][2] == seq - 1:
            out[-1] = (mask, out[-1][1], seq)
        else:
            out.append((mask, seq, seq))
    return out


_shared: dict[pathlib.Path, Spool] = {}
_shared_lock = threading.Lock()


def shared_spool(folder: str | os.PathLike[str], **options: t.Any) -> Spool:
    """The process's one :class:`Spool` for ``folder`` (``SpoolQueue(folder,
    name)`` users); the first call's options apply. Closed at exit."""
    key = pathlib.Path(os.fspath(folder)).expanduser().absolute()
    with _shared_lock:
        spool = _shared.get(key)
        if spool is None or spool.state == "closed":
            spool = Spool(key, **options)
            _shared[key] = spool
            _lifecycle.at_exit(spool.close, lambda: 2.0)
        return spool
