"""Reporting errors that user callbacks raise on HAL threads.

A timepoint callback, a NON_BLOCKING host call or a work item that raises has nobody to
raise to: the thread running it belongs to the HAL (a local-task worker, an amdgpu
completion thread) or is busy draining other users' callbacks. Such errors are reported
through ``sys.unraisablehook``, as CPython reports an exception raised in ``__del__`` or in
a weakref callback, and the thread carries on.

The default hook (``sys.__unraisablehook__``) accepts only CPython's own
``UnraisableHookArgs`` structure, which Python code cannot build. So the report is made by
CPython itself: the error is re-raised from a weakref callback, and CPython hands the hook a
genuine ``UnraisableHookArgs`` whose ``object`` is a ``CallbackError`` (its ``repr`` says what
raised; ``callback`` is the user's callable). Every hook therefore works, the default one
included, and a hook that raises is itself reported by CPython and never propagates into
the HAL thread.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["CallbackError", "report_callback_error"]


class CallbackError:
    """The ``object`` of an unraisable report made by ``report_callback_error``.

    ``what`` describes the kind of callback (it is the ``repr``, so the default hook
    prints ``Exception ignored in: <what>``); ``callback`` is the callable that raised, or
    None when the reporter did not know it.
    """

    __slots__ = ("what", "callback", "_exc")

    def __init__(self, exc: BaseException, what: str, callback: Any) -> None:
        self.what = what
        self.callback = callback
        self._exc: BaseException | None = exc

    def __call__(self, _ref: Any) -> None:
        # Runs as the weakref callback: raising here is what makes CPython report ``exc``.
        exc, self._exc = self._exc, None
        if exc is not None:
            raise exc

    def __repr__(self) -> str:
        return self.what


class _Token:
    """A weakly referenceable object that dies at once (the report's trigger)."""

    __slots__ = ("__weakref__",)


def report_callback_error(
    exc: BaseException,
    what: str = "a HAL callback",
    callback: Any = None,
) -> None:
    """Report ``exc``, raised by a user callback, through ``sys.unraisablehook``.

    Never raises (a failing or raising hook included) and never blocks beyond what the
    hook does, so a HAL thread may call it from an ``except`` block and carry on. Takes no
    lock; the caller must hold none of the HAL's (the hook is user code).
    """
    try:
        reporter = CallbackError(exc, what, callback)
        token = _Token()
        ref = weakref.ref(token, reporter)
        # Dropping the last reference runs ``reporter`` now (CPython's reference counting);
        # the exception it raises goes to sys.unraisablehook, never to this frame.
        del token
        del ref
    except BaseException:  # nothing may escape into the reporting thread (MemoryError...)
        pass
