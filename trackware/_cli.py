"""The ``trackware`` command line.

* ``trackware emulate [--port N]``: run the local vendor emulators.
* ``trackware send-test DESTINATION``: send one test event with the
  credentials from the environment and print the vendor's answer.
* ``trackware dead-letter [--last N]``: print the dead-letter file.

Every command first reports ``TRACKWARE_*`` environment variables trackware
does not read, naming the closest known one (see ``trackware._env``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import typing as t

from . import _env
from ._deadletter import JSONLinesDeadLetter
from ._event import Event
from .exceptions import ConfigurationError, InvalidEventError

#: destination -> (module, class, default test event name, default properties)
DESTINATIONS: dict[str, tuple[str, str, str, dict[str, t.Any]]] = {
    "cardlytics": (
        "trackware.exporters.cardlytics",
        "ClientEventExporter",
        "session_start",
        {},
    ),
    "mxo": (
        "trackware.exporters.mxo",
        "InteractionExporter",
        "trackware.test",
        {"source": "send-test"},
    ),
    "mxo-lightweight": (
        "trackware.exporters.mxo",
        "LightweightExporter",
        "trackware.test",
        {"source": "send-test"},
    ),
    "synerise": (
        "trackware.exporters.synerise",
        "SyneriseExporter",
        "trackware.test",
        {"source": "send-test"},
    ),
    "yotpo": (
        "trackware.exporters.yotpo",
        "CustomEventExporter",
        "trackware.test",
        {"source": "send-test"},
    ),
}


def _emulate(args: argparse.Namespace) -> int:
    from .testing.emulators import serve

    serve(host=args.host, port=args.port)
    return 0


def _send_test(args: argparse.Namespace) -> int:
    module_name, class_name, default_event, default_props = DESTINATIONS[
        args.destination
    ]
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        exporter = cls.from_env()
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    properties = dict(default_props)
    if args.properties:
        try:
            extra = json.loads(args.properties)
        except ValueError as exc:
            exporter.close()
            print(f"--properties is not valid JSON: {exc}", file=sys.stderr)
            return 2
        if not isinstance(extra, dict):
            exporter.close()
            print("--properties must be a JSON object", file=sys.stderr)
            return 2
        properties.update(extra)
    try:
        event = Event(
            args.event or default_event,
            properties,
            user_id=args.user_id,
            email=args.email,
            phone=args.phone,
            anonymous_id=args.anonymous_id,
        )
    except InvalidEventError as exc:
        exporter.close()
        print(f"invalid event: {exc}", file=sys.stderr)
        return 2
    try:
        if not exporter.applies(event):
            print(
                f"{args.destination}: the mapping does not cover event "
                f"{event.name!r}; pass --event with a mapped name",
                file=sys.stderr,
            )
            return 2
        result = exporter.export([event])
    finally:
        exporter.close()
    answer = getattr(exporter, "last_response", None)
    if answer is not None:
        print(f"vendor answered HTTP {answer[0]}: {answer[1]}")
    if result.sent:
        print(f"{args.destination}: event {event.event_id} accepted")
        return 0
    for rejection in result.rejected:
        print(f"{args.destination}: rejected: {rejection.reason}")
    if result.retry:
        print(f"{args.destination}: failed (would be retried): {result.error}")
    return 1


def _dead_letter(args: argparse.Namespace) -> int:
    dl = JSONLinesDeadLetter(args.path or None)
    records = dl.read()
    for record in records[-args.last :] if args.last else records:
        print(json.dumps(record, ensure_ascii=False))
    print(f"{len(records)} record(s) in {dl.path}", file=sys.stderr)
    return 0


def main(argv: t.Sequence[str] | None = None) -> int:
    # A misspelt TRACKWARE_* variable is reported before anything reads the
    # environment (by the trackware logger: with no logging configured, its
    # warnings go to stderr).
    _env.check_environment()
    parser = argparse.ArgumentParser(
        prog="trackware", description="trackware command line"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    emulate = sub.add_parser(
        "emulate", help="run the local vendor API emulators (for tests and demos)"
    )
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--port", type=int, default=8900)
    emulate.set_defaults(func=_emulate)

    send = sub.add_parser(
        "send-test",
        help="send one test event with credentials from TRACKWARE_* variables",
    )
    send.add_argument("destination", choices=sorted(DESTINATIONS))
    send.add_argument("--event", default=None, help="event name (a mapped one)")
    send.add_argument("--properties", default=None, help="JSON object")
    send.add_argument("--user-id", default="trackware-test-user")
    send.add_argument("--email", default=None)
    send.add_argument("--phone", default=None)
    send.add_argument("--anonymous-id", default=None)
    send.set_defaults(func=_send_test)

    dead = sub.add_parser("dead-letter", help="print the dead-letter file's records")
    dead.add_argument(
        "--path", default=None, help="default: the tracker's default path"
    )
    dead.add_argument("--last", type=int, default=0, help="only the last N records")
    dead.set_defaults(func=_dead_letter)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
