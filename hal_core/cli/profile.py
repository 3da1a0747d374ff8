"""``hal profile``: run a workload under a profiling session; ``hal profile summary FILE``.

    hal profile [--device URI] [--families LIST] [--format bundle|perfetto|summary]
                [--output FILE] [--profiler NAME [--profiler-option K=V ...]] -- WORKLOAD [ARGS]
    hal profile summary FILE [--json]

WORKLOAD is a ``hal bench`` benchmark name or a Python file. A file runs with the globals
``device`` (the open device) and ``hal_core``; if it defines ``main(device)``, that is
called after the module body.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from typing import Any

import attrs

from .._registry import DEFAULT_DEVICE_URI, create_device
from .._status import HalError, NotFoundError
from ..profiling import (
    PerfettoSink,
    ProfileBundleSink,
    ProfileStatistics,
    ProfilingDataFamily,
    ProfilingOptions,
    StatisticsSink,
    create_profiler,
    parse_families,
    read_profile_bundle,
)

F = ProfilingDataFamily

#: What ``hal profile`` captures when --families is not given (reduced to what the
#: device supports).
DEFAULT_FAMILIES = (
    F.QUEUE_EVENTS
    | F.HOST_EXECUTION_EVENTS
    | F.DISPATCH_EVENTS
    | F.MEMORY_EVENTS
    | F.EXECUTABLE_METADATA
)
DEFAULT_OUTPUT = {"bundle": "profile.halprof", "perfetto": "profile.perfetto.json"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "profile",
        help="profile a workload (bench name or Python file); 'summary FILE' reads a bundle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default=DEFAULT_DEVICE_URI, help="device URI (default %(default)s)")
    p.add_argument(
        "--families",
        default=None,
        help="comma list, e.g. queue-events,dispatch-events (default: all the "
        "device supports of queue/host-execution/dispatch/memory/metadata)",
    )
    p.add_argument("--format", choices=("bundle", "perfetto", "summary"), default="summary")
    p.add_argument("--output", "-o", default=None, help="output file (bundle/perfetto)")
    p.add_argument("--profiler", default=None, help="a third-party profiler by name (hal info)")
    p.add_argument(
        "--profiler-option",
        action="append",
        default=[],
        metavar="K=V",
        help="option for --profiler (repeatable)",
    )
    p.add_argument("--repeats", type=int, default=1, help="timed repeats of a bench workload")
    p.add_argument(
        "--ring-capacity", type=int, default=1 << 16, help="records per stream between flushes"
    )
    p.add_argument("--json", action="store_true", help="summary as JSON")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- WORKLOAD [ARGS] | summary FILE")
    p.set_defaults(run=run)


def _fail(message: str) -> int:
    print(f"hal profile: {message}", file=sys.stderr)
    return 2


def _print_stats(stats: ProfileStatistics, as_json: bool) -> None:
    if as_json:
        print(json.dumps(attrs.asdict(stats), indent=2))
    else:
        print(stats.format_table())


def run_summary(path: str, as_json: bool) -> int:
    try:
        bundle = read_profile_bundle(path, allow_incomplete=True)
    except (HalError, OSError) as exc:
        return _fail(f"cannot read {path!r}: {exc}")
    sink = StatisticsSink()
    bundle.replay([sink])
    if not bundle.complete:
        print(
            f"hal profile: warning: {path} was never finished; showing what it holds",
            file=sys.stderr,
        )
    _print_stats(sink.statistics(), as_json)
    return 0


def _workload(name: str, args: list[str]) -> Any:
    """A callable ``run(device, uri, repeats)`` for a bench name or a Python file."""
    from ..bench import BenchContext, all_benchmarks

    benches = all_benchmarks()
    if name in benches:
        bench = benches[name]

        def run_bench(device: Any, uri: str, repeats: int) -> None:
            bench.fn(BenchContext(device, uri, repeats=repeats))

        return run_bench
    if name.endswith(".py") or os.path.isfile(name):
        if not os.path.isfile(name):
            raise NotFoundError(f"workload file {name!r} does not exist")

        def run_file(device: Any, uri: str, repeats: int) -> None:
            import hal_core

            saved = sys.argv
            sys.argv = [name, *args]
            try:
                module = runpy.run_path(
                    name,
                    init_globals={"device": device, "hal_core": hal_core},
                    run_name="__hal_profile__",
                )
                main = module.get("main")
                if callable(main):
                    main(device)
            finally:
                sys.argv = saved

        return run_file
    raise NotFoundError(
        f"workload {name!r} is neither a hal bench benchmark nor a Python file; "
        f"benchmarks: {', '.join(sorted(benches))}"
    )


def run(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if rest and rest[0] == "summary":
        if len(rest) != 2:
            return _fail("usage: hal profile summary FILE")
        return run_summary(rest[1], args.json)
    if not rest:
        return _fail(
            "no workload given: hal profile [options] -- WORKLOAD (a bench name or a .py file)"
        )
    try:
        workload = _workload(rest[0], rest[1:])
        families = parse_families(args.families) if args.families else None
        options: dict[str, str] = {}
        for item in args.profiler_option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                return _fail(f"--profiler-option wants K=V, got {item!r}")
            options[key] = value
        sinks: list[Any] = []
        extra = F.NONE
        if args.profiler:
            sink, extra = create_profiler(args.profiler, options)
            sinks.append(sink)
        output = args.output or DEFAULT_OUTPUT.get(args.format)
        stats = None
        if args.format == "bundle":
            sinks.append(ProfileBundleSink(output))
        elif args.format == "perfetto":
            sinks.append(PerfettoSink(output))
        else:
            stats = StatisticsSink()
            sinks.append(stats)
        device = create_device(args.device)
    except HalError as exc:
        return _fail(str(exc))
    try:
        from ..profiling._control import supported_families

        if families is None:
            # What the device supports of the defaults; all of them when it supports none,
            # so profiling_begin names what is missing instead of capturing nothing.
            families = DEFAULT_FAMILIES & supported_families(device) or DEFAULT_FAMILIES
        families |= extra
        opts = ProfilingOptions(families, sinks=sinks, ring_capacity=args.ring_capacity)
        if device.profiling_begin(opts) is None:
            return _fail("no profiling data families requested; pass --families")
        names = ",".join(m.name.lower() for m in F if m and m.name and families & m)
        print(
            f"hal profile: running {rest[0]} on {args.device} ({names})",
            file=sys.stderr,
            flush=True,
        )
        try:
            workload(device, args.device, max(1, args.repeats))
        finally:
            device.profiling_end()
    except HalError as exc:
        return _fail(str(exc))
    finally:
        device.close()
    if stats is not None:
        _print_stats(stats.statistics(), args.json)
    elif output:
        print(f"hal profile: wrote {output}", file=sys.stderr)
    return 0
