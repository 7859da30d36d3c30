"""The Event: one immutable record of something that happened.

Events are built on the caller's thread, so construction is kept cheap: an
``Event`` is a tuple subclass (immutable, allocated in one step), its id is
kept as 128 random bits and formatted as a UUID string only when first read,
and its time is a float turned into an aware UTC ``datetime`` on demand.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import json
import math
import random
import time
import typing as t
import uuid

from .exceptions import InvalidEventError

__all__ = ["Event", "JSONValue", "new_event_id"]

JSONValue: t.TypeAlias = (
    "str | int | float | bool | None | list[JSONValue] | dict[str, JSONValue]"
)

# random.getrandbits is re-seeded by CPython in every forked child (the random
# module registers an at-fork hook), so workers never repeat each other's ids;
# it costs a fraction of uuid.uuid4(), which makes a syscall per id.
_fast_bits = random.getrandbits
_UUID4_MASK = 0xFFFFFFFFFFFF0FFF3FFFFFFFFFFFFFFF
_UUID4_BITS = 0x00000000000040008000000000000000


def _format_id(bits: int) -> str:
    h = ((bits & _UUID4_MASK) | _UUID4_BITS).to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_event_id() -> str:
    """Return a new random (version 4) UUID string."""
    return _format_id(_fast_bits(128))


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_UTC = _dt.timezone.utc


class Event(tuple):  # type: ignore[type-arg]
    """An immutable tracked event.

    Attributes:
        event_id: a UUID string, fixed when the event is created and kept
            across retries and replays (it becomes each vendor's idempotency
            key where one exists).
        name: what happened, e.g. ``"offer.activated"``.
        properties: what the app said about it (JSON-like values).
        user_id, anonymous_id, email, phone: who did it.
        traits: attributes of that person (from :func:`trackware.identify`).
        context: facts about the request and session (path, route, session id...).
        timestamp: when it happened, an aware UTC ``datetime``.

    Build events with :meth:`trackware.Tracker.track`; use :meth:`replace` to
    derive a changed copy (for example in a ``before_send`` hook). Fields
    cannot be reassigned. ``properties``, ``traits`` and ``context`` are the
    event's own copies of what was tracked (later changes by the caller do not
    reach them); treat them as read-only, as the same event may be in several
    destinations' queues.
    """

    __slots__ = ()

    def __new__(
        cls,
        name: str,
        properties: t.Mapping[str, t.Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        traits: t.Mapping[str, t.Any] | None = None,
        context: t.Mapping[str, t.Any] | None = None,
        timestamp: float | _dt.datetime | None = None,
        event_id: str | None = None,
    ) -> Event:
        if timestamp is None:
            ts: float = time.time()
        elif isinstance(timestamp, _dt.datetime):
            if timestamp.tzinfo is None:
                raise InvalidEventError(
                    "timestamp must be timezone-aware (e.g. datetime.now(timezone.utc))"
                )
            ts = timestamp.timestamp()
        else:
            ts = float(timestamp)
        return tuple.__new__(
            cls,
            (
                event_id if event_id is not None else _fast_bits(128),
                name,
                dict(properties) if properties else {},
                user_id,
                anonymous_id,
                email,
                phone,
                dict(traits) if traits else {},
                dict(context) if context else {},
                ts,
                512,
            ),
        )

    # --- fields ----------------------------------------------------------------------
    @property
    def event_id(self) -> str:
        raw = tuple.__getitem__(self, 0)
        return raw if type(raw) is str else _format_id(raw)

    @property
    def name(self) -> str:
        return t.cast(str, tuple.__getitem__(self, 1))

    @property
    def properties(self) -> dict[str, t.Any]:
        return t.cast("dict[str, t.Any]", tuple.__getitem__(self, 2))

    @property
    def user_id(self) -> str | None:
        return t.cast("str | None", tuple.__getitem__(self, 3))

    @property
    def anonymous_id(self) -> str | None:
        return t.cast("str | None", tuple.__getitem__(self, 4))

    @property
    def email(self) -> str | None:
        return t.cast("str | None", tuple.__getitem__(self, 5))

    @property
    def phone(self) -> str | None:
        return t.cast("str | None", tuple.__getitem__(self, 6))

    @property
    def traits(self) -> dict[str, t.Any]:
        return t.cast("dict[str, t.Any]", tuple.__getitem__(self, 7))

    @property
    def context(self) -> dict[str, t.Any]:
        return t.cast("dict[str, t.Any]", tuple.__getitem__(self, 8))

    @property
    def unix_time(self) -> float:
        """Seconds since the epoch (float)."""
        return t.cast(float, tuple.__getitem__(self, 9))

    @property
    def timestamp(self) -> _dt.datetime:
        return _EPOCH + _dt.timedelta(seconds=tuple.__getitem__(self, 9))

    @property
    def size(self) -> int:
        """Approximate encoded size in bytes (used for the queue's byte bound)."""
        return t.cast(int, tuple.__getitem__(self, 10))

    # --- behaviour -------------------------------------------------------------------
    def replace(self, **changes: t.Any) -> Event:
        """Return a copy with some fields changed (the id stays unless given)."""
        fields: dict[str, t.Any] = {
            "name": self.name,
            "properties": self.properties,
            "user_id": self.user_id,
            "anonymous_id": self.anonymous_id,
            "email": self.email,
            "phone": self.phone,
            "traits": self.traits,
            "context": self.context,
            "timestamp": self.unix_time,
            "event_id": self.event_id,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"Event has no field(s) {sorted(unknown)}")
        fields.update(changes)
        return Event(**fields)

    def to_dict(self) -> dict[str, t.Any]:
        """The event as plain JSON-ready data (values not yet encoded)."""
        raw, name, props, uid, anon, email, phone, traits, ctx, ts, _ = self
        return {
            "event_id": raw if type(raw) is str else _format_id(raw),
            "name": name,
            "timestamp": iso_time(ts),
            "user_id": uid,
            "anonymous_id": anon,
            "email": email,
            "phone": phone,
            "traits": traits,
            "properties": props,
            "context": ctx,
        }

    @classmethod
    def from_dict(cls, data: t.Mapping[str, t.Any]) -> Event:
        """Rebuild an event from :meth:`to_dict` output (dead letters, replays)."""
        ts = data.get("timestamp")
        when: float | _dt.datetime | None
        if isinstance(ts, str):
            when = _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        else:
            when = t.cast("float | None", ts)
        return cls(
            str(data["name"]),
            data.get("properties") or {},
            user_id=data.get("user_id"),
            anonymous_id=data.get("anonymous_id"),
            email=data.get("email"),
            phone=data.get("phone"),
            traits=data.get("traits") or {},
            context=data.get("context") or {},
            timestamp=when,
            event_id=data.get("event_id"),
        )

    def __repr__(self) -> str:
        return f"Event(name={self.name!r}, event_id={self.event_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.event_id == other.event_id and tuple.__eq__(self[1:10], other[1:10])

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __reduce__(self) -> tuple[t.Any, ...]:
        return (Event.from_dict, (self.to_dict(),))


_sec_cache: tuple[int, str] = (-1, "")
_ms_cache: tuple[int, str] = (-1, "")


def iso_time(unix: float) -> str:
    """Format epoch seconds as ISO-8601 UTC with millisecond precision and ``Z``."""
    global _sec_cache, _ms_cache
    # Events arrive in bursts: the text is cached per millisecond and its date
    # part per second (benign races: every thread computes the same text for
    # the same key, and the caches are swapped as whole tuples).
    key = math.floor(unix * 1000)
    cached = _ms_cache
    if cached[0] == key:
        return cached[1]
    sec, ms = divmod(key, 1000)
    cached_sec, prefix = _sec_cache
    if sec != cached_sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _sec_cache = (sec, prefix)
    text = f"{prefix}.{ms:03d}Z"
    _ms_cache = (key, text)
    return text


# --- property validation ------------------------------------------------------------

_SCALARS = frozenset({str, int, float, bool, type(None)})
#: Scalars that need no further check (floats must also be finite).
_PLAIN = frozenset({str, int, bool, type(None)})
_RICH = (_dt.datetime, _dt.date, decimal.Decimal, uuid.UUID, enum.Enum)


class _Invalid(Exception):
    pass


def _describe(path: str, value: object) -> str:
    return (
        f"property {path!r} has unsupported type {type(value).__name__}: use str, "
        "int, float, bool, None, lists and dicts of those, datetime, date, "
        "Decimal, UUID or Enum"
    )


def _not_finite(path: str, value: object) -> _Invalid:
    return _Invalid(
        f"property {path!r} is {value!r}: JSON has no NaN or infinity; "
        "send None or a string instead"
    )


def _check(value: object, path: str, depth: int) -> int:
    """Validate a nested value; return its approximate encoded size."""
    tp = type(value)
    if tp is str:
        return len(value) + 2  # type: ignore[arg-type]
    if tp in _PLAIN:
        return 8
    if tp is float:
        if value - value != 0.0:  # type: ignore[operator]  # NaN or +-inf
            raise _not_finite(path, value)
        return 8
    if tp is dict or isinstance(value, dict):
        if depth > 32:
            raise _Invalid(f"property {path!r} is nested more than 32 levels deep")
        size = 2
        for k, v in value.items():  # type: ignore[attr-defined]
            if type(k) is not str:
                raise _Invalid(f"property {path!r} has a non-string key {k!r}")
            size += len(k) + 4 + _check(v, f"{path}.{k}", depth + 1)
        return size
    if tp is list or tp is tuple:
        if depth > 32:
            raise _Invalid(f"property {path!r} is nested more than 32 levels deep")
        size = 2
        for i, v in enumerate(value):  # type: ignore[arg-type]
            size += 1 + _check(v, f"{path}[{i}]", depth + 1)
        return size
    if isinstance(value, _RICH):
        if isinstance(value, decimal.Decimal) and not value.is_finite():
            raise _not_finite(path, value)
        if isinstance(value, enum.Enum):
            return _check(value.value, path, depth)
        return 40
    if isinstance(value, float):  # subclasses (e.g. numpy.float64)
        if not math.isfinite(value):
            raise _not_finite(path, value)
        return 16
    if isinstance(value, (int, str)):  # subclasses (IntEnum handled above)
        return 16
    raise _Invalid(_describe(path, value))


def check_properties(props: t.Mapping[str, t.Any]) -> int:
    """Validate ``props``; return the approximate size or raise ``_Invalid``."""
    size = 2
    for k, v in props.items():
        if type(k) is not str:
            raise _Invalid(f"property keys must be strings, got {k!r}")
        tv = type(v)
        if tv is str:
            size += len(k) + len(v) + 6
        elif tv in _PLAIN:
            size += len(k) + 12
        else:
            size += len(k) + 4 + _check(v, k, 1)
    return size


def valid_subset(
    props: t.Mapping[str, t.Any] | None,
) -> tuple[dict[str, t.Any], list[str]]:
    """The entries of ``props`` that can be sent, and why the others cannot."""
    if not props:
        return {}, []
    try:
        check_properties(props)
        return dict(props), []
    except _Invalid:
        pass
    kept: dict[str, t.Any] = {}
    reasons: list[str] = []
    for k, v in props.items():
        try:
            check_properties({k: v})
        except _Invalid as exc:
            reasons.append(str(exc))
        else:
            kept[k] = v
    return kept, reasons


# --- JSON encoding (worker side) ----------------------------------------------------


def _default(value: object) -> object:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        # A JSON number: vendors take numbers for amounts. Exact decimals with
        # more precision than a double carries are rounded here.
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(
    default=_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def dumps(obj: object) -> str:
    """Compact JSON with trackware's handling of dates, decimals, UUIDs and enums."""
    return _encoder.encode(obj)


def to_jsonable(value: object) -> t.Any:
    """Convert rich values (datetime, Decimal, ...) to JSON types, recursively."""
    tp = type(value)
    if tp in _SCALARS:
        return value
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, (int, float, str)):
        return value
    return _default(value)
