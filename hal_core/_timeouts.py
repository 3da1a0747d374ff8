"""Timeout arguments of blocking calls: seconds as a real number, or None for forever.

One normalisation for every host wait (semaphores, notifications), so a wrong type is
INVALID_ARGUMENT at the call and a huge or infinite timeout waits forever instead of
overflowing the platform's lock timeout.
"""

from __future__ import annotations

import numbers
import threading
from typing import Any

from ._status import InvalidArgumentError

__all__ = ["as_timeout"]

# A timeout at or above this waits forever (``Lock.acquire`` rejects larger ones).
_TIMEOUT_MAX = threading.TIMEOUT_MAX


def _brief(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return (text[:77] + "...") if len(text) > 80 else text


def as_timeout(timeout: Any) -> float | None:
    """A wait timeout in seconds: None (forever) or a real number (numpy numbers
    included); 0 or less polls. Bool, NaN and non-numbers are INVALID_ARGUMENT; infinite or
    beyond the platform's maximum means forever (None)."""
    if timeout is None:
        return None
    if timeout.__class__ is not float:
        if timeout.__class__ is bool or not isinstance(timeout, numbers.Real):
            raise InvalidArgumentError(
                "timeout must be None or a number of seconds, got "
                f"{_brief(timeout)} ({type(timeout).__name__})"
            )
        try:
            timeout = float(timeout)
        except OverflowError:  # an int too large for a float: forever
            return None
    if timeout != timeout:
        raise InvalidArgumentError("timeout must be None or a number of seconds, got nan")
    return None if timeout >= _TIMEOUT_MAX else timeout
