"""``hal``: inspect plugins, drivers and devices (``hal info``), run benchmarks
(``hal bench``), profile workloads (``hal profile``), replay captures (``hal replay``)."""

from __future__ import annotations

import argparse
import os
import sys

from ._common import EXIT_INTERRUPTED, OneLineParser


def _version() -> str:
    from .. import __version__

    return f"hal (hal-core) {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hal", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from . import bench, info, profile

    info.add_parser(sub)
    bench.add_parser(sub)
    profile.add_parser(sub)
    from . import replay  # hal replay run|bench|dump

    replay.add_parser(sub)
    return parser


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush does not
    report the broken pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        rc = int(args.run(args) or 0)
        # Flush here, not at interpreter exit, so a closed pipe is handled below.
        sys.stdout.flush()
        return rc
    except KeyboardInterrupt:
        # Subcommands that have partial results print them and return 130 themselves.
        print("hal: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``hal bench --list | head``): nothing more to say.
        _quiet_stdout()
        return 0


if __name__ == "__main__":
    sys.exit(main())
