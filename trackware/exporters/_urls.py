"""Credentials in URLs and headers: kept out of logs, hidden when shown."""

from __future__ import annotations

import base64
import typing as t
import urllib.parse

import httpx

from .. import _log

__all__ = [
    "redact_url",
    "register_header_secrets",
    "register_url_secrets",
    "split_userinfo",
]

#: Query keys whose values are treated as credentials whatever their length.
_URL_KEY_WORDS = ("key", "token", "secret", "sig", "pass", "auth", "session", "code")
#: Header names (parts) whose values are credentials.
_SENSITIVE_HEADER_WORDS = (
    "authorization",
    "token",
    "key",
    "secret",
    "cookie",
    "signature",
)


def split_userinfo(url: str) -> tuple[str, str | None]:
    """``url`` without its ``user:password@`` part, and that part as a Basic
    ``Authorization`` value (``None`` when there is none)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url, None
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    _log.register_secret(token)
    bare = urllib.parse.urlunsplit(
        (parts.scheme, host, parts.path, parts.query, parts.fragment)
    )
    return bare, f"Basic {token}"


def register_url_secrets(url: str) -> None:
    """Register every part of ``url`` that can carry a secret with the log
    scrubber: the userinfo (user and password), the fragment, and the query's
    values, each as written, decoded, and as httpx re-encodes it in its
    ``HTTP Request:`` log line.

    Choice: a query value is registered when its key looks like a credential
    (``key``, ``token``, ``secret``, ``sig``, ``pass``, ``auth``...) or when
    it is 8 characters or longer (a bare key too); a short value of an
    ordinary key (``format=json``, ``v=2``) is not, since scrubbing it would
    mangle every log line that contains the word. ``repr()`` and errors hide
    every query value regardless."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, sep, password = userinfo.partition(":")
        found.append(userinfo)
        if sep:
            found.append(password)
        # The user name too when it may be a key (some APIs take the key as
        # the user name); a short one (admin) would only mangle log lines.
        if len(user) >= 8 or not sep:
            found.append(user)
    queries = [parts.query]
    try:
        queries.append(httpx.URL(url).query.decode("ascii", "replace"))
    except Exception:  # not a URL httpx takes: it will never log it either
        pass
    for query in queries:
        for item in query.split("&") if query else ():
            key, sep, value = item.partition("=")
            if not sep:
                key, value = "", key
            if len(value) >= 8 or any(word in key.lower() for word in _URL_KEY_WORDS):
                found.append(value)
    if parts.fragment:
        found.append(parts.fragment)
    for raw in found:
        for text in {
            raw,
            urllib.parse.unquote(raw),
            urllib.parse.unquote_plus(raw),
        }:
            _log.register_secret(text)
            _log.register_secret(urllib.parse.quote(text, safe=""))
            _log.register_secret(urllib.parse.quote_plus(text))


def redact_url(url: str) -> str:
    """``url`` for display: the userinfo, every query value (and bare key)
    and the fragment replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<a URL that cannot be parsed>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{key}=***" if sep else "***"
        for key, sep, _ in (item.partition("=") for item in parts.query.split("&"))
    )
    return urllib.parse.urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            query if parts.query else "",
            "***" if parts.fragment else "",
        )
    )


def register_header_secrets(headers: t.Mapping[str, str]) -> None:
    """Keep the credentials in ``headers`` out of logs: the whole value, and
    the token after ``Bearer``/``Basic`` (a vendor may echo it alone)."""
    for key, value in headers.items():
        if any(word in key.lower() for word in _SENSITIVE_HEADER_WORDS):
            _log.register_secret(value)
            if value.lower().startswith(("bearer ", "basic ")):
                _log.register_secret(value.split(" ", 1)[1])
