"""The tracker's configuration: its typed options (``TrackerOptions``), the
shapes of ``stats()``, the checks of ``Tracker()``'s arguments, and building
a tracker from ``TRACKWARE_*`` variables (``Tracker.from_env``,
``trackware.init``). docs/configuration.md describes it; keep the two in step.
"""

from __future__ import annotations

import os
import pathlib
import typing as t

from . import _env, _log
from ._deadletter import DeadLetter, JSONLinesDeadLetter
from .exceptions import ConfigurationError
from .exporters._base import Exporter

if t.TYPE_CHECKING:
    import re

    from ._event import Event
    from ._queue import EventQueue
    from ._retry import RetryPolicy

__all__ = [
    "DestinationStats",
    "FlaskOptions",
    "IntegrationOptions",
    "TrackerOptions",
    "TrackerStats",
]


# --- options ------------------------------------------------------------------------


_Hook = t.Callable[["Event"], "Event | None"]


class TrackerOptions(t.TypedDict, total=False):
    """Every keyword option of :class:`~trackware.Tracker` (see its docstring).

    ``tests/core/test_config.py`` checks that these keys are exactly the keyword
    parameters of ``Tracker.__init__``.
    """

    max_queue_size: int
    max_queue_bytes: int
    max_batch_size: int | None
    max_batch_bytes: int
    flush_interval: float
    queue_full_policy: str
    block_timeout: float
    retry: RetryPolicy | None
    dead_letter: DeadLetter | str | os.PathLike[str] | None
    before_send: _Hook | t.Iterable[_Hook]
    redact_keys: t.Iterable[str] | None
    redact_allow: t.Iterable[str] | None
    filters: t.Mapping[str, t.Callable[[Event], bool]] | None
    sample_rates: t.Mapping[str, float] | None
    strict: bool
    enabled: bool
    shutdown_timeout: float
    register_atexit: bool
    queue_factory: t.Callable[[Exporter], EventQueue] | None
    spool: str | os.PathLike[str] | t.Mapping[str, str | os.PathLike[str] | None] | None
    durability: str
    spool_commit_interval: float
    spool_max_bytes: int
    spool_fsync: bool
    spool_adopt_interval: float
    queue: str | None
    redis_namespace: str
    redis_maxlen: int
    inspector: str | None
    inspector_token: str | None


class IntegrationOptions(t.TypedDict, total=False):
    """The request-tracking options shared by the Flask extension and the ASGI
    middleware (:class:`~trackware.integrations.TrackingOptions`,
    less ``tracker`` and ``identity``, which each integration types itself).

    ``integrations/test_options.py`` checks these keys against the dataclass.
    """

    page_event: str | None
    sessions: bool
    session_timeout: float
    session_start_event: str
    session_end_event: str
    visitor_cookie: str
    session_cookie: str
    tid_cookie: str
    cookie_domain: str | None
    cookie_path: str
    visitor_max_age: int
    cookie_secure: bool | None
    cookie_secret: str | bytes | t.Sequence[str | bytes] | None
    ephemeral_cookie_secret: bool
    exclude_methods: t.Collection[str]
    exclude_paths: t.Collection[str | re.Pattern[str]]
    exclude_routes: t.Collection[str]
    exclude_endpoints: t.Collection[str]
    exclude_bots: bool
    bot_agents: t.Collection[str]
    query_allow: t.Collection[str]
    capture_ip: bool
    capture_user_agent: bool
    tid_source: t.Callable[[str], str | None] | None


#: What an identity callable may return (the same as
#: ``trackware.integrations._options.Identity``; spelt out here so that the
#: core imports nothing of the integrations).
_Identity: t.TypeAlias = "str | int | t.Mapping[str, t.Any] | None"


class FlaskOptions(IntegrationOptions, total=False):
    """The options of :class:`~trackware.integrations.flask.Trackware`."""

    identity: t.Callable[[], _Identity] | None


# --- stats --------------------------------------------------------------------------


class DestinationStats(t.TypedDict):
    """The counters of one destination (``Tracker.stats()["destinations"][name]``)."""

    enqueued: int
    sent: int
    retried: int
    rejected: int
    failed: int
    dead_lettered: int
    dropped: dict[str, int]
    not_applicable: int
    filtered: int
    queue_depth: int
    queue_bytes: int
    in_flight: int
    circuit: str
    last_error: str | None
    batches: int
    #: Events written to the durable spool (0 without one; docs/durable.md).
    spooled: int
    #: Events adopted from spool files of processes that died.
    recovered: int
    #: The size of this destination's spool file, bytes.
    spool_bytes: int
    #: The queue's own figures (the spool's or Redis Streams' state,
    #: fallbacks...): see docs/durable.md and docs/scaling.md.
    backend: dict[str, int | str | None]


class TrackerStats(t.TypedDict):
    """What :meth:`Tracker.stats` returns: plain ints, strings, ``None`` and
    dicts, so ``json.dumps`` takes it as it is. The counters are this
    process's only (each worker of a multi-process server has its own)."""

    tracked: int
    unrouted: int
    dropped: dict[str, int]
    destinations: dict[str, DestinationStats]


_SPOOL_KEYS = ("spooled", "recovered", "spool_bytes")


def destination_stats(dest: t.Any) -> DestinationStats:
    """One destination's counters: its ledger's, and its queue's own
    (``extra_stats()``, when the queue has it: the spool's and Redis
    Streams'), the spool's three at the top and the rest under ``backend``."""
    stats: dict[str, t.Any] = dest.stats()
    extra_stats = getattr(dest.queue, "extra_stats", None)
    extra: dict[str, t.Any] = dict(extra_stats()) if extra_stats is not None else {}
    for key in _SPOOL_KEYS:
        stats[key] = int(extra.pop(key, 0) or 0)
    stats["backend"] = extra
    return t.cast(DestinationStats, stats)


def summary(stats: TrackerStats) -> str:
    """``stats`` as the one line a tracker logs when it shuts down: what
    happened to its events, per destination (sent, rejected, failed, dropped
    by reason, dead-lettered, still queued)."""

    def reasons(counts: dict[str, int]) -> str:
        kept = {k: v for k, v in counts.items() if v}
        return ", ".join(f"{k} {v}" for k, v in sorted(kept.items())) or "none"

    parts = [f"tracked {stats['tracked']}, dropped: {reasons(stats['dropped'])}"]
    for name, d in stats["destinations"].items():
        parts.append(
            f"{name}: sent {d['sent']}, rejected {d['rejected']}, "
            f"failed {d['failed']}, dropped: {reasons(d['dropped'])}, "
            f"dead-lettered {d['dead_lettered']}, "
            f"still queued {d['queue_depth'] + d['in_flight']}"
        )
    return "; ".join(parts)


# --- checks of Tracker()'s arguments ------------------------------------------------

#: ``Tracker(dead_letter=...)``'s default: the JSON-lines file.
DEFAULT_DEAD_LETTER: t.Any = object()


def checked_arguments(
    exporters: Exporter | t.Iterable[Exporter],
    *,
    max_batch_size: int | None,
    max_batch_bytes: int,
    flush_interval: float,
    shutdown_timeout: float,
    sample_rates: t.Mapping[str, float] | None,
    filters: t.Mapping[str, t.Any] | None,
) -> list[Exporter]:
    """The exporters as a list, once ``Tracker()``'s arguments are checked
    (raises :class:`ConfigurationError` naming what is wrong)."""
    if isinstance(exporters, Exporter):
        exporters = [exporters]
    exporters = list(exporters)
    if (max_batch_size is not None and max_batch_size < 1) or max_batch_bytes < 1:
        raise ConfigurationError("max_batch_size and max_batch_bytes must be >= 1")
    if flush_interval < 0 or shutdown_timeout < 0:
        raise ConfigurationError("flush_interval and shutdown_timeout must be >= 0")
    for rate_name, rate in (sample_rates or {}).items():
        if not 0.0 <= rate <= 1.0:
            raise ConfigurationError(
                f"sample_rates[{rate_name!r}] must be between 0 and 1, not {rate}"
            )
    names: set[str] = set()
    for exporter in exporters:
        if not isinstance(exporter, Exporter):
            raise ConfigurationError(
                f"{exporter!r} is not an exporter: it needs name, "
                "max_batch_size, applies(), export() and close()"
            )
        if exporter.name in names:
            raise ConfigurationError(
                f"two exporters are named {exporter.name!r}: pass name=... to "
                "one of them so stats and dead letters can tell them apart"
            )
        names.add(exporter.name)
    unknown = set(filters or ()) - names
    if unknown:
        raise ConfigurationError(
            f"filters name unknown destination(s) {sorted(unknown)}; "
            f"destinations are {sorted(names)}"
        )
    return exporters


def dead_letter_from(value: t.Any) -> DeadLetter | None:
    """``Tracker(dead_letter=...)`` as a :class:`DeadLetter` (or ``None``)."""
    if value is DEFAULT_DEAD_LETTER:
        return JSONLinesDeadLetter()
    if value is None:
        return None
    if isinstance(value, (str, pathlib.PurePath)):
        return JSONLinesDeadLetter(value)
    if isinstance(value, DeadLetter):
        return value
    raise ConfigurationError(
        "dead_letter must be a path, a DeadLetter (e.g. "
        "trackware.JSONLinesDeadLetter(path)), or None"
    )


# --- from the environment -----------------------------------------------------------

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")

#: Tracker options read by Tracker.from_env(): variable -> (option, type).
TRACKER_VARIABLES: dict[str, tuple[str, type]] = {
    "TRACKWARE_FLUSH_INTERVAL": ("flush_interval", float),
    "TRACKWARE_MAX_QUEUE_SIZE": ("max_queue_size", int),
    "TRACKWARE_MAX_BATCH_SIZE": ("max_batch_size", int),
    "TRACKWARE_SHUTDOWN_TIMEOUT": ("shutdown_timeout", float),
    "TRACKWARE_QUEUE_FULL_POLICY": ("queue_full_policy", str),
    "TRACKWARE_STRICT": ("strict", bool),
    "TRACKWARE_SPOOL": ("spool", str),
    "TRACKWARE_SPOOL_DURABILITY": ("durability", str),
    "TRACKWARE_SPOOL_COMMIT_INTERVAL": ("spool_commit_interval", float),
    "TRACKWARE_SPOOL_MAX_BYTES": ("spool_max_bytes", int),
    "TRACKWARE_SPOOL_FSYNC": ("spool_fsync", bool),
    "TRACKWARE_REDIS_URL": ("queue", str),
    "TRACKWARE_REDIS_NAMESPACE": ("redis_namespace", str),
    "TRACKWARE_REDIS_MAXLEN": ("redis_maxlen", int),
}

#: The variable that adds an HTTPExporter.
HTTP_URL = "TRACKWARE_HTTP_URL"

#: The vendors Tracker.from_env() can add, by the prefix of their variables.
VENDOR_PREFIXES = ("CARDLYTICS", "MXO", "SYNERISE", "YOTPO")


def disabled(env: t.Mapping[str, str]) -> bool:
    """``TRACKWARE_DISABLED`` as ``Tracker()`` reads it."""
    return env.get("TRACKWARE_DISABLED", "") in _TRUE


def tracker_options(env: t.Mapping[str, str]) -> dict[str, t.Any]:
    """The tracker options set by variables in ``env``."""
    options: dict[str, t.Any] = {}
    for var, (option, kind) in TRACKER_VARIABLES.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        if kind is bool:
            if raw.lower() not in _TRUE + _FALSE:
                raise ConfigurationError(
                    f"{var} must be 1/true/yes or 0/false/no, got {raw!r}"
                )
            options[option] = raw.lower() in _TRUE
            continue
        try:
            options[option] = kind(raw)
        except ValueError:
            raise ConfigurationError(
                f"{var} must be {'an integer' if kind is int else 'a number'}, "
                f"got {raw!r}"
            ) from None
    if disabled(env):
        options["enabled"] = False
    path = env.get("TRACKWARE_DEAD_LETTER_PATH")
    if path:
        options["dead_letter"] = path
    return options


def configured_vendors(env: t.Mapping[str, str]) -> list[str]:
    """The vendors with at least one of their variables set (non-empty)."""
    found = []
    for vendor in VENDOR_PREFIXES:
        prefix = f"TRACKWARE_{vendor}_"
        if any(
            name.startswith(prefix) and env.get(name) for name in _env.KNOWN_VARIABLES
        ):
            found.append(vendor)
    return found


def exporters_from_env(env: t.Mapping[str, str]) -> list[Exporter]:
    """One exporter per configured vendor, and an ``HTTPExporter`` for
    ``TRACKWARE_HTTP_URL``. Raises ConfigurationError (naming the missing
    variables) for a vendor configured only in part; closes what it built
    when one fails."""
    from .exporters import HTTPExporter
    from .exporters.cardlytics import ClientEventExporter
    from .exporters.mxo import InteractionExporter, LightweightExporter
    from .exporters.synerise import SyneriseExporter
    from .exporters.yotpo import CustomEventExporter

    built: list[Exporter] = []
    try:
        for vendor in configured_vendors(env):
            if vendor == "CARDLYTICS":
                built.append(ClientEventExporter.from_env(env))
            elif vendor == "MXO":
                if env.get("TRACKWARE_MXO_CLIENT_ID") or env.get(
                    "TRACKWARE_MXO_CLIENT_SECRET"
                ):
                    built.append(InteractionExporter.from_env(env))
                else:
                    built.append(LightweightExporter.from_env(env))
            elif vendor == "SYNERISE":
                built.append(SyneriseExporter.from_env(env))
            else:
                built.append(CustomEventExporter.from_env(env))
        url = env.get(HTTP_URL, "").strip()
        if url:
            built.append(HTTPExporter(url))
    except BaseException:
        for exporter in built:
            try:
                exporter.close()
            except Exception:  # pragma: no cover - closing a fresh exporter
                pass
        raise
    return built


def no_destination_message() -> str:
    return (
        "Tracker.from_env(): no destination is configured. Set "
        f"{HTTP_URL} (your own endpoint), or a vendor's variables: "
        "TRACKWARE_CARDLYTICS_BASE_URL, _CLIENT_ID, _CLIENT_SECRET and "
        "_CUSTOMER_ID_KEY; TRACKWARE_MXO_BASE_URL, _SITE_KEY and _TOUCHPOINT "
        "(and _CLIENT_ID, _CLIENT_SECRET for interactions); "
        "TRACKWARE_SYNERISE_API_KEY; TRACKWARE_YOTPO_STORE_ID and _SECRET. "
        "Or pass exporters= yourself, or set TRACKWARE_DISABLED=1 to run "
        "without delivery (see docs/configuration.md)."
    )


def build_arguments(
    environ: t.Mapping[str, str] | None,
    extra: t.Sequence[Exporter],
    overrides: t.Mapping[str, t.Any],
) -> tuple[list[Exporter], dict[str, t.Any]]:
    """The exporters and keyword options of ``Tracker.from_env()``."""
    known = TrackerOptions.__annotations__
    for name in sorted(set(overrides) - set(known)):
        match = _env.closest(name, known)
        hint = (
            f"did you mean {match!r}?" if match else f"the options are {sorted(known)}"
        )
        raise ConfigurationError(
            f"Tracker.from_env() got an unknown option {name!r}; {hint}"
        )
    env = os.environ if environ is None else environ
    _env.check_environment(env)  # a misspelt name is reported
    options = tracker_options(env)
    options.update(overrides)
    exporters = exporters_from_env(env)
    exporters.extend(extra)
    if not exporters and options.get("enabled", True):
        raise ConfigurationError(no_destination_message())
    if exporters:
        _log.logger.info(
            "trackware: Tracker.from_env() delivers to %s",
            ", ".join(e.name for e in exporters),
        )
    else:
        _log.logger.info(
            "trackware: Tracker.from_env(): tracking is disabled and no "
            "destination is configured"
        )
    return exporters, options


_T = t.TypeVar("_T")


def from_env(
    factory: t.Callable[..., _T],
    exporters: Exporter | t.Iterable[Exporter],
    environ: t.Mapping[str, str] | None,
    options: t.Mapping[str, t.Any],
) -> _T:
    """``Tracker.from_env()``: ``factory(exporters, **options)`` with what the
    environment configures; the exporters built here are closed if it fails."""
    extra = [exporters] if isinstance(exporters, Exporter) else list(exporters)
    built, merged = build_arguments(environ, extra, options)
    try:
        return factory(built, **merged)
    except BaseException:
        for exporter in built[: len(built) - len(extra)]:
            try:
                exporter.close()
            except Exception:  # pragma: no cover - closing a fresh exporter
                pass
        raise
