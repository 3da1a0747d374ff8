"""The device library: the builtin blit kernels every amdgpu device loads for its queues.

Code objects ship in ``hal_amdgpu/kernels`` as ``blit--amdgcn-amd-amdhsa--<target>.hsaco``:
LLVM generic families (``gfx9-generic``, ``gfx9-4-generic``, ``gfx10-3-generic``,
``gfx11-generic``, ``gfx12-generic``) plus the exact processors no buildable generic
family covers. A GPU uses the most specific one that ships
(``target_id.library_candidates``: its full target ID, its processor, then its generic
family), as IREE selects device libraries.
``check_device_library`` runs at device creation, so a GPU with no usable code object
fails there (INCOMPATIBLE naming its target and every target that ships) instead of
failing every queue operation later.

``load_device_library`` loads one executable per distinct code object onto the GPUs that
use it and returns a ``DeviceLibrary``: the per-GPU ``BuiltinKernels`` plus the
executables, which its owner (the device's ``HostQueueSet``) closes with the device, so a
process that creates and closes devices keeps nothing of them. Pure functions over the
shipped files apart from the HSA loading; thread-safe.
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterator, Sequence

from hal_core import IncompatibleError, StatusCode, error_for

from .kernel_descriptors import BuiltinKernels, KernelDescriptor
from .target_id import GENERIC_FAMILY, TargetId, library_candidates

__all__ = [
    "DeviceLibrary",
    "KERNELS_DIR",
    "builtin_kernels_from_executable",
    "check_device_library",
    "device_library_path",
    "kernel_descriptor",
    "load_device_library",
    "shipped_library_targets",
]

#: Where the shipped code objects live.
KERNELS_DIR = pathlib.Path(__file__).parent / "kernels"
_PREFIX = "blit--amdgcn-amd-amdhsa--"
_SUFFIX = ".hsaco"

_FILL_KERNELS = {
    1: "hal_amdgpu_buffer_fill_x1",
    2: "hal_amdgpu_buffer_fill_x2",
    4: "hal_amdgpu_buffer_fill_x4",
    8: "hal_amdgpu_buffer_fill_x8",
}
_COPY_KERNELS = {
    1: "hal_amdgpu_buffer_copy_x1",
    4: "hal_amdgpu_buffer_copy_x4",
    16: "hal_amdgpu_buffer_copy_x16",
}


def shipped_library_targets(root: pathlib.Path = KERNELS_DIR) -> list[str]:
    """The targets (processors or generic families) the device library ships, sorted."""
    return sorted(p.name[len(_PREFIX) : -len(_SUFFIX)] for p in root.glob(f"{_PREFIX}*{_SUFFIX}"))


def device_library_path(
    target: TargetId | str, root: pathlib.Path = KERNELS_DIR
) -> pathlib.Path | None:
    """The code object a GPU whose ISA is ``target`` uses: the first of
    ``library_candidates`` that ships (exact target ID, processor, then its generic
    family); None when none does."""
    agent = TargetId.parse(target) if isinstance(target, str) else target
    for name in library_candidates(agent):
        path = root / f"{_PREFIX}{name}{_SUFFIX}"
        if path.is_file():
            return path
    return None


def check_device_library(gpus: Sequence[Any], root: pathlib.Path = KERNELS_DIR) -> None:
    """INCOMPATIBLE, naming the target and the targets that ship, when a GPU has no usable
    device-library code object (called at device creation)."""
    missing = sorted(
        {g.target.format() for g in gpus if device_library_path(g.target, root) is None}
    )
    if missing:
        named = []
        for name in missing:
            family = GENERIC_FAMILY.get(TargetId.parse(name).processor)
            named.append(f"{name} (generic family {family})" if family else name)
        raise IncompatibleError(
            f"no amdgpu device library (builtin blit kernels) for GPU target "
            f"{', '.join(named)}; the device library ships {shipped_library_targets(root)}. "
            "Use a GPU of a shipped target or rebuild the library for it with "
            "plugins/amdgpu/tools/build_kernels.sh"
        )


def kernel_descriptor(executable: Any, gpu_index: int, ordinal: int) -> KernelDescriptor:
    """A ``KernelDescriptor`` for function ``ordinal`` of a loaded ``AmdgpuExecutable``."""
    info = executable.dispatch_info[gpu_index][ordinal]
    layout = executable.layouts[ordinal]
    kernel = executable.kernels[ordinal]
    hidden = tuple((a.value_kind, a.offset, a.size) for a in kernel.args if a.hidden)
    return KernelDescriptor(
        kernel_object=info.kernel_object,
        kernarg_size=max(layout.kernarg_size, info.kernarg_segment_size),
        binding_count=layout.binding_count,
        constant_count=layout.constant_count,
        workgroup_size=kernel.reqd_workgroup_size or (1, 1, 1),
        private_segment_size=info.private_segment_size,
        group_segment_size=info.group_segment_size,
        explicit_size=layout.explicit_size,
        hidden_args=hidden,
        name=kernel.name,
    )


def builtin_kernels_from_executable(
    executable: Any, gpu_index: int, wavefront_size: int, compute_units: int
) -> BuiltinKernels:
    """The blit kernels of the device library loaded as ``executable``; NOT_FOUND naming
    the missing kernel if the library lacks one."""
    names = {k.name: i for i, k in enumerate(executable.kernels)}

    def get(name: str) -> KernelDescriptor:
        if name not in names:
            raise error_for(
                StatusCode.NOT_FOUND,
                f"the amdgpu device library has no builtin kernel {name!r}; it has {sorted(names)}",
            )
        return kernel_descriptor(executable, gpu_index, names[name])

    return BuiltinKernels(
        fill={w: get(n) for w, n in _FILL_KERNELS.items()},
        copy={w: get(n) for w, n in _COPY_KERNELS.items()},
        workgroup_size=max(32, wavefront_size),
        max_workgroups=max(1, 4 * compute_units),
    )


class DeviceLibrary:
    """The loaded device library of one device: ``builtins[gpu]`` and the executables
    behind them. ``close()`` (idempotent) destroys the executables; the owner calls it
    once no queue can run a builtin kernel any more."""

    __slots__ = ("builtins", "executables")

    def __init__(self, builtins: list[BuiltinKernels], executables: list[Any]) -> None:
        self.builtins = builtins
        self.executables = executables

    def __len__(self) -> int:
        return len(self.builtins)

    def __getitem__(self, gpu_index: int) -> BuiltinKernels:
        return self.builtins[gpu_index]

    def __iter__(self) -> Iterator[BuiltinKernels]:
        return iter(self.builtins)

    def close(self) -> None:
        executables, self.executables = self.executables, []
        for exe in executables:
            exe.close()


def load_device_library(hsa: Any, gpus: tuple) -> DeviceLibrary:
    """Load the builtin blit kernels for every GPU: one executable per distinct code object
    (``device_library_path``), loaded on every GPU that uses it. INCOMPATIBLE when a GPU
    has none (``check_device_library``). The caller owns the result and closes it."""
    from .executable import load_executable

    check_device_library(gpus)
    by_path: dict[pathlib.Path, list[int]] = {}
    for i, gpu in enumerate(gpus):
        path = device_library_path(gpu.target)
        assert path is not None  # check_device_library passed
        by_path.setdefault(path, []).append(i)
    out: list[Any] = [None] * len(gpus)
    library = DeviceLibrary(out, [])
    try:
        for path, indices in by_path.items():
            members = tuple(gpus[i] for i in indices)
            exe = load_executable(hsa, members, path.read_bytes())
            library.executables.append(exe)
            for row, i in enumerate(indices):
                out[i] = builtin_kernels_from_executable(
                    exe, row, gpus[i].wavefront_size, gpus[i].compute_unit_count
                )
    except BaseException:
        library.close()
        raise
    return library
