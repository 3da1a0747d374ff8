"""``hal replay``: run, benchmark and dump IREE ``.ireereplay`` captures.

    hal replay run FILE [--device URI] [--substitute SPEC ...] [--save-buffer ID=PATH ...]
                        [--save-buffers DIR] [--dtype DTYPE] [--file-remap OLD=NEW ...]
    hal replay bench FILE [--device URI] [--scope execute|all] [--iterations N] [--json]
    hal replay profile FILE [--device URI] [--format bundle|perfetto|summary] [--output FILE]
    hal replay dump FILE [--json]

``run`` replays the capture once; ``--save-buffer ID=out.npy`` writes the final contents
of buffer object ID (``.npy`` with ``--dtype``, uint8 by default; any other suffix: raw
bytes); ``--save-buffers DIR`` writes every buffer the captured program read back
(``buffer_ID.npy``). ``bench`` replays it ``--iterations`` times and reports the median
microseconds per iteration of the named scope (IREE's recorder marks ``init``,
``execute`` and ``deinit``; ``all`` times the whole stream). ``dump`` prints the records
(``--json``: one JSON object per line, as ``iree-dump-replay --format=jsonl``).
``profile`` replays it once inside ``hal profile``'s profiling session (same formats,
families and sinks). ``--substitute`` takes IREE's ``--replay_executable_substitution`` selectors
(``ID=PATH``, ``ID@FORMAT=PATH``, ``all=PATH``, ``all@FORMAT=PATH``);
``--workgroup-count FUNCTION=X,Y,Z`` gives a substitute build's workgroup count for one of
its functions (a build for another target tiles differently from the captured one).

Exit status: 0 success, 1 the replay failed, 2 bad arguments or an unreadable capture.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from typing import Any

from .._registry import DEFAULT_DEVICE_URI, create_device
from .._status import DataLossError, HalError, InvalidArgumentError, UnimplementedError
from ..replay import (
    Player,
    ReplayFile,
    json_records,
    parse_substitution,
    text_lines,
    with_workgroup_counts,
)

# Captures with more records than this show progress on stderr.
PROGRESS_THRESHOLD = 2000


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="run, benchmark or dump an IREE .ireereplay capture",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="replay_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser, device: bool = True) -> None:
        q.add_argument("file", help="the .ireereplay capture")
        if device:
            q.add_argument(
                "--device", default=DEFAULT_DEVICE_URI, help="device URI (default %(default)s)"
            )
            q.add_argument(
                "--substitute",
                action="append",
                default=[],
                metavar="SPEC",
                help="replace executables: ID=PATH, ID@FORMAT=PATH, all=PATH, all@FORMAT=PATH",
            )
            q.add_argument(
                "--workgroup-count",
                action="append",
                default=[],
                metavar="FUNCTION=X,Y,Z",
                help="dispatch a substituted executable's FUNCTION with this workgroup count "
                "(its build's) instead of the captured one",
            )
            q.add_argument(
                "--file-remap",
                action="append",
                default=[],
                metavar="OLD=NEW",
                help="remap the prefix of external file paths the capture references",
            )
            q.add_argument(
                "--timeout", type=float, default=60.0, help="seconds any one wait may take"
            )

    run = actions.add_parser("run", help="replay once; save buffers")
    common(run)
    run.add_argument("--save-buffer", action="append", default=[], metavar="ID=PATH")
    run.add_argument("--save-buffers", default=None, metavar="DIR")
    run.add_argument("--dtype", default="uint8", help="element type of saved .npy files")
    run.set_defaults(run=_run)

    bench = actions.add_parser("bench", help="median microseconds per replay iteration")
    common(bench)
    bench.add_argument("--scope", default="execute", help="scope to time, or 'all'")
    bench.add_argument("--iterations", type=int, default=10)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(run=_bench)

    prof = actions.add_parser("profile", help="replay once under a profiling session")
    prof.add_argument("file", help="the .ireereplay capture")
    prof.add_argument(
        "--device", default=DEFAULT_DEVICE_URI, help="device URI (default %(default)s)"
    )
    prof.add_argument("--format", choices=("bundle", "perfetto", "summary"), default="summary")
    prof.add_argument("--output", "-o", default=None, help="output file (bundle/perfetto)")
    prof.add_argument("--families", default=None, help="as hal profile --families")
    prof.add_argument("--substitute", action="append", default=[], metavar="SPEC")
    prof.add_argument("--workgroup-count", action="append", default=[], metavar="FUNCTION=X,Y,Z")
    prof.add_argument("--json", action="store_true", help="summary as JSON")
    prof.set_defaults(run=_profile)

    dump = actions.add_parser("dump", help="print the records")
    common(dump, device=False)
    dump.add_argument("--json", action="store_true", help="JSON lines (iree-dump-replay jsonl)")
    dump.set_defaults(run=_dump)


def _fail(message: str, code: int) -> int:
    print(f"hal replay: {message}", file=sys.stderr)
    return code


def _open(path: str) -> ReplayFile:
    try:
        return ReplayFile.open(path)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {path!r}: {exc.strerror or exc}") from None


def _progress(done: int, total: int) -> None:
    end = "\n" if done == total else ""
    print(f"\rreplayed {done}/{total} records", end=end, file=sys.stderr, flush=True)


def _player(args: argparse.Namespace, device: Any) -> Player:
    subs = with_workgroup_counts(
        [parse_substitution(s) for s in args.substitute], args.workgroup_count
    )
    remap = []
    for item in args.file_remap:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise InvalidArgumentError(f"--file-remap {item!r} must be OLD=NEW")
        remap.append((old, new))
    file = _open(args.file)
    player = Player(file, device, substitutions=subs, file_remap=remap, wait_timeout=args.timeout)
    if len(player.plan) > PROGRESS_THRESHOLD and sys.stderr.isatty():
        player.progress = _progress
    return player


def _with_device(args: argparse.Namespace, body: Any) -> int:
    """Open the device, run ``body(device)``; map errors to exit codes (no traceback)."""
    try:
        device = create_device(args.device)
    except HalError as exc:
        return _fail(f"cannot open device {args.device!r}: {exc}", 2)
    try:
        return int(body(device) or 0)
    except (DataLossError, InvalidArgumentError, UnimplementedError) as exc:
        # The capture or the arguments are at fault (or name what hal-core cannot do).
        code = 1 if "replaying record" in exc.message else 2
        return _fail(str(exc), code)
    except HalError as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"{exc.filename or ''}: {exc.strerror or exc}", 1)
    finally:
        device.close()


def _save(data: bytes, path: str, dtype: str) -> None:
    import numpy as np

    if path.endswith(".npy"):
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise InvalidArgumentError(f"--dtype {dtype!r} is not a numpy dtype") from None
        if len(data) % dt.itemsize:
            raise InvalidArgumentError(
                f"{len(data)} bytes are not a whole number of {dt.name} elements"
            )
        np.save(path, np.frombuffer(data, dt))
    else:
        with open(path, "wb") as f:
            f.write(data)


def _run(args: argparse.Namespace) -> int:
    saves = []
    for item in args.save_buffer:
        ident, sep, path = item.partition("=")
        if not sep or not path or not ident.isdigit():
            return _fail(f"--save-buffer {item!r} must be ID=PATH with a numeric buffer id", 2)
        saves.append((int(ident), path))

    def body(device: Any) -> int:
        player = _player(args, device)
        player.run()
        for ident, path in saves:
            _save(player.buffer_contents(ident), path, args.dtype)
            print(f"buffer {ident} -> {path}")
        if args.save_buffers:
            os.makedirs(args.save_buffers, exist_ok=True)
            for ident in player.output_buffer_ids:
                path = os.path.join(args.save_buffers, f"buffer_{ident}.npy")
                _save(player.buffer_contents(ident), path, args.dtype)
                print(f"buffer {ident} -> {path}")
        print(f"replayed {len(player.plan)} records of {args.file} on {args.device}")
        return 0

    return _with_device(args, body)


def _bench(args: argparse.Namespace) -> int:
    if args.iterations < 1:
        return _fail("--iterations must be at least 1", 2)

    def body(device: Any) -> int:
        player = _player(args, device)
        scope = None if args.scope == "all" else args.scope
        player.run(scope)  # warm-up: executables prepared, caches filled
        samples = []
        gc.collect()
        for _ in range(args.iterations):
            # As timeit and hal bench do: no cyclic collection inside a timed iteration.
            gc.disable()
            try:
                if scope is None:
                    t0 = time.perf_counter_ns()
                    player.run()
                    samples.append(time.perf_counter_ns() - t0)
                else:
                    samples.append(player.run(scope))
            finally:
                gc.enable()
        us = statistics.median(samples) / 1e3
        if args.json:
            out = {
                "file": args.file,
                "device": args.device,
                "scope": args.scope,
                "iterations": args.iterations,
                "median_us": round(us, 3),
                "min_us": round(min(samples) / 1e3, 3),
            }
            print(json.dumps(out))
        else:
            print(f"{args.file} on {args.device}, scope {args.scope}: {us:.1f} us per iteration")
        return 0

    return _with_device(args, body)


def _profile(args: argparse.Namespace) -> int:
    """Through ``hal profile`` (its sinks, families and messages), with the replay as the
    workload."""
    if not os.path.isfile(args.file):
        return _fail(f"cannot read {args.file!r}: no such file", 2)
    from ..replay import _profile_workload
    from .main import main

    argv = ["profile", "--device", args.device, "--format", args.format]
    if args.output:
        argv += ["--output", args.output]
    if args.families:
        argv += ["--families", args.families]
    if args.json:
        argv.append("--json")
    argv += ["--", _profile_workload.__file__, args.file]
    argv += [f"--substitute={s}" for s in args.substitute]
    argv += [f"--workgroup-count={c}" for c in args.workgroup_count]
    return main(argv)


def _dump(args: argparse.Namespace) -> int:
    try:
        file = _open(args.file)
        if args.json:
            for obj in json_records(file):
                print(json.dumps(obj, separators=(",", ":")))
        else:
            for line in text_lines(file):
                print(line)
    except HalError as exc:
        return _fail(str(exc), 2)
    return 0
