"""``trackware inspect [--host H] [--port 8969] [--token T]``."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import typing as t

from .._argtypes import port

__all__ = ["main", "register"]


def register(sub: t.Any) -> argparse.ArgumentParser:
    """Add the ``inspect`` command to an argparse subparsers object."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "inspect",
        help="run the live inspector page apps send copies of their events to",
        description="Run the inspector sidecar: apps whose tracker has "
        "inspector=URL (TRACKWARE_INSPECTOR) send it each event, the vendor "
        "payloads and the outcomes; open the printed address in a browser. "
        "Binds 127.0.0.1 unless --host and a token are given (docs/inspector.md).",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (127.0.0.1; another interface needs --token)",
    )
    parser.add_argument(
        "--port", type=port, default=8969, help="0 picks a free port (8969)"
    )
    parser.add_argument(
        "--token",
        default=None,
        help="require this token from apps and browsers (default: "
        "$TRACKWARE_INSPECTOR_TOKEN; required off loopback)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The ``inspect`` command: serve until Ctrl-C or SIGTERM."""
    from ._server import InspectorServer

    token = args.token or os.environ.get("TRACKWARE_INSPECTOR_TOKEN") or None
    try:
        server = InspectorServer(args.host, args.port, token=token)
    except ValueError as exc:
        print(f"trackware inspect: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += " (another `trackware inspect`? choose another --port)"
        print(
            f"trackware inspect: cannot listen on {args.host}:{args.port}: {reason}",
            file=sys.stderr,
        )
        return 2
    page = server.url + ("/?token=<your token>" if token else "/")
    print(f"trackware inspect: open {page}", flush=True)
    print(f"  apps: TRACKWARE_INSPECTOR={server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: t.Sequence[str] | None = None) -> int:
    """``trackware inspect`` on its own (``python -m trackware.inspector``)."""
    parser = argparse.ArgumentParser(prog="trackware")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["inspect", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))
