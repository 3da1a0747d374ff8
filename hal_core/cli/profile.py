"""``hal profile``: run a workload under a profiling session; ``hal profile summary FILE``.

    hal profile [--device URI] [--families LIST] [--format bundle|perfetto|summary]
                [--output FILE] [--profiler NAME [--profiler-option K=V ...]] -- WORKLOAD [ARGS]
    hal profile summary FILE [--json]

WORKLOAD is a ``hal bench`` benchmark name or a Python file. A file runs with the globals
``device`` (the open device) and ``hal_core``; if it defines ``main(device)``, that is
called after the module body.

Options and the output path are checked before the workload runs (a mistake is one line
and exit code 2). Ctrl-C ends the session, writes what was captured and exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import sys
import traceback
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
from ._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Interrupts,
    OneLineParser,
    positive_int,
    rc_for,
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
#: The range ``ProfilingOptions`` accepts for ``ring_capacity``.
RING_CAPACITY_RANGE = (16, 1 << 26)


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
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="timed repeats of a bench workload (a positive integer)",
    )
    p.add_argument(
        "--ring-capacity",
        type=int,
        default=1 << 16,
        help=f"records per stream between flushes ({RING_CAPACITY_RANGE[0]} to "
        f"{RING_CAPACITY_RANGE[1]})",
    )
    p.add_argument("--json", action="store_true", help="summary as JSON")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- WORKLOAD [ARGS] | summary FILE")
    p.set_defaults(run=run)


def _fail(message: str, rc: int = EXIT_USAGE) -> int:
    text = " ".join(message.split())
    print(f"hal profile: {text}", file=sys.stderr)
    return rc


def _family_names(families: ProfilingDataFamily) -> str:
    """Families as ``--families`` spells them (``queue-events,dispatch-events``)."""
    return ",".join(m.name.lower().replace("_", "-") for m in F if m and m.name and families & m)


def _cli_spellings(message: str) -> str:
    """``message`` with each family member name followed by its ``--families`` spelling:
    ``DISPATCH_EVENTS`` -> ``DISPATCH_EVENTS (dispatch-events)``."""

    def spell(match: re.Match[str]) -> str:
        name = match.group(0)
        member = F.__members__.get(name)
        if member is None or not member:
            return name
        return f"{name} ({name.lower().replace('_', '-')})"

    return re.sub(r"\b[A-Z][A-Z_]+[A-Z]\b", spell, message)


def check_output_path(path: str) -> str | None:
    """Why ``path`` cannot be written (checked before a workload runs), or None."""
    if os.path.isdir(path):
        return f"output {path!r} is a directory; name a file"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"cannot write output {path!r}: directory {parent!r} does not exist"
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            return f"cannot write output {path!r}: permission denied"
    elif not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write output {path!r}: directory {parent!r} is not writable"
    return None


def _print_stats(stats: ProfileStatistics, as_json: bool) -> None:
    if as_json:
        print(json.dumps(attrs.asdict(stats), indent=2))
    else:
        print(stats.format_table())


def _summary_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="hal profile summary", description="Statistics of a profile bundle file."
    )
    p.add_argument("file", metavar="FILE", help="a bundle written by hal profile --format bundle")
    p.add_argument("--json", action="store_true", help="statistics as JSON")
    return p


def run_summary(path: str, as_json: bool) -> int:
    try:
        bundle = read_profile_bundle(path, allow_incomplete=True)
        sink = StatisticsSink()
        bundle.replay([sink])
    except HalError as exc:
        return _fail(f"cannot read {path!r}: {exc}", rc_for(exc))
    except OSError as exc:
        return _fail(f"cannot read {path!r}: {exc.strerror or exc}", rc_for(exc))
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
        if len(rest) == 1:
            return _fail("usage: hal profile summary FILE [--json]")
        summary = _summary_parser().parse_args(rest[1:])
        return run_summary(summary.file, args.json or summary.json)
    if not rest:
        return _fail(
            "no workload given: hal profile [options] -- WORKLOAD (a bench name or a .py file)"
        )
    low, high = RING_CAPACITY_RANGE
    if not low <= args.ring_capacity <= high:
        return _fail(f"--ring-capacity must be in [{low}, {high}], got {args.ring_capacity}")
    output: str = args.output or DEFAULT_OUTPUT.get(args.format, "")
    if args.format != "summary" and output:
        problem = check_output_path(output)
        if problem:
            return _fail(problem)
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
        return _fail(str(exc), rc_for(exc))
    rc = 0
    try:
        from ..profiling import supported_families

        if families is None:
            # What the device supports of the defaults; all of them when it supports none,
            # so profiling_begin names what is missing instead of capturing nothing.
            families = DEFAULT_FAMILIES & supported_families(device) or DEFAULT_FAMILIES
        families |= extra
        opts = ProfilingOptions(families, sinks=sinks, ring_capacity=args.ring_capacity)
        if device.profiling_begin(opts) is None:
            return _fail("no profiling data families requested; pass --families")
        print(
            f"hal profile: running {rest[0]} on {args.device} ({_family_names(families)})",
            file=sys.stderr,
            flush=True,
        )
        interrupts = Interrupts()
        try:
            with interrupts:
                workload(device, args.device, args.repeats)
        except KeyboardInterrupt:
            interrupts.seen = True
        except HalError as exc:
            rc = _fail(f"workload {rest[0]} failed: {exc}", EXIT_FAILURE)
        except Exception:
            # An error in the user's own workload file: its traceback is what they need.
            traceback.print_exc()
            rc = _fail(f"workload {rest[0]} raised; see the traceback above", EXIT_FAILURE)
        finally:
            try:
                device.profiling_end()
            except HalError as exc:  # a sink failing to write: the capture is incomplete
                rc = _fail(f"ending the profiling session failed: {exc}", EXIT_FAILURE)
        if interrupts.seen:
            print("hal profile: interrupted; wrote what was captured", file=sys.stderr)
            rc = EXIT_INTERRUPTED
    except HalError as exc:
        # The device cannot do what the options ask: a usage mistake, said with the
        # --families spelling next to each family's name.
        return _fail(_cli_spellings(str(exc)))
    finally:
        device.close()
    if stats is not None:
        _print_stats(stats.statistics(), args.json)
    elif output:
        print(f"hal profile: wrote {output}", file=sys.stderr)
    return rc
