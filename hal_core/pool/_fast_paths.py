"""The native pool fast paths: loading ``hal_core.pool._native`` and fitting it to a policy.

``_native`` is a C extension built when ``hal-core`` is installed (``setup.py``; optional:
without a C compiler and Python headers the install still succeeds). It holds the
``Reservation`` type and the reserve/release fast paths of the fixed-block pool (free
stack) and the TLSF pool (quick lists). The Python methods of each policy remain the
reference implementation: the native methods handle only the common case and call them
for everything else, so behaviour is the same with or without the extension; the common
cases are several times faster with it (``hal bench 'pool.*'`` measures both in one run;
``HAL_POOL_NATIVE=0`` turns the extension off, and ``hal info`` says which is in use).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = ["native", "unavailable_reason", "describe", "with_fast_paths"]

T = TypeVar("T", bound="type[Pool]")


def _load() -> tuple[Any, str | None]:
    if os.environ.get("HAL_POOL_NATIVE", "") == "0":
        return None, "turned off by HAL_POOL_NATIVE=0"
    try:
        from . import _native
    except ImportError as exc:
        return None, (
            f"hal_core.pool._native is not built ({exc}); reinstall hal-core with a C "
            "compiler and the Python headers present"
        )
    return _native, None


native, unavailable_reason = _load()


def describe() -> str:
    """One line for ``hal info``: which implementation the pools use."""
    if native is not None:
        return "native (hal_core.pool._native)"
    return f"python ({unavailable_reason})"


def _fence_lock(pool: Any) -> Any:
    return native.FenceLock(pool)


def with_fast_paths(cls: T, core: type) -> T:
    """``cls`` with ``core``'s native ``acquire_reservation`` / ``release_reservation`` in
    front of its own, which become the ``_acquire_slow`` / ``_release_slow`` the core
    falls back to. The lock becomes a ``FenceLock``: the fast paths run only while no
    thread holds it, so every locked section of ``cls`` stays exclusive, and acquiring it
    folds the counts the fast paths kept in C into the pool's counters."""
    # Built with the policy's own metaclass (ABCMeta); mypy cannot call type(cls).
    return type(cls)(  # type: ignore[misc]
        cls.__name__,
        (core, cls),
        {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "_new_lock": _fence_lock,
            "_acquire_slow": cls.acquire_reservation,
            "_release_slow": cls.release_reservation,
            "_python_class": cls,
        },
    )
