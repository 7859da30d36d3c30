"""Replay: dead-lettered events sent again, after the cause was fixed.

:func:`replay` reads a :class:`~trackware._deadletter.DeadLetterStore`,
rebuilds each record's event with its original id (the vendors' idempotency
key, so a replay never duplicates what did arrive), sends it through the
exporter of the same destination name in batches, and removes from the store
only what the vendor accepted. Every record gets an outcome in the
:class:`ReplayReport`; a vendor's refusal or an unreachable vendor is an
outcome, never an exception. ``trackware deadletter replay``, the public
``trackware.deadletter.replay`` and the inspector call it.
"""

from __future__ import annotations

import collections
import dataclasses
import typing as t

from . import _log
from ._deadletter import DeadLetterStore, StoredDeadLetter
from ._event import Event
from .exceptions import ConfigurationError
from .exporters._base import Exporter, ExportResult

__all__ = ["OUTCOMES", "ReplayOutcome", "ReplayReport", "replay"]

#: Every outcome a record can have, in the order reports list them.
OUTCOMES = (
    "delivered",  # the vendor accepted it; removed from the store
    "rejected",  # the vendor refused it again (status, answer); kept
    "failed",  # no answer, or a retryable one (5xx, 429, timeout); kept
    "no_exporter",  # no exporter of that destination name was given; kept
    "not_applicable",  # the exporter no longer takes this event (events=); kept
    "invalid",  # the stored event cannot be rebuilt; kept
    "not_found",  # a key asked for is not in the store
)

_MAX_DETAIL = 500
#: Delivered records are removed from the store at least this often.
REMOVE_EVERY = 5_000


class ReplayOutcome(t.NamedTuple):
    """What happened to one dead-lettered record."""

    key: str
    destination: str
    event_id: str | None
    name: str | None
    outcome: str  # one of OUTCOMES
    status: int | None = None  # the vendor's HTTP status, when it answered
    detail: str | None = None  # the vendor's answer or what went wrong (scrubbed)


@dataclasses.dataclass
class ReplayReport:
    """Per-record outcomes of one :func:`replay`, in the store's order.

    ``removed`` counts the records removed from the store (the delivered
    ones; two records of the same event are both removed when it arrives).
    """

    outcomes: list[ReplayOutcome] = dataclasses.field(default_factory=list)
    removed: int = 0

    def counts(self) -> dict[str, int]:
        """How many records had each outcome (only outcomes that occurred)."""
        found = collections.Counter(o.outcome for o in self.outcomes)
        return {name: found[name] for name in OUTCOMES if found[name]}

    @property
    def delivered(self) -> list[ReplayOutcome]:
        return [o for o in self.outcomes if o.outcome == "delivered"]

    @property
    def left(self) -> list[ReplayOutcome]:
        """The records still in the store (everything not delivered)."""
        return [o for o in self.outcomes if o.outcome not in ("delivered", "not_found")]

    @property
    def ok(self) -> bool:
        """True when every record asked for was delivered."""
        return all(o.outcome == "delivered" for o in self.outcomes)

    def summary(self) -> str:
        """One line: ``replayed 12: delivered 10, rejected 2``."""
        counts = ", ".join(f"{k} {v}" for k, v in self.counts().items())
        return f"replayed {len(self.outcomes)}: {counts or 'nothing to replay'}"


class _Route(t.NamedTuple):
    exporter: Exporter
    batch_size: int
    batch_bytes: int | None


def _routes(target: t.Any, batch_size: int | None) -> dict[str, _Route]:
    """Destination name -> exporter and batch bounds, from a tracker (its
    destinations) or an iterable of exporters."""
    routes: dict[str, _Route] = {}
    destinations = getattr(target, "destinations", None)
    if destinations is not None and not isinstance(target, (str, bytes)):
        for dest in destinations:
            exporter = dest.exporter
            routes[dest.name] = _Route(
                exporter,
                int(getattr(dest, "max_batch_size", exporter.max_batch_size)),
                getattr(dest, "max_batch_bytes", None),
            )
    else:
        if isinstance(target, Exporter):
            target = [target]
        try:
            exporters = list(target)
        except TypeError:
            raise ConfigurationError(
                "replay: the target must be a Tracker or an iterable of "
                f"exporters, not {type(target).__name__}"
            ) from None
        for exporter in exporters:
            if not isinstance(exporter, Exporter):
                raise ConfigurationError(
                    "replay: every exporter must have name, max_batch_size, "
                    f"applies(), export() and close(); got {type(exporter).__name__}"
                )
            if exporter.name in routes:
                raise ConfigurationError(
                    f"replay: two exporters are named {exporter.name!r}"
                )
            routes[exporter.name] = _Route(
                exporter,
                exporter.max_batch_size,
                getattr(exporter, "max_batch_bytes", None),
            )
    if batch_size is not None:
        routes = {
            name: r._replace(batch_size=min(r.batch_size, batch_size))
            for name, r in routes.items()
        }
    return routes


def _batches(
    events: t.Sequence[Event], size: int, max_bytes: int | None
) -> t.Iterator[list[Event]]:
    batch: list[Event] = []
    used = 0
    for event in events:
        cost = event.size
        if batch and (
            len(batch) >= size or (max_bytes is not None and used + cost > max_bytes)
        ):
            yield batch
            batch, used = [], 0
        batch.append(event)
        used += cost
    if batch:
        yield batch


def _detail(text: str | None) -> str | None:
    return None if text is None else _log.scrub(text[:_MAX_DETAIL])


def _export(exporter: Exporter, batch: list[Event]) -> ExportResult:
    """``exporter.export(batch)``; an exception is every event failing."""
    try:
        result = exporter.export(batch)
    except Exception as exc:
        _log.error(
            f"replay:{exporter.name}",
            "trackware: replay: %s's export() raised",
            exporter.name,
            exc_info=True,
        )
        return ExportResult.failure(
            batch, f"the exporter raised {type(exc).__name__}: {exc}"
        )
    if not isinstance(result, ExportResult):
        return ExportResult.failure(
            batch, f"the exporter returned {type(result).__name__}, not ExportResult"
        )
    return result


def replay(
    store: DeadLetterStore,
    target: t.Any,
    *,
    destination: str | None = None,
    keys: t.Iterable[str] | None = None,
    batch_size: int | None = None,
) -> ReplayReport:
    """Send dead-lettered events again; remove what the vendor accepted.

    Args:
        store: where the dead letters are (a :class:`DeadLetterStore`).
        target: a :class:`~trackware.Tracker` (its destinations' exporters and
            batch bounds are used) or an iterable of exporters; a record goes
            to the exporter whose ``name`` is its destination.
        destination: only the records of this destination.
        keys: only the records with these keys (see ``store.list()``).
        batch_size: at most this many events per ``export()`` call (the
            destination's own bound applies too).

    Each record ends in one :data:`OUTCOMES` entry. A replay makes one
    attempt per event (no retries, no waits): what fails stays in the store
    for the next replay. Raises :class:`~trackware.exceptions.ConfigurationError`
    for bad arguments; errors reading or rewriting the store (``OSError``)
    propagate.
    """
    if not isinstance(store, DeadLetterStore):
        raise ConfigurationError(
            "replay: the store must have list(), remove() and purge() "
            f"(a DeadLetterStore); got {type(store).__name__}"
        )
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ConfigurationError(f"replay: batch_size must be >= 1, got {batch_size!r}")
    if isinstance(keys, str):
        raise ConfigurationError("replay: keys must be a collection of keys, not str")
    routes = _routes(target, batch_size)
    records = store.list(destination)
    report = ReplayReport()
    if keys is not None:
        wanted = list(dict.fromkeys(keys))
        present = {r.key for r in records}
        chosen = set(wanted)
        records = [r for r in records if r.key in chosen]
        missing = [k for k in wanted if k not in present]
    else:
        missing = []

    # Per destination: the events to send, one per event id (two records of
    # the same event are sent once), and the records each stands for.
    outcome: dict[str, ReplayOutcome] = {}
    pending: dict[str, dict[str, tuple[Event, list[StoredDeadLetter]]]] = {}
    for record in records:
        ident = record.event.get("event_id")
        name = record.event.get("name")
        base = ReplayOutcome(
            record.key,
            record.destination,
            ident if isinstance(ident, str) else None,
            name if isinstance(name, str) else None,
            "",
        )
        route = routes.get(record.destination)
        if route is None:
            outcome[record.key] = base._replace(
                outcome="no_exporter",
                detail=f"no exporter named {record.destination!r} was given",
            )
            continue
        try:
            event = Event.from_dict(record.event)
        except Exception as exc:
            outcome[record.key] = base._replace(
                outcome="invalid", detail=_detail(f"{type(exc).__name__}: {exc}")
            )
            continue
        try:
            applies = route.exporter.applies(event)
        except Exception as exc:
            applies = False
            detail = _detail(f"applies() raised {type(exc).__name__}: {exc}")
        else:
            detail = "the exporter does not take this event (its events= list)"
        if not applies:
            outcome[record.key] = base._replace(outcome="not_applicable", detail=detail)
            continue
        by_id = pending.setdefault(record.destination, {})
        if event.event_id in by_id:
            by_id[event.event_id][1].append(record)
        else:
            by_id[event.event_id] = (event, [record])

    def settle(
        group: list[StoredDeadLetter], what: str, status: int | None, text: str | None
    ) -> None:
        for record in group:
            ident = record.event.get("event_id")
            name = record.event.get("name")
            outcome[record.key] = ReplayOutcome(
                record.key,
                record.destination,
                ident if isinstance(ident, str) else None,
                name if isinstance(name, str) else None,
                what,
                status,
                _detail(text),
            )

    # Delivered records leave the store in chunks: each remove() of a
    # JSON-lines file rewrites it, so once per batch would be quadratic. A
    # crash before a chunk is removed only means those events are sent again
    # by the next replay, with the same ids.
    delivered: list[str] = []

    def remove_delivered() -> None:
        if delivered:
            report.removed += store.remove(delivered)
            delivered.clear()

    try:
        for dest_name, by_id in pending.items():
            _send(routes[dest_name], by_id, settle, delivered, remove_delivered)
    finally:
        remove_delivered()

    report.outcomes = [outcome[r.key] for r in records]
    report.outcomes.extend(
        ReplayOutcome(k, destination or "", None, None, "not_found") for k in missing
    )
    return report


def _send(
    route: _Route,
    by_id: dict[str, tuple[Event, list[StoredDeadLetter]]],
    settle: t.Callable[[list[StoredDeadLetter], str, int | None, str | None], None],
    delivered: list[str],
    remove_delivered: t.Callable[[], None],
) -> None:
    """One destination's events, batch by batch; each record settled, the
    delivered ones' keys appended to ``delivered`` (removed from the store
    every :data:`REMOVE_EVERY`)."""
    events = [event for event, _ in by_id.values()]
    for batch in _batches(events, route.batch_size, route.batch_bytes):
        result = _export(route.exporter, batch)
        done: set[str] = set()
        for event in result.sent:
            group = by_id.get(event.event_id)
            if group is not None and event.event_id not in done:
                done.add(event.event_id)
                settle(group[1], "delivered", None, None)
                delivered.extend(r.key for r in group[1])
        for rejection in result.rejected:
            group = by_id.get(rejection.event.event_id)
            if group is not None and rejection.event.event_id not in done:
                done.add(rejection.event.event_id)
                text = rejection.reason
                if rejection.body and rejection.body not in text:
                    text = f"{text}: {rejection.body}"
                settle(group[1], "rejected", rejection.status, text)
        for event in result.skipped:
            group = by_id.get(event.event_id)
            if group is not None and event.event_id not in done:
                done.add(event.event_id)
                settle(
                    group[1],
                    "not_applicable",
                    None,
                    "the exporter skipped it (not applicable)",
                )
        error = result.error or "the exporter reported no outcome for it"
        for event in batch:  # retry, and anything the exporter left out
            if event.event_id not in done:
                done.add(event.event_id)
                settle(by_id[event.event_id][1], "failed", result.status, error)
        if len(delivered) >= REMOVE_EVERY:
            remove_delivered()
