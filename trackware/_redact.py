"""Key-name redaction: the :class:`Redactor` that decides whether a key's
value is sensitive (a word of the key on the denylist, outside the allow-list),
with a bounded cache of verdicts. ``trackware._validate``'s walk applies it to
properties, traits and context on the caller's thread, before any queue.
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

#: The property keys of the integrations' page events, which are built
#: without the per-key pass of ``track()`` unless one of them is redacted
#: (``trackware._page.PageView.properties`` writes them; tests/core/
#: test_page_records.py checks that the two agree).
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
#: The longest key an event may have (``trackware._validate`` rejects longer).
MAX_KEY_LENGTH = 1024


class Redactor:
    """Decides, with a cache, whether a key's value must be redacted.

    A key is redacted when one of its words (split at ``_ - .``, spaces and
    camelCase humps, compared lower-case), or all of them run together, is in
    ``words``, or two adjacent words are ``api key``, ``private key`` or
    ``session key``; unless the key is in ``allow``. Keys that cannot be sent
    (too long, a lone surrogate) answer True: the full check rejects them.
    """

    def __init__(
        self,
        words: t.Iterable[str] | None = None,
        *,
        allow: t.Iterable[str] = DEFAULT_REDACT_ALLOW,
    ) -> None:
        base = DEFAULT_REDACT_WORDS if words is None else words
        self.words = frozenset(w.lower() for w in base)
        self.allow = frozenset(allow)
        #: The verdicts so far, by key (bounded). Read-only outside this
        #: class: ``track()`` looks known keys up here (a dict lookup is
        #: cheaper than a call) and calls the redactor for the others.
        self.verdicts: dict[str, bool] = {}
        #: Whether no key of trackware's own page events is redacted (decided
        #: once: a Redactor's words never change).
        self.page_keys_clear = not any(self(k) for k in PAGE_KEYS)

    def __call__(self, key: str) -> bool:
        verdict = self.verdicts.get(key)
        if verdict is None:
            if len(key) > MAX_KEY_LENGTH:
                # Never split or cached: track()'s full pass rejects it.
                return True
            verdict = self._decide(key)
            if len(self.verdicts) < _CACHE_MAX:
                self.verdicts[key] = verdict
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
