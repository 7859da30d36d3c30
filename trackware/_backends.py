"""Which queue each of a tracker's destinations delivers from.

By default every destination gets a :class:`~trackware._queue.MemoryQueue`.
``Tracker(spool=...)`` puts destinations on the durable SQLite spool
(:mod:`trackware._spool`: one :class:`Spool` per folder, shared by the
destinations spooled there), and ``Tracker(queue="redis://...")`` makes the
process only append to Redis Streams (:mod:`trackware._streams`), for
``trackware worker`` processes to deliver; its fallback while Redis is away is
the destination's spool queue when one is configured, else memory. A user's
``queue_factory=`` replaces all of this.
"""

from __future__ import annotations

import os
import pathlib
import typing as t

from . import _log
from ._queue import DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS, EventQueue, MemoryQueue
from .exceptions import ConfigurationError
from .exporters._base import Exporter

if t.TYPE_CHECKING:
    from ._spool import Spool
    from ._streams import RedisStreams

__all__ = ["Backends", "QueueFactory", "DURABILITY_MODES", "REDIS_SCHEMES"]

QueueFactory = t.Callable[[Exporter], EventQueue]
SpoolOption = t.Union[
    str, "os.PathLike[str]", t.Mapping[str, "str | os.PathLike[str] | None"], None
]

DURABILITY_MODES = ("batch", "always")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _folder(value: object, where: str) -> pathlib.Path:
    if isinstance(value, (str, os.PathLike)) and os.fspath(value):
        return pathlib.Path(os.fspath(value)).expanduser().absolute()
    raise ConfigurationError(
        f"{where} must be a folder path (str or os.PathLike), got {value!r}"
    )


class Backends:
    """Builds each destination's queue and owns the spools and the streams.

    Raises :class:`ConfigurationError` for contradictory or malformed options.
    """

    def __init__(
        self,
        *,
        factory: QueueFactory | None,
        max_queue_size: int,
        max_queue_bytes: int,
        policy: str,
        block_timeout: float,
        spool: SpoolOption,
        durability: str,
        spool_commit_interval: float,
        spool_max_bytes: int,
        spool_fsync: bool,
        spool_adopt_interval: float,
        queue: str | None,
        redis_namespace: str,
        redis_maxlen: int,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ConfigurationError(
                f"durability must be one of {DURABILITY_MODES}, not {durability!r}"
            )
        if queue is not None and (
            not isinstance(queue, str) or not queue.startswith(REDIS_SCHEMES)
        ):
            raise ConfigurationError(
                "queue= takes a Redis URL (redis://host:port/db, rediss://... or "
                f"unix:///path.sock), got {queue!r}; for a queue object of your "
                "own pass queue_factory="
            )
        if factory is not None and (spool is not None or queue is not None):
            raise ConfigurationError(
                "queue_factory= replaces the built-in queues: give either it or "
                "spool=/queue=, not both"
            )
        self._factory = factory
        self._memory_args = (max_queue_size, max_queue_bytes, policy, block_timeout)
        self.memory_queue()  # checks the bounds and the policy now
        self._default_folder: pathlib.Path | None = None
        self._folders: dict[str, pathlib.Path | None] = {}
        if isinstance(spool, t.Mapping):
            for name, value in spool.items():
                self._folders[str(name)] = (
                    None if value is None else _folder(value, f"spool[{name!r}]")
                )
        elif spool is not None:
            self._default_folder = _folder(spool, "spool")
        self._spool_args: dict[str, t.Any] = {
            "durability": durability,
            "commit_interval": spool_commit_interval,
            "max_bytes": spool_max_bytes,
            "fsync": spool_fsync,
            "adopt_interval": spool_adopt_interval,
            "policy": policy,
            "block_timeout": block_timeout,
        }
        self.durability = durability
        self.spools: dict[pathlib.Path, Spool] = {}
        self.streams: RedisStreams | None = None
        self._queue_url = queue
        self._redis_args: dict[str, t.Any] = {
            "namespace": redis_namespace,
            "maxlen": redis_maxlen,
        }

    def check_names(self, names: t.Collection[str]) -> None:
        """``spool={name: ...}`` names only destinations that exist."""
        unknown = set(self._folders) - set(names)
        if unknown:
            raise ConfigurationError(
                f"spool names unknown destination(s) {sorted(unknown)}; "
                f"destinations are {sorted(names)}"
            )

    # --- building queues --------------------------------------------------------------
    def memory_queue(self) -> MemoryQueue:
        size, nbytes, policy, block_timeout = self._memory_args
        return MemoryQueue(size, nbytes, policy=policy, block_timeout=block_timeout)

    def folder_for(self, name: str) -> pathlib.Path | None:
        if name in self._folders:
            return self._folders[name]
        return self._default_folder

    def _spool_queue(self, name: str) -> EventQueue | None:
        folder = self.folder_for(name)
        if folder is None:
            return None
        spool = self.spools.get(folder)
        if spool is None:
            from ._spool import Spool

            spool = Spool(folder, memory_fallback=self.memory_queue, **self._spool_args)
            self.spools[folder] = spool
        return spool.queue(name)

    def _fallback(self, name: str) -> EventQueue:
        return self._spool_queue(name) or self.memory_queue()

    def queue_for(self, exporter: Exporter) -> EventQueue:
        if self._factory is not None:
            return self._factory(exporter)
        if self._queue_url is not None:
            if self.streams is None:
                from ._streams import RedisStreams

                # The buffer absorbs what is tracked while the sender waits
                # on Redis: at least the tracker's own queue bounds.
                self.streams = RedisStreams(
                    self._queue_url,
                    fallback=self._fallback,
                    buffer_events=max(DEFAULT_MAX_EVENTS, self._memory_args[0]),
                    buffer_bytes=max(DEFAULT_MAX_BYTES, self._memory_args[1]),
                    **self._redis_args,
                )
            return self.streams.queue(exporter.name)
        return self._spool_queue(exporter.name) or self.memory_queue()

    # --- what the tracker asks -------------------------------------------------------
    @property
    def pages_on_request_thread(self) -> bool:
        """Page events must be built and stored before the response: a spool
        with ``durability="always"`` holds only what reached it."""
        return bool(self.spools) and self.durability == "always"

    def default_dead_letter(self) -> t.Any:
        """The spool's dead-letter store when a spool is configured (the first
        folder's), else ``None`` (the tracker's own default applies)."""
        if not self.spools:
            return None
        from ._spool import SpoolDeadLetter

        return SpoolDeadLetter(next(iter(self.spools)))

    def close(self, deadline: float) -> bool:
        """Forward what Redis has not taken yet (what it cannot take stays in
        the fallback, counted), then close the spools. Never raises; returns
        whether everything reached Redis."""
        ok = True
        if self.streams is not None:
            try:
                ok = bool(self.streams.close(deadline))
            except Exception:
                ok = False
                _log.error(
                    "close:streams",
                    "trackware: closing the Redis streams failed",
                    exc_info=True,
                )
        for folder, spool in self.spools.items():
            try:
                spool.close()
            except Exception:
                _log.error(
                    f"close:spool:{folder}",
                    "trackware: closing the spool in %s failed",
                    folder,
                    exc_info=True,
                )
        return ok
