"""``hal``: inspect plugins, drivers and devices (``hal info``), run benchmarks (``hal bench``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from . import bench, info, profile

    info.add_parser(sub)
    bench.add_parser(sub)
    profile.add_parser(sub)
    from . import replay  # hal replay run|bench|dump

    replay.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
