"""Executable substitution: run a capture with other executables than the captured ones.

Follows IREE's ``--replay_executable_substitution`` selectors: ``ID=PATH`` (one captured
executable object id), ``all=PATH`` (every executable), each optionally with ``@FORMAT``
naming the replacement's format (``ID@FORMAT=PATH``). Without a format the captured one is
kept. The replacement must export every function the capture dispatches, by name, with
the captured binding and constant counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import attrs

from .._status import InvalidArgumentError

__all__ = ["Substitution", "parse_substitution", "pick_substitution"]


@attrs.frozen
class Substitution:
    """Replace captured executable ``executable_id`` (None: every executable) with
    ``data`` in ``format`` (None: the captured format). ``data`` is what
    ``ExecutableCache.prepare`` takes for that format (bytes, a path, a module...);
    ``source`` names it in messages."""

    data: Any
    executable_id: int | None = None
    format: str | None = None
    source: str = ""


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


def pick_substitution(subs: Sequence[Substitution], executable_id: int) -> Substitution | None:
    """The substitution for ``executable_id``: an exact id wins over ``all``."""
    fallback = None
    for sub in subs:
        if sub.executable_id == executable_id:
            return sub
        if sub.executable_id is None and fallback is None:
            fallback = sub
    return fallback
