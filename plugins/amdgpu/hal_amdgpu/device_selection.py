"""Which GPUs a device URI or device ID selects.

Paths: empty or ``*`` = every visible GPU compatible with the first; a comma list of
ordinals (``0,1``) and/or UUIDs (``GPU-<hex>``, case-insensitive) = one logical device over
those GPUs, which must be compatible (same vendor, name and chip ID). Device IDs: 0 = all
visible GPUs; otherwise a bitmask of GPU ordinals. Pure functions; thread-safe.
"""

from __future__ import annotations

from hal_core import IncompatibleError, InvalidArgumentError, NotFoundError

from .agents import AgentDescription

__all__ = ["select_by_path", "select_by_id", "device_id_for", "MAX_GPU_AGENTS"]

MAX_GPU_AGENTS = 64


def _compatible(first: AgentDescription, other: AgentDescription) -> bool:
    return (first.vendor, first.name, first.chip_id) == (other.vendor, other.name, other.chip_id)


def _require_gpus(gpus: tuple[AgentDescription, ...]) -> None:
    if not gpus:
        raise NotFoundError("no GPU agents are visible (check ROCR_VISIBLE_DEVICES)")


def _defaults(gpus: tuple[AgentDescription, ...]) -> list[int]:
    _require_gpus(gpus)
    return [i for i, g in enumerate(gpus[:MAX_GPU_AGENTS]) if _compatible(gpus[0], g)]


def _check_group(gpus: tuple[AgentDescription, ...], ordinals: list[int], what: str) -> list[int]:
    first = gpus[ordinals[0]]
    for o in ordinals[1:]:
        if not _compatible(first, gpus[o]):
            raise IncompatibleError(
                f"{what}: GPU {o} ({gpus[o].name}, chip {gpus[o].chip_id:#x}) is not compatible "
                f"with GPU {ordinals[0]} ({first.name}, chip {first.chip_id:#x}); one logical "
                "device needs GPUs of the same vendor, name and chip ID"
            )
    return ordinals


def select_by_path(gpus: tuple[AgentDescription, ...], path: str) -> list[int]:
    """GPU ordinals for a URI path. INVALID_ARGUMENT for malformed fragments, NOT_FOUND
    for unknown ordinals/UUIDs, INCOMPATIBLE for mixed GPUs."""
    text = path.strip()
    if text in ("", "*"):
        return _defaults(gpus)
    _require_gpus(gpus)
    ordinals: list[int] = []
    for fragment in text.split(","):
        frag = fragment.strip()
        if not frag:
            raise InvalidArgumentError(f"device path {path!r} has an empty entry")
        if frag[:4].upper() == "GPU-":
            match = [i for i, g in enumerate(gpus) if g.uuid.lower() == frag.lower()]
            if not match:
                known = ", ".join(g.uuid for g in gpus)
                raise NotFoundError(f"no GPU has UUID {frag!r} (visible: {known})")
            index = match[0]
        elif frag.isdigit():
            index = int(frag)
            if index >= len(gpus):
                raise NotFoundError(
                    f"GPU ordinal {index} is out of range: {len(gpus)} GPUs are visible"
                )
        else:
            raise InvalidArgumentError(
                f"device path entry {frag!r} is neither a GPU ordinal nor a GPU-<uuid>; use "
                "e.g. 'amdgpu://0', 'amdgpu://0,1' or 'amdgpu://GPU-4939e1d93d24ff77'"
            )
        if index in ordinals:
            raise InvalidArgumentError(f"device path {path!r} names GPU {index} twice")
        ordinals.append(index)
    return _check_group(gpus, ordinals, f"device path {path!r}")


def select_by_id(gpus: tuple[AgentDescription, ...], device_id: int) -> list[int]:
    if device_id == 0:
        return _defaults(gpus)
    _require_gpus(gpus)
    if device_id < 0 or device_id >> len(gpus):
        raise NotFoundError(f"device id {device_id:#x} selects GPUs beyond the {len(gpus)} visible")
    ordinals = [i for i in range(len(gpus)) if device_id >> i & 1]
    return _check_group(gpus, ordinals, f"device id {device_id:#x}")


def device_id_for(ordinal: int) -> int:
    return 1 << ordinal
