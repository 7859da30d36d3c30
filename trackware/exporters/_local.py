"""Exporters that write locally: the console and JSON-lines files."""

from __future__ import annotations

import os
import pathlib
import sys
import threading
import typing as t

from .._event import Event
from ..exceptions import ContractViolation
from ._base import BaseExporter, ExportResult, encode_event

__all__ = ["ConsoleExporter", "JSONLinesExporter"]


def _lines(events: t.Sequence[Event]) -> tuple[list[Event], str, ExportResult]:
    """The events that encode, their JSON lines, and a result rejecting the
    others (each event is encoded alone: one bad value costs its event only)."""
    result = ExportResult()
    kept: list[Event] = []
    lines: list[str] = []
    for event in events:
        try:
            lines.append(encode_event(event.to_dict()) + "\n")
        except ContractViolation as exc:
            result.reject(event, str(exc))
            continue
        kept.append(event)
    return kept, "".join(lines), result


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
        kept, text, result = _lines(events)
        if not kept:
            return result
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError) as exc:
            result.add_retry(kept, f"write failed: {exc}")
            return result
        result.sent.extend(kept)
        return result


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
        kept, text, result = _lines(events)
        if not kept:
            return result
        data = text.encode("utf-8")
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
            result.add_retry(kept, f"write failed: {exc.strerror}")
            return result
        result.sent.extend(kept)
        return result

    def after_fork(self) -> None:
        # A parent thread may have been writing when the process forked,
        # holding the lock: the child's would never be released.
        super().after_fork()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<JSONLinesExporter name={self.name!r} path={str(self.path)!r}>"
