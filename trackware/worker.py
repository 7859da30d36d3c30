"""``trackware worker`` and ``trackware status``: delivery from Redis Streams.

App processes configured with ``Tracker(queue="redis://...")`` only append
their events to one stream per destination; any number of worker processes,
on any number of machines, deliver them::

    trackware worker --config myapp.tracking:make_tracker --redis redis://r:6379/0

:func:`run` loads the user's exporters from the same factory the app uses,
builds a tracker whose destinations read their stream through a consumer
group (:class:`trackware._stream_consumer.StreamConsumerQueue`), so delivery
goes through the same retry, circuit-breaker and dead-letter machinery as in
an app process, and runs until SIGTERM or SIGINT. :func:`status` reports the
streams. The operations guide is docs/worker.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import typing as t

from . import _log
from ._argtypes import positive_int, positive_seconds
from .exceptions import ConfigurationError

if t.TYPE_CHECKING:
    from ._retry import RetryPolicy
    from ._stream_consumer import StreamConsumerQueue
    from ._tracker import Tracker
    from .exporters import Exporter

# The command line imports this module to register its commands: what
# delivery needs (the tracker, the exporters, httpx, redis) is imported when
# a command runs.

__all__ = ["load_exporters", "main", "register", "resolve", "run", "status"]

_logger = logging.getLogger("trackware")


def load_exporters(
    target: t.Any,
) -> tuple[list[Exporter], t.Any]:
    """The exporters (and the dead letter) ``target`` stands for.

    ``target`` is an import path ``"package.module:name"`` or the object
    itself: a :class:`~trackware.Tracker` (its exporters and dead letter are
    used, nothing else: a tracker configured with ``queue="redis://..."``
    does not make the worker append to the streams), an exporter, a list of
    exporters, or a callable without arguments returning one of those (the
    factory the app uses). The dead letter is ``DEFAULT_DEAD_LETTER`` unless a
    tracker brings its own.
    """
    from ._config import DEFAULT_DEAD_LETTER
    from ._tracker import Tracker
    from .exporters import Exporter

    obj = resolve(target)
    if isinstance(obj, Tracker):
        return [d.exporter for d in obj.destinations], obj.dead_letter
    if isinstance(obj, Exporter):
        return [obj], DEFAULT_DEAD_LETTER
    try:
        exporters = list(obj)
    except TypeError:
        exporters = [obj]
    bad = [e for e in exporters if not isinstance(e, Exporter)]
    if bad or not exporters:
        raise ConfigurationError(
            "the worker's config must give a Tracker, an exporter or a list of "
            f"exporters (or a factory returning one), got {type(obj).__name__}"
        )
    return exporters, DEFAULT_DEAD_LETTER


def resolve(target: t.Any) -> t.Any:
    """``target`` imported (``"package.module:name"``) and, if it is a
    factory, called: a Tracker, an exporter or exporters."""
    from ._loader import resolve as _resolve

    return _resolve(target)


def run(
    target: t.Any,
    redis_url: str,
    *,
    namespace: str = "default",
    visibility_timeout: float = 60.0,
    max_deliveries: int = 5,
    shutdown_timeout: float = 10.0,
    retry: RetryPolicy | None = None,
    share_rate_limits: bool = True,
    block: float = 0.2,
    flush_interval: float = 0.05,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
) -> dict[str, t.Any]:
    """Deliver the events of ``namespace``'s streams until stopped.

    Args:
        target: the exporters: see :func:`load_exporters`.
        redis_url: ``redis://host:port/db`` (``rediss://``, ``unix://``).
        namespace: the streams' namespace (the app's ``redis_namespace``).
        visibility_timeout: seconds an entry held by a worker that died (or
            stalled) stays with it before a live worker takes it over.
        max_deliveries: an entry handed to workers more often than this
            (``XPENDING``'s delivery count: workers died or stalled holding
            it) goes to the dead letter. A live worker keeps what it holds,
            so this does not count retries: those follow the retry policy.
        shutdown_timeout: the budget to finish the batch in hand at SIGTERM.
        retry: the retry policy of destinations whose exporter has none
            (default ``RetryPolicy()``, as in an app process): a batch the
            vendor keeps failing is retried, narrowed down to the event
            causing it, and given up (dead-lettered) after its attempts.
        share_rate_limits: keep vendor rate limits (Yotpo's per store) in
            Redis, shared by every worker of the namespace.
        block: seconds one read waits for new entries.
        flush_interval: the longest a partial batch waits.
        stop: set it to stop (as SIGTERM does).
        handle_signals: stop on SIGTERM and SIGINT (main thread only); a
            second signal exits at once.

    Returns the worker tracker's ``stats()`` at the end. One ``run()`` per
    process (the shared rate limits are the process's).
    """
    if visibility_timeout <= 0:
        raise ConfigurationError("visibility_timeout must be > 0 seconds")
    if max_deliveries < 1:
        raise ConfigurationError("max_deliveries must be >= 1")
    from . import _streams
    from ._config import dead_letter_from
    from ._stream_consumer import StreamConsumerQueue, StreamDeadLetter, consumer_name
    from ._tracker import Tracker

    stop = stop or threading.Event()
    client = _streams.connect(redis_url)
    client.ping()
    limiter: t.Any = None
    if share_rate_limits:
        # Before the factory builds the exporters (their limiters look the
        # shared state up on every request anyway).
        from .exporters.yotpo import _limiter as limiter

        limiter.share_through_redis(client, namespace)
    try:
        exporters, dead_letter = load_exporters(target)
        consumer = consumer_name()
        dead = StreamDeadLetter(
            client, namespace, dead_letter_from(dead_letter), consumer=consumer
        )
        queues: dict[str, StreamConsumerQueue] = {}
        tracker_box: list[Tracker] = []

        def last_error(name: str) -> str | None:
            for dest in tracker_box[0].destinations if tracker_box else ():
                if dest.name == name:
                    return dest.ledger.last_error
            return None

        def make_queue(exporter: Exporter) -> StreamConsumerQueue:
            name = exporter.name
            queue = queues[name] = StreamConsumerQueue(
                client,
                namespace,
                name,
                consumer=consumer,
                batch_size=exporter.max_batch_size,
                visibility_timeout=visibility_timeout,
                max_deliveries=max_deliveries,
                block=block,
                dead_letter=dead,
                last_error=lambda: last_error(name),
            )
            dead.queues[name] = queue
            return queue

        tracker = Tracker(
            exporters,
            dead_letter=dead,
            queue_factory=make_queue,
            flush_interval=flush_interval,
            shutdown_timeout=shutdown_timeout,
            retry=retry,
            register_atexit=False,
        )
        tracker_box.append(tracker)
        previous = _install_signals(stop) if handle_signals else {}
        _logger.info(
            "trackware: worker %s delivering %s from namespace %r (visibility "
            "timeout %g s, max deliveries %d)",
            consumer,
            ", ".join(sorted(queues)),
            namespace,
            visibility_timeout,
            max_deliveries,
        )
        try:
            for queue in queues.values():
                queue.wake()
            while not stop.wait(0.5):
                pass
            _logger.info("trackware: worker %s stopping", consumer)
            for queue in queues.values():
                queue.stop_reading()
            tracker.shutdown(shutdown_timeout)
            for queue in queues.values():
                queue.close()
            stats: dict[str, t.Any] = dict(tracker.stats())
            _logger.info(
                "trackware: worker %s stopped (%d entr(ies) handed back to the group)",
                consumer,
                sum(q.handed_back for q in queues.values()),
            )
            return stats
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    finally:
        if limiter is not None:
            limiter.stop_sharing()
        client.close()


def _install_signals(stop: threading.Event) -> dict[int, t.Any]:
    """SIGTERM/SIGINT set ``stop``; a second one exits at once."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: t.Any) -> None:
        if stop.is_set():
            # Entries held are taken over after the visibility timeout.
            os._exit(128 + signum)
        stop.set()

    previous: dict[int, t.Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handler)
    return previous


# --- status --------------------------------------------------------------------------


def status(client: t.Any, namespace: str = "default") -> dict[str, t.Any]:
    """Per destination of ``namespace``: stream length, backlog (entries the
    group has not read), pending count, age of the oldest pending entry,
    consumers with their idle time, dead letters and trimmed entries."""
    from . import _streams

    prefix = _streams.stream_key(namespace, "")
    names: set[str] = set()
    for key in client.scan_iter(match=prefix + "*", count=1000, _type="stream"):
        name = key.decode() if isinstance(key, bytes) else str(key)
        name = name[len(prefix) :]
        if name.endswith(":dead"):
            name = name[: -len(":dead")]
        if ":" not in name:
            names.add(name)
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    out: dict[str, t.Any] = {}
    for name in sorted(names):
        key = _streams.stream_key(namespace, name)
        info: dict[str, t.Any] = {
            "stream_length": client.xlen(key),
            "backlog": None,
            "pending": 0,
            "oldest_pending_age": None,
            "consumers": [],
            "dead_letters": client.xlen(_streams.dead_key(namespace, name)),
            "trimmed": int(client.get(_streams.trimmed_key(namespace, name)) or 0),
        }
        groups = client.xinfo_groups(key) if client.exists(key) else []
        group = next((g for g in groups if _str(g.get("name")) == _streams.GROUP), None)
        if group is not None:
            info["pending"] = int(group.get("pending") or 0)
            lag = group.get("lag")
            info["backlog"] = None if lag is None else int(lag)
            if info["pending"]:
                summary = client.xpending(key, _streams.GROUP)
                oldest = _str(summary.get("min") or "")
                if oldest:
                    info["oldest_pending_age"] = round(
                        max(0, now_ms - int(oldest.split("-")[0])) / 1000, 3
                    )
            for c in client.xinfo_consumers(key, _streams.GROUP):
                info["consumers"].append(
                    {
                        "name": _str(c.get("name")),
                        "pending": int(c.get("pending") or 0),
                        "idle": round(int(c.get("idle") or 0) / 1000, 3),
                    }
                )
        else:
            info["backlog"] = info["stream_length"]
        out[name] = info
    return {"namespace": namespace, "destinations": out}


def _str(value: t.Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _age(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def format_status(report: dict[str, t.Any]) -> str:
    """``status()``'s report as a table for people."""
    dests = report["destinations"]
    if not dests:
        return f"no streams in namespace {report['namespace']!r}\n"
    head = (
        "destination",
        "length",
        "backlog",
        "pending",
        "oldest pending",
        "dead letters",
        "trimmed",
        "consumers",
    )
    rows = [head]
    for name, info in dests.items():
        rows.append(
            (
                name,
                str(info["stream_length"]),
                "-" if info["backlog"] is None else str(info["backlog"]),
                str(info["pending"]),
                _age(info["oldest_pending_age"]),
                str(info["dead_letters"]),
                str(info["trimmed"]),
                str(len(info["consumers"])),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]
    for name, info in dests.items():
        if info["consumers"]:
            lines.append("")
            lines.append(f"{name} consumers:")
            for c in info["consumers"]:
                lines.append(
                    f"  {c['name']}  pending {c['pending']}  idle {_age(c['idle'])}"
                )
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------


def _redis_default() -> str | None:
    return os.environ.get("TRACKWARE_REDIS_URL") or None


def _namespace_default() -> str:
    return os.environ.get("TRACKWARE_REDIS_NAMESPACE") or "default"


def _worker_command(args: argparse.Namespace) -> int:
    if not args.redis:
        print(
            "trackware worker: give --redis URL (or set TRACKWARE_REDIS_URL)",
            file=sys.stderr,
        )
        return 2
    if not logging.getLogger().handlers and not _logger.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
        )
        # One line per vendor request would drown the worker's own lines.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.path.insert(0, os.getcwd())  # --config names the app's own modules
    try:
        # The app's factory is built first: a wrong --config is reported as
        # such, never as a trackware bug.
        target = resolve(args.config)
    except ConfigurationError as exc:
        print(f"trackware worker: {_log.scrub(str(exc))[:500]}", file=sys.stderr)
        return 2
    except Exception as exc:  # the app's own module failed while importing
        text = _log.scrub(f"{type(exc).__name__}: {exc}")[:500]
        print(f"trackware worker: --config {args.config}: {text}", file=sys.stderr)
        return 2
    try:
        run(
            target,
            args.redis,
            namespace=args.namespace,
            visibility_timeout=args.visibility_timeout,
            max_deliveries=args.max_deliveries,
            shutdown_timeout=args.shutdown_timeout,
            share_rate_limits=not args.no_shared_limits,
        )
    except ConfigurationError as exc:
        text = _log.scrub(str(exc))[:500]
        print(f"trackware worker: {text}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _is_redis_error(exc):
            raise
        return _redis_failed("worker", exc)
    return 0


def _is_redis_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] == "redis"


def _redis_failed(command: str, exc: BaseException) -> int:
    """Redis refused or is away: one line (no URL: it may hold a password)."""
    text = _log.scrub(f"{type(exc).__name__}: {exc}")[:300]
    print(f"trackware {command}: Redis failed: {text}", file=sys.stderr)
    return 1


def _status_command(args: argparse.Namespace) -> int:
    if not args.redis:
        print(
            "trackware status: give --redis URL (or set TRACKWARE_REDIS_URL)",
            file=sys.stderr,
        )
        return 2
    from . import _streams

    client = _streams.connect(args.redis)
    try:
        report = status(client, args.namespace)
    except Exception as exc:
        if not _is_redis_error(exc):
            raise
        return _redis_failed("status", exc)
    finally:
        client.close()
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(format_status(report))
    return 0


def register(sub: t.Any) -> None:
    """Add ``worker`` and ``status`` to an argparse subparsers object."""
    worker = sub.add_parser(
        "worker",
        help="deliver events from Redis Streams (app processes only append)",
        description="Read the destinations' Redis streams with a consumer group "
        "and deliver them with the exporters --config builds; runs until "
        "SIGTERM/SIGINT, which finish the batch in hand (docs/worker.md).",
    )
    worker.add_argument(
        "--config",
        required=True,
        help="import path of the factory the app uses, package.module:name "
        "(a Tracker, an exporter, a list of exporters, or a callable returning one)",
    )
    worker.add_argument(
        "--redis",
        default=_redis_default(),
        help="redis://host:port/db (default: $TRACKWARE_REDIS_URL)",
    )
    worker.add_argument(
        "--namespace",
        default=_namespace_default(),
        help="stream namespace (default: $TRACKWARE_REDIS_NAMESPACE or 'default')",
    )
    worker.add_argument(
        "--visibility-timeout",
        type=positive_seconds,
        default=60.0,
        help="seconds before a dead worker's entries are taken over (60)",
    )
    worker.add_argument(
        "--max-deliveries",
        type=positive_int,
        default=5,
        help="hand-outs of an entry before it is dead-lettered (5)",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds SIGTERM allows to finish the batch in hand (10)",
    )
    worker.add_argument(
        "--no-shared-limits",
        action="store_true",
        help="pace vendor rate limits per process instead of fleet-wide in Redis",
    )
    worker.set_defaults(func=_worker_command)

    stat = sub.add_parser(
        "status",
        help="the Redis streams: backlog, pending, consumers, dead letters",
        description="Per destination: stream length, backlog, pending entries, "
        "age of the oldest pending one, consumers with their idle time, "
        "dead letters and trimmed entries.",
    )
    stat.add_argument(
        "--redis",
        default=_redis_default(),
        help="redis://host:port/db (default: $TRACKWARE_REDIS_URL)",
    )
    stat.add_argument(
        "--namespace",
        default=_namespace_default(),
        help="stream namespace (default: $TRACKWARE_REDIS_NAMESPACE or 'default')",
    )
    stat.add_argument("--json", action="store_true", help="JSON for scripts")
    stat.set_defaults(func=_status_command)


def main(argv: t.Sequence[str] | None = None) -> int:
    """``trackware worker|status`` on their own (until the main command line
    registers them)."""
    parser = argparse.ArgumentParser(prog="trackware")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigurationError as exc:
        print(f"trackware {args.command}: {_log.scrub(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
