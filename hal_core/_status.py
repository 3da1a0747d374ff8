"""Status codes and the one exception type, ``HalError``, with a subclass per code.

Codes mirror IREE's ``iree_status_code_t`` values. Each subclass also derives from the
matching built-in exception so ordinary Python handlers work
(``except TimeoutError`` catches a DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import enum

__all__ = [
    "StatusCode",
    "HalError",
    "CancelledError",
    "UnknownError",
    "InvalidArgumentError",
    "DeadlineExceededError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "FailedPreconditionError",
    "AbortedError",
    "OutOfRangeError",
    "UnimplementedError",
    "InternalError",
    "UnavailableError",
    "DataLossError",
    "UnauthenticatedError",
    "DeferredError",
    "IncompatibleError",
    "error_for",
]


class StatusCode(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16
    DEFERRED = 17
    INCOMPATIBLE = 18


class HalError(Exception):
    """An error with a HAL status code.

    ``HalError(code, message)`` builds an instance of the subclass for ``code``, so
    ``HalError(StatusCode.NOT_FOUND, "x")`` is a ``NotFoundError``. Subclasses take only
    the message.
    """

    code: StatusCode = StatusCode.UNKNOWN

    def __new__(cls, *args: object) -> "HalError":
        if cls is HalError and args and isinstance(args[0], (StatusCode, int)):
            cls = _BY_CODE.get(StatusCode(args[0]), HalError)
        return super().__new__(cls)

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], (StatusCode, int)) and not isinstance(args[0], bool):
            code = StatusCode(args[0])
            message = str(args[1]) if len(args) > 1 else ""
        else:
            code = type(self).code
            message = str(args[0]) if args else ""
        self.code = code
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}" if self.message else self.code.name

    def __reduce__(self) -> tuple[object, tuple[StatusCode, str]]:  # keep pickling working
        return (error_for, (self.code, self.message))

    def clone(self) -> "HalError":
        """A fresh exception with the same code, message and ``__cause__`` (safe to raise
        again; the cause, e.g. a Python kernel's own exception, keeps its traceback)."""
        clone = error_for(self.code, self.message)
        clone.__cause__ = self.__cause__
        return clone


# Declared as classes (not built with type()) so type checkers see each one and its
# built-in base.
class CancelledError(HalError):
    code = StatusCode.CANCELLED


class UnknownError(HalError):
    code = StatusCode.UNKNOWN


class InvalidArgumentError(HalError, ValueError):
    code = StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(HalError, TimeoutError):
    code = StatusCode.DEADLINE_EXCEEDED


class NotFoundError(HalError, LookupError):
    code = StatusCode.NOT_FOUND


class AlreadyExistsError(HalError):
    code = StatusCode.ALREADY_EXISTS


class PermissionDeniedError(HalError, PermissionError):
    code = StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(HalError):
    code = StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(HalError, RuntimeError):
    code = StatusCode.FAILED_PRECONDITION


class AbortedError(HalError):
    code = StatusCode.ABORTED


class OutOfRangeError(HalError, IndexError):
    code = StatusCode.OUT_OF_RANGE


class UnimplementedError(HalError, NotImplementedError):
    code = StatusCode.UNIMPLEMENTED


class InternalError(HalError, RuntimeError):
    code = StatusCode.INTERNAL


class UnavailableError(HalError):
    code = StatusCode.UNAVAILABLE


class DataLossError(HalError):
    code = StatusCode.DATA_LOSS


class UnauthenticatedError(HalError):
    code = StatusCode.UNAUTHENTICATED


class DeferredError(HalError):
    code = StatusCode.DEFERRED


class IncompatibleError(HalError):
    code = StatusCode.INCOMPATIBLE


_BY_CODE: dict[StatusCode, type[HalError]] = {
    c.code: c
    for c in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
        DeferredError,
        IncompatibleError,
    )
}


def error_for(code: StatusCode | int, message: str = "") -> HalError:
    """Build the ``HalError`` subclass instance for ``code``."""
    code = StatusCode(code)
    if code == StatusCode.OK:
        raise ValueError("error_for(OK): OK is not an error")
    return _BY_CODE[code](message)


def as_hal_error(exc: BaseException) -> HalError:
    """Map an arbitrary exception raised by user code to a HalError (keeps HalErrors)."""
    if isinstance(exc, HalError):
        return exc
    return error_for(StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
