"""Instructions per ``track()``, per request and per delivered event, counted
by ``valgrind --tool=callgrind``: the deterministic rows of ``make bench``.

Each row runs ``bench/callgrind_scenarios.py`` under callgrind in a process of
its own; a row is (Ir of a region of ``N`` operations - Ir of a region of
``N0``) / (``N`` - ``N0``), all threads counted. ``--against PATH`` measures
the trackware tree at PATH the same way and compares.
Run: ``.venv/bin/python bench/callgrind.py [--against /tmp/pre] [--fail-over 5]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import typing as t

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "callgrind_scenarios.py")
THIS_TREE = os.path.dirname(HERE)

#: row id -> what the table calls it.
ROWS: dict[str, str] = {
    "track-flat": "track(), 3 flat properties",
    "track-nested": "track(), nested properties",
    "flask-plain": "Flask request, plain app",
    "flask-returning": "Flask, page + sessions, returning",
    "flask-excluded": "Flask, request excluded",
    "flask-first": "Flask, page + sessions, first visit",
    "asgi-plain": "Starlette request, plain app",
    "asgi-returning": "ASGI, page + sessions, returning",
    "asgi-excluded": "ASGI, request excluded",
    "asgi-first": "ASGI, page + sessions, first visit",
    "deliver-null": "delivery to a null exporter, /event",
    "deliver-http": "delivery by HTTPExporter, /event",
}


class Measure(t.NamedTuple):
    """One row measured on one tree."""

    per_op: float
    trackware: str
    check: dict[str, t.Any]


def totals(path: str) -> int:
    """The instruction count of one callgrind dump (its ``totals:`` line)."""
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise ValueError(f"{path}: no totals line")


def measure(row: str, tree: str, workdir: str, scale: float) -> Measure:
    """Run ``row``'s scenario under callgrind with ``tree`` first on the path."""
    tag = f"{row}-{abs(hash(tree)):x}"
    out = os.path.join(workdir, tag + ".out")
    env = dict(os.environ, PYTHONPATH=tree, PYTHONHASHSEED="0")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--dump-before=getloadavg",
            f"--callgrind-out-file={out}",
            sys.executable,
            SCENARIOS,
            row,
            str(scale),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,  # never the repository: its trackware/ would shadow PATH's
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(
            f"callgrind: row {row} on {tree} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-3000:]}"
        )
    result = json.loads(lines[-1])
    expected = os.path.join(os.path.realpath(tree), "trackware", "__init__.py")
    if os.path.realpath(result["trackware"]) != expected:
        raise SystemExit(
            f"callgrind: row {row} imported {result['trackware']}, not {expected}"
        )
    first, second = (totals(f"{out}.{i}") for i in result["dumps"])
    per_op = (second - first) / (result["n"] - result["n0"])
    return Measure(per_op, result["trackware"], result["check"])


def run_all(
    jobs: list[tuple[str, str]], scale: float, parallel: int
) -> dict[tuple[str, str], Measure]:
    """Measure every (row, tree) job, ``parallel`` at a time."""
    workdir = tempfile.mkdtemp(prefix="trackware-callgrind-")
    try:
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            futures = {
                job: pool.submit(measure, job[0], job[1], workdir, scale)
                for job in jobs
            }
            return {job: f.result() for job, f in futures.items()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--against", metavar="PATH", help="also measure the trackware tree at PATH"
    )
    parser.add_argument(
        "--fail-over",
        metavar="PCT",
        type=float,
        help="exit 1 if a row costs more than PCT %% over PATH's",
    )
    parser.add_argument(
        "--rows", nargs="+", choices=list(ROWS), default=list(ROWS), metavar="ROW"
    )
    parser.add_argument(
        "--repeat",
        action="store_true",
        help="measure this tree twice and show how far the two runs agree",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply N0 and N (default 1)"
    )
    parser.add_argument("--parallel", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--verbose", action="store_true", help="show what each run did")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind not installed: the deterministic (callgrind) rows are skipped")
        return 0
    this = os.path.realpath(THIS_TREE)
    trees = [this]
    if args.against:
        trees.append(os.path.realpath(args.against))
    elif args.repeat:
        trees.append(this + os.sep)  # the same tree again, a second job
    jobs = [(row, tree) for row in args.rows for tree in trees]
    results = run_all(jobs, args.scale, args.parallel)
    threshold = args.fail_over if args.fail_over is not None else 5.0
    print(
        "## Instructions per operation under callgrind "
        "(deterministic; all threads; fewer is better)"
    )
    if len(trees) == 1:
        print(f"  {'row':<40} {'Ir/op':>12}")
        for row in args.rows:
            print(f"  {ROWS[row]:<40} {results[row, this].per_op:12,.0f}")
    else:
        other = "again" if args.repeat and not args.against else args.against
        print(f"  {'row':<40} {'this tree':>12} {other:>12} {'change':>8}")
    worse = []
    for row in args.rows if len(trees) > 1 else []:
        ours, theirs = results[row, trees[0]], results[row, trees[1]]
        change = (ours.per_op / theirs.per_op - 1) * 100
        verdict = "ok"
        if change > threshold:
            verdict = f"WORSE > {threshold:g} %"
            worse.append(row)
        print(
            f"  {ROWS[row]:<40} {ours.per_op:12,.0f} {theirs.per_op:12,.0f}"
            f" {change:+7.2f}%  {verdict}"
        )
    if args.verbose:
        for (row, _), m in results.items():
            print(f"  ({row} on {m.trackware}: {json.dumps(m.check)})")
    if worse and args.fail_over is not None:
        print(f"  rows worse by more than {threshold:g} %: {', '.join(worse)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
