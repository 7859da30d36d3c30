"""The in-app side of ``trackware inspect``: copies of events, vendor payloads and
outcomes, sent off the request thread to the inspector sidecar.

:func:`attach` (the tracker calls it for ``inspector=URL``) returns an
:class:`InspectorClient`. It listens to trackware's signals (each tracked
event, already redacted; drops; delivered batches; failures with retry or
final) and to :mod:`trackware._tap` (each HTTP request an exporter made and
the vendor's answer). The receivers only append to a bounded buffer; a daemon
thread of its own turns the buffer into JSON (redacting what the exporters
would: registered secrets, credential-like keys, query strings, every header
but a few harmless ones), works out which destinations did not take an event
(not applicable, filtered), and POSTs batches to the sidecar, with a
per-destination snapshot of ``tracker.stats()`` every second. A slow, hung or
refusing inspector costs the app counted drops (``client.stats()``) and one
rate-limited log line, never a blocked or failed ``track()``.

The sidecar answers each POST with commands for this process (a dead-letter
replay the page asked for); the client runs them on a thread of its own and
reports the result in a later POST. See docs/inspector.md.
"""

from __future__ import annotations

import collections
import dataclasses
import http.client
import importlib
import itertools
import json
import os
import socket
import ssl
import sys
import threading
import time
import typing as t
import urllib.parse
import weakref

from . import _lifecycle, _log, _tap, signals
from ._event import Event
from ._json import dumps
from ._redact import REDACTED, Redactor
from ._settle import count_value
from .exporters._base import stable_uuid
from .exporters._urls import redact_url

if t.TYPE_CHECKING:
    from ._tracker import Tracker

__all__ = ["InspectorClient", "attach"]

#: Records waiting to be posted, at most (beyond: counted as dropped).
MAX_BUFFER = 5_000
#: Records per POST, at most.
BATCH = 500
#: How often the sending thread looks at the buffer, seconds.
INTERVAL = 0.1
#: How often a stats snapshot is sent, seconds.
SNAPSHOT_INTERVAL = 1.0
#: Socket timeout of a POST (connect, send, read), seconds.
TIMEOUT = 2.0
#: The most of a request or response body kept, characters.
BODY_MAX = 64 * 1024
#: The largest POST, bytes (the sidecar takes up to 8 MiB): more is split.
POST_MAX = 4 * 1024 * 1024
#: Exchanges remembered per thread until a signal claims them.
EXCHANGES_PER_THREAD = 8
#: Dead letters listed per destination in a snapshot, at most.
DEAD_LETTERS_SHOWN = 50
#: Headers shown as they are (every other header is left out).
SAFE_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "user-agent",
        "accept",
        "retry-after",
        "date",
        "x-request-id",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }
)

_clients: weakref.WeakSet[InspectorClient] = weakref.WeakSet()
_redactor = Redactor()
_Item = tuple[t.Any, ...]


def attach(tracker: Tracker, url: str, *, token: str | None = None) -> InspectorClient:
    """Send copies of ``tracker``'s events and outcomes to the inspector at
    ``url`` (``http://127.0.0.1:8969``). ``token``: the bearer token of an
    inspector bound to another interface. Never raises for an unreachable
    inspector (that only costs counted drops)."""
    client = InspectorClient(tracker, url, token=token)
    client.start()
    return client


def _app_name() -> str:
    """A short name for this process's app: the WSGI/ASGI ``module:app`` a
    server was started with, else the program's name."""
    argv = [a for a in sys.argv if isinstance(a, str)]
    for arg in reversed(argv[1:]):
        if ":" in arg and not arg.startswith("-") and "/" not in arg:
            return arg[:100]
    if argv:
        return os.path.basename(argv[0])[:100] or "python"
    return "python"


class _Pending(threading.local):
    """The exchanges a thread made since its last delivery signal."""

    def __init__(self) -> None:
        self.exchanges: list[_tap.Exchange] = []
        #: A signal has claimed them: the next exchange starts a new list.
        self.claimed = False


class InspectorClient:
    """Feeds one tracker's events and outcomes to an inspector (see the module)."""

    def __init__(
        self,
        tracker: Tracker,
        url: str,
        *,
        token: str | None = None,
        max_buffer: int = MAX_BUFFER,
        timeout: float = TIMEOUT,
    ) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            parts = urllib.parse.urlsplit("")
        #: Why the URL cannot be used (then the client does nothing): a
        #: development aid misconfigured never stops the app.
        self.invalid = (
            None
            if parts.scheme in ("http", "https") and parts.hostname
            else "the inspector URL must be http(s)://host:port"
        )
        self.url = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", "")
        )
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path.rstrip("/") + "/api/ingest"
        self._token = token
        if token:
            _log.register_secret(token)
        self._timeout = timeout
        self._max = max_buffer
        self._tracker = weakref.ref(tracker)
        self._closing = threading.Event()
        self._closed = False
        self._started = time.time()
        self._init_state()
        self._connected = False
        _clients.add(self)

    def _init_state(self) -> None:
        """Everything a forked child must have afresh."""
        self._buffer: collections.deque[_Item] = collections.deque()
        self._pending = _Pending()
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._thread: threading.Thread | None = None
        self._dropped: collections.Counter[str] = collections.Counter()
        self._drops = itertools.count()
        self._posted = 0
        self._records_sent = 0
        self._failures = 0
        self._retry_at = 0.0
        self._results: list[dict[str, t.Any]] = []
        self._last_snapshot = 0.0
        self._last_dead_letters = 0.0
        self._dead_letters: dict[str, list[dict[str, t.Any]]] = {}
        self._rates: dict[str, tuple[float, int]] = {}
        self.process = {
            "id": f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000)}",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "app": _app_name(),
        }

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Listen to the tracker's signals and the HTTP tap; start the thread."""
        tracker = self._tracker()
        if self.invalid is not None:
            self._closed = True
            _log.error("inspector:url", "trackware: %s; it is off", self.invalid)
            return
        if tracker is None:
            return
        signals.event_tracked.connect(self._on_tracked, sender=tracker, weak=False)
        signals.event_dropped.connect(self._on_dropped, sender=tracker, weak=False)
        signals.batch_exported.connect(self._on_exported, sender=tracker, weak=False)
        signals.export_failed.connect(self._on_failed, sender=tracker, weak=False)
        _tap.add(self._on_exchange)
        self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._run, name="trackware-inspector", daemon=True
        )
        self._thread = thread
        thread.start()

    def close(self, deadline: float | None = None) -> None:
        """Post what is buffered (until ``deadline``, a ``time.monotonic()``
        value; default: one timeout from now), then stop listening. Never
        raises; idempotent."""
        try:
            if self._closed:
                return
            self._closed = True
            self._disconnect()
            self._closing.set()
            end = deadline if deadline is not None else time.monotonic() + self._timeout
            thread = self._thread
            # The last records go out unless the inspector is failing: then
            # the app's exit waits for nothing (the thread is a daemon).
            if (
                thread is not None
                and thread is not threading.current_thread()
                and not self._failures
            ):
                thread.join(max(0.0, min(end - time.monotonic(), self._timeout)))
            conn = self._conn
            if conn is not None:
                conn.close()
        except Exception:  # pragma: no cover - never let shutdown fail
            _log.error("inspector:close", "trackware: closing the inspector client")

    def _disconnect(self) -> None:
        signals.event_tracked.disconnect(self._on_tracked)
        signals.event_dropped.disconnect(self._on_dropped)
        signals.batch_exported.disconnect(self._on_exported)
        signals.export_failed.disconnect(self._on_failed)
        _tap.remove(self._on_exchange)

    def _after_fork(self) -> None:
        """In a forked child: own buffer, thread and connection (the parent's
        records stay the parent's)."""
        self._init_state()
        self._closing = threading.Event()
        if not self._closed:
            self._start_thread()

    def stats(self) -> dict[str, t.Any]:
        """What the client did: records posted, POSTs, drops by reason."""
        dropped = dict(self._dropped)
        lost = count_value(self._drops)
        if lost:
            dropped["buffer_full"] = dropped.get("buffer_full", 0) + lost
        return {
            "posted": self._posted,
            "records": self._records_sent,
            "buffered": len(self._buffer),
            "failures": self._failures,
            "dropped": dropped,
        }

    # --- receivers (the app's and the workers' threads: append only) ---------------
    def _put(self, item: _Item) -> None:
        buffer = self._buffer
        if len(buffer) >= self._max:
            next(self._drops)
            return
        buffer.append(item)

    def _on_tracked(self, sender: t.Any, *, event: Event, **_: t.Any) -> None:
        self._put(("event", event))

    def _on_dropped(
        self,
        sender: t.Any,
        *,
        event: Event | None = None,
        reason: str = "",
        destination: str | None = None,
        detail: str | None = None,
        **_: t.Any,
    ) -> None:
        self._put(("dropped", event, reason, destination, detail))

    def _claim(self) -> list[_tap.Exchange]:
        pending = self._pending
        pending.claimed = True
        return list(pending.exchanges)

    def _on_exported(
        self, sender: t.Any, *, destination: str, events: list[Event], **_: t.Any
    ) -> None:
        self._put(("sent", destination, list(events), self._claim()))

    def _on_failed(
        self,
        sender: t.Any,
        *,
        destination: str,
        events: list[Event],
        reason: str = "",
        status: int | None = None,
        final: bool = False,
        **_: t.Any,
    ) -> None:
        item = ("failed", destination, list(events), self._claim(), reason, status)
        self._put((*item, final))

    def _on_exchange(self, exchange: _tap.Exchange) -> None:
        pending = self._pending
        if pending.claimed:
            pending.exchanges = []
            pending.claimed = False
        exchanges = pending.exchanges
        exchanges.append(exchange)
        if len(exchanges) > EXCHANGES_PER_THREAD:
            del exchanges[0]

    # --- the sending thread ----------------------------------------------------------
    def _run(self) -> None:
        closing = self._closing
        while True:
            stop = closing.wait(INTERVAL)
            try:
                self._cycle(final=stop)
            except Exception:  # pragma: no cover - defensive: never die
                _log.error(
                    "inspector:cycle",
                    "trackware: inspector client internal error",
                    exc_info=True,
                )
            if stop or self._tracker() is None:
                return

    def _cycle(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if now < self._retry_at and not final:
            return
        records: list[dict[str, t.Any]] = []
        buffer = self._buffer
        while buffer and len(records) < BATCH:
            try:
                item = buffer.popleft()
            except IndexError:  # pragma: no cover - emptied meanwhile
                break
            try:
                records.extend(self._records(item))
            except Exception:
                _log.error(
                    "inspector:record",
                    "trackware: inspector client could not describe a record",
                    exc_info=True,
                )
        if now - self._last_snapshot >= SNAPSHOT_INTERVAL or final:
            self._last_snapshot = now
            snapshot = self._snapshot()
            if snapshot is not None:
                records.append(snapshot)
        with self._lock:
            results, self._results = self._results, []
        if not records and not results:
            return
        self._post(records, results)

    def _post(self, records: list[dict[str, t.Any]], results: list[t.Any]) -> None:
        """POST ``records`` (in parts when too large for one request)."""
        payload = {
            "process": self.process,
            "records": records,
            "results": results,
            "client": self.stats(),
        }
        try:
            body = _log.scrub(dumps(payload)).encode("utf-8")
        except Exception:
            self._count_lost(_weight(records), "unencodable")
            return
        if len(body) > POST_MAX and len(records) > 1:
            mid = len(records) // 2
            self._post(records[:mid], results)
            self._post(records[mid:], [])
            return
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            conn = self._connection()
            conn.request("POST", self._path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read(1 << 20)
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            self._failed(_weight(records), f"unreachable ({type(exc).__name__})")
            return
        if status != 200:
            self._failed(_weight(records), f"refused (HTTP {status})")
            return
        self._posted += 1
        self._records_sent += _weight(records)
        if self._failures:
            _log.logger.info("trackware: the inspector at %s answers again", self.url)
        self._failures = 0
        self._handle_answer(answer)

    def _failed(self, lost: int, why: str) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._failures += 1
        self._count_lost(lost, why.split(" ", 1)[0])
        # Back off (0.5 s doubling up to 10 s); the buffer keeps filling up to
        # its bound meanwhile (beyond it: counted drops).
        self._retry_at = time.monotonic() + min(10.0, 0.5 * 2 ** (self._failures - 1))
        _log.warn(
            "inspector:unreachable",
            "trackware: the inspector at %s is %s; %d record(s) dropped (see the "
            "inspector client's stats())",
            self.url,
            why,
            lost,
        )

    def _count_lost(self, count: int, reason: str) -> None:
        if count:
            self._dropped[reason] += count

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host,
                    self._port,
                    timeout=self._timeout,
                    context=ssl.create_default_context(),
                )
            else:
                conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
            self._conn = conn
        return conn

    # --- what is sent ----------------------------------------------------------------
    def _records(self, item: _Item) -> list[dict[str, t.Any]]:
        kind = item[0]
        if kind == "event":
            return [self._event_record(item[1])]
        if kind == "dropped":
            _, event, reason, destination, detail = item
            return [
                {
                    "kind": "outcome",
                    "event_id": event.event_id if event is not None else None,
                    "event": _summary(event) if event is not None else None,
                    "destination": destination,
                    "outcome": "dropped",
                    "reason": reason,
                    "detail": detail,
                }
            ]
        destination, events, exchanges = item[1], item[2], item[3]
        shown = [_exchange_dict(x) for x in exchanges]
        if kind == "sent":
            outcome, reason, status = "sent", None, None
        else:
            reason, status, final = item[4], item[5], item[6]
            if not final:
                outcome = "retried"
            elif reason.startswith(("retries_exhausted", "shutdown")):
                outcome = "dead_lettered"
            else:
                outcome = "rejected"
        # One record per batch: its exchanges once, each event naming the
        # ones that carried it (a batch body is not repeated per event).
        return [
            {
                "kind": "outcomes",
                "destination": destination,
                "outcome": outcome,
                "reason": reason,
                "status": status,
                "exchanges": shown,
                "events": [
                    {
                        "event_id": event.event_id,
                        "name": event.name,
                        "user_id": event.user_id,
                        "exchanges": _exchanges_of(event, exchanges),
                    }
                    for event in events
                ],
            }
        ]

    def _event_record(self, event: Event) -> dict[str, t.Any]:
        data = event.to_dict()
        routing: dict[str, str] = {}
        tracker = self._tracker()
        if tracker is not None:
            for dest in tracker.destinations:
                try:
                    if not dest.exporter.applies(event):
                        routing[dest.name] = "not_applicable"
                    elif dest.event_filter is not None and not dest.event_filter(event):
                        routing[dest.name] = "filtered"
                    else:
                        routing[dest.name] = "queued"
                except Exception:
                    routing[dest.name] = "filtered"
        context = data.get("context") or {}
        return {
            "kind": "event",
            "event_id": data["event_id"],
            "name": data["name"],
            "timestamp": data["timestamp"],
            "user_id": data["user_id"],
            "anonymous_id": data["anonymous_id"],
            "session_id": context.get("session_id"),
            "data": data,
            "routing": routing,
        }

    def _snapshot(self) -> dict[str, t.Any] | None:
        tracker = self._tracker()
        if tracker is None:
            return None
        stats = tracker.stats()
        now = time.monotonic()
        rows: dict[str, t.Any] = {}
        for name, row in stats["destinations"].items():
            sent = int(row.get("sent", 0))
            before = self._rates.get(name)
            rate = 0.0
            if before is not None and now > before[0]:
                rate = max(0.0, (sent - before[1]) / (now - before[0]))
            self._rates[name] = (now, sent)
            rows[name] = {
                "rate": round(rate, 2),
                "sent": sent,
                "rejected": row.get("rejected", 0),
                "failed": row.get("failed", 0),
                "retried": row.get("retried", 0),
                "dropped": row.get("dropped", {}),
                "queue_depth": row.get("queue_depth", 0),
                "in_flight": row.get("in_flight", 0),
                "circuit": row.get("circuit"),
                "last_error": row.get("last_error"),
                "dead_lettered": row.get("dead_lettered", 0),
            }
        if now - self._last_dead_letters >= 2 * SNAPSHOT_INTERVAL:
            self._last_dead_letters = now
            self._dead_letters = _dead_letters(tracker)
        return {
            "kind": "stats",
            "tracked": stats.get("tracked", 0),
            "dropped": stats.get("dropped", {}),
            "destinations": rows,
            "dead_letters": self._dead_letters,
            "replay": _replay_available(tracker),
        }

    # --- commands from the inspector -------------------------------------------------
    def _handle_answer(self, answer: bytes) -> None:
        try:
            data = json.loads(answer or b"{}")
        except ValueError:
            return
        commands = data.get("commands") if isinstance(data, dict) else None
        for command in commands or ():
            if isinstance(command, dict) and command.get("op") == "replay":
                threading.Thread(
                    target=self._replay,
                    args=(command,),
                    name="trackware-inspector-replay",
                    daemon=True,
                ).start()

    def _replay(self, command: dict[str, t.Any]) -> None:
        result: dict[str, t.Any] = {"id": command.get("id"), "op": "replay"}
        tracker = self._tracker()
        try:
            if tracker is None:
                raise RuntimeError("the tracker is gone")
            # (the delivery layer's replay; looked up when first needed)
            _replay: t.Any = importlib.import_module("trackware._replay")

            keys = [str(k) for k in command.get("keys") or ()]
            destination = command.get("destination")
            report = _replay.replay(
                tracker.dead_letter,
                tracker,
                destination=destination if isinstance(destination, str) else None,
                keys=keys or None,
            )
            plain = _plain(report)
            if isinstance(plain, dict) and hasattr(report, "summary"):
                plain["summary"] = str(report.summary())
            result.update(ok=True, report=plain)
        except Exception as exc:
            result.update(ok=False, error=_log.scrub(f"{type(exc).__name__}: {exc}"))
        exchanges = self._claim()
        result["exchanges"] = [_exchange_dict(x) for x in exchanges]
        self._dead_letters = _dead_letters(tracker) if tracker is not None else {}
        self._last_snapshot = 0.0  # the page sees the new list at once
        with self._lock:
            self._results.append(result)


def _after_fork_all() -> None:
    for client in list(_clients):
        client._after_fork()


_lifecycle.on_fork(_after_fork_all)


# --- helpers -------------------------------------------------------------------------


def _weight(records: list[dict[str, t.Any]]) -> int:
    """How many event copies ``records`` hold (a batch's outcomes: one per
    event)."""
    return sum(len(r["events"]) if "events" in r else 1 for r in records)


def _summary(event: Event) -> dict[str, t.Any]:
    return {"name": event.name, "user_id": event.user_id}


def _replay_available(tracker: Tracker) -> bool:
    return callable(getattr(tracker.dead_letter, "list", None))


def _dead_letters(tracker: Tracker) -> dict[str, list[dict[str, t.Any]]]:
    """The newest dead letters per destination (when the store can list)."""
    store = tracker.dead_letter
    lister = getattr(store, "list", None)
    if not callable(lister):
        return {}
    try:
        stored = list(lister())
    except Exception:
        _log.error(
            "inspector:dead-letters", "trackware: could not list the dead letters"
        )
        return {}
    out: dict[str, list[dict[str, t.Any]]] = {}
    for record in reversed(stored):
        rows = out.setdefault(str(record.destination), [])
        if len(rows) >= DEAD_LETTERS_SHOWN:
            continue
        event = record.event if isinstance(record.event, dict) else {}
        rows.append(
            {
                "key": str(record.key),
                "time": record.time,
                "reason": _log.scrub(str(record.reason))[:500],
                "status": record.status,
                "response": _log.scrub(str(record.response or ""))[:2000],
                "attempts": record.attempts,
                "event_id": event.get("event_id"),
                "event_name": event.get("name"),
            }
        )
    return out


def _plain(value: t.Any) -> t.Any:
    """A replay report (a NamedTuple, dataclass or mapping) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, Event):
        return value.event_id
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _exchanges_of(event: Event, exchanges: list[_tap.Exchange]) -> list[int] | None:
    """The indexes of the exchanges whose request carried ``event`` (its id,
    or the UUID vendors get for it); ``None`` (all of the batch's) when none
    names it."""
    if not exchanges:
        return None
    event_id = event.event_id
    ids = [event_id.encode(), stable_uuid(event_id).encode()]
    mine = [
        i for i, x in enumerate(exchanges) if any(id_ in x.request_body for id_ in ids)
    ]
    return mine or None


def _exchange_dict(exchange: _tap.Exchange) -> dict[str, t.Any]:
    return {
        "method": exchange.method,
        "url": _log.scrub(redact_url(exchange.url)),
        "request_headers": _headers(exchange.request_headers),
        "request_body": _body(exchange.request_body),
        "status": exchange.status,
        "response_headers": _headers(exchange.response_headers),
        "response_body": _body(exchange.response_body),
        "elapsed": round(exchange.elapsed, 4),
    }


def _headers(headers: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    return [(k, _log.scrub(v)) for k, v in headers if k.lower() in SAFE_HEADERS]


def _body(raw: bytes) -> str:
    """A body for display: the text with registered secrets scrubbed; a JSON
    body with the values of credential-like keys redacted (the text as sent
    when there are none)."""
    text = raw[: BODY_MAX * 4].decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return _log.scrub(text[:BODY_MAX])
    redacted, changed = _redact(data)
    if changed:
        text = json.dumps(redacted, ensure_ascii=False)
    return _log.scrub(text[:BODY_MAX])


def _redact(value: t.Any) -> tuple[t.Any, bool]:
    if isinstance(value, dict):
        changed = False
        out: dict[str, t.Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and _redactor(key) and item not in (None, ""):
                out[key] = REDACTED
                changed = True
            else:
                out[key], sub = _redact(item)
                changed = changed or sub
        return out, changed
    if isinstance(value, list):
        items = [_redact(v) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    return value, False
