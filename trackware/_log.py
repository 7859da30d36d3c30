"""Logging for trackware: one ``trackware`` logger whose records are scrubbed
of registered secrets (credentials, tokens) before any handler sees them, and
rate-limited helpers (:func:`warn`, :func:`error`) for repeated messages.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from . import _lifecycle

logger = logging.getLogger("trackware")

_MIN_SECRET_LEN = 4
_MAX_SECRETS = 4096
_secrets: collections.OrderedDict[str, None] = collections.OrderedDict()
_secrets_lock = threading.Lock()
#: The registered secrets, longest first (so a secret that contains another is
#: replaced whole); rebuilt on registration, which is rare, not per scrub.
_by_length: tuple[str, ...] = ()


def register_secret(value: str | bytes | None) -> None:
    """Remember ``value`` so that it is scrubbed from every log line and dead letter.

    Short values (under 4 characters) are ignored: scrubbing them would mangle
    ordinary text. The registry is bounded; the oldest entries go first, which
    only ever affects rotated-out tokens.
    """
    global _by_length
    if value is None:
        return
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if len(value) < _MIN_SECRET_LEN:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets[value] = None
        while len(_secrets) > _MAX_SECRETS:
            _secrets.popitem(last=False)
        _by_length = tuple(sorted(_secrets, key=len, reverse=True))


def scrub(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    for value in _by_length:
        if value in text:
            text = text.replace(value, "***")
    return text


class ScrubFilter(logging.Filter):
    """Formats each record once and removes registered secrets from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = scrub(record.getMessage())
            record.msg = message
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text = scrub(f"{type(exc).__name__}: {exc}")
                record.exc_info = None
                record.exc_text = None
                record.msg = f"{message} ({text})"
        return True


logger.addFilter(ScrubFilter())


class _Throttle:
    """Allows one message per key per interval; counts what it held back."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()

    def allow(self, key: str) -> tuple[bool, int]:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] += 1
                return False, 0
            if len(self._last) > 1024:
                # Bounded memory whatever the keys: both tables start over.
                self._last.clear()
                self._suppressed.clear()
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)


_throttle = _Throttle()


def _after_fork_in_child() -> None:
    """A parent thread (a trackware worker logging, an app thread registering
    a secret) may have held these locks at fork time: the child's would never
    be released."""
    global _secrets_lock
    _secrets_lock = threading.Lock()
    _throttle._lock = threading.Lock()


_lifecycle.on_fork(_after_fork_in_child)


def log_throttled(
    level: int, key: str, msg: str, *args: object, exc_info: bool = False
) -> None:
    """Log ``msg`` at most once per 30 s for ``key``, noting suppressed repeats."""
    if not logger.isEnabledFor(level):
        return
    ok, suppressed = _throttle.allow(key)
    if not ok:
        return
    if suppressed:
        msg = f"{msg} ({suppressed} similar messages suppressed)"
    logger.log(level, msg, *args, exc_info=exc_info)


def warn(key: str, msg: str, *args: object) -> None:
    log_throttled(logging.WARNING, key, msg, *args)


def error(key: str, msg: str, *args: object, exc_info: bool = False) -> None:
    log_throttled(logging.ERROR, key, msg, *args, exc_info=exc_info)
