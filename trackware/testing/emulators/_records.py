"""What the emulators recorded, and how it is shown.

:class:`RecordedRequest` is one request with its answer; :func:`request_log_line`
is the one-line log of ``trackware emulate`` (credentials hidden);
:func:`received_summary` and :func:`received_page` are what the server answers
at ``/_emulator/received`` (JSON) and ``/`` (HTML).
"""

from __future__ import annotations

import dataclasses
import html
import json
import time
import typing as t
import urllib.parse

from ._api import Request, VendorAPI, in_scope

__all__ = [
    "PAGE_PATH",
    "RECEIVED_PATH",
    "RecordedRequest",
    "received_page",
    "received_summary",
    "request_log_line",
    "rule_broken",
]

#: The paths of the emulator's own pages (not vendor routes, not recorded).
PAGE_PATH = "/"
RECEIVED_PATH = "/_emulator/received"

#: Header names whose values are credentials, hidden from the request log.
_SECRET_HEADER_WORDS = ("auth", "token", "key", "secret", "cookie", "password")
#: JSON body keys whose values are credentials (token requests).
_SECRET_BODY_KEYS = frozenset(
    {"apikey", "secret", "clientsecret", "client_secret", "password", "token"}
)


@dataclasses.dataclass
class RecordedRequest:
    """A request the emulator received and what it answered."""

    route: str | None
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int
    reply: t.Any
    at: float

    def json(self) -> t.Any:
        return json.loads(self.body)


def rule_broken(body: t.Any) -> str | None:
    """The rule an emulator's error body names, on one line, or None.

    Reads each vendor's error shape: Synerise ``errors`` (strings), Yotpo
    ``errors`` (``{rule, field, message}``), Cardlytics ``validationErrors``
    (or its ``title``), MXO ``{error: <rule>, message}`` and the server's own
    ``{error}`` (404, 405).
    """
    text: str | None = None
    if isinstance(body, dict):
        for key in ("errors", "validationErrors"):
            items = body.get(key)
            if isinstance(items, list) and items:
                first = items[0]
                if isinstance(first, dict):
                    head = " ".join(
                        str(first[k]) for k in ("rule", "field") if first.get(k)
                    )
                    message = first.get("message")
                    text = f"{head}: {message}" if head and message else head
                    text = text or str(message or first)
                else:
                    text = str(first)
                if len(items) > 1:
                    text += f" (+{len(items) - 1} more)"
                break
        if text is None:
            error, message = body.get("error"), body.get("message")
            if isinstance(error, str) and isinstance(message, str) and message:
                text = f"{error}: {message}"
            elif isinstance(error, str):
                text = error
            elif isinstance(body.get("title"), str):
                text = body["title"]
    elif isinstance(body, str) and body:
        text = body
    if not text:
        return None
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _secret_values(request: Request) -> list[str]:
    """Credential values a request carries (headers, query, token bodies),
    longest first, so that the request log can hide them."""
    found: set[str] = set()
    for name, value in request.headers.items():
        if any(word in name.lower() for word in _SECRET_HEADER_WORDS):
            found.add(value)
            found.add(value.partition(" ")[2].strip())  # after "Bearer"/"Basic"
    for name, value in request.query.items():
        if any(word in name.lower() for word in _SECRET_HEADER_WORDS):
            found.add(value)
    if request.body and len(request.body) <= 65536:
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            for key, value in body.items():
                if isinstance(value, str) and key.lower() in _SECRET_BODY_KEYS:
                    found.add(value)
        else:  # a form body (OAuth2 token requests)
            try:
                form = urllib.parse.parse_qs(request.body.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                form = {}
            for key, values in form.items():
                if key.lower() in _SECRET_BODY_KEYS:
                    found.update(values)
    return sorted((v for v in found if len(v) >= 4), key=len, reverse=True)


def request_log_line(
    route: str | None, request: Request, status: int, reply: t.Any, note: str = ""
) -> str:
    """One line describing a request and its answer: time, vendor, route name,
    method, path (query values hidden), status, and the rule broken for a 4xx.
    Credentials the request carried never appear in it."""
    vendor = route.split(".", 1)[0] if route else "-"
    path = request.path if len(request.path) <= 200 else request.path[:197] + "..."
    if request.query:
        path += "?" + "&".join(f"{key}=..." for key in request.query)
    line = (
        f"{time.strftime('%H:%M:%S')} {vendor} {route or '-'} "
        f"{request.method} {path} -> {status or 'no answer'}"
    )
    if note:
        line += f" ({note})"
    if 400 <= status < 500:
        rule = rule_broken(reply)
        if rule:
            line += f" rule: {rule}"
    for secret in _secret_values(request):
        line = line.replace(secret, "***")
    return line.encode("ascii", "backslashreplace").decode("ascii")


def _summary(r: RecordedRequest) -> dict[str, t.Any]:
    return {
        "at": r.at,
        "route": r.route,
        "method": r.method,
        "path": r.path,
        "query": sorted(r.query),
        "status": r.status,
        "rule": rule_broken(r.reply) if 400 <= r.status < 500 else None,
    }


def received_summary(
    url: str,
    apis: t.Sequence[VendorAPI],
    requests: t.Sequence[RecordedRequest],
    answered: t.Mapping[tuple[str | None, int], int],
    last: int,
) -> dict[str, t.Any]:
    """What :meth:`EmulatorServer.received` returns: per vendor the number of
    requests and their count by route and status (from ``answered``, which
    counts every request, kept or not), the number of accepted ``events`` and
    the last ``last`` of them, and the last ``last`` kept ``requests``."""
    last = max(0, last)
    vendors: dict[str, t.Any] = {}
    for api in apis:
        mine = [
            r for r in requests if r.route is not None and in_scope(r.route, api.vendor)
        ]
        by_route: dict[str, dict[str, int]] = {}
        total = 0
        for (route, status), count in answered.items():
            if route is not None and in_scope(route, api.vendor):
                counts = by_route.setdefault(route, {})
                counts[str(status)] = counts.get(str(status), 0) + count
                total += count
        with api.lock:
            events = getattr(api, "events", None)
            accepted = list(events) if isinstance(events, list) else []
        vendors[api.vendor] = {
            "requests": total,
            "by_route": by_route,
            "events": len(accepted),
            "last_events": accepted[-last:] if last else [],
            "last_requests": [_summary(r) for r in mine[-last:]] if last else [],
        }
    unrouted = [r for r in requests if r.route is None]
    return {
        "url": url,
        "vendors": vendors,
        "unrouted": {
            "requests": sum(n for (route, _), n in answered.items() if route is None),
            "last_requests": ([_summary(r) for r in unrouted[-last:]] if last else []),
        },
    }


def received_page(received: t.Mapping[str, t.Any]) -> bytes:
    """The HTML page at ``/``: a :func:`received_summary`, readable."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<meta http-equiv='refresh' content='3'>",
        "<title>trackware vendor emulators</title>",
        "<style>body{font-family:sans-serif;margin:2em}"
        "td,th{padding:2px 8px;text-align:left}"
        "pre{background:#f4f4f4;padding:4px;white-space:pre-wrap}</style>",
        "</head><body><h1>trackware vendor emulators</h1>",
        f"<p>{esc(received['url'])}: what each vendor received (this page "
        f"reloads every 3 s; JSON at <a href='{RECEIVED_PATH}'>{RECEIVED_PATH}"
        "</a>).</p>",
    ]
    for vendor, info in received["vendors"].items():
        parts.append(
            f"<h2>{esc(vendor)}: {info['events']} event(s) accepted, "
            f"{info['requests']} request(s)</h2>"
        )
        if info["by_route"]:
            parts.append("<table><tr><th>route</th><th>answers</th></tr>")
            for route, counts in info["by_route"].items():
                answers = ", ".join(f"{n}&times; {esc(s)}" for s, n in counts.items())
                parts.append(f"<tr><td>{esc(route)}</td><td>{answers}</td></tr>")
            parts.append("</table>")
        refused = [r for r in info["last_requests"] if r["rule"]]
        for r in refused[-5:]:
            parts.append(
                f"<p>{esc(r['method'])} {esc(r['path'])} &rarr; {r['status']}: "
                f"{esc(r['rule'])}</p>"
            )
        for event in reversed(info["last_events"]):
            text = json.dumps(event, indent=1, default=str, ensure_ascii=False)
            parts.append(f"<pre>{esc(text)}</pre>")
    unrouted = received["unrouted"]
    if unrouted["requests"]:
        parts.append(f"<h2>no such endpoint: {unrouted['requests']} request(s)</h2>")
        for r in unrouted["last_requests"]:
            parts.append(
                f"<p>{esc(r['method'])} {esc(r['path'])} &rarr; {r['status']}</p>"
            )
    parts.append("</body></html>")
    return "".join(parts).encode("utf-8")
