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
import importlib.util
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
    "flask-floor": "Flask, the floor (bench/floor.py)",
    "flask-otel": "Flask, OpenTelemetry instrumentation",
    "flask-passthrough": "Flask, a wrapper that only calls the app",
    "asgi-plain": "Starlette request, plain app",
    "asgi-returning": "ASGI, page + sessions, returning",
    "asgi-excluded": "ASGI, request excluded",
    "asgi-first": "ASGI, page + sessions, first visit",
    "asgi-floor": "ASGI, the floor (bench/floor.py)",
    "asgi-otel": "ASGI, OpenTelemetry middleware",
    "asgi-passthrough": "ASGI, middleware that only calls the app",
    "deliver-null": "delivery to a null exporter, /event",
    "deliver-http": "delivery by HTTPExporter, /event",
}


#: Rows that need OpenTelemetry's instrumentation (bench/requirements.txt).
OTEL_ROWS = {
    "flask-otel": "opentelemetry.instrumentation.flask",
    "asgi-otel": "opentelemetry.instrumentation.asgi",
}

#: The request-path targets (issue 16): (framework prefix, its name, the
#: most trackware may add as a multiple of the floor's added instructions).
FLOOR_TARGETS = (("flask", "Flask", 1.1), ("asgi", "Starlette", 1.2))
#: trackware at least this many times cheaper than OpenTelemetry's.
OTEL_FACTOR = 15.0
#: An excluded request adds at most this many instructions.
EXCLUDED_MAX = 3_000


class RowFailed(Exception):
    """A scenario process failed; the message says how."""


class Measure(t.NamedTuple):
    """One row measured on one tree."""

    per_op: float
    trackware: str
    check: dict[str, t.Any]
    #: Each layout's figure (``--layouts``).
    each: tuple[float, ...] = ()


def totals(path: str) -> int:
    """The instruction count of one callgrind dump (its ``totals:`` line)."""
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise ValueError(f"{path}: no totals line")


def measure(row: str, tree: str, workdir: str, scale: float, pad: int) -> Measure:
    """Run ``row``'s scenario under callgrind with ``tree`` first on the path
    (and the heap shifted by ``pad`` objects)."""
    tag = f"{row}-{abs(hash(tree)):x}-{pad}"
    out = os.path.join(workdir, tag + ".out")
    env = dict(
        os.environ,
        PYTHONPATH=tree,
        PYTHONHASHSEED="0",
        TRACKWARE_BENCH_PAD=str(pad),
    )
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
        raise RowFailed(
            f"row {row} on {tree} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-3000:]}"
        )
    result = json.loads(lines[-1])
    expected = os.path.join(os.path.realpath(tree), "trackware", "__init__.py")
    if os.path.realpath(result["trackware"]) != expected:
        raise RowFailed(f"row {row} imported {result['trackware']}, not {expected}")
    first, second = (totals(f"{out}.{i}") for i in result["dumps"])
    per_op = (second - first) / (result["n"] - result["n0"])
    return Measure(per_op, result["trackware"], result["check"])


#: Heap shifts of the ``--layouts`` runs of a row (objects allocated first).
PADS = (0, 1237, 4099, 311, 2750, 7001, 97, 5555)


def run_all(
    jobs: list[tuple[str, str]], scale: float, parallel: int, layouts: int
) -> dict[tuple[str, str], Measure | None]:
    """Measure every (row, tree) job, ``parallel`` processes at a time, each
    the mean of ``layouts`` runs; a job with a failed run is ``None`` (said
    on stderr at once)."""
    workdir = tempfile.mkdtemp(prefix="trackware-callgrind-")
    runs: dict[tuple[str, str], list[Measure | None]] = {job: [] for job in jobs}
    try:
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            futures = {
                pool.submit(measure, row, tree, workdir, scale, pad): (row, tree)
                for pad in PADS[:layouts]
                for row, tree in jobs
            }
            for future in concurrent.futures.as_completed(futures):
                try:
                    runs[futures[future]].append(future.result())
                except RowFailed as exc:
                    print(f"callgrind: {exc}", file=sys.stderr, flush=True)
                    runs[futures[future]].append(None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results: dict[tuple[str, str], Measure | None] = {}
    for job, ms in runs.items():
        done = [m for m in ms if m is not None]
        results[job] = (
            Measure(
                sum(m.per_op for m in done) / len(done),
                done[0].trackware,
                done[0].check,
                tuple(sorted(m.per_op for m in done)),
            )
            if len(done) == len(ms)
            else None
        )
    return results


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
    parser.add_argument(
        "--layouts",
        type=int,
        default=1,
        choices=range(1, len(PADS) + 1),
        metavar="K",
        help="the mean of K runs per row, each with the heap shifted: addresses "
        "decide some hash tables' shapes, worth up to ~1 %% on a row (default 1)",
    )
    parser.add_argument("--parallel", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--verbose", action="store_true", help="show what each run did")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind not installed: the deterministic (callgrind) rows are skipped")
        return 0
    missing = [
        row
        for row in args.rows
        if row in OTEL_ROWS and importlib.util.find_spec(OTEL_ROWS[row]) is None
    ]
    if missing:
        print(
            f"  (not installed: {', '.join(OTEL_ROWS[r] for r in missing)}; "
            f"rows {', '.join(missing)} skipped: pip install -r bench/requirements.txt)"
        )
        args.rows = [row for row in args.rows if row not in missing]
    this = os.path.realpath(THIS_TREE)
    trees = [this]
    if args.against:
        trees.append(os.path.realpath(args.against))
    elif args.repeat:
        trees.append(this + os.sep)  # the same tree again, a second job
    jobs = [(row, tree) for row in args.rows for tree in trees]
    results = run_all(jobs, args.scale, args.parallel, args.layouts)
    threshold = args.fail_over if args.fail_over is not None else 5.0
    print(
        "## Instructions per operation under callgrind "
        "(deterministic; all threads; fewer is better)"
    )
    failed = [job for job, m in results.items() if m is None]
    worse = []
    if len(trees) == 1:
        print(f"  {'row':<40} {'Ir/op':>12}")
        for row in args.rows:
            print(f"  {ROWS[row]:<40} {_count(results[row, this]):>12}")
    else:
        other = "again" if args.repeat and not args.against else args.against
        print(f"  {'row':<40} {'this tree':>12} {other:>12} {'change':>8}")
        for row in args.rows:
            ours, theirs = results[row, trees[0]], results[row, trees[1]]
            change, verdict = "", "FAILED"
            if ours is not None and theirs is not None:
                pct = (ours.per_op / theirs.per_op - 1) * 100
                change, verdict = f"{pct:+7.2f}%", "ok"
                if pct > threshold:
                    verdict = f"WORSE > {threshold:g} %"
                    worse.append(row)
            print(
                f"  {ROWS[row]:<40} {_count(ours):>12} {_count(theirs):>12}"
                f" {change:>8}  {verdict}"
            )
    print_targets({row: results[row, this] for row in args.rows})
    if args.verbose:
        for (row, _), m in sorted(results.items()):
            if m is not None:
                each = ", ".join(f"{x:,.0f}" for x in m.each)
                print(f"  ({row} on {m.trackware}: {json.dumps(m.check)}; {each})")
    if failed:
        print(f"  {len(failed)} run(s) failed (see above): no figure for them")
    if worse:
        print(f"  rows worse by more than {threshold:g} %: {', '.join(worse)}")
    if failed or (worse and args.fail_over is not None):
        return 1
    return 0


def targets(per_op: dict[str, float]) -> list[tuple[str, bool]]:
    """The request-path targets that ``per_op`` (row -> Ir/op of this tree)
    has the rows for: (what was measured against what, met)."""
    out: list[tuple[str, bool]] = []
    for prefix, name, factor in FLOOR_TARGETS:
        plain = per_op.get(f"{prefix}-plain")
        if plain is None:
            continue
        ours = per_op.get(f"{prefix}-returning")
        floor = per_op.get(f"{prefix}-floor")
        otel = per_op.get(f"{prefix}-otel")
        excluded = per_op.get(f"{prefix}-excluded")
        if ours is not None and floor is not None:
            added, floor_added = ours - plain, floor - plain
            ratio = added / floor_added
            out.append(
                (
                    f"{name}, page + sessions, returning: trackware {added:+,.0f}"
                    f" vs the floor {floor_added:+,.0f} Ir = {ratio:.2f}x"
                    f" (target <= {factor:g}x)",
                    ratio <= factor,
                )
            )
        if ours is not None and otel is not None:
            added, otel_added = ours - plain, otel - plain
            times = otel_added / added
            out.append(
                (
                    f"{name}: OpenTelemetry {otel_added:+,.0f} Ir vs trackware"
                    f" {added:+,.0f} = {times:.1f}x cheaper"
                    f" (target >= {OTEL_FACTOR:g}x)",
                    times >= OTEL_FACTOR,
                )
            )
        if excluded is not None:
            added = excluded - plain
            passing = per_op.get(f"{prefix}-passthrough")
            beside = (
                ""
                if passing is None
                else f"; a wrapper that only calls the app {passing - plain:+,.0f}"
            )
            out.append(
                (
                    f"{name}, excluded request: {added:+,.0f} Ir"
                    f" (target <= {EXCLUDED_MAX:,}{beside})",
                    added <= EXCLUDED_MAX,
                )
            )
    return out


def print_targets(results: dict[str, Measure | None]) -> None:
    """The targets' rows, each with the floor or anchor beside it."""
    rows = targets({row: m.per_op for row, m in results.items() if m is not None})
    if rows:
        print("\n## Request-path targets (added = row - the plain app's row)")
        for text, ok in rows:
            print(f"  [{'met' if ok else 'MISSED'}] {text}")


def _count(m: Measure | None) -> str:
    return "failed" if m is None else f"{m.per_op:,.0f}"


if __name__ == "__main__":
    raise SystemExit(main())
