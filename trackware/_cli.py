"""The ``trackware`` command line (also ``python -m trackware``).

* ``trackware emulate [--host H] [--port N]``: run the local vendor emulators,
  print their credentials and the ``export`` lines for ``from_env()``, log one
  line per request.
* ``trackware send-test DESTINATION``: send one test event with the
  credentials from the environment and print the vendor's answer.
* ``trackware deadletter list|show|replay|purge``: the dead letters of a
  JSON-lines file or a spool: list them, show one, send them again after a
  fix (original ids; only what is delivered leaves), delete them.
* ``trackware dead-letter [--path P] [--last N]``: print the dead-letter file's
  raw lines (the older command; ``deadletter list --json`` is the new one).
* ``trackware --version``.

Every command first reports ``TRACKWARE_*`` environment variables trackware
does not read, naming the closest known one (see ``trackware._env``).
Errors are one line on stderr and exit status 2 (bad arguments, configuration
or input) or 1 (the vendor refused, the file has unreadable lines); never a
traceback, unless ``--traceback`` asks for one. docs/cli.md is the reference.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import os
import sys
import typing as t

from . import _env, _log
from ._argtypes import non_negative, port, positive_int
from ._deadletter import default_dead_letter_path
from ._event import Event
from .exceptions import ConfigurationError, InvalidEventError

#: destination -> the variables that make up the URLs it calls (a 404 means
#: one of them is wrong, not the credentials).
URL_VARIABLES: dict[str, tuple[str, ...]] = {
    "cardlytics": ("TRACKWARE_CARDLYTICS_BASE_URL",),
    "mxo": (
        "TRACKWARE_MXO_BASE_URL",
        "TRACKWARE_MXO_TOKEN_URL",
        "TRACKWARE_MXO_SITE_KEY",
    ),
    "mxo-lightweight": ("TRACKWARE_MXO_BASE_URL", "TRACKWARE_MXO_SITE_KEY"),
    "synerise": ("TRACKWARE_SYNERISE_BASE_URL",),
    "yotpo": (
        "TRACKWARE_YOTPO_BASE_URL",
        "TRACKWARE_YOTPO_STORE_ID",
        "TRACKWARE_YOTPO_EVENT_PATH",
    ),
}

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


def version() -> str:
    """The installed trackware's version."""
    found = getattr(importlib.import_module("trackware"), "__version__", None)
    if isinstance(found, str) and found:
        return found
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        return dist_version("trackware")
    except PackageNotFoundError:
        return "unknown"


def _fail(message: str, status: int = 2) -> int:
    print(f"trackware: {message}", file=sys.stderr)
    return status


def _emulate(args: argparse.Namespace) -> int:
    from .testing.emulators import serve

    try:
        serve(host=args.host, port=args.port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += " (another `trackware emulate`? choose another --port)"
        return _fail(f"emulate: cannot listen on {args.host}:{args.port}: {reason}")
    except KeyboardInterrupt:  # Ctrl-C is how it stops, whenever it comes
        pass
    return 0


def _not_found(destination: str, detail: str) -> str:
    """A 404: the URL (base URL, or a value that is part of the path) is
    wrong; the credentials were never looked at."""
    names = " / ".join(URL_VARIABLES.get(destination, ("its base URL",)))
    return (
        f"{destination}: the vendor answered 404 (not found): the URL is wrong, "
        f"not the credentials: check {names} ({detail})"
    )


def _detail(reason: str) -> str:
    """The vendor's answer without the exporter's lead ("authentication
    refused", "not found ..."): the command says what the status means."""
    for lead in (
        "authentication refused: ",
        "authentication failed: ",
        "not found (check the base URL and any id in the path): ",
    ):
        if reason.startswith(lead):
            reason = reason[len(lead) :]
    return reason


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
        detail = f": {answer[1]}" if answer[1] else ""
        print(f"vendor answered HTTP {answer[0]}{detail}")
    if result.sent:
        print(f"{args.destination}: event {event.event_id} accepted")
        return 0
    for rejection in result.rejected:
        if rejection.status == 404:
            print(_not_found(args.destination, _detail(rejection.reason)))
        else:
            print(f"{args.destination}: rejected: {rejection.reason}")
    if result.retry:
        if result.status == 404:  # a custom retry policy may retry it
            print(_not_found(args.destination, _detail(str(result.error))))
        else:
            print(f"{args.destination}: failed (would be retried): {result.error}")
            if result.status is None:
                names = URL_VARIABLES.get(args.destination, ("its base URL",))[0]
                print(
                    f"{args.destination}: no HTTP answer: check {names} and that "
                    "the server is running"
                )
    return 1


def _dead_letter(args: argparse.Namespace) -> int:
    # Read here rather than with JSONLinesDeadLetter.read(), which raises on
    # the first unreadable line: a line cut short by a crash mid-write must
    # not hide the records around it.
    path = os.fspath(args.path) if args.path else str(default_dead_letter_path())
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        where = "--path" if args.path else "TRACKWARE_DEAD_LETTER_PATH or --path"
        print(
            f"0 record(s): there is no file at {path} (nothing has been "
            f"dead-lettered there yet; another file? give {where})",
            file=sys.stderr,
        )
        return 0
    except OSError as exc:
        return _fail(f"dead-letter: cannot read {path}: {exc.strerror or exc}")
    records: list[t.Any] = []
    bad: list[int] = []
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            bad.append(number)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    for record in records[-args.last :] if args.last else records:
        print(json.dumps(record, ensure_ascii=False))
    print(f"{len(records)} record(s) in {path}", file=sys.stderr)
    if bad:
        shown = ", ".join(str(n) for n in bad[:10]) + (", ..." if len(bad) > 10 else "")
        print(
            f"trackware: dead-letter: {len(bad)} line(s) of {path} are not JSON "
            f"records and were skipped (line {shown})",
            file=sys.stderr,
        )
        return 1
    return 0


# --- trackware deadletter list|show|replay|purge -------------------------------------


def _store(args: argparse.Namespace) -> t.Any:
    """The store --path/--spool name, else the default (see deadletter.py)."""
    from . import deadletter

    if args.spool:
        if not os.path.isdir(args.spool):
            raise ConfigurationError(f"--spool {args.spool}: there is no folder there")
        return deadletter.open_store(args.spool)
    return deadletter.open_store(args.path or None)


def _record_json(record: t.Any) -> str:
    return json.dumps(record._asdict(), ensure_ascii=False)


def _dl_list(args: argparse.Namespace) -> int:
    from . import deadletter

    store = _store(args)
    where = deadletter.describe(store)
    records = store.list(args.destination)
    for r in records:
        if args.json:
            print(_record_json(r))
            continue
        status = r.status if r.status is not None else "-"
        reason = " ".join(r.reason.split())
        if len(reason) > 100:
            reason = reason[:99] + "…"
        print(
            f"{r.key}  {r.time or '-'}  {r.destination}  {status}  "
            f"{r.event.get('name')}  {r.event.get('event_id')}  {reason}"
        )
    which = f" of {args.destination}" if args.destination else ""
    print(f"{len(records)} dead letter(s){which} in {where}", file=sys.stderr)
    return 0


def _dl_show(args: argparse.Namespace) -> int:
    from . import deadletter

    store = _store(args)
    try:
        record = deadletter.show(args.key, store)
    except KeyError as exc:
        return _fail(f"deadletter show: {exc.args[0]} in {deadletter.describe(store)}")
    print(json.dumps(record._asdict(), ensure_ascii=False, indent=2))
    return 0


def _load_target(spec: str | None) -> t.Any:
    """The Tracker or exporters ``--config module:factory`` gives, else
    ``Tracker.from_env()``."""
    if spec is None:
        from . import Tracker

        return Tracker.from_env()
    from ._loader import resolve

    return resolve(spec)


def _close_target(target: t.Any) -> None:
    """Shut the factory's tracker down, or close its exporter(s)."""
    shutdown = getattr(target, "shutdown", None)
    if callable(shutdown):
        shutdown(timeout=5.0)
        return
    exporters = target if isinstance(target, (list, tuple)) else [target]
    for exporter in exporters:
        with contextlib.suppress(Exception):
            exporter.close()


def _dl_replay(args: argparse.Namespace) -> int:
    from . import deadletter

    try:
        target = _load_target(args.config)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.path or args.spool:
            store = _store(args)
        else:
            own = getattr(target, "dead_letter", None)
            store = own if isinstance(own, deadletter.DeadLetterStore) else _store(args)
        where = deadletter.describe(store)
        try:
            report = deadletter.replay(
                target,
                store,
                destination=args.destination,
                keys=args.key or None,
                batch_size=args.batch_size,
            )
        except KeyError as exc:
            return _fail(f"deadletter replay: {exc.args[0]} in {where}")
    finally:
        _close_target(target)
    for o in report.outcomes:
        if args.json:
            print(json.dumps(o._asdict(), ensure_ascii=False))
            continue
        line = f"{o.outcome}  {o.key}  {o.destination}  {o.event_id}"
        if o.status is not None:
            line += f"  HTTP {o.status}"
        if o.detail:
            line += "  " + " ".join(o.detail.split())
        print(line)
    print(f"{report.summary()} (from {where})", file=sys.stderr)
    return 0 if report.ok else 1


def _dl_purge(args: argparse.Namespace) -> int:
    from . import deadletter

    store = _store(args)
    where = deadletter.describe(store)
    which = f" of {args.destination}" if args.destination else ""
    if not args.yes:
        count = len(store.list(args.destination))
        return _fail(
            f"deadletter purge: this deletes {count} dead letter(s){which} in "
            f"{where} without sending them; add --yes to do it"
        )
    removed = store.purge(args.destination)
    print(f"purged {removed} dead letter(s){which} from {where}", file=sys.stderr)
    return 0


def _deadletter(args: argparse.Namespace) -> int:
    try:
        return int(args.action(args))
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        name = f" {exc.filename}" if exc.filename else ""
        return _fail(
            f"deadletter {args.dl_command}: cannot use{name}: {exc.strerror or exc}"
        )


def _add_deadletter(sub: t.Any) -> None:
    dl = sub.add_parser(
        "deadletter",
        help="list, show, replay or purge dead letters (file or spool)",
        description="The events that could not be delivered, in a JSON-lines "
        "dead-letter file or a spool: list them, show one, send them again "
        "after a fix (with their original ids; only what the vendor accepts "
        "leaves), or delete them. Default store: the file of "
        "$TRACKWARE_DEAD_LETTER_PATH when set, else the spool of "
        "$TRACKWARE_SPOOL when set, else the default file.",
    )
    actions = dl.add_subparsers(dest="dl_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, destination: bool = True) -> None:
        where = p.add_mutually_exclusive_group()
        where.add_argument("--path", default=None, help="a JSON-lines dead-letter file")
        where.add_argument(
            "--spool", default=None, metavar="DIR", help="a spool folder"
        )
        if destination:
            p.add_argument(
                "--destination",
                default=None,
                metavar="D",
                help="only this destination's records",
            )

    ls = actions.add_parser(
        "list",
        help="one line per dead letter (key, time, destination, status, event, reason)",
    )
    common(ls)
    ls.add_argument("--json", action="store_true", help="one JSON record per line")
    ls.set_defaults(func=_deadletter, action=_dl_list)

    show = actions.add_parser("show", help="one dead letter in full (JSON)")
    show.add_argument("key", help="its key (or the start of one)")
    common(show, destination=False)
    show.set_defaults(func=_deadletter, action=_dl_show)

    rp = actions.add_parser(
        "replay",
        help="send dead letters again; remove what is delivered",
        description="Send dead letters again through the exporter of their "
        "destination, with their original ids; print one line per record "
        "(delivered, rejected with the vendor's answer, failed, ...) and "
        "remove only what was delivered. Exit status 0 when everything was "
        "delivered, else 1.",
    )
    common(rp)
    rp.add_argument(
        "--config",
        default=None,
        metavar="MODULE:FACTORY",
        help="a function returning a Tracker or a list of exporters (default: "
        "Tracker.from_env())",
    )
    rp.add_argument(
        "--key", action="append", default=[], help="only this record (repeatable)"
    )
    rp.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="most events per request",
    )
    rp.add_argument("--json", action="store_true", help="one JSON outcome per line")
    rp.set_defaults(func=_deadletter, action=_dl_replay)

    purge = actions.add_parser("purge", help="delete dead letters without sending them")
    common(purge)
    purge.add_argument("--yes", action="store_true", help="really delete them")
    purge.set_defaults(func=_deadletter, action=_dl_purge)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackware",
        description="trackware command line: local vendor emulators, test "
        "events, dead letters, the inspector, Redis Streams workers "
        "(reference: docs/cli.md)",
    )
    parser.add_argument("--version", action="version", version=f"trackware {version()}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an unexpected error, show the Python traceback (a bug report)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    emulate = sub.add_parser(
        "emulate",
        help="run the local vendor API emulators (for tests and demos)",
        description="Run the local vendor API emulators in the foreground: print "
        "the credentials they accept and the TRACKWARE_* export lines, then one "
        "line per request; the page at / lists what they received.",
    )
    emulate.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1)"
    )
    emulate.add_argument(
        "--port", type=port, default=8900, help="0 picks a free port (8900)"
    )
    emulate.set_defaults(func=_emulate)

    send = sub.add_parser(
        "send-test",
        help="send one test event with credentials from TRACKWARE_* variables",
        description="Send one test event to DESTINATION with the exporter built "
        "by its from_env(), and print the vendor's answer.",
    )
    send.add_argument("destination", choices=sorted(DESTINATIONS))
    send.add_argument("--event", default=None, help="event name (a mapped one)")
    send.add_argument("--properties", default=None, help="JSON object")
    send.add_argument("--user-id", default="trackware-test-user")
    send.add_argument("--email", default=None)
    send.add_argument("--phone", default=None)
    send.add_argument("--anonymous-id", default=None)
    send.set_defaults(func=_send_test)
    _add_deadletter(sub)

    dead = sub.add_parser(
        "dead-letter",
        help="print a dead-letter file's raw lines (older; see deadletter)",
        description="Print the records of a dead-letter file (JSON lines) to "
        "stdout, and their count to stderr.",
    )
    dead.add_argument(
        "--path",
        default=None,
        help="default: $TRACKWARE_DEAD_LETTER_PATH, else "
        "$XDG_STATE_HOME/trackware/dead-letter.jsonl",
    )
    dead.add_argument(
        "--last", type=non_negative, default=0, help="only the last N records"
    )
    dead.set_defaults(func=_dead_letter)

    # The inspector sidecar, and the Redis Streams worker and status: their
    # modules add their own commands (nothing heavy is imported until one runs).
    from . import worker
    from .inspector import _cli as inspector_cli

    inspector_cli.register(sub)
    worker.register(sub)
    return parser


def main(argv: t.Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    # A misspelt TRACKWARE_* variable is reported before anything reads the
    # environment (by the trackware logger: with no logging configured, its
    # warnings go to stderr). The integrations' options module (no framework
    # import) registers the Flask app.config keys, so that such a key set in
    # the environment is named as one.
    importlib.import_module("trackware.integrations._options")
    _env.check_environment()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`trackware dead-letter | head`): not an error
        # of ours. Point stdout at /dev/null so that the exit flush is silent.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        if args.traceback:
            raise
        text = _log.scrub(f"{type(exc).__name__}: {exc}")[:500]
        return _fail(
            f"{args.command}: unexpected error: {text} (this is a bug in "
            "trackware; --traceback shows where)",
            1,
        )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
