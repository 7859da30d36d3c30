"""The ``trackware`` command line."""

from __future__ import annotations

import argparse
import sys
import typing as t


def _dead_letter(args: argparse.Namespace) -> int:
    import json

    from ._deadletter import JSONLinesDeadLetter

    dl = JSONLinesDeadLetter(args.path) if args.path else JSONLinesDeadLetter()
    records = dl.read()
    for record in records[-args.last :] if args.last else records:
        print(json.dumps(record, ensure_ascii=False))
    print(f"{len(records)} record(s) in {dl.path}", file=sys.stderr)
    return 0


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trackware", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

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
