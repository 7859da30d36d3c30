"""JSON encoding of event data on the worker: compact UTF-8 text, with
datetimes, dates, Decimals, UUIDs, Enums, dataclasses and tuples written as
trackware writes them (``dumps``) or converted to plain JSON types
(``to_jsonable``)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import json
import typing as t
import uuid

__all__ = ["dumps", "json_default", "to_jsonable"]

_UTC = _dt.timezone.utc
_SCALARS = frozenset({str, int, float, bool, type(None)})


def json_default(value: object) -> object:
    """A rich value as the JSON type it is written as (``json``'s ``default=``)."""
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
    default=json_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False
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
    return json_default(value)
