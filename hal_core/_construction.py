"""How hal_core's public objects come to exist: made by their parents, never subclassed.

A ``Device`` comes from a ``Driver`` (or ``hal_core.create_device``), a ``Driver`` from the
registry, an ``ExecutableCache`` from ``Device.create_executable_cache``, an ``Executable``
from ``ExecutableCache.prepare``, an ``Allocator`` with its device. Their ``__init__`` is
internal: it takes the keyword ``_token=INTERNAL``, which only hal_core passes, and any
other call is INVALID_ARGUMENT naming the factory to use (as cuda.core, whose objects
are likewise created by their parents). ``sealed`` makes a class final for type checkers
(``typing.final``) and at run time (``__init_subclass__`` refuses subclasses): backends
implement the Protocols of ``hal_core.backend`` instead of deriving from these.
"""

from __future__ import annotations

from typing import Any, TypeVar, final

from ._status import InvalidArgumentError

__all__ = ["INTERNAL", "require_internal", "sealed"]


@final
class _Internal:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<hal_core internal construction token>"


INTERNAL: Any = _Internal()
"""The construction token hal_core passes to the internal ``__init__`` of its objects."""

_T = TypeVar("_T", bound=type)


def require_internal(token: object, what: str, factory: str) -> None:
    """INVALID_ARGUMENT unless ``token`` is ``INTERNAL``: ``what`` objects are made by
    ``factory`` only."""
    if token is not INTERNAL:
        raise InvalidArgumentError(
            f"hal_core.{what} has no public constructor; create one with {factory}"
        )


def sealed(cls: _T) -> _T:
    """Refuse subclasses of ``cls`` at class creation (TypeError, like ``typing.final``
    promises to type checkers)."""

    def __init_subclass__(sub: type, **kwargs: Any) -> None:
        raise TypeError(
            f"hal_core.{cls.__name__} is final; backends implement the hal_core.backend "
            "Protocols instead of subclassing it"
        )

    # Replaced after class creation, which mypy does not model for a class's methods.
    cls.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]
    return cls
