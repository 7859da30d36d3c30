"""Key-name redaction applied to properties and traits before events are queued.

A key is redacted when one of its words is on the denylist. Words come from
splitting the key at underscores, dashes, dots, spaces and camelCase humps, so
``password``, ``userPassword``, ``card_number``, ``X-Api-Key`` and
``access_token`` are caught while ``discard`` or ``cardlytics_offer`` are not.
Redaction happens on the caller's thread, before an event reaches any queue,
log or dead letter, in the same bounded pass that validates the event
(``trackware._event.sanitize``); it applies to properties, traits and context,
and again to whatever a ``before_send`` hook returns.
"""

from __future__ import annotations

import re
import typing as t

__all__ = ["DEFAULT_REDACT_ALLOW", "DEFAULT_REDACT_WORDS", "REDACTED", "Redactor"]

REDACTED = "[redacted]"

#: Words whose presence in a key name redacts its value.
DEFAULT_REDACT_WORDS: frozenset[str] = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "tokens",
        "authorization",
        "auth",
        "apikey",
        "card",
        "pan",
        "cvv",
        "cvc",
        "cvv2",
        "ssn",
        "iban",
        "pin",
        "cookie",
        "cookies",
    }
)
#: Word pairs that redact when adjacent (``api_key``, ``private-key``...).
_PAIRS = frozenset({("api", "key"), ("private", "key"), ("session", "key")})

#: Keys that look sensitive by the rule but are not credentials: Cardlytics'
#: ``serveToken`` identifies an ad serve, and the exporter needs it.
DEFAULT_REDACT_ALLOW: frozenset[str] = frozenset({"serveToken", "serve_token"})

#: The property keys of the integrations' page events, which they build
#: without the per-key pass of ``track()`` (see
#: ``trackware.integrations._common._page_event``) unless one is redacted.
PAGE_KEYS: frozenset[str] = frozenset(
    {
        "method",
        "path",
        "route",
        "endpoint",
        "blueprint",
        "status",
        "duration",
        "referrer",
        "error",
    }
)

_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_CACHE_MAX = 10_000
#: The longest key an event may have (``trackware._event`` rejects longer).
MAX_KEY_LENGTH = 1024


class Redactor:
    """Decides, with a cache, whether a key's value must be redacted."""

    def __init__(
        self,
        words: t.Iterable[str] | None = None,
        *,
        allow: t.Iterable[str] = DEFAULT_REDACT_ALLOW,
    ) -> None:
        base = DEFAULT_REDACT_WORDS if words is None else words
        self.words = frozenset(w.lower() for w in base)
        self.allow = frozenset(allow)
        self._cache: dict[str, bool] = {}
        #: Whether no key of trackware's own page events is redacted (decided
        #: once: a Redactor's words never change).
        self.page_keys_clear = not any(self(k) for k in PAGE_KEYS)

    def __call__(self, key: str) -> bool:
        verdict = self._cache.get(key)
        if verdict is None:
            if len(key) > MAX_KEY_LENGTH:
                # Never split or cached: track()'s full pass rejects it.
                return True
            verdict = self._decide(key)
            if len(self._cache) < _CACHE_MAX:
                self._cache[key] = verdict
        return verdict

    def _decide(self, key: str) -> bool:
        if not key.isascii():
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                # A key with a lone surrogate cannot be sent: "redact" sends
                # it down track()'s full pass, which rejects the event (so
                # the flat-dict pass needs no check of its own per key).
                return True
        if key in self.allow or not self.words:
            return False
        parts = [p.lower() for p in _SPLIT.split(key) if p]
        if any(p in self.words for p in parts):
            return True
        if "".join(parts) in self.words:
            return True
        return any((a, b) in _PAIRS for a, b in zip(parts, parts[1:], strict=False))
