"""The rules an event's fields must follow, and the bounded walk that checks
properties, traits and context, copies them (redacting sensitive keys) and
sizes them on the caller's thread. A broken rule raises :class:`Invalid`
with a message that says which rule, where, and how to fix it.
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
import sys
import typing as t
import uuid
from collections.abc import Mapping

from ._json import is_decimal, json_default
from ._redact import MAX_KEY_LENGTH, REDACTED

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
NUMBER_BOUND = 1 << 1024
_FLOAT_MAX = sys.float_info.max

_SURROGATE_RULE = (
    "contains a lone surrogate (undecodable client data?), which UTF-8 cannot "
    "encode; clean it first, e.g. text.encode('utf-8', 'replace').decode()"
)
_RANGE_RULE = (
    "beyond the range of a JSON number (a double: |x| < 2**1024, about "
    "1.8e308); send it as a string"
)


class Invalid(Exception):
    """An event breaks a rule (the message says which and how to fix it)."""


class _BadValue(Invalid):
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


def no_redaction(key: str) -> bool:
    """The redaction policy of ``Event(...)`` built directly: none."""
    return False


def _too_many(acc: list[t.Any]) -> Invalid:
    return Invalid(
        f"too many entries in {acc[3]}: more than {MAX_ITEMS:,} keys and list "
        "items in all (track() bounds the work it does on your thread)"
    )


def too_large(size: int, limit: int, what: str = "the event") -> Invalid:
    """The error of an event (or ``what``) of about ``size`` bytes, over ``limit``."""
    return Invalid(
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
        raise too_large(acc[0], acc[2], acc[3])
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
        if not -NUMBER_BOUND < value < NUMBER_BOUND:  # type: ignore[operator]
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
            raise too_large(acc[0], acc[2], acc[3])
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
        raise too_large(acc[0], acc[2], acc[3])
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
            (tv is int and -NUMBER_BOUND < v < NUMBER_BOUND)
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
        raise too_large(acc[0], acc[2], acc[3])
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
    if is_decimal(value):
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
            _walk(value.value, depth + 1, acc, no_redaction)
        except _BadValue as exc:
            exc.rule = f"(an {type(value).__name__}) {exc.rule}"
            raise
        return value
    if isinstance(value, (_dt.date, uuid.UUID)):
        # Subclasses (datetime's too): check what the encoder will make of it.
        try:
            encoded = json_default(value)
        except Exception as exc:
            raise _BadValue(f"cannot be encoded ({type(exc).__name__})") from None
        _walk(encoded, depth + 1, acc, no_redaction)
        return value
    if isinstance(value, float):  # subclasses (e.g. numpy.float64)
        if not math.isfinite(value):
            raise _not_finite(value)
        acc[0] += 16
        return value
    if isinstance(value, int):  # subclasses (IntEnum handled above)
        if not -NUMBER_BOUND < value < NUMBER_BOUND:
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
    redact: t.Callable[[str], bool] = no_redaction,
    labels: tuple[str, str] = PROPERTIES,
    limit: int = MAX_EVENT_BYTES,
) -> tuple[dict[str, t.Any], int]:
    """Validate properties, traits or context; return the copy an event keeps
    (sensitive keys' values redacted) and its approximate encoded size.

    Raises ``Invalid`` naming the rule broken (and where). The work is
    bounded: at most ``MAX_ITEMS`` entries are looked at, and no string is
    scanned once the size passes ``limit``.
    """
    if type(values) is not dict and not isinstance(values, Mapping):
        raise Invalid(f"{labels[1]} must be a dict, not {type(values).__name__}")
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
        raise too_large(size, limit, labels[1])
    return out, size


def check_properties(props: t.Mapping[str, t.Any]) -> int:
    """Validate ``props``; return the approximate size or raise ``Invalid``."""
    return sanitize(props)[1]


def valid_subset(
    props: t.Mapping[str, t.Any] | None,
    redact: t.Callable[[str], bool] = no_redaction,
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
    except Invalid as exc:
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
        except Invalid as exc:  # a bound: nothing more is looked at
            reasons.append(str(exc))
            break
    return kept, reasons


def text_field(value: t.Any, what: str, max_length: int, convert: bool = False) -> str:
    """``user_id``, ``anonymous_id`` (``convert``: other types through
    ``str()``), ``email`` or ``phone``, checked; or raise ``Invalid``."""
    if type(value) is not str:
        if isinstance(value, str):
            value = str.__str__(value)
        elif convert and type(value) is not bool:
            try:
                value = str(value)
            except Exception as exc:
                raise Invalid(
                    f"{what} could not be turned into a string ({type(exc).__name__})"
                ) from None
            if type(value) is not str:
                raise Invalid(f"{what} must be a string")
        else:
            raise Invalid(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > max_length:
        raise Invalid(
            f"{what} is {len(value):,} characters long; at most {max_length} are sent"
        )
    if not value.isascii() and not encodable(value):
        # Not the value itself: identity is personal data, kept out of logs.
        raise Invalid(f"{what} {_SURROGATE_RULE}")
    return t.cast(str, value)


def check_event_id(value: t.Any) -> str:
    """An ``event_id`` given by the app: any non-empty printable string of at
    most ``MAX_ID_LENGTH`` characters (exporters derive the UUIDs a vendor
    needs from it), or raise ``Invalid``."""
    if type(value) is not str:
        raise Invalid(f"event_id must be a string, not {type(value).__name__}")
    if not 0 < len(value) <= MAX_ID_LENGTH or not value.isprintable():
        raise Invalid(
            f"event_id {_short(value)} must be 1 to {MAX_ID_LENGTH} printable "
            "characters (no control characters or lone surrogates)"
        )
    return value


def check_name(name: t.Any, limit: int) -> str:
    """An event name, or raise ``Invalid``."""
    if type(name) is not str or not name:
        if isinstance(name, str) and name:
            name = str.__str__(name)
        else:
            raise Invalid(f"event name must be a non-empty string, not {_short(name)}")
    if len(name) > limit:
        raise too_large(len(name), limit, "the event name")
    if not name.isascii() and not encodable(name):
        raise Invalid(f"event name {_short(name)} {_SURROGATE_RULE}")
    return t.cast(str, name)


def unix_time(value: t.Any) -> float:
    """Epoch seconds from a number or an aware ``datetime``, within
    ``[MIN_TIMESTAMP, END_TIMESTAMP)``; or raise ``Invalid``."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise Invalid(
                "timestamp must be timezone-aware (e.g. datetime.now(timezone.utc))"
            )
        try:
            result = value.timestamp()
        except Exception as exc:
            raise Invalid(
                f"timestamp's tzinfo ({type(value.tzinfo).__name__}) fails: "
                f"{type(exc).__name__}"
            ) from None
    elif type(value) is bool or not isinstance(value, (int, float)):
        raise Invalid(
            f"timestamp must be epoch seconds or a datetime, not {type(value).__name__}"
        )
    else:
        try:
            result = float(value)
        except OverflowError:
            result = math.inf
    if not MIN_TIMESTAMP <= result < END_TIMESTAMP:
        raise Invalid(
            f"timestamp {_short(value)} is outside years 1970 to 9999 (epoch "
            f"seconds {MIN_TIMESTAMP:.0f} to {END_TIMESTAMP:.0f}): milliseconds "
            "passed as seconds?"
        )
    return result
