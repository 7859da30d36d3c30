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
import sys
import time
import typing as t
import uuid
from collections.abc import Mapping

from ._redact import MAX_KEY_LENGTH, REDACTED
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
    derive a changed copy (for example in a ``before_send`` hook). Building
    one directly checks every field as ``track()`` does (the rules: the
    README's "Events", and the comment above ``MAX_DEPTH``), without
    redaction, and raises :class:`InvalidEventError`. Fields
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
        try:
            fields = checked(
                (
                    _fast_bits(128) if event_id is None else check_event_id(event_id),
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
                _keep,
                MAX_EVENT_BYTES,
            )
        except _Invalid as exc:
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


_new_tuple = tuple.__new__


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
            _fast_bits(128) if event_id is None else event_id,
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


# --- validation ---------------------------------------------------------------------
#
# What an event may hold is exactly what every exporter can encode on its
# worker: ``dumps()`` (allow_nan=False) and then UTF-8. Anything else is
# refused here, on the caller's thread, with the rule it broke, so that it
# never reaches a queue where it could only fail later. The rules:
#
# * text (names, ids, keys, values) holds no lone surrogate (``"\ud800"``,
#   as ``json.loads`` makes from a client's ``"\\ud800"``): UTF-8 cannot
#   encode one. The event is rejected rather than "repaired", so that what
#   arrives is what the app sent;
# * numbers are finite and within the range of a double (|x| < 2**1024), which
#   is what a JSON number is read as; bigger ints (which Python may even refuse
#   to write past 4,300 digits) and Decimals (which would become infinity) are
#   rejected: send them as strings;
# * a datetime's tzinfo must answer (``isoformat()`` is tried when it is not a
#   ``datetime.timezone``);
# * nesting is at most MAX_DEPTH levels (so a cycle is rejected, not followed);
# * each of properties, traits and context holds at most MAX_ITEMS keys and
#   list items in all, and an event's approximate encoded size is bounded
#   (``Tracker(max_batch_bytes=...)`` for track(), MAX_EVENT_BYTES for
#   ``Event()``): the walk stops as soon as a bound is passed, so no input
#   makes track() slow;
# * keys are strings of at most MAX_KEY_LENGTH characters;
# * identity fields are strings of bounded length (user_id and anonymous_id
#   of another type are converted with str(), as they always were), event ids
#   non-empty printable strings, timestamps within years 1970..9999.

#: Dicts and lists nest at most this deep (a cycle fails this too).
MAX_DEPTH = 32
#: Keys and list items, at any depth, that properties, traits or context may
#: each hold at most.
MAX_ITEMS = 10_000
#: The approximate encoded size an ``Event(...)`` built directly may have at
#: most; ``track()`` takes at most its tracker's ``max_batch_bytes``.
MAX_EVENT_BYTES = 16 * 1024 * 1024
#: Keys are at most ``MAX_KEY_LENGTH`` (1,024) characters (see ``_redact``).
#: Longest ``user_id``, ``anonymous_id`` and ``event_id``, in characters.
MAX_ID_LENGTH = 256
#: Longest ``email`` (RFC 3696: 64 + 1 + 255) and ``phone``.
MAX_EMAIL_LENGTH = 320
MAX_PHONE_LENGTH = 64
#: Timestamps are epoch seconds in [MIN_TIMESTAMP, END_TIMESTAMP): from
#: 1970-01-01 to the end of year 9999, which every vendor's format can write.
MIN_TIMESTAMP = 0.0
END_TIMESTAMP = 253402300800.0
#: Integers (and Decimals) must be smaller in magnitude: the range of a double.
_NUMBER_BOUND = 1 << 1024
_FLOAT_MAX = sys.float_info.max

_SCALARS = frozenset({str, int, float, bool, type(None)})
_SURROGATE_RULE = (
    "contains a lone surrogate (undecodable client data?), which UTF-8 cannot "
    "encode; clean it first, e.g. text.encode('utf-8', 'replace').decode()"
)
_RANGE_RULE = (
    "beyond the range of a JSON number (a double: |x| < 2**1024, about "
    "1.8e308); send it as a string"
)


class _Invalid(Exception):
    """An event breaks a rule (the message says which and how to fix it)."""


class _BadValue(_Invalid):
    """A value inside properties, traits or context broke ``rule``; where it
    sits is collected while the walk unwinds (no path is built on success)."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule
        self.where: list[str] = []
        self.what = "property"

    def __str__(self) -> str:
        path = "".join(reversed(self.where))
        if path[:1] == ".":
            path = path[1:]
        if not path:
            return f"{self.what} {self.rule}"
        return f"{self.what} {path!r} {self.rule}"


#: Labels of the three mappings: (in messages about one value, about all).
PROPERTIES = ("property", "properties")
TRAITS = ("trait", "traits")
CONTEXT = ("context", "context")


def _short(value: object) -> str:
    """A repr for messages: bounded, and ASCII-safe for any string."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def encodable(text: str) -> bool:
    """Can ``text`` be written as UTF-8 (has it no lone surrogate)?

    Callers test ``text.isascii()`` first: it answers in constant time for
    the usual case.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _keep(key: str) -> bool:
    """The redaction policy of ``Event(...)`` built directly: none."""
    return False


def _too_many(acc: list[t.Any]) -> _Invalid:
    return _Invalid(
        f"too many entries in {acc[3]}: more than {MAX_ITEMS:,} keys and list "
        "items in all (track() bounds the work it does on your thread)"
    )


def _too_large(size: int, limit: int, what: str = "the event") -> _Invalid:
    return _Invalid(
        f"{what} is too large: about {size:,} bytes encoded, over the "
        f"{limit:,} an event may have (max_batch_bytes); send less, or a reference"
    )


def _not_finite(value: object) -> _BadValue:
    return _BadValue(
        f"is {_short(value)}: JSON has no NaN or infinity; "
        "send None or a string instead"
    )


def _check_text(text: str, acc: list[t.Any]) -> None:
    """A non-ASCII string (its size already counted in ``acc``): reject it if
    the event is over its size bound (before scanning it) or if it cannot be
    encoded."""
    if acc[0] > acc[2]:
        raise _too_large(acc[0], acc[2], acc[3])
    if not encodable(text):
        raise _BadValue(_SURROGATE_RULE)


def _walk(value: object, depth: int, acc: list[t.Any], redact: t.Any) -> t.Any:
    """Validate ``value`` and return the copy an event keeps.

    Dicts and lists are copied (tuples become lists), values of keys
    ``redact(key)`` says are sensitive replaced by ``REDACTED``; other values
    are kept as they are. ``acc`` is ``[size, items left, size limit, label]``:
    the approximate encoded size is added to ``acc[0]``; every dict and list
    takes its length from ``acc[1]``, and passing either bound stops the walk.
    """
    tp = type(value)
    if tp is str:
        acc[0] += len(value) + 2  # type: ignore[arg-type]
        if not value.isascii():  # type: ignore[attr-defined]
            _check_text(value, acc)  # type: ignore[arg-type]
        return value
    if tp is int:
        if not -_NUMBER_BOUND < value < _NUMBER_BOUND:  # type: ignore[operator]
            raise _BadValue(f"is an integer {_RANGE_RULE}")
        acc[0] += 8
        return value
    if tp is float:
        if value - value != 0.0:  # type: ignore[operator]  # NaN or +-inf
            raise _not_finite(value)
        acc[0] += 8
        return value
    if value is None or tp is bool:
        acc[0] += 8
        return value
    if tp is dict or isinstance(value, dict):
        return _walk_dict(value, depth, acc, redact)  # type: ignore[arg-type]
    if tp is list or tp is tuple:
        if depth > MAX_DEPTH:
            raise _BadValue(
                f"is nested more than {MAX_DEPTH} levels deep (or contains itself)"
            )
        n = len(value)  # type: ignore[arg-type]
        acc[1] -= n
        if acc[1] < 0:
            raise _too_many(acc)
        if acc[0] > acc[2]:
            raise _too_large(acc[0], acc[2], acc[3])
        acc[0] += 2 + n
        out: list[t.Any] = []
        append = out.append
        i = 0
        deeper = depth + 1
        for item in value:  # type: ignore[attr-defined]
            try:
                append(_walk(item, deeper, acc, redact))
            except _BadValue as exc:
                exc.where.append(f"[{i}]")
                raise
            i += 1
        return out
    return _walk_other(value, depth, acc, redact)


def _walk_dict(
    value: dict[t.Any, t.Any], depth: int, acc: list[t.Any], redact: t.Any
) -> dict[str, t.Any]:
    if depth > MAX_DEPTH:
        raise _BadValue(
            f"is nested more than {MAX_DEPTH} levels deep (or contains itself)"
        )
    n = len(value)
    acc[1] -= n
    if acc[1] < 0:
        raise _too_many(acc)
    if acc[0] > acc[2]:
        raise _too_large(acc[0], acc[2], acc[3])
    size = 2
    out: dict[str, t.Any] = {}
    deeper = depth + 1
    for k, v in value.items():
        if type(k) is not str:
            raise _BadValue(
                f"keys must be strings, got {_short(k)}"
                if depth == 0
                else f"has a non-string key {_short(k)}"
            )
        if len(k) > MAX_KEY_LENGTH or not k.isascii():
            acc[0] += size
            size = 0
            _check_key(k, depth, acc)
        if redact(k):
            out[k] = REDACTED
            size += len(k) + 16
            continue
        # Flat values inline: most are.
        tv = type(v)
        if tv is str:
            size += len(k) + len(v) + 6
            if not v.isascii():
                acc[0] += size
                size = 0
                try:
                    _check_text(v, acc)
                except _BadValue as exc:
                    exc.where.append("." + k)
                    raise
        elif (
            (tv is int and -_NUMBER_BOUND < v < _NUMBER_BOUND)
            or v is None
            or tv is bool
            or (tv is float and v - v == 0.0)
        ):
            size += len(k) + 12
        else:
            size += len(k) + 4
            try:
                v = _walk(v, deeper, acc, redact)
            except _BadValue as exc:
                exc.where.append("." + k)
                raise
        out[k] = v
    acc[0] += size
    return out


def _check_key(key: str, depth: int, acc: list[t.Any]) -> None:
    if len(key) > MAX_KEY_LENGTH:
        raise _BadValue(
            f"keys must be at most {MAX_KEY_LENGTH} characters, got {len(key):,}"
            if depth == 0
            else f"has a key of {len(key):,} characters (at most {MAX_KEY_LENGTH})"
        )
    if acc[0] > acc[2]:
        raise _too_large(acc[0], acc[2], acc[3])
    if not encodable(key):
        raise _BadValue(
            f"keys must be valid text: {_short(key)} {_SURROGATE_RULE}"
            if depth == 0
            else f"has a key, {_short(key)}, that {_SURROGATE_RULE}"
        )


def _walk_other(value: t.Any, depth: int, acc: list[t.Any], redact: t.Any) -> t.Any:
    """Rich values (datetime, date, Decimal, UUID, Enum) and subclasses of
    the plain types: checked as the encoder will write them."""
    tp = type(value)
    if tp is _dt.datetime:
        tz = value.tzinfo
        if tz is not None and type(tz) is not _dt.timezone:
            try:
                value.isoformat()  # asks the tzinfo, as the encoder will
            except Exception as exc:
                raise _BadValue(
                    f"is a datetime whose tzinfo ({type(tz).__name__}) fails: "
                    f"{type(exc).__name__}; use datetime.timezone or zoneinfo"
                ) from None
        acc[0] += 40
        return value
    if tp is _dt.date or tp is uuid.UUID:
        acc[0] += 40
        return value
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise _not_finite(value)
        try:
            as_float = float(value)  # what the encoder sends
        except Exception as exc:
            raise _BadValue(
                f"cannot be written as a number ({type(exc).__name__})"
            ) from None
        if not -_FLOAT_MAX <= as_float <= _FLOAT_MAX:
            raise _BadValue(f"is {_short(value)}: {_RANGE_RULE}")
        acc[0] += 40
        return value
    if isinstance(value, enum.Enum):
        # The encoder writes an Enum as its value (str/int/float mixins as
        # that same value): check the value, keep the member.
        try:
            _walk(value.value, depth + 1, acc, _keep)
        except _BadValue as exc:
            exc.rule = f"(an {type(value).__name__}) {exc.rule}"
            raise
        return value
    if isinstance(value, (_dt.date, uuid.UUID)):
        # Subclasses (datetime's too): check what the encoder will make of it.
        try:
            encoded = _default(value)
        except Exception as exc:
            raise _BadValue(f"cannot be encoded ({type(exc).__name__})") from None
        _walk(encoded, depth + 1, acc, _keep)
        return value
    if isinstance(value, float):  # subclasses (e.g. numpy.float64)
        if not math.isfinite(value):
            raise _not_finite(value)
        acc[0] += 16
        return value
    if isinstance(value, int):  # subclasses (IntEnum handled above)
        if not -_NUMBER_BOUND < value < _NUMBER_BOUND:
            raise _BadValue(f"is an integer {_RANGE_RULE}")
        acc[0] += 16
        return value
    if isinstance(value, str):  # subclasses
        acc[0] += len(value) + 2
        if not value.isascii():
            _check_text(value, acc)
        return value
    raise _BadValue(
        f"has unsupported type {type(value).__name__}: use str, int, float, bool, "
        "None, lists and dicts of those, datetime, date, Decimal, UUID or Enum"
    )


def sanitize(
    values: t.Any,
    redact: t.Callable[[str], bool] = _keep,
    labels: tuple[str, str] = PROPERTIES,
    limit: int = MAX_EVENT_BYTES,
) -> tuple[dict[str, t.Any], int]:
    """Validate properties, traits or context; return the copy an event keeps
    (sensitive keys' values redacted) and its approximate encoded size.

    Raises ``_Invalid`` naming the rule broken (and where). The work is
    bounded: at most ``MAX_ITEMS`` entries are looked at, and no string is
    scanned once the size passes ``limit``.
    """
    if type(values) is not dict and not isinstance(values, Mapping):
        raise _Invalid(f"{labels[1]} must be a dict, not {type(values).__name__}")
    acc: list[t.Any] = [0, MAX_ITEMS, limit, labels[1]]
    try:
        if type(values) is dict:
            out = _walk_dict(values, 0, acc, redact)
        else:
            if len(values) > MAX_ITEMS:
                raise _too_many(acc)
            out = _walk_dict(dict(values), 0, acc, redact)
    except _BadValue as exc:
        exc.what = labels[0]
        raise
    size: int = acc[0]
    if size > limit:
        raise _too_large(size, limit, labels[1])
    return out, size


def check_properties(props: t.Mapping[str, t.Any]) -> int:
    """Validate ``props``; return the approximate size or raise ``_Invalid``."""
    return sanitize(props)[1]


def valid_subset(
    props: t.Mapping[str, t.Any] | None,
    redact: t.Callable[[str], bool] = _keep,
    labels: tuple[str, str] = PROPERTIES,
) -> tuple[dict[str, t.Any], list[str]]:
    """The entries of ``props`` that can be sent (redacted as ``redact``
    says), and why the others cannot. Bounded like :func:`sanitize`: past
    ``MAX_ITEMS`` entries in all, the rest is left out."""
    if not props:
        return {}, []
    try:
        return sanitize(props, redact, labels)[0], []
    except _BadValue:
        pass
    except _Invalid as exc:
        return {}, [str(exc)]
    kept: dict[str, t.Any] = {}
    reasons: list[str] = []
    acc: list[t.Any] = [0, MAX_ITEMS, MAX_EVENT_BYTES, labels[1]]
    for k, v in props.items():
        before = acc[0]
        try:
            kept.update(_walk_dict({k: v}, 0, acc, redact))
        except _BadValue as exc:
            exc.what = labels[0]
            reasons.append(str(exc))
            acc[0] = before
        except _Invalid as exc:  # a bound: nothing more is looked at
            reasons.append(str(exc))
            break
    return kept, reasons


def text_field(value: t.Any, what: str, max_length: int, convert: bool = False) -> str:
    """``user_id``, ``anonymous_id`` (``convert``: other types through
    ``str()``), ``email`` or ``phone``, checked; or raise ``_Invalid``."""
    if type(value) is not str:
        if isinstance(value, str):
            value = str.__str__(value)
        elif convert and type(value) is not bool:
            try:
                value = str(value)
            except Exception as exc:
                raise _Invalid(
                    f"{what} could not be turned into a string ({type(exc).__name__})"
                ) from None
            if type(value) is not str:
                raise _Invalid(f"{what} must be a string")
        else:
            raise _Invalid(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > max_length:
        raise _Invalid(
            f"{what} is {len(value):,} characters long; at most {max_length} are sent"
        )
    if not value.isascii() and not encodable(value):
        # Not the value itself: identity is personal data, kept out of logs.
        raise _Invalid(f"{what} {_SURROGATE_RULE}")
    return t.cast(str, value)


def check_event_id(value: t.Any) -> str:
    """An ``event_id`` given by the app: any non-empty printable string of at
    most ``MAX_ID_LENGTH`` characters (exporters derive the UUIDs a vendor
    needs from it), or raise ``_Invalid``."""
    if type(value) is not str:
        raise _Invalid(f"event_id must be a string, not {type(value).__name__}")
    if not 0 < len(value) <= MAX_ID_LENGTH or not value.isprintable():
        raise _Invalid(
            f"event_id {_short(value)} must be 1 to {MAX_ID_LENGTH} printable "
            "characters (no control characters or lone surrogates)"
        )
    return value


def check_name(name: t.Any, limit: int) -> str:
    """An event name, or raise ``_Invalid``."""
    if type(name) is not str or not name:
        if isinstance(name, str) and name:
            name = str.__str__(name)
        else:
            raise _Invalid(f"event name must be a non-empty string, not {_short(name)}")
    if len(name) > limit:
        raise _too_large(len(name), limit, "the event name")
    if not name.isascii() and not encodable(name):
        raise _Invalid(f"event name {_short(name)} {_SURROGATE_RULE}")
    return t.cast(str, name)


def unix_time(value: t.Any) -> float:
    """Epoch seconds from a number or an aware ``datetime``, within
    ``[MIN_TIMESTAMP, END_TIMESTAMP)``; or raise ``_Invalid``."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise _Invalid(
                "timestamp must be timezone-aware (e.g. datetime.now(timezone.utc))"
            )
        try:
            result = value.timestamp()
        except Exception as exc:
            raise _Invalid(
                f"timestamp's tzinfo ({type(value.tzinfo).__name__}) fails: "
                f"{type(exc).__name__}"
            ) from None
    elif type(value) is bool or not isinstance(value, (int, float)):
        raise _Invalid(
            f"timestamp must be epoch seconds or a datetime, not {type(value).__name__}"
        )
    else:
        try:
            result = float(value)
        except OverflowError:
            result = math.inf
    if not MIN_TIMESTAMP <= result < END_TIMESTAMP:
        raise _Invalid(
            f"timestamp {_short(value)} is outside years 1970 to 9999 (epoch "
            f"seconds {MIN_TIMESTAMP:.0f} to {END_TIMESTAMP:.0f}): milliseconds "
            "passed as seconds?"
        )
    return result


def checked(
    fields: tuple[t.Any, ...], redact: t.Callable[[str], bool], limit: int
) -> tuple[t.Any, ...]:
    """Every field of an event (as the tuple an :class:`Event` is) validated,
    properties, traits and context copied and redacted, the size computed:
    the tuple of the event to send. Raises ``_Invalid``."""
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
        raise _too_large(size, limit)
    return (raw_id, name, props, uid, anon, email, phone, traits, ctx, ts, size)


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
