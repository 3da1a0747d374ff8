"""Short text for the reprs of public objects: sizes, memory types, devices, affinities.

Reprs are for people reading a REPL or a log line: short (under 120 characters), naming
the type, and never raising, also on closed or half-built objects (``safe_repr``)."""

from __future__ import annotations

from typing import Any, Callable

from ._memory import MemoryType

__all__ = ["size", "memory_type", "device_name", "affinity", "names", "safe_repr"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(n: int) -> str:
    """``256 B``, ``4 KiB``, ``1.5 MiB``."""
    value = float(n)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached


# Each entry names its bits; a named combination hides the bits it implies.
_MEMORY_NAMES = (
    (MemoryType.DEVICE_LOCAL, "DEVICE_LOCAL"),
    (MemoryType.HOST_LOCAL, "HOST_LOCAL"),
    (MemoryType.DEVICE_VISIBLE, "DEVICE_VISIBLE"),
    (MemoryType.HOST_VISIBLE, "HOST_VISIBLE"),
    (MemoryType.HOST_COHERENT, "HOST_COHERENT"),
    (MemoryType.HOST_CACHED, "HOST_CACHED"),
    (MemoryType.OPTIMAL, "OPTIMAL"),
)


def memory_type(mt: int) -> str:
    """The memory type's flags, implied bits left out: ``DEVICE_LOCAL|HOST_LOCAL|HOST_CACHED``."""
    left = int(mt)
    parts = []
    for flag, name in _MEMORY_NAMES:
        if left & int(flag) == int(flag) and int(flag) & left:
            parts.append(name)
            left &= ~int(flag)
    if left:
        parts.append(hex(left))
    return "|".join(parts) or "NONE"


def device_name(device: Any) -> str:
    """The device's URI, ``closed`` appended when it is closed; ``no device`` for None."""
    if device is None:
        return "no device"
    uri = getattr(device, "uri", None) or type(device).__name__
    return f"{uri} (closed)" if getattr(device, "closed", False) is True else str(uri)


def affinity(value: int) -> str:
    """``ANY``, ``none``, ``queue 2``, ``queues 0,1,3`` (at most 8 listed)."""
    value = int(value)
    if value == (1 << 64) - 1:
        return "ANY"
    if value == 0:
        return "none"
    bits = [i for i in range(64) if value >> i & 1]
    if len(bits) == 1:
        return f"queue {bits[0]}"
    shown = ",".join(str(b) for b in bits[:8])
    return f"queues {shown}" + (f",... ({len(bits)})" if len(bits) > 8 else "")


def names(items: Any, limit: int = 48) -> str:
    """``a, b, c`` cut to about ``limit`` characters (``, ... +N`` says how many more)."""
    items = list(items)
    out: list[str] = []
    used = 0
    for i, item in enumerate(items):
        text = str(item)
        if used + len(text) > limit and out:
            return ", ".join(out) + f", ... +{len(items) - i}"
        out.append(text)
        used += len(text) + 2
    return ", ".join(out)


def safe_repr(fn: Callable[[Any], str]) -> Callable[[Any], str]:
    """Make ``__repr__`` never raise: on any error it falls back to ``<hal_core.Type>``."""

    def wrapper(self: Any) -> str:
        try:
            return fn(self)
        except Exception:
            return f"<hal_core.{type(self).__name__}>"

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper
