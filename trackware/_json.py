"""JSON encoding of event data on the worker: compact UTF-8 text, with
datetimes, dates, Decimals, UUIDs, Enums, dataclasses and tuples written as
trackware writes them (``dumps``) or converted to plain JSON types
(``to_jsonable``).

Two encoders, the same bytes: ``dumps`` calls the standard library's C
encoder directly (once built, without ``JSONEncoder.encode``'s per-call set
up); ``encode_checked`` encodes data trackware has validated (an event's
``to_dict()``: finite numbers, string keys) with ``orjson`` when the
optional extra is installed (``pip install trackware[orjson]``), and checks
the few forms in which orjson's text differs from the standard library's
(floats below 1e-4 in magnitude, integers beyond 64 bits, types it does not
know): such data goes through ``dumps``, so every vendor receives the same
bytes with or without orjson. The design: docs/architecture/event.md.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import importlib
import json
import json.encoder
import sys
import typing as t
import uuid

if t.TYPE_CHECKING:
    import decimal

__all__ = [
    "ORJSON",
    "ORJSON_OPTIONS",
    "orjson_module",
    "dumps",
    "encode_checked",
    "encode_fast",
    "encode_text",
    "is_decimal",
    "json_default",
    "to_jsonable",
]

_UTC = _dt.timezone.utc
_SCALARS = frozenset({str, int, float, bool, type(None)})


def is_decimal(value: object) -> t.TypeGuard[decimal.Decimal]:
    """Is ``value`` a ``decimal.Decimal``? Without importing decimal (12M
    instructions, on the import path of ``track()``): a Decimal exists only
    once its module was imported."""
    module = sys.modules.get("decimal")
    return module is not None and isinstance(value, module.Decimal)


def json_default(value: object) -> object:
    """A rich value as the JSON type it is written as (``json``'s ``default=``)."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, _dt.date):
        return value.isoformat()
    if is_decimal(value):
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
    default=json_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
#: A string as JSON text (quoted and escaped as ``dumps`` writes it).
encode_text: t.Callable[[str], str] = json.encoder.encode_basestring


def _build_direct() -> t.Callable[[object, int], t.Sequence[str]] | None:
    """The C encoder ``_encoder.encode`` builds on every call, built once
    (no cycle markers: a structure containing itself fails with
    ``RecursionError`` instead of ``ValueError``), or ``None`` when this
    Python has no C encoder or its text differs from ``_encoder``'s."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        direct = make(
            None, json_default, encode_text, None, ":", ",", False, False, False
        )
        sample = {"a": [1, 2.5, None, True, "é\n\x00"], "b": {"c": (1e-7, -0.0)}}
        if "".join(direct(sample, 0)) != _encoder.encode(sample):
            return None
    except Exception:
        return None
    return t.cast("t.Callable[[object, int], t.Sequence[str]]", direct)


_direct = _build_direct()


def dumps(obj: object) -> str:
    """Compact JSON with trackware's handling of dates, decimals, UUIDs and enums."""
    if _direct is None or type(obj) is str:
        return _encoder.encode(obj)
    return "".join(_direct(obj, 0))


#: The orjson module when the optional extra is installed, else ``None``
#: (the event codec uses it too).
orjson_module: t.Any
try:
    # Through importlib: the type checker need not have the extra installed.
    orjson_module = importlib.import_module("orjson")
except ImportError:  # the optional extra is not installed
    orjson_module = None

#: True when ``encode_checked`` uses orjson.
ORJSON = orjson_module is not None
# Dates, times, dataclasses and subclasses of the plain types go to
# json_default, as the standard encoder sends them (what it refuses, the
# standard way refuses too).
ORJSON_OPTIONS = (
    orjson_module.OPT_PASSTHROUGH_DATETIME
    | orjson_module.OPT_PASSTHROUGH_DATACLASS
    | orjson_module.OPT_PASSTHROUGH_SUBCLASS
    if orjson_module is not None
    else 0
)

# Where orjson's text may differ from the standard library's: a float below
# 1e-4 in magnitude, written "0.00001" for "1e-05" and "1e-7" for "1e-07".
# orjson's output is searched for both forms ("0.0000", and "e-" with one
# digit before a delimiter: a UUID's "...1e-8d0c..." is not one); text that
# merely looks like one (inside a string) only costs a second encoding.
_DELIMITERS = (b",", b"]", b"}", b"")


def _same_as_dumps(out: bytes) -> bool:
    if b"0.0000" in out:
        return False
    i = out.find(b"e-")
    while i >= 0:
        if out[i + 2 : i + 3].isdigit() and out[i + 3 : i + 4] in _DELIMITERS:
            return False
        i = out.find(b"e-", i + 2)
    return True


def encode_fast(obj: object) -> bytes | None:
    """orjson's encoding of ``obj`` when it is certainly ``dumps(obj)``'s
    bytes, else ``None`` (orjson not installed, a value it refuses or writes
    otherwise). For data trackware validated: finite numbers only (orjson
    would write NaN as ``null`` where ``dumps`` raises ``ValueError``)."""
    if orjson_module is None:
        return None
    try:
        out: bytes = orjson_module.dumps(
            obj, default=json_default, option=ORJSON_OPTIONS
        )
    except Exception:
        return None  # beyond 64 bits, a type orjson refuses: the standard way says
    return out if _same_as_dumps(out) else None


def encode_checked(obj: object) -> bytes:
    """``dumps(obj)`` as UTF-8 bytes, for data trackware validated (see
    :func:`encode_fast`). Raises as ``dumps`` and ``str.encode`` do."""
    out = encode_fast(obj)
    return dumps(obj).encode("utf-8") if out is None else out


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
    return json_default(value)
