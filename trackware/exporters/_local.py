"""Exporters that write locally: the console and JSON-lines files."""

from __future__ import annotations

import os
import pathlib
import sys
import threading
import typing as t

from .._event import Event, dumps
from ._base import BaseExporter, ExportResult

__all__ = ["ConsoleExporter", "JSONLinesExporter"]


class ConsoleExporter(BaseExporter):
    """Prints each event as one JSON line (diagnostics, demos).

    Args:
        stream: where to write (default ``sys.stdout`` at write time).
        events: only these event names (default: all).
    """

    default_name = "console"

    def __init__(
        self,
        stream: t.TextIO | None = None,
        *,
        name: str | None = None,
        events: t.Iterable[str] | None = None,
        max_batch_size: int = 500,
    ) -> None:
        super().__init__(name=name, events=events, max_batch_size=max_batch_size)
        self.stream = stream

    def export(self, events: t.Sequence[Event], /) -> ExportResult:
        stream = self.stream or sys.stdout
        try:
            stream.write("".join(dumps(e.to_dict()) + "\n" for e in events))
            stream.flush()
        except (OSError, ValueError) as exc:
            return ExportResult.failure(events, f"write failed: {exc}")
        return ExportResult.success(events)


class JSONLinesExporter(BaseExporter):
    """Appends each event as one JSON line to a file.

    Args:
        path: the file (created with its folder).
        fsync: ``os.fsync`` after each batch (durable, slower).
        events: only these event names (default: all).
    """

    default_name = "jsonl"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        fsync: bool = False,
        events: t.Iterable[str] | None = None,
        max_batch_size: int = 1000,
    ) -> None:
        super().__init__(name=name, events=events, max_batch_size=max_batch_size)
        self.path = pathlib.Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()

    def export(self, events: t.Sequence[Event], /) -> ExportResult:
        data = "".join(dumps(e.to_dict()) + "\n" for e in events).encode("utf-8")
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, data)
                    if self.fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            return ExportResult.failure(events, f"write failed: {exc.strerror}")
        return ExportResult.success(events)

    def __repr__(self) -> str:
        return f"<JSONLinesExporter name={self.name!r} path={str(self.path)!r}>"
