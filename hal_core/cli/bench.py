"""``hal bench``: run the registered benchmarks; medians over repeats, peers in the same run."""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from typing import Any

from .._registry import DEFAULT_DEVICE_URI, create_device
from .._status import HalError
from ..bench import BenchContext, BenchmarkSkipped, BenchResult, all_benchmarks


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="run benchmarks (all when no NAME is given)")
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmark names or globs")
    p.add_argument("--device", default=DEFAULT_DEVICE_URI, help="device URI (default %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per benchmark")
    p.add_argument("--list", action="store_true", help="list benchmarks and exit")
    p.set_defaults(run=run)


def select(names: list[str]) -> list[str]:
    known = all_benchmarks()
    if not names:
        return sorted(known)
    chosen: list[str] = []
    for pattern in names:
        hits = [n for n in sorted(known) if fnmatch.fnmatchcase(n, pattern) or n == pattern]
        if not hits:
            raise SystemExit(f"hal bench: no benchmark matches {pattern!r}; try --list")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def run(args: argparse.Namespace) -> int:
    known = all_benchmarks()
    if args.list:
        for name in sorted(known):
            b = known[name]
            print(f"{name:<28} {b.unit:<10} {b.description}")
        return 0
    names = select(args.names)
    device = None
    if any(known[n].needs_device for n in names):
        try:
            device = create_device(args.device)
        except HalError as exc:
            print(f"hal bench: cannot open {args.device!r}: {exc}", file=sys.stderr)
            return 2
    ctx = BenchContext(device, args.device, repeats=max(1, args.repeats))
    results: list[BenchResult] = []
    skipped: list[tuple[str, str]] = []
    failed = 0
    try:
        for i, name in enumerate(names, 1):
            bench = known[name]
            print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
            try:
                value = bench.fn(ctx)
            except BenchmarkSkipped as exc:
                skipped.append((name, str(exc)))
                print(f"hal bench: {name} skipped: {exc}", file=sys.stderr)
                continue
            except HalError as exc:
                failed += 1
                print(f"hal bench: {name} failed: {exc}", file=sys.stderr)
                continue
            results.append(BenchResult(name, round(float(value), 4), bench.unit))
    finally:
        if device is not None:
            device.close()
    if args.json:
        payload: dict[str, Any] = {
            "device": args.device,
            "results": [r.as_json() for r in results],
        }
        if skipped:
            payload["skipped"] = [{"name": n, "reason": why} for n, why in skipped]
        print(json.dumps(payload, indent=2))
    else:
        print(f"device: {args.device}")
        for r in results:
            print(f"  {r.name:<28} {r.value:>12.4f} {r.unit}")
        for name, why in skipped:
            print(f"  {name:<28} skipped: {why}")
    return 1 if failed else 0
