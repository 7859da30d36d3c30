"""The exporter interface and per-event export outcomes."""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import typing as t
import uuid

from .. import _env, _log
from .._event import Event, wire_dict
from .._json import ORJSON, dumps, encode_checked
from .._json import encode_text as _text
from ..exceptions import ContractViolation

if t.TYPE_CHECKING:
    from .._retry import RetryPolicy

__all__ = [
    "BaseExporter",
    "ExportResult",
    "Exporter",
    "Rejection",
    "encode_event",
    "event_json",
    "env_options",
    "iso_time_problem",
    "report_progress",
    "stable_uuid",
]


# --- per-event contract checks ----------------------------------------------------
#
# The rule of every exporter: each event is checked against the vendor contract
# (and encoded as JSON) on its own, before it joins a batch. Several vendors take
# a batch all-or-nothing (MXO /interactions/offline, Synerise /v4/events/batch,
# Cardlytics clientEvents), so one bad event sent along would cost its
# batch-mates; an event that fails is rejected alone with the rule it broke.


def encode_event(payload: object) -> str:
    """``payload`` (one event's part of a request) as JSON text, checked alone.

    Raises :class:`ContractViolation` naming the rule when it cannot be
    encoded: a value of a type JSON has no form for, NaN or infinity, or text
    that is not valid Unicode (a lone surrogate cannot be sent as UTF-8).
    ``track()`` refuses such values, but an event may come from a
    ``before_send`` hook, a replayed dead letter or a custom builder.
    """
    try:
        text = dumps(payload)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise _not_encodable(exc) from None
    return text


def event_json(event: Event) -> bytes:
    """``encode_event(event.to_dict())`` as UTF-8 bytes, checked alone as
    :func:`encode_event` checks (raising :class:`ContractViolation` as it
    does), the same bytes, made faster: through orjson when it is installed
    (``trackware._json``), else from a template of the ten fields, with only
    the non-empty mappings going through the encoder."""
    try:
        if ORJSON:
            return encode_checked(wire_dict(event))
        return _event_text(event).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise _not_encodable(exc) from None


_EVENT_TEMPLATE = (
    '{"event_id":%s,"name":%s,"timestamp":"%s","user_id":%s,"anonymous_id":%s,'
    '"email":%s,"phone":%s,"traits":%s,"properties":%s,"context":%s}'
)


def _event_text(event: Event) -> str:
    """``dumps(event.to_dict())``, field by field (tests/exporters compare)."""
    data = event.to_dict()
    return _EVENT_TEMPLATE % (
        _text(data["event_id"]),
        _text(data["name"]),
        data["timestamp"],
        _optional(data["user_id"]),
        _optional(data["anonymous_id"]),
        _optional(data["email"]),
        _optional(data["phone"]),
        dumps(data["traits"]) if data["traits"] else "{}",
        dumps(data["properties"]) if data["properties"] else "{}",
        dumps(data["context"]) if data["context"] else "{}",
    )


def _optional(value: str | None) -> str:
    return "null" if value is None else _text(value)


def _not_encodable(exc: Exception) -> ContractViolation:
    detail = str(exc).split("\n", 1)[0][:200]
    return ContractViolation(
        f"json: every event must be encodable as JSON (UTF-8) on its own; "
        f"this one is not ({type(exc).__name__}: {detail})"
    )


#: Epoch seconds of 1000-01-01 and of the end of 9999-12-31 (UTC): ISO-8601
#: timestamps have a four-digit year.
_ISO_MIN = -30610224000.0
_ISO_MAX = 253402300800.0


def iso_time_problem(unix: float, field: str) -> str | None:
    """Why ``unix`` cannot be sent as an ISO-8601 ``field``, or ``None``."""
    if not _ISO_MIN <= unix < _ISO_MAX:
        return (
            f"{field}: the event time ({unix!r} s since 1970) is outside years "
            "1000-9999, which an ISO-8601 timestamp cannot carry (a value in "
            "milliseconds passed as seconds?)"
        )
    return None


_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# Stable UUIDs for event ids that are not UUIDs (uuid5 in this namespace).
_ID_NAMESPACE = uuid.UUID("4f1c2b1e-8d0c-5a7e-9b1f-6c0a3e2d1b7a")


def stable_uuid(event_id: str) -> str:
    """``event_id`` itself when it is a UUID, else a UUID derived from it.

    Vendors whose id field must be a UUID (Cardlytics ``clientEventId``,
    Yotpo ``id``) get the same derived id for an app-supplied id every time
    (UUIDv5), so retries and replays still overwrite instead of duplicating.
    """
    if _UUID_RE.fullmatch(event_id):
        return event_id
    return str(uuid.uuid5(_ID_NAMESPACE, event_id))


@dataclasses.dataclass(frozen=True)
class Rejection:
    """One event a destination will not take, and why.

    Attributes:
        event: the rejected event.
        reason: the rule it broke or the vendor's answer, human-readable.
        status: the vendor's HTTP status, or ``None`` when the exporter itself
            rejected the event against the vendor contract before sending.
        body: the vendor's response body (secrets scrubbed, truncated).
    """

    event: Event
    reason: str
    status: int | None = None
    body: str | None = None


class ExportResult:
    """What happened to each event of a batch.

    Every event handed to :meth:`Exporter.export` must end in exactly one of
    ``sent``, ``retry``, ``rejected`` or ``skipped``.

    Attributes:
        sent: delivered.
        retry: not delivered, worth trying again (transport error, 408, 429, 5xx).
        rejected: refused for good (a 4xx, or a vendor-contract violation found
            before sending); these go to the dead letter.
        skipped: the destination does not take this kind of event (counted as
            ``not_applicable``, not an error).
        retry_after: the longest wait the vendor asked for, seconds.
        error: a short description of the last retryable failure.
        status: the last retryable failure's HTTP status, if any.
        body: the last retryable failure's response body, if any.
    """

    __slots__ = (
        "body",
        "error",
        "rejected",
        "retry",
        "retry_after",
        "sent",
        "skipped",
        "status",
    )

    def __init__(self) -> None:
        self.sent: list[Event] = []
        self.retry: list[Event] = []
        self.rejected: list[Rejection] = []
        self.skipped: list[Event] = []
        self.retry_after: float | None = None
        self.error: str | None = None
        self.status: int | None = None
        self.body: str | None = None

    @classmethod
    def success(cls, events: t.Iterable[Event]) -> ExportResult:
        result = cls()
        result.sent.extend(events)
        return result

    @classmethod
    def failure(
        cls,
        events: t.Iterable[Event],
        error: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        body: str | None = None,
    ) -> ExportResult:
        result = cls()
        result.add_retry(
            events, error, retry_after=retry_after, status=status, body=body
        )
        return result

    def add_retry(
        self,
        events: t.Iterable[Event],
        error: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        body: str | None = None,
    ) -> None:
        self.retry.extend(events)
        self.error = error
        self.status = status
        self.body = body
        if retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, retry_after)

    def reject(
        self,
        event: Event,
        reason: str,
        *,
        status: int | None = None,
        body: str | None = None,
    ) -> None:
        self.rejected.append(Rejection(event, reason, status, body))

    def reject_unmapped(
        self, event: Event, exc: Exception, destination: str, vendor: str = ""
    ) -> None:
        """Reject ``event`` alone because mapping it to the vendor's format
        raised ``exc`` (a bug, or a user mapping's surprise): it never costs its
        batch-mates. Call it from the ``except`` block: the traceback is logged
        (rate-limited per destination)."""
        _log.error(
            f"build:{destination}",
            "trackware: %s could not map event %r",
            destination,
            event.name,
            exc_info=True,
        )
        lead = f"{vendor} mapping error" if vendor else "mapping error"
        self.reject(event, f"{lead}: {type(exc).__name__}: {exc}")

    @classmethod
    def rejected_all(
        cls,
        events: t.Iterable[Event],
        reason: str,
        *,
        status: int | None = None,
        body: str | None = None,
    ) -> ExportResult:
        """Every event of ``events`` rejected for the same reason."""
        result = cls()
        result.rejected.extend(Rejection(e, reason, status, body) for e in events)
        return result

    def merge(self, other: ExportResult) -> None:
        self.sent.extend(other.sent)
        self.rejected.extend(other.rejected)
        self.skipped.extend(other.skipped)
        if other.retry:
            self.add_retry(
                other.retry,
                other.error or "retryable failure",
                retry_after=other.retry_after,
                status=other.status,
                body=other.body,
            )

    def __repr__(self) -> str:
        return (
            f"ExportResult(sent={len(self.sent)}, retry={len(self.retry)}, "
            f"rejected={len(self.rejected)}, skipped={len(self.skipped)})"
        )


@t.runtime_checkable
class Exporter(t.Protocol):
    """**Protocol:** delivers batches of events to one destination.

    ``applies`` runs on the application's thread for every event and must be
    cheap (a set lookup). ``export`` runs on the destination's worker thread and
    may block on I/O; it should not raise: it should report outcomes per event.
    If it does raise, the worker exports the batch again in halves to find the
    event(s) causing it: an event that raises alone is rejected when the
    exception is an encoding error (``ValueError``, ``TypeError``,
    ``OverflowError``, ``RecursionError``, ``UnicodeError``), else retried.

    Optional: ``halt()`` (see :meth:`BaseExporter.halt`), called at shutdown
    while an export is under way; an exporter making several calls per batch
    should also call :func:`report_progress` after each.
    """

    #: The destination's name in ``stats()``, logs and dead letters.
    name: str
    #: The most events one ``export`` call may receive.
    max_batch_size: int

    def applies(self, event: Event, /) -> bool: ...

    def export(self, events: t.Sequence[Event], /) -> ExportResult: ...

    def close(self) -> None: ...


class BaseExporter:
    """Convenient base for exporters: a name, a batch cap, and no-op hooks.

    Args:
        name: destination name (defaults to the class's ``default_name``).
        max_batch_size: upper bound of events per ``export`` call.
        events: when given, only events with these names are exported; others
            are ``not_applicable`` for this destination.
        retry: a :class:`~trackware.RetryPolicy` for this destination
            (default: the tracker's).
    """

    default_name: t.ClassVar[str] = "exporter"
    #: Payload bytes one export call should not exceed (None: no bound).
    max_batch_bytes: int | None = None

    def __init__(
        self,
        *,
        name: str | None = None,
        max_batch_size: int = 100,
        events: t.Iterable[str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        from ..exceptions import ConfigurationError

        if max_batch_size < 1:
            raise ConfigurationError(f"{type(self).__name__}: max_batch_size >= 1")
        self.name = name or self.default_name
        self.max_batch_size = max_batch_size
        self.retry_policy = retry
        self._only: frozenset[str] | None = (
            frozenset(events) if events is not None else None
        )
        self._halt = threading.Event()

    def applies(self, event: Event, /) -> bool:
        only = self._only
        return only is None or event.name in only

    def export(self, events: t.Sequence[Event], /) -> ExportResult:
        raise NotImplementedError

    def halt(self) -> None:
        """Stop sending, for good: shutdown is about to end.

        Called by the worker's shutdown shortly before its deadline while an
        export is under way, and by ``close()``. The export makes no further
        request and returns soon (a request under way may finish); a wait
        inside it (a rate limiter) ends at once. What it did not send is
        dead-lettered by the worker. Thread-safe.
        """
        self._halt.set()

    @property
    def only_events(self) -> frozenset[str] | None:
        """The event names given as ``events=``, or ``None`` (every event)."""
        return self._only

    @property
    def halted(self) -> bool:
        """True once :meth:`halt` (or ``close()``) was called."""
        return self._halt.is_set()

    def close(self) -> None:
        """Release resources (connections, files). Called once at shutdown."""
        self.halt()

    def after_fork(self) -> None:
        """Forget resources inherited from the parent process (sockets, files)."""
        # A halt in the parent (shutting down) says nothing about the child.
        self._halt = threading.Event()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


# --- progress of an export under way -------------------------------------------------


class ExportProgress(threading.local):
    """Where :func:`report_progress` sends an outcome, per thread."""

    #: Set by the worker around each export() call on its thread.
    report: t.Callable[[ExportResult], bool] | None = None


#: The worker sets ``export_progress.report`` around each ``export()``.
export_progress = ExportProgress()


def report_progress(outcome: ExportResult) -> bool:
    """Tell the worker what one call of a multi-call export decided.

    An exporter that makes several calls for one batch (one request per event,
    or per customer) calls this after each, with that call's outcome. The
    worker keeps it, so that when shutdown gives the batch up before
    ``export()`` returns, the events already sent are counted as sent and only
    the others go to the dead letter (a replay would duplicate them).

    Returns ``False`` when the batch was given up (or the destination stopped
    sending): make no further call and return at once. Outside a worker (a
    direct ``export()`` call) it does nothing and returns ``True``.
    """
    report = export_progress.report
    return True if report is None else report(outcome)


# --- from_env -------------------------------------------------------------------------


def env_options(
    owner: str,
    environ: t.Mapping[str, str] | None,
    *,
    prefix: str,
    required: t.Mapping[str, str] = {},
    optional: t.Mapping[str, str] = {},
    overrides: t.Mapping[str, t.Any] = {},
    hint: str = "",
) -> dict[str, t.Any]:
    """Constructor keyword arguments for an exporter's ``from_env``.

    ``required`` and ``optional`` map variable names after ``prefix``
    (``"BASE_URL"`` for ``TRACKWARE_MXO_BASE_URL``) to keyword arguments.
    Values are stripped; an empty one counts as unset. ``overrides`` win over
    the environment; a required variable may be missing when its argument is
    overridden, otherwise :class:`~trackware.exceptions.ConfigurationError`
    names every missing variable (and ``hint``, e.g. what the values are).
    ``environ`` defaults to ``os.environ``; a misspelt ``TRACKWARE_*`` name in
    it is reported (:func:`trackware._env.check_environment`).
    """
    from ..exceptions import ConfigurationError

    env = os.environ if environ is None else environ
    _env.check_environment(env)
    kwargs: dict[str, t.Any] = {}
    missing = []
    for names, needed in ((required, True), (optional, False)):
        for suffix, arg in names.items():
            if arg in overrides:
                continue
            value = env.get(prefix + suffix, "").strip()
            if value:
                kwargs[arg] = value
            elif needed:
                missing.append(prefix + suffix)
    if missing:
        raise ConfigurationError(
            f"{owner}.from_env: set the environment variable(s) "
            f"{', '.join(missing)}{hint} (or pass the matching keyword arguments)"
        )
    kwargs.update(overrides)
    return kwargs
