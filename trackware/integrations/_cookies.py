"""The integrations' cookies: trackware's visitor, session and MXO tid
cookies are signed (:class:`CookieSigner`, HMAC-SHA256 under a key derived
from the configured secrets) and only verified values are read back
(:class:`CookieJar`, which also writes the ``Set-Cookie`` values). The MXO
tid's side in the integrations lives here: its cookie, read and written.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import logging
import os
import re
import typing as t
import uuid

from .. import _log
from .._settle import count_value
from ..exceptions import ConfigurationError

if t.TYPE_CHECKING:
    from ._options import TrackingOptions
    from ._request import RequestState

#: A session as its cookie holds it: (session id, start, last seen), whole
#: epoch seconds.
Session: t.TypeAlias = "tuple[str, int, int]"

__all__ = [
    "COOKIE_SECRET_ENV",
    "CookieJar",
    "CookieSigner",
    "SESSION_RE",
    "TID_RE",
    "VISITOR_RE",
    "cookie_finder",
    "cookie_signer",
    "secrets_of",
]

# What the signed part of each cookie may be (checked before its signature).
VISITOR_RE = re.compile(r"^[0-9a-f]{32}\Z")
SESSION_RE = re.compile(r"^([0-9a-f]{32})\.([0-9a-f]{1,12})\.([0-9a-f]{1,12})\Z")
#: An MXO tid as the integrations accept it in their cookie and write it.
TID_RE = re.compile(r"^[0-9A-Za-z-]{8,64}\Z")

#: The environment variable read when no ``cookie_secret`` is given.
COOKIE_SECRET_ENV = "TRACKWARE_COOKIE_SECRET"

_KEY_CONTEXT = b"trackware.cookie.v1"
_SIG_LEN = 43  # an HMAC-SHA256 in unpadded base64url
_SIG_RE = re.compile(r"^[A-Za-z0-9_-]{43}\Z")
_b64 = base64.urlsafe_b64encode

_NO_SECRET = (
    "trackware signs its visitor, session and MXO tid cookies and has no key: "
    "pass cookie_secret= (a str or bytes; or a list, whose first key signs and "
    "the others still verify, for key rotation) or set the "
    f"{COOKIE_SECRET_ENV} environment variable. For development only, "
    "ephemeral_cookie_secret=True signs with a random per-process key "
    "(visitors and sessions then restart with the process and differ between "
    "worker processes)."
)


class CookieSigner:
    """The one signing codec of the visitor, session and MXO tid cookies.

    A cookie ``name`` holding ``value`` is sent as ``value "." signature``,
    the signature being ``HMAC-SHA256(key, name "=" value)`` in unpadded
    base64url (43 characters). The cookie's name is signed with its value, so
    the signature of one cookie cannot be replayed as another (a visitor id
    is also a well-formed tid). Comparisons are constant-time.

    The keys are derived from the configured secrets with domain separation,
    ``HMAC-SHA256(secret, "trackware.cookie.v1")``: the app's own secret
    (Flask's ``secret_key``) never keys trackware's MACs directly, so they
    cannot be confused with the app's signatures. The first key signs; every
    key verifies (key rotation: the old secrets stay listed until the
    cookies they signed have been re-signed or have expired).
    """

    __slots__ = ("_keys", "_pads")

    def __init__(self, secrets: t.Sequence[bytes]) -> None:
        if not secrets:
            raise ConfigurationError(_NO_SECRET)
        self._keys = tuple(hmac.digest(s, _KEY_CONTEXT, "sha256") for s in secrets)
        # HMAC (RFC 2104) with SHA-256 states precomputed over the padded key,
        # as the hmac module's own Python implementation keeps them: copying
        # them costs about a third of hmac.digest()'s per-call key setup.
        # (The keys are 32 bytes, under SHA-256's 64-byte block: zero-padded.)
        self._pads = tuple(
            (
                hashlib.sha256(bytes(b ^ 0x36 for b in key.ljust(64, b"\0"))),
                hashlib.sha256(bytes(b ^ 0x5C for b in key.ljust(64, b"\0"))),
            )
            for key in self._keys
        )

    def _mac(self, index: int, name: str, value: str) -> str:
        """``HMAC-SHA256(keys[index], name "=" value)``, unpadded base64url."""
        inner, outer = self._pads[index]
        h = inner.copy()
        h.update(f"{name}={value}".encode())
        o = outer.copy()
        o.update(h.digest())
        return _b64(o.digest())[:_SIG_LEN].decode("ascii")

    def sign(self, name: str, value: str) -> str:
        """The cookie value to send for ``value``, signed with the first key."""
        return f"{value}.{self._mac(0, name, value)}"

    def verify(self, name: str, value: str, signature: str) -> int:
        """Which key signed ``value`` as cookie ``name``: 0 for the current
        key, more for a fallback (the cookie is to be re-signed), -1 for none.
        ``signature`` must already be 43 base64url characters (ASCII, for
        the constant-time comparison)."""
        for index in range(len(self._pads)):
            if hmac.compare_digest(signature, self._mac(index, name, value)):
                return index
        return -1

    def open(
        self, name: str, raw: str, value_re: re.Pattern[str]
    ) -> tuple[str, int] | None:
        """The value of the signed cookie ``raw`` and the index of the key
        that verified it, or ``None``: unsigned, malformed (``value_re`` does
        not match), or not signed by any key."""
        value, dot, signature = raw.rpartition(".")
        if (
            not dot
            or len(signature) != _SIG_LEN
            or not _SIG_RE.match(signature)
            or not value_re.match(value)
        ):
            return None
        index = self.verify(name, value, signature)
        return None if index < 0 else (value, index)


def secrets_of(value: t.Any, option: str = "cookie_secret") -> list[bytes]:
    """The secrets ``value`` (a ``cookie_secret``) names, first the signing
    one; ``[]`` when it is unset (``None``, empty).

    Raises:
        ConfigurationError: not a str/bytes or a sequence of non-empty ones.
    """
    if value is None or (isinstance(value, (str, bytes, list, tuple)) and not value):
        return []
    items = [value] if isinstance(value, (str, bytes)) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigurationError(
            f"{option} must be a str or bytes, or a list of them (the first "
            f"signs, the others still verify), not {type(value).__name__}"
        )
    out: list[bytes] = []
    for item in items:
        if isinstance(item, str):
            item = item.encode("utf-8")
        if not isinstance(item, bytes) or not item:
            raise ConfigurationError(
                f"{option}: every key must be a non-empty str or bytes"
            )
        out.append(item)
    return out


def cookie_signer(options: TrackingOptions) -> CookieSigner:
    """The signer for ``options``: ``cookie_secret``, else the
    ``TRACKWARE_COOKIE_SECRET`` environment variable, else (only with
    ``ephemeral_cookie_secret``) a random per-process key.

    Raises:
        ConfigurationError: no key, and no ephemeral one asked for. Cookies
            are never sent unsigned, nor read back unverified.
    """
    secrets = secrets_of(options.cookie_secret)
    if not secrets:
        secrets = secrets_of(os.environ.get(COOKIE_SECRET_ENV), COOKIE_SECRET_ENV)
    if secrets:
        for secret in secrets:
            _log.register_secret(secret)
        return CookieSigner(secrets)
    if not options.ephemeral_cookie_secret:
        raise ConfigurationError(_NO_SECRET)
    # A choice the issue left open: refuse (above) unless asked for this.
    _log.log_throttled(
        logging.WARNING,
        "ephemeral-cookie-secret",
        "trackware: no cookie secret configured; signing cookies with a random "
        "per-process key (ephemeral_cookie_secret). Visitors and sessions "
        "restart whenever the process restarts and are not recognised by other "
        "worker processes: set cookie_secret= or %s in production.",
        COOKIE_SECRET_ENV,
    )
    return CookieSigner([os.urandom(32)])


def cookie_finder(names: t.Iterable[str]) -> t.Callable[[str], list[t.Any]]:
    """``findall`` of ``(name, value)`` pairs for only these cookie names, to
    call with the header prefixed by ``";"``.

    The same pairs as splitting the header at ``;`` and each part, stripped,
    at its first ``=``, without splitting the other cookies (values are
    stripped of spaces and quotes by the caller). The leading ``";"`` stands
    for the start of the header: a pattern that begins with a literal is
    searched for faster than ``(?:^|;)``.
    """
    alternatives = "|".join(re.escape(n) for n in sorted(set(names), key=len)[::-1])
    return re.compile(rf";\s*({alternatives})=([^;]*)").findall


class CookieJar:
    """One engine's cookies: reads them (verified values only), remembers the
    verified ones, and makes the ``Set-Cookie`` values of a response.

    Verified cookies are remembered (bounded: cleared when full; only
    verified ones are kept, so nothing a client invents takes room): the
    first request with a cookie costs one HMAC-SHA256 per key tried, the
    next ones a dict lookup. The request engine reads :attr:`visitors`,
    :attr:`sessions` and :attr:`tids` before calling the ``open_*`` methods.
    """

    def __init__(self, options: TrackingOptions) -> None:
        self.options = options
        self.signer = cookie_signer(options)
        #: The cookie names: visitor, session, tid.
        self.names = (
            options.visitor_cookie,
            options.session_cookie,
            options.tid_cookie,
        )
        #: ``findall`` of our ``(name, value)`` pairs in ``";" + header``.
        self.find = cookie_finder(self.names)
        #: Verified (or signed here) cookie values and what they hold.
        self.visitors: dict[str, str] = {}
        self.sessions: dict[str, Session] = {}
        self.tids: dict[str, str] = {}
        #: Session cookie values signed here, per session (one per second).
        self.signed: dict[Session, str] = {}
        #: Session lifetime, seconds (the session cookie's Max-Age).
        self.timeout = int(options.session_timeout)
        self._rejected = {
            "visitor": itertools.count(),
            "session": itertools.count(),
            "tid": itertools.count(),
        }

    def rejections(self) -> dict[str, int]:
        """Cookies (``visitor``, ``session``, ``tid``) ignored since start-up
        because their signature did not verify."""
        return {kind: count_value(n) for kind, n in self._rejected.items()}

    def _reject(self, kind: str, name: str) -> None:
        """Count and log (rate-limited, never the value) a rejected cookie."""
        next(self._rejected[kind])
        _log.log_throttled(
            logging.INFO,
            f"cookie-rejected:{name}",
            "trackware: ignored a %s cookie (%s) whose signature did not verify "
            "(forged, tampered, signed with a key no longer configured, or "
            "unsigned from trackware 0.1.0); %s",
            name,
            kind,
            "it is expired" if kind == "tid" else "a new one is issued",
        )

    def sign(self, name: str, value: str) -> str:
        """The value of cookie ``name`` for ``value``, signed."""
        return self.signer.sign(name, value)

    def open_visitor(self, raw: str, state: RequestState) -> str:
        """The visitor id of visitor cookie ``raw`` (not in the cache), or a
        new visitor when it does not verify."""
        name = self.names[0]
        raw = raw.strip().strip('"')
        known = self.visitors.get(raw)
        if known is not None:
            return known
        opened = self.signer.open(name, raw, VISITOR_RE) if len(raw) < 100 else None
        if opened is None:
            if raw:
                self._reject("visitor", name)
            state.new_visitor = True
            return uuid.uuid4().hex
        visitor, key = opened
        if key:  # a fallback key: re-signed with the current one
            state.new_visitor = True
        else:
            if len(self.visitors) >= 4096:
                self.visitors.clear()
            self.visitors[raw] = visitor
        return visitor

    def open_tid(self, raw: str, state: RequestState) -> str | None:
        """The MXO tid of tid cookie ``raw`` (not in the cache), or ``None``
        when it does not verify (the cookie is then expired)."""
        name = self.names[2]
        raw = raw.strip().strip('"')
        known = self.tids.get(raw)
        if known is not None:
            state.incoming_tid = known
            return known
        opened = self.signer.open(name, raw, TID_RE) if len(raw) < 120 else None
        if opened is None:
            if raw:  # (an empty one is what expiring it leaves, if anything)
                self._reject("tid", name)
                state.drop_tid = True
            return None
        tid, key = opened
        if not key:
            if len(self.tids) >= 4096:
                self.tids.clear()
            self.tids[raw] = tid
            state.incoming_tid = tid
        # else signed with a fallback key: not incoming, so written again.
        return tid

    def parse_session(
        self, value: str | None, now: int, state: RequestState | None = None
    ) -> Session | None:
        """The session of session cookie ``value``, or ``None``: none, not
        verified, or its times are impossible. With ``state``, a cookie a
        fallback key signed marks the session to be re-signed."""
        if not value:
            return None
        session = self.sessions.get(value)
        if session is None:
            value = value.strip().strip('"')
            if not value:
                return None
            session = self.sessions.get(value)
        if session is None:
            name = self.names[1]
            opened = (
                self.signer.open(name, value, SESSION_RE) if len(value) < 120 else None
            )
            if opened is None:
                self._reject("session", name)
                return None
            payload, key = opened
            sid, start_hex, last_hex = payload.split(".")
            session = (sid, int(start_hex, 16), int(last_hex, 16))
            if key:
                if state is not None:
                    state.session_dirty = True
            else:
                if len(self.sessions) >= 4096:
                    self.sessions.clear()
                self.sessions[value] = session
        if not session[1] <= session[2] <= now + 300:
            return None
        return session

    def session_value(self, session: Session) -> str:
        """The signed value of the session cookie for ``session``."""
        sid, start, last = session
        return self.signer.sign(self.names[1], f"{sid}.{start:x}.{last:x}")

    def response_cookies(self, state: RequestState) -> list[str]:
        """``Set-Cookie`` header values to add to the response of ``state``."""
        if not state.new_visitor and not state.session_dirty:
            # The common case: a returning visitor within the same second.
            tid = state.context.get("mxo_tid")
            if (not tid or tid == state.incoming_tid) and not state.drop_tid:
                return []
        opts = self.options
        out: list[str] = []
        attrs = f"; Path={opts.cookie_path}; HttpOnly; SameSite=Lax"
        if opts.cookie_domain:
            attrs += f"; Domain={opts.cookie_domain}"
        if state.secure:
            attrs += "; Secure"
        if state.new_visitor:
            visitor = str(state.anonymous_id)
            value = self.signer.sign(opts.visitor_cookie, visitor)
            # The browser sends it back next: signed by us, so verified.
            if len(self.visitors) >= 4096:
                self.visitors.clear()
            self.visitors[value] = visitor
            out.append(
                f"{opts.visitor_cookie}={value}; Max-Age={opts.visitor_max_age}" + attrs
            )
        session = state.session
        if session is not None and state.session_dirty:
            # Signed once per session and second (concurrent requests share it).
            signed = self.signed.get(session)
            if signed is None:
                signed = self.session_value(session)
                if len(self.signed) >= 4096:
                    self.signed.clear()
                self.signed[session] = signed
                # The browser sends it back next: signed by us, so verified.
                if len(self.sessions) >= 4096:
                    self.sessions.clear()
                self.sessions[signed] = session
            out.append(
                f"{opts.session_cookie}={signed}; Max-Age={self.timeout}" + attrs
            )
            state.session_dirty = False
        tid = state.context.get("mxo_tid")
        if tid and tid != state.incoming_tid and TID_RE.match(str(tid)):
            tid = str(tid)
            value = self.signer.sign(opts.tid_cookie, tid)
            if len(self.tids) >= 4096:
                self.tids.clear()
            self.tids[value] = tid
            out.append(
                f"{opts.tid_cookie}={value}; Max-Age={opts.visitor_max_age}" + attrs
            )
            state.incoming_tid = tid
        elif state.drop_tid:  # a forged one: the browser forgets it
            out.append(f"{opts.tid_cookie}=; Max-Age=0" + attrs)
        state.drop_tid = False
        return out
