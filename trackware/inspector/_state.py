"""What the inspector sidecar remembers: bounded rings of events and outcomes,
the processes feeding it, their destination snapshots, and replay commands.

Everything is bounded: :data:`MAX_EVENTS` events (the oldest go first),
:data:`MAX_PROCESSES` processes, :data:`MAX_HISTORY` outcomes per event and
destination, commands and results per process.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
import typing as t

__all__ = ["InspectorState"]

MAX_EVENTS = 2_000
MAX_PROCESSES = 256
MAX_HISTORY = 10
MAX_COMMANDS = 32
MAX_RESULTS = 64
#: A process not heard of for this long leaves the destination panels.
PROCESS_TTL = 15.0
#: Server-sent-event messages waiting per browser, at most (a slower browser
#: is cut off; its EventSource reconnects and reloads the list).
SUBSCRIBER_BACKLOG = 2_000

#: How final an outcome is: a later record only replaces one of lower rank.
_RANK = {
    "queued": 0,
    "retried": 1,
    "not_applicable": 2,
    "filtered": 2,
    "sent": 3,
    "replayed": 4,
    "rejected": 3,
    "dropped": 3,
    "dead_lettered": 3,
}
_CIRCUIT_RANK = {"open": 2, "half_open": 1, "half-open": 1}

Json = dict[str, t.Any]


class InspectorState:
    """The sidecar's memory; every method is thread-safe."""

    def __init__(self, *, max_events: int = MAX_EVENTS) -> None:
        self._lock = threading.Lock()
        self.max_events = max_events
        self.events: collections.OrderedDict[str, Json] = collections.OrderedDict()
        self.processes: collections.OrderedDict[str, Json] = collections.OrderedDict()
        self.commands: dict[str, list[Json]] = {}
        self.results: collections.OrderedDict[str, Json] = collections.OrderedDict()
        self._subscribers: list[queue.Queue[tuple[str, Json] | None]] = []
        self._ids = itertools.count(1)
        self.received = 0

    # --- browsers --------------------------------------------------------------------
    def subscribe(self) -> queue.Queue[tuple[str, Json] | None]:
        q: queue.Queue[tuple[str, Json] | None] = queue.Queue(SUBSCRIBER_BACKLOG)
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[tuple[str, Json] | None]) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def _publish(self, kind: str, data: Json) -> None:
        """(lock held) Hand a message to every browser; cut off one that lags."""
        for q in list(self._subscribers):
            try:
                q.put_nowait((kind, data))
            except queue.Full:
                self._subscribers.remove(q)
                try:
                    q.get_nowait()
                    q.put_nowait(None)  # tells its stream to end
                except (queue.Empty, queue.Full):  # pragma: no cover
                    pass

    # --- apps ------------------------------------------------------------------------
    def ingest(self, payload: Json) -> list[Json]:
        """Take one POST of an app; return the commands waiting for it."""
        process = payload.get("process")
        if not isinstance(process, dict) or not isinstance(process.get("id"), str):
            raise ValueError("no process")
        pid = process["id"]
        records = payload.get("records") or []
        results = payload.get("results") or []
        if not isinstance(records, list) or not isinstance(results, list):
            raise ValueError("records and results must be lists")
        now = time.time()
        with self._lock:
            entry = self.processes.get(pid)
            if entry is None:
                entry = self.processes[pid] = {"process": process, "stats": None}
                while len(self.processes) > MAX_PROCESSES:
                    gone, _ = self.processes.popitem(last=False)
                    self.commands.pop(gone, None)
            entry["last_seen"] = now
            entry["client"] = payload.get("client")
            for record in records:
                if isinstance(record, dict):
                    self._record(pid, process, record)
            for result in results:
                if isinstance(result, dict):
                    self._result(pid, result)
            self.received += len(records)
            return self.commands.pop(pid, [])

    def _record(self, pid: str, process: Json, record: Json) -> None:
        kind = record.get("kind")
        if kind == "event":
            self._event(pid, process, record)
        elif kind == "outcome":
            self._outcome(pid, process, record)
        elif kind == "outcomes":
            self._batch(pid, process, record)
        elif kind == "stats":
            self.processes[pid]["stats"] = record
            self._publish("destinations", {"destinations": self._destinations()})

    def _entry(self, event_id: str, pid: str, process: Json) -> tuple[Json, bool]:
        entry = self.events.get(event_id)
        if entry is not None:
            return entry, False
        entry = {
            "event_id": event_id,
            "name": None,
            "timestamp": None,
            "user_id": None,
            "anonymous_id": None,
            "session_id": None,
            "process": pid,
            "app": process.get("app"),
            "pid": process.get("pid"),
            "host": process.get("host"),
            "data": None,
            "outcomes": {},
            "seq": next(self._ids),
        }
        self.events[event_id] = entry
        while len(self.events) > self.max_events:
            self.events.popitem(last=False)
        return entry, True

    def _event(self, pid: str, process: Json, record: Json) -> None:
        event_id = record.get("event_id")
        if not isinstance(event_id, str):
            return
        entry, new = self._entry(event_id, pid, process)
        for key in ("name", "timestamp", "user_id", "anonymous_id", "session_id"):
            entry[key] = record.get(key)
        data = record.get("data")
        entry["data"] = data
        properties = data.get("properties") if isinstance(data, dict) else None
        if isinstance(properties, dict) and isinstance(properties.get("path"), str):
            entry["path"] = properties["path"][:500]
        routing = record.get("routing") or {}
        if isinstance(routing, dict):
            for dest, outcome in routing.items():
                self._set_outcome(entry, str(dest), {"outcome": outcome})
        self._publish(
            "event" if new or entry.get("placeholder") else "update", _summary(entry)
        )
        entry.pop("placeholder", None)

    def _outcome(self, pid: str, process: Json, record: Json) -> None:
        event_id = record.get("event_id")
        if not isinstance(event_id, str):
            return  # a drop of an event never built: counted in the snapshot
        entry, new = self._entry(event_id, pid, process)
        if new:
            summary = record.get("event") or {}
            entry["name"] = summary.get("name")
            entry["user_id"] = summary.get("user_id")
            entry["placeholder"] = True
        dest = record.get("destination")
        outcome = {
            "outcome": record.get("outcome"),
            "reason": record.get("reason"),
            "status": record.get("status"),
            "detail": record.get("detail"),
            "exchanges": record.get("exchanges") or [],
            "time": time.time(),
        }
        if dest is None:
            # Dropped before any destination (sampled, invalid, hook...).
            entry["dropped"] = outcome
        else:
            self._set_outcome(entry, str(dest), outcome)
        self._publish("event" if new else "update", _summary(entry))

    def _batch(self, pid: str, process: Json, record: Json) -> None:
        """One batch's outcome: its exchanges are shared by its events (each
        keeps those naming it, or all)."""
        shared = record.get("exchanges")
        shared = shared if isinstance(shared, list) else []
        for item in record.get("events") or []:
            if not isinstance(item, dict):
                continue
            picks = item.get("exchanges")
            if isinstance(picks, list):
                mine = [
                    shared[i]
                    for i in picks
                    if isinstance(i, int) and 0 <= i < len(shared)
                ]
            else:
                mine = shared
            self._outcome(
                pid,
                process,
                {
                    "event_id": item.get("event_id"),
                    "event": {"name": item.get("name"), "user_id": item.get("user_id")},
                    "destination": record.get("destination"),
                    "outcome": record.get("outcome"),
                    "reason": record.get("reason"),
                    "status": record.get("status"),
                    "exchanges": mine,
                },
            )

    def _set_outcome(self, entry: Json, dest: str, outcome: Json) -> None:
        slot = entry["outcomes"].get(dest)
        if slot is None:
            slot = entry["outcomes"][dest] = {"outcome": None, "history": []}
        new = str(outcome.get("outcome"))
        if new != "queued" or slot["outcome"] is None:
            slot["history"].append(outcome)
            del slot["history"][:-MAX_HISTORY]
        if _RANK.get(new, 0) >= _RANK.get(str(slot["outcome"]), -1):
            slot["outcome"] = new
            for key in ("reason", "status", "detail"):
                if key in outcome:
                    slot[key] = outcome[key]
            if outcome.get("exchanges"):
                slot["exchanges"] = outcome["exchanges"]

    def _result(self, pid: str, result: Json) -> None:
        command_id = result.get("id")
        if not isinstance(command_id, str):
            return
        result = dict(result)
        result["process"] = pid
        self.results[command_id] = result
        while len(self.results) > MAX_RESULTS:
            self.results.popitem(last=False)
        # Events delivered by the replay show as such in the list.
        for event_id, dest in _delivered(result.get("report")):
            entry = self.events.get(event_id)
            if entry is None:
                continue
            slot = entry["outcomes"].get(dest)
            if slot is not None and slot.get("outcome") != "replayed":
                self._set_outcome(
                    entry,
                    dest,
                    {
                        "outcome": "replayed",
                        "reason": "delivered by a replay from the dead letter",
                        "exchanges": _exchanges_with(
                            result.get("exchanges") or [], event_id
                        ),
                        "time": time.time(),
                    },
                )
                self._publish("update", _summary(entry))
        self._publish("replay", result)

    # --- the page --------------------------------------------------------------------
    def queue_replay(
        self, process: str, destination: str | None, keys: list[str]
    ) -> str:
        """Queue a replay for ``process``; its next POST picks it up."""
        with self._lock:
            if process not in self.processes:
                raise KeyError(process)
            command_id = f"r{next(self._ids)}"
            commands = self.commands.setdefault(process, [])
            commands.append(
                {
                    "id": command_id,
                    "op": "replay",
                    "destination": destination,
                    "keys": keys,
                }
            )
            del commands[:-MAX_COMMANDS]
            self.results[command_id] = {
                "id": command_id,
                "pending": True,
                "destination": destination,
                "keys": keys,
            }
            return command_id

    def result(self, command_id: str) -> Json | None:
        with self._lock:
            return self.results.get(command_id)

    def list_events(self, limit: int = 500) -> list[Json]:
        """Summaries, newest first."""
        with self._lock:
            entries = list(self.events.values())[-limit:]
        entries.sort(key=lambda e: e["seq"], reverse=True)
        return [_summary(e) for e in entries]

    def event(self, event_id: str) -> Json | None:
        with self._lock:
            entry = self.events.get(event_id)
            if entry is None:
                return None
            out = dict(entry)
            out["outcomes"] = {k: dict(v) for k, v in entry["outcomes"].items()}
            return out

    def destinations(self) -> Json:
        with self._lock:
            return self._destinations()

    def _destinations(self) -> Json:
        """(lock held) The panel rows: each destination summed over the live
        processes; dead letters by key, each with a process that can replay it."""
        now = time.time()
        rows: dict[str, Json] = {}
        procs = []
        for pid, proc in self.processes.items():
            stats = proc.get("stats")
            if stats is None or now - proc.get("last_seen", 0) > PROCESS_TTL:
                continue
            procs.append(
                {
                    "id": pid,
                    **proc["process"],
                    "client": proc.get("client"),
                    "tracked": stats.get("tracked"),
                    "dropped": stats.get("dropped") or {},
                }
            )
            for name, d in (stats.get("destinations") or {}).items():
                row = rows.setdefault(
                    name,
                    {
                        "name": name,
                        "rate": 0.0,
                        "sent": 0,
                        "rejected": 0,
                        "failed": 0,
                        "retried": 0,
                        "queue_depth": 0,
                        "in_flight": 0,
                        "dead_lettered": 0,
                        "circuit": "closed",
                        "last_error": None,
                        "processes": 0,
                        "dead_letters": {},
                        "replay": False,
                    },
                )
                row["processes"] += 1
                for key in (
                    "rate",
                    "sent",
                    "rejected",
                    "failed",
                    "retried",
                    "queue_depth",
                    "in_flight",
                    "dead_lettered",
                ):
                    value = d.get(key) or 0
                    if isinstance(value, (int, float)):
                        row[key] = round(row[key] + value, 2)
                circuit = str(d.get("circuit") or "closed")
                if _CIRCUIT_RANK.get(circuit, 0) > _CIRCUIT_RANK.get(row["circuit"], 0):
                    row["circuit"] = circuit
                if d.get("last_error"):
                    row["last_error"] = d["last_error"]
                row["replay"] = row["replay"] or bool(stats.get("replay"))
            for name, letters in (stats.get("dead_letters") or {}).items():
                known = rows.get(name)
                if known is None:
                    continue
                for letter in letters:
                    key = str(letter.get("key"))
                    if key not in known["dead_letters"]:
                        known["dead_letters"][key] = {**letter, "process": pid}
        for row in rows.values():
            row["dead_letters"] = sorted(
                row["dead_letters"].values(),
                key=lambda x: str(x.get("time")),
                reverse=True,
            )
        return {
            "destinations": sorted(rows.values(), key=lambda r: r["name"]),
            "processes": procs,
        }


def _delivered(report: t.Any) -> list[tuple[str, str]]:
    """(event id, destination) of each record a replay report says was
    delivered (``trackware._replay.ReplayReport`` as JSON)."""
    if not isinstance(report, dict):
        return []
    out = []
    for item in report.get("outcomes") or []:
        if isinstance(item, dict) and item.get("outcome") == "delivered":
            event_id, dest = item.get("event_id"), item.get("destination")
            if isinstance(event_id, str) and isinstance(dest, str):
                out.append((event_id, dest))
    return out


def _exchanges_with(exchanges: list[t.Any], event_id: str) -> list[t.Any]:
    """The exchanges whose request body names ``event_id`` (else all)."""
    mine = [
        x
        for x in exchanges
        if isinstance(x, dict) and event_id in str(x.get("request_body") or "")
    ]
    return mine or exchanges


def _summary(entry: Json) -> Json:
    return {
        "event_id": entry["event_id"],
        "name": entry.get("name"),
        "timestamp": entry.get("timestamp"),
        "user_id": entry.get("user_id"),
        "session_id": entry.get("session_id"),
        "path": entry.get("path"),
        "app": entry.get("app"),
        "pid": entry.get("pid"),
        "seq": entry.get("seq"),
        "dropped": (entry.get("dropped") or {}).get("reason"),
        "outcomes": {k: v.get("outcome") for k, v in entry["outcomes"].items()},
    }
