"""What every ``hal`` subcommand shares: one-line errors and their exit codes.

Exit codes: 0 success, 1 a runtime failure (a device that is unavailable, a workload that
failed), 2 a usage mistake (a bad URI, an unknown name, a missing file, a bad option
value), 130 interrupted. An ordinary mistake never prints a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any, NoReturn

from .._status import HalError, StatusCode

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "Interrupts",
    "OneLineParser",
    "fail",
    "positive_int",
    "rc_for",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Codes that mean the user asked for something that does not exist or is malformed.
_USAGE_CODES = frozenset(
    {StatusCode.INVALID_ARGUMENT, StatusCode.NOT_FOUND, StatusCode.OUT_OF_RANGE}
)


def rc_for(exc: BaseException) -> int:
    """The exit code for an error: usage for a bad name, URI or value, else failure."""
    if isinstance(exc, HalError) and exc.code in _USAGE_CODES:
        return EXIT_USAGE
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return EXIT_USAGE
    return EXIT_FAILURE


def fail(command: str, message: str, rc: int = EXIT_USAGE) -> int:
    """Print ``hal COMMAND: message`` as one line on stderr and return ``rc``."""
    text = " ".join(message.split())
    print(f"hal {command}: {text}", file=sys.stderr)
    return rc


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (rc 2), pointing at
    ``--help`` instead of printing the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


class Interrupts:
    """While entered (on the main thread): Ctrl-C raises KeyboardInterrupt as usual and
    also sets ``seen``. A KeyboardInterrupt can land where Python swallows it (a weakref or
    ``__del__`` callback hands it to ``sys.unraisablehook`` and goes on); a loop that
    checks ``seen`` between steps still stops, and such a swallowed interrupt is not
    printed (every other unraisable error still goes to the previous hook)."""

    def __init__(self) -> None:
        self.seen = False
        self._installed = False
        self._previous: Any = None
        self._previous_hook: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def _unraisable(self, unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and self.seen:
            return
        self._previous_hook(unraisable)

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._previous_hook = sys.unraisablehook
            sys.unraisablehook = self._unraisable
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            # None means a handler not installed from Python: put the default back.
            previous = signal.default_int_handler if self._previous is None else self._previous
            signal.signal(signal.SIGINT, previous)
            sys.unraisablehook = self._previous_hook
            self._installed = False
