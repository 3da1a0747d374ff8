"""Executable substitution: run a capture with other executables than the captured ones.

Follows IREE's ``--replay_executable_substitution`` selectors: ``ID=PATH`` (one captured
executable object id), ``all=PATH`` (every executable), each optionally with ``@FORMAT``
naming the replacement's format (``ID@FORMAT=PATH``). Without a format the captured one is
kept. The replacement must export every function the capture dispatches, by name, with
the captured binding and constant counts.

A capture holds the workgroup counts its own build dispatched with. A build of the same
program for another target tiles differently (a gfx1100 build of a CPU capture's program
may need 2 workgroups where the CPU build needed 1), so a substitution can carry the
replacement build's count per function (``workgroup_counts``; ``--workgroup-count
FUNCTION=X,Y,Z`` on the command line), used for that function's dispatches instead of the
captured one. Only a count that is a constant of the build (static shapes) can be given so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import attrs

from .._status import InvalidArgumentError

__all__ = [
    "Substitution",
    "WorkgroupCount",
    "parse_substitution",
    "parse_workgroup_count",
    "pick_substitution",
    "with_workgroup_counts",
]

WorkgroupCount = tuple[int, int, int]


@attrs.frozen
class Substitution:
    """Replace captured executable ``executable_id`` (None: every executable) with
    ``data`` in ``format`` (None: the captured format). ``data`` is what
    ``ExecutableCache.prepare`` takes for that format (bytes, a path, a module...);
    ``source`` names it in messages. ``workgroup_counts`` maps function names to the
    replacement build's workgroup count, dispatched instead of the captured count."""

    data: Any
    executable_id: int | None = None
    format: str | None = None
    source: str = ""
    workgroup_counts: Mapping[str, WorkgroupCount] = attrs.field(factory=dict, hash=False)

    def dispatch_counts(self, names: Sequence[str]) -> list[WorkgroupCount | None] | None:
        """The count to dispatch each of ``names`` (captured function order) with: the
        replacement's where given, None to keep the captured one; None when no name has
        one."""
        counts = self.workgroup_counts
        if not counts:
            return None
        picked = [counts.get(name) for name in names]
        return picked if any(c is not None for c in picked) else None


def parse_substitution(text: str) -> Substitution:
    """Parse ``ID=PATH``, ``ID@FORMAT=PATH``, ``all=PATH`` or ``all@FORMAT=PATH``.

    A PATH naming an existing file is read as bytes; anything else is passed as given
    (e.g. an importable module name for ``local-cpu-python``). INVALID_ARGUMENT for a
    malformed selector."""
    selector, sep, target = text.partition("=")
    if not sep or not selector or not target:
        raise InvalidArgumentError(
            f"executable substitution {text!r} must be ID=PATH, ID@FORMAT=PATH, all=PATH or "
            "all@FORMAT=PATH"
        )
    which, at, fmt = selector.partition("@")
    if at and not fmt:
        raise InvalidArgumentError(f"executable substitution {text!r} has an empty @FORMAT")
    if which == "all":
        executable_id = None
    else:
        try:
            executable_id = int(which, 0)
        except ValueError:
            raise InvalidArgumentError(
                f"executable substitution selector {which!r} is neither 'all' nor an executable "
                "object id (see `hal replay dump` for the ids)"
            ) from None
        if executable_id <= 0:
            raise InvalidArgumentError(
                f"executable object id must be positive, got {executable_id}"
            )
    path = Path(target)
    data: Any = path.read_bytes() if path.is_file() else target
    return Substitution(data, executable_id, fmt or None, target)


def parse_workgroup_count(text: str) -> tuple[str, WorkgroupCount]:
    """Parse ``FUNCTION=X,Y,Z`` (or ``FUNCTION=X``: Y and Z are 1). INVALID_ARGUMENT for
    a malformed one or a count below 1."""
    name, sep, value = text.partition("=")
    parts = value.split(",")
    try:
        if not sep or not name or not 1 <= len(parts) <= 3:
            raise ValueError
        xyz = [int(v, 0) for v in parts] + [1] * (3 - len(parts))
    except ValueError:
        raise InvalidArgumentError(
            f"workgroup count {text!r} must be FUNCTION=X,Y,Z (integers)"
        ) from None
    if min(xyz) < 1:
        raise InvalidArgumentError(f"workgroup count {text!r}: every dimension must be >= 1")
    return name, (xyz[0], xyz[1], xyz[2])


def with_workgroup_counts(subs: Sequence[Substitution], specs: Sequence[str]) -> list[Substitution]:
    """``subs`` with the ``FUNCTION=X,Y,Z`` counts of ``specs`` added to each (a function
    name only matches in the executables that export it). INVALID_ARGUMENT for a malformed
    spec, or for counts without any substitution (the captured build's counts stand)."""
    if not specs:
        return list(subs)
    if not subs:
        raise InvalidArgumentError(
            "--workgroup-count applies to substituted executables; give --substitute too"
        )
    counts = dict(parse_workgroup_count(s) for s in specs)
    return [attrs.evolve(s, workgroup_counts={**s.workgroup_counts, **counts}) for s in subs]


def pick_substitution(subs: Sequence[Substitution], executable_id: int) -> Substitution | None:
    """The substitution for ``executable_id``: an exact id wins over ``all``."""
    fallback = None
    for sub in subs:
        if sub.executable_id == executable_id:
            return sub
        if sub.executable_id is None and fallback is None:
            fallback = sub
    return fallback
