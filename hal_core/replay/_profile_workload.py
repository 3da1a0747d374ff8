"""The workload ``hal replay profile`` hands to ``hal profile``: replay one capture.

Run by ``hal profile`` as a workload file (``device`` is the profiled device) with
``sys.argv`` = ``[this file, CAPTURE, --substitute=SPEC ..., --workgroup-count=SPEC ...]``.
"""

from __future__ import annotations

import sys
from typing import Any

from hal_core.replay import Player, parse_substitution, with_workgroup_counts


def main(device: Any) -> None:
    path, *options = sys.argv[1:]
    prefix = "--substitute="
    subs = [parse_substitution(o[len(prefix) :]) for o in options if o.startswith(prefix)]
    counts = "--workgroup-count="
    subs = with_workgroup_counts(subs, [o[len(counts) :] for o in options if o.startswith(counts)])
    Player(path, device, substitutions=subs).run()
