"""The Event: one immutable record of something that happened.

Events are built on the caller's thread, so construction is kept cheap: an
``Event`` is a tuple subclass (immutable, allocated in one step), its id is
kept as 128 random bits and formatted as a UUID string only when first read,
and its time is a float turned into an aware UTC ``datetime`` on demand.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
import time
import typing as t
import uuid

from ._validate import (
    CONTEXT,
    END_TIMESTAMP,
    MAX_EMAIL_LENGTH,
    MAX_EVENT_BYTES,
    MAX_ID_LENGTH,
    MAX_PHONE_LENGTH,
    MIN_TIMESTAMP,
    PROPERTIES,
    TRAITS,
    Invalid,
    check_event_id,
    check_name,
    no_redaction,
    sanitize,
    text_field,
    too_large,
    unix_time,
)
from .exceptions import InvalidEventError

__all__ = ["Event", "JSONValue", "make_event", "new_event_id", "wire_dict"]

JSONValue: t.TypeAlias = (
    "str | int | float | bool | None | list[JSONValue] | dict[str, JSONValue]"
)

# random.getrandbits is re-seeded by CPython in every forked child (the random
# module registers an at-fork hook), so workers never repeat each other's ids;
# it costs a fraction of uuid.uuid4(), which makes a syscall per id.
random_bits = random.getrandbits
_UUID4_MASK = 0xFFFFFFFFFFFF0FFF3FFFFFFFFFFFFFFF
_UUID4_BITS = 0x00000000000040008000000000000000


def _format_id(bits: int) -> str:
    h = ((bits & _UUID4_MASK) | _UUID4_BITS).to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_event_id() -> str:
    """Return a new random (version 4) UUID string."""
    return _format_id(random_bits(128))


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


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
    derive a changed copy (for example in a ``before_send`` hook). Building
    one directly checks every field as ``track()`` does (the rules: the
    README's "Events"), without redaction, and raises
    :class:`InvalidEventError`. Fields cannot be reassigned. ``properties``,
    ``traits`` and ``context`` are the event's own copies of what was tracked
    (later changes by the caller do not reach them); treat them as read-only,
    as the same event may be in several destinations' queues.
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
        try:
            fields = checked(
                (
                    random_bits(128) if event_id is None else check_event_id(event_id),
                    name,
                    properties,
                    user_id,
                    anonymous_id,
                    email,
                    phone,
                    traits,
                    context,
                    time.time() if timestamp is None else unix_time(timestamp),
                    0,
                ),
                no_redaction,
                MAX_EVENT_BYTES,
            )
        except Invalid as exc:
            raise InvalidEventError(str(exc)) from None
        return tuple.__new__(cls, fields)

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
        raw = tuple.__getitem__(self, 0)
        return _as_dict(self, raw if type(raw) is str else _format_id(raw))

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


_new_tuple = tuple.__new__

#: The slots the queue reads on its hot path without a property call
#: (``event[SIZE_SLOT]`` is ``event.size``, ``event[TIME_SLOT]`` is
#: ``event.unix_time``).
TIME_SLOT = 9
SIZE_SLOT = 10


def make_event(
    name: str,
    properties: dict[str, t.Any],
    user_id: str | None,
    anonymous_id: str | None,
    email: str | None,
    phone: str | None,
    traits: dict[str, t.Any],
    context: dict[str, t.Any],
    unix_time: float,
    size: int,
    event_id: str | None = None,
) -> Event:
    """An :class:`Event` from fields that are already checked and redacted.

    The fast constructor of ``track()``, its recheck after hooks and the page
    builder. With :meth:`Event.__new__`, the only code that knows the order of
    an event's slots. ``event_id=None`` draws a new random id (kept as 128
    bits until first read).
    """
    return _new_tuple(
        Event,
        (
            random_bits(128) if event_id is None else event_id,
            name,
            properties,
            user_id,
            anonymous_id,
            email,
            phone,
            traits,
            context,
            unix_time,
            size,
        ),
    )


_new_uuid = uuid.UUID.__new__
_set_slot = object.__setattr__


def wire_dict(event: Event) -> dict[str, t.Any]:
    """:meth:`Event.to_dict` for orjson (``trackware._json.encode_fast``): the
    same fields, with a random id as a ``uuid.UUID`` instead of its text.
    orjson writes a UUID as the same text in C, which saves formatting it in
    Python (about 4k instructions an event on the delivery thread). Not for
    other encoders or callers: the UUID is built without ``__init__`` (only
    its ``int``, which is all its text needs)."""
    raw = event[0]
    if type(raw) is not str:
        value = _new_uuid(uuid.UUID)
        _set_slot(value, "int", (raw & _UUID4_MASK) | _UUID4_BITS)
        raw = value
    return _as_dict(event, raw)


def _as_dict(event: Event, event_id: object) -> dict[str, t.Any]:
    """The wire fields of ``event`` (the one place that names them), with
    ``event_id`` as the caller wants it written."""
    _, name, props, uid, anon, email, phone, traits, ctx, ts, _ = event
    return {
        "event_id": event_id,
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


def checked(
    fields: tuple[t.Any, ...], redact: t.Callable[[str], bool], limit: int
) -> tuple[t.Any, ...]:
    """Every field of an event (as the tuple an :class:`Event` is) validated,
    properties, traits and context copied and redacted, the size computed:
    the tuple of the event to send. Raises ``Invalid``."""
    raw_id, name, props, uid, anon, email, phone, traits, ctx, ts, _ = fields
    if type(raw_id) is not int or not 0 <= raw_id < 1 << 128:
        raw_id = check_event_id(raw_id)
    name = check_name(name, limit)
    if uid is not None:
        uid = text_field(uid, "user_id", MAX_ID_LENGTH)
    if anon is not None:
        anon = text_field(anon, "anonymous_id", MAX_ID_LENGTH)
    if email is not None:
        email = text_field(email, "email", MAX_EMAIL_LENGTH)
    if phone is not None:
        phone = text_field(phone, "phone", MAX_PHONE_LENGTH)
    if type(ts) is not float or not MIN_TIMESTAMP <= ts < END_TIMESTAMP:
        ts = unix_time(ts)
    props, size = sanitize(
        props if props is not None else {}, redact, PROPERTIES, limit
    )
    traits, traits_size = sanitize(
        traits if traits is not None else {}, redact, TRAITS, limit
    )
    ctx, ctx_size = sanitize(ctx if ctx is not None else {}, redact, CONTEXT, limit)
    size += 96 + len(name) + traits_size + ctx_size
    if size > limit:
        raise too_large(size, limit)
    return (raw_id, name, props, uid, anon, email, phone, traits, ctx, ts, size)


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
