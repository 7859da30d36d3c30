"""Dead letters you can act on: list, show, replay and purge them from Python.

The same as ``trackware deadletter list|show|replay|purge`` (docs/deadletter.md)::

    from trackware import deadletter

    for record in deadletter.list("/var/lib/app/dead-letter.jsonl"):
        print(record.key, record.destination, record.status, record.reason)
    report = deadletter.replay(tracker)          # the tracker's own dead letter
    print(report.summary())                      # replayed 3: delivered 3

Every function takes ``where``: a dead-letter store (anything with
``list``/``remove``/``purge``: :class:`~trackware.JSONLinesDeadLetter`,
:class:`~trackware.MemoryDeadLetter`, the spool's), a path (an existing
folder is a spool folder, anything else a JSON-lines file), or ``None``: the
store a ``Tracker.from_env()`` would write to: the JSON-lines file of
``$TRACKWARE_DEAD_LETTER_PATH`` when set, else the spool of
``$TRACKWARE_SPOOL`` when set, else the default JSON-lines file.
"""

from __future__ import annotations

import builtins
import importlib
import os
import pathlib
import typing as t

from ._deadletter import (
    DeadLetterStore,
    JSONLinesDeadLetter,
    StoredDeadLetter,
    default_dead_letter_path,
)
from ._replay import OUTCOMES, ReplayOutcome, ReplayReport
from ._replay import replay as _replay
from .exceptions import ConfigurationError

__all__ = [
    "OUTCOMES",
    "DeadLetterStore",
    "ReplayOutcome",
    "ReplayReport",
    "StoredDeadLetter",
    "describe",
    "list",
    "open_store",
    "purge",
    "replay",
    "resolve_keys",
    "show",
]

Where = t.Union[DeadLetterStore, str, "os.PathLike[str]", None]


def _spool_store(folder: pathlib.Path) -> DeadLetterStore:
    # Looked up by name: the spool is optional to this module.
    try:
        factory = importlib.import_module("trackware._spool").SpoolDeadLetter
    except (ImportError, AttributeError):
        raise ConfigurationError(
            f"{folder} is a folder (a spool folder?), but this trackware has no "
            "spool dead-letter store (trackware._spool.SpoolDeadLetter); give "
            "the path of a JSON-lines dead-letter file instead"
        ) from None
    store = factory(folder)
    if not isinstance(store, DeadLetterStore):  # pragma: no cover - a bug
        raise ConfigurationError("trackware._spool.SpoolDeadLetter lacks list()")
    return store


def open_store(where: Where = None) -> DeadLetterStore:
    """The dead-letter store ``where`` names (see the module's docstring)."""
    if isinstance(where, DeadLetterStore):
        return where
    if where is None:
        spool = os.environ.get("TRACKWARE_SPOOL", "").strip()
        if spool and not os.environ.get("TRACKWARE_DEAD_LETTER_PATH"):
            return _spool_store(pathlib.Path(spool))
        return JSONLinesDeadLetter(default_dead_letter_path())
    if isinstance(where, (str, os.PathLike)):
        path = pathlib.Path(where)
        if path.is_dir():
            return _spool_store(path)
        return JSONLinesDeadLetter(path)
    raise ConfigurationError(
        "a dead letter is a store with list(), remove() and purge(), a path or "
        f"None, not {type(where).__name__}"
    )


def describe(store: DeadLetterStore) -> str:
    """Where ``store`` keeps its records, for messages (a path, or its repr)."""
    path = getattr(store, "path", None)
    if isinstance(path, (str, os.PathLike)):
        return os.fspath(path)
    folder = getattr(store, "folder", None)
    if isinstance(folder, (str, os.PathLike)):
        return f"the spool {os.fspath(folder)}"
    return repr(store)


def list(
    where: Where = None, *, destination: str | None = None
) -> builtins.list[StoredDeadLetter]:
    """The dead letters in ``where`` (of ``destination`` only, when given),
    oldest first."""
    return open_store(where).list(destination)


def resolve_keys(
    keys: t.Iterable[str], records: t.Sequence[StoredDeadLetter]
) -> builtins.list[str]:
    """Each of ``keys`` as the full key of one of ``records``: a key, or the
    start of exactly one key (as git takes an abbreviated commit id).

    Raises :class:`KeyError` naming a key that matches no record or several.
    """
    known = [r.key for r in records]
    exact = set(known)
    out: builtins.list[str] = []
    for key in keys:
        if key in exact:
            out.append(key)
            continue
        found = sorted({k for k in known if key and k.startswith(key)})
        if not found:
            raise KeyError(f"no dead letter has the key {key!r}")
        if len(found) > 1:
            raise KeyError(
                f"{key!r} is the start of {len(found)} keys "
                f"({', '.join(found[:3])}{', ...' if len(found) > 3 else ''}); "
                "give more of it"
            )
        out.append(found[0])
    return out


def show(key: str, where: Where = None) -> StoredDeadLetter:
    """The dead letter with ``key`` (or a unique start of it); raises
    :class:`KeyError` when there is none (or several)."""
    records = open_store(where).list()
    (full,) = resolve_keys([key], records)
    return next(r for r in records if r.key == full)


def replay(
    target: t.Any,
    where: Where = None,
    *,
    destination: str | None = None,
    keys: t.Iterable[str] | None = None,
    batch_size: int | None = None,
) -> ReplayReport:
    """Send dead-lettered events again through ``target``'s exporters, with
    their original ids; remove from the store only what was delivered.

    ``target`` is a :class:`~trackware.Tracker` (its destinations' exporters
    and batch bounds) or an iterable of exporters; a record goes to the
    exporter named like its destination. With a tracker and ``where=None``,
    the tracker's own dead letter is replayed. ``keys`` may be abbreviated
    (see :func:`resolve_keys`). Returns the per-record
    :class:`~trackware._replay.ReplayReport`; a vendor's refusal or outage is
    an outcome in it, never an exception.
    """
    own = getattr(target, "dead_letter", None)
    if where is None and isinstance(own, DeadLetterStore):
        store: DeadLetterStore = own
    else:
        store = open_store(where)
    if keys is not None:
        if isinstance(keys, str):
            raise ConfigurationError("replay: keys must be a collection, not str")
        keys = resolve_keys(keys, store.list(destination))
    return _replay(
        store, target, destination=destination, keys=keys, batch_size=batch_size
    )


def purge(where: Where = None, *, destination: str | None = None) -> int:
    """Delete every dead letter in ``where`` (of ``destination`` only, when
    given) without sending it; returns how many were deleted."""
    return open_store(where).purge(destination)
