"""The pooled ``httpx.Client`` of an HTTP exporter, built fork-safely."""

from __future__ import annotations

import logging
import ssl
import threading
import typing as t
import weakref

import certifi
import httpcore  # noqa: F401 - imported for fork safety (see _build_lock)
import httpx

from .. import _lifecycle, _log, _tap

__all__ = ["USER_AGENT", "build_client"]

USER_AGENT = "trackware/0.1 (+python-httpx)"

# httpx logs every request line (query string included) at INFO on its own
# logger; credentials some vendors take as query parameters (Synerise's tracker
# key) must not reach an app's logs through it.
_httpx_logger = logging.getLogger("httpx")
if not any(isinstance(f, _log.ScrubFilter) for f in _httpx_logger.filters):
    _httpx_logger.addFilter(_log.ScrubFilter())

# Fork safety. httpx imports httpcore (and h11, h2, certifi...) only when its
# first client is built, which here happens on a worker thread: a fork while
# that thread is inside the import leaves the child a half-initialised module
# ("partially initialized module 'httpcore'" on every retry) or a module lock
# no thread of the child will ever release. So all of it is imported above, by
# whoever imports trackware (normally the main thread); certifi's bundle is
# located now (certifi.where() imports more on its first call), and the idna
# codec is loaded now (socket.getaddrinfo imports it on its first call). Left
# of a build is the SSL context: it is made while holding _build_lock, which every
# fork waits for (held across every fork, below): no child inherits OpenSSL
# half-way through loading a bundle. A child builds clients of its own (see
# after_fork); it never uses its parent's connections or SSL context.
certifi.where()
"localhost".encode("idna")
_build_lock = threading.Lock()
# Taken before logging takes its module lock for the fork (the lifecycle
# registry's order): a build that logs is never waited for while that lock is
# held.
_lifecycle.hold_across_fork(_build_lock)


def build_client(
    *,
    timeout: float,
    connect_timeout: float,
    verify: bool | str | ssl.SSLContext,
    cert: str | tuple[str, str] | None,
    transport: httpx.BaseTransport | None,
) -> httpx.Client:
    """A client for one exporter: ``timeout`` for read/write/pool,
    ``connect_timeout``, TLS ``verify`` (a CA bundle path or an SSL context)
    and an optional client certificate, no redirects, four pooled
    connections. Built while holding ``_build_lock``: no fork happens in the
    middle of it."""
    with _build_lock:
        tls: t.Any = verify
        if cert is not None:
            ctx = (
                tls
                if isinstance(tls, ssl.SSLContext)
                else ssl.create_default_context(
                    cafile=tls if isinstance(tls, str) else None
                )
            )
            if isinstance(cert, str):
                ctx.load_cert_chain(cert)
            else:
                ctx.load_cert_chain(cert[0], cert[1])
            tls = ctx
        client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            verify=tls,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        )
    with _hooks_lock:
        _clients.add(client)
        if _tap.taps:
            client.event_hooks = _TAP_HOOKS
    return client


# The inspector's view of the exchanges (trackware._tap): while a tap is
# registered, every client built here carries httpx event hooks handing each
# request and answer to it; while none is, no client carries any (zero cost).
_TAP_HOOKS: dict[str, list[t.Callable[..., t.Any]]] = {
    "request": [_tap.request_hook],
    "response": [_tap.response_hook],
}
_clients: weakref.WeakSet[httpx.Client] = weakref.WeakSet()
_hooks_lock = threading.Lock()


def _taps_changed(active: bool) -> None:
    """Install the tap hooks on every live client, or take them off."""
    hooks: dict[str, list[t.Callable[..., t.Any]]] = (
        _TAP_HOOKS if active else {"request": [], "response": []}
    )
    with _hooks_lock:
        for client in list(_clients):
            client.event_hooks = hooks


_tap.on_change(_taps_changed)


def _after_fork_in_child() -> None:
    global _hooks_lock
    _hooks_lock = threading.Lock()


_lifecycle.on_fork(_after_fork_in_child)
