"""``hal bench``: run the registered benchmarks; medians over repeats, peers in the same run.

A benchmark that cannot run here (it raises ``BenchmarkSkipped``, or the device answers
UNAVAILABLE, UNIMPLEMENTED or INCOMPATIBLE) is skipped with the reason; any other failure
is reported and makes the exit code 1. Ctrl-C stops the run, prints what finished and
exits 130.
"""

from __future__ import annotations

import argparse
import fnmatch
import inspect
import json
import sys
from typing import Any

from .._plugin_checks import did_you_mean
from .._registry import DEFAULT_DEVICE_URI, create_device
from .._status import HalError, StatusCode
from .._uri import DeviceUri
from ..bench import BenchContext, Benchmark, BenchmarkSkipped, BenchResult, all_benchmarks
from ._common import EXIT_FAILURE, EXIT_INTERRUPTED, Interrupts, fail, positive_int, rc_for

#: Codes meaning "this device cannot run this benchmark", reported as a skip.
SKIP_CODES = frozenset({StatusCode.UNAVAILABLE, StatusCode.UNIMPLEMENTED, StatusCode.INCOMPATIBLE})


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="run benchmarks (all when no NAME is given)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmark names or globs")
    p.add_argument("--device", default=DEFAULT_DEVICE_URI, help="device URI (default %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=7,
        help="timed repeats per benchmark (a positive integer; default %(default)s)",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="list the benchmarks (those matching NAME when given) with their descriptions",
    )
    p.set_defaults(run=run)


class UnknownBenchmark(Exception):
    """A NAME that matches no benchmark."""


def select(names: list[str], known: dict[str, Benchmark] | None = None) -> list[str]:
    """Benchmark names matching ``names`` (exact names or globs) in order, without
    repeats; all of them when ``names`` is empty. UnknownBenchmark names a pattern that
    matches nothing (with near-miss suggestions)."""
    known = all_benchmarks() if known is None else known
    if not names:
        return sorted(known)
    chosen: list[str] = []
    for pattern in names:
        hits = [n for n in sorted(known) if fnmatch.fnmatchcase(n, pattern) or n == pattern]
        if not hits:
            raise UnknownBenchmark(
                f"no benchmark matches {pattern!r}{did_you_mean(pattern, known)}; "
                "'hal bench --list' lists them"
            )
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _description(bench: Benchmark) -> str:
    return inspect.getdoc(bench.fn) or bench.description


def _list(known: dict[str, Benchmark], names: list[str], as_json: bool) -> int:
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "unit": known[name].unit,
            "needs_device": known[name].needs_device,
            "description": _description(known[name]),
        }
        for name in names
    ]
    if as_json:
        print(json.dumps({"benchmarks": rows}, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']}  [{row['unit']}]")
        for line in (row["description"] or "(no description)").splitlines():
            print(f"    {line}" if line else "")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        known = all_benchmarks()
    except ImportError as exc:  # an installed plugin's benchmark module is broken
        return fail("bench", f"cannot load the benchmarks: {exc}", EXIT_FAILURE)
    try:
        names = select(args.names, known)
    except UnknownBenchmark as exc:
        return fail("bench", str(exc))
    if args.list:
        return _list(known, names, args.json)
    try:
        DeviceUri.parse(args.device)
    except HalError as exc:
        return fail("bench", f"--device: {exc.message}")
    device = None
    if any(known[n].needs_device for n in names):
        try:
            device = create_device(args.device)
        except HalError as exc:
            return fail("bench", f"cannot open {args.device!r}: {exc}", rc_for(exc))
    ctx = BenchContext(device, args.device, repeats=args.repeats)
    results: list[BenchResult] = []
    skipped: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    interrupts = Interrupts()
    try:
        with interrupts:
            _run_all(ctx, known, names, results, skipped, failed, interrupts)
    except KeyboardInterrupt:
        pass
    finally:
        if device is not None:
            device.close()
    interrupted = interrupts.seen
    if interrupted:
        print("hal bench: interrupted; results so far:", file=sys.stderr)
    _report(args, results, skipped, failed, interrupted)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILURE if failed else 0


def _run_all(
    ctx: BenchContext,
    known: dict[str, Benchmark],
    names: list[str],
    results: list[BenchResult],
    skipped: list[dict[str, str]],
    failed: list[dict[str, str]],
    interrupts: Interrupts,
) -> None:
    """Run ``names`` in order, appending to the lists; stops early once Ctrl-C was seen."""
    for i, name in enumerate(names, 1):
        if interrupts.seen:
            return
        bench = known[name]
        print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        try:
            value = bench.fn(ctx)
        except BenchmarkSkipped as exc:
            skipped.append({"name": name, "reason": str(exc)})
            print(f"hal bench: {name} skipped: {exc}", file=sys.stderr)
            continue
        except HalError as exc:
            if exc.code in SKIP_CODES:
                skipped.append({"name": name, "reason": str(exc)})
                print(f"hal bench: {name} skipped: {exc}", file=sys.stderr)
            else:
                failed.append({"name": name, "error": str(exc)})
                print(f"hal bench: {name} failed: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # a benchmark's own bug: report it, run the rest
            failed.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
            print(f"hal bench: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        results.append(BenchResult(name, round(float(value), 4), bench.unit))


def _report(
    args: argparse.Namespace,
    results: list[BenchResult],
    skipped: list[dict[str, str]],
    failed: list[dict[str, str]],
    interrupted: bool,
) -> None:
    if args.json:
        payload: dict[str, Any] = {
            "device": args.device,
            "results": [r.as_json() for r in results],
            "skipped": skipped,
            "failed": failed,
        }
        if interrupted:
            payload["interrupted"] = True
        print(json.dumps(payload, indent=2))
        return
    print(f"device: {args.device}")
    for r in results:
        print(f"  {r.name:<28} {r.value:>12.4f} {r.unit}")
    for s in skipped:
        print(f"  {s['name']:<28} skipped: {s['reason']}")
    for f in failed:
        print(f"  {f['name']:<28} FAILED: {f['error']}")
