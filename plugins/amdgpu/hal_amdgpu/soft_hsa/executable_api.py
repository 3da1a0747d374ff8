"""The soft HSA runtime's code objects and executables (``hsa_code_object_reader_*``,
``hsa_executable_*``); a base class of ``SoftHsaRuntime``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, cast

from ..code_object import HalError, parse_hsaco
from ..hsa_cdef import ffi
from ..hsa_enums import (
    HsaStatus,
    SymbolInfo,
    SymbolKind,
)
from ..target_id import TargetId, compatibility_problem
from .loader import SoftExecutable, SoftKernelObject, SoftLoadedCodeObject, SoftReader
from .memory import SoftMemory

__all__ = ["SoftExecutableApi"]

_S = HsaStatus
_OK = int(HsaStatus.SUCCESS)


class SoftExecutableApi:
    """Code-object and executable functions of ``SoftHsaRuntime``."""

    # Set by SoftHsaRuntime.__init__ (``_agent_handle`` comes from ``SoftSystemApi``).
    memory: SoftMemory
    kernel_objects: dict[int, SoftKernelObject]
    _cond: threading.Condition
    _ids: Iterator[int]
    _isas: dict[int, tuple[int, TargetId, str]]
    _agent_isa: dict[int, int]
    _readers: dict[int, SoftReader]
    _executables: dict[int, SoftExecutable]
    _loaded: dict[int, SoftLoadedCodeObject]
    _agent_handle: Callable[[Any], int]

    # -- code objects and executables ---------------------------------------------------

    def hsa_code_object_reader_create_from_memory(
        self, code_object: Any, size: int, reader: Any
    ) -> int:
        image = bytes(ffi.buffer(ffi.cast("char*", code_object), size))
        try:
            parsed = parse_hsaco(image)
        except HalError:
            return int(_S.ERROR_INVALID_CODE_OBJECT)
        handle = next(self._ids)
        with self._cond:
            self._readers[handle] = SoftReader(image, parsed)
        reader[0].handle = handle
        return _OK

    def hsa_code_object_reader_destroy(self, reader: Any) -> int:
        with self._cond:
            found = self._readers.pop(int(reader.handle), None)
        return _OK if found else int(_S.ERROR_INVALID_CODE_OBJECT_READER)

    def hsa_executable_create_alt(
        self, profile: int, rounding: int, options: Any, executable: Any
    ) -> int:
        handle = next(self._ids)
        with self._cond:
            self._executables[handle] = SoftExecutable(handle, int(profile))
        executable[0].handle = handle
        return _OK

    def hsa_executable_load_agent_code_object(
        self, executable: Any, agent: Any, reader: Any, options: Any, loaded: Any
    ) -> int:
        exe = self._executables.get(int(executable.handle))
        rd = self._readers.get(int(reader.handle))
        handle = self._agent_handle(agent)
        if exe is None:
            return int(_S.ERROR_INVALID_EXECUTABLE)
        if rd is None:
            return int(_S.ERROR_INVALID_CODE_OBJECT_READER)
        if exe.frozen:
            return int(_S.ERROR_FROZEN_EXECUTABLE)
        isa = self._agent_isa.get(handle)
        if isa is None:
            return int(_S.ERROR_INVALID_AGENT)
        if compatibility_problem(rd.code_object.target, self._isas[isa][1]) is not None:
            return int(_S.ERROR_INVALID_ISA)
        image = self.memory.allocate(len(rd.image), 4096, owner_agent=handle)
        image.array[:] = memoryview(rd.image)
        lco = SoftLoadedCodeObject(next(self._ids), handle, image, rd.code_object)
        with self._cond:
            exe.loaded.append(lco)
            self._loaded[lco.handle] = lco
            for kernel in rd.code_object.kernels.values():
                kobj = image.address + kernel.descriptor_offset
                self.kernel_objects[kobj] = SoftKernelObject(kernel, handle, exe.handle)
        if loaded != ffi.NULL:
            loaded[0].handle = lco.handle
        return _OK

    def hsa_executable_freeze(self, executable: Any, options: Any) -> int:
        exe = self._executables.get(int(executable.handle))
        if exe is None:
            return int(_S.ERROR_INVALID_EXECUTABLE)
        if exe.frozen:
            return int(_S.ERROR_FROZEN_EXECUTABLE)
        exe.frozen = True
        return _OK

    def hsa_executable_destroy(self, executable: Any) -> int:
        with self._cond:
            exe = self._executables.pop(int(executable.handle), None)
            if exe is None:
                return int(_S.ERROR_INVALID_EXECUTABLE)
            for lco in exe.loaded:
                self._loaded.pop(lco.handle, None)
                for kernel in lco.code_object.kernels.values():
                    self.kernel_objects.pop(lco.image.address + kernel.descriptor_offset, None)
        for lco in exe.loaded:
            self.memory.free(lco.image.address)
        return _OK

    def hsa_executable_get_symbol_by_name(
        self, executable: Any, name: Any, agent: Any, symbol: Any
    ) -> int:
        exe = self._executables.get(int(executable.handle))
        if exe is None:
            return int(_S.ERROR_INVALID_EXECUTABLE)
        # cffi passes Python bytes for ``const char*`` straight to C; accept both forms.
        raw = name if isinstance(name, bytes) else cast(bytes, ffi.string(name))  # char*
        text = raw.decode("utf-8", "replace")
        want_agent = int(agent[0].handle) if agent != ffi.NULL else 0
        for lco in exe.loaded:
            if want_agent and lco.agent != want_agent:
                continue
            for kernel in lco.code_object.kernels.values():
                if kernel.symbol == text:
                    handle = next(self._ids)
                    exe.symbols[handle] = (
                        kernel,
                        lco.agent,
                        lco.image.address + kernel.descriptor_offset,
                    )
                    symbol[0].handle = handle
                    return _OK
        return int(_S.ERROR_INVALID_SYMBOL_NAME)

    def hsa_executable_symbol_get_info(self, symbol: Any, attribute: int, value: Any) -> int:
        for exe in list(self._executables.values()):
            entry = exe.symbols.get(int(symbol.handle))
            if entry is not None:
                break
        else:
            return int(_S.ERROR_INVALID_EXECUTABLE_SYMBOL)
        kernel, _agent, kobj = entry
        s = SymbolInfo
        ints: dict[int, tuple[str, int]] = {
            s.TYPE: ("uint32_t*", int(SymbolKind.KERNEL)),
            s.NAME_LENGTH: ("uint32_t*", len(kernel.symbol)),
            s.KERNEL_KERNARG_SEGMENT_SIZE: ("uint32_t*", kernel.kernarg_segment_size),
            s.KERNEL_KERNARG_SEGMENT_ALIGNMENT: ("uint32_t*", kernel.kernarg_segment_align),
            s.KERNEL_GROUP_SEGMENT_SIZE: ("uint32_t*", kernel.group_segment_fixed_size),
            s.KERNEL_PRIVATE_SEGMENT_SIZE: ("uint32_t*", kernel.private_segment_fixed_size),
            s.KERNEL_OBJECT: ("uint64_t*", kobj),
        }
        if attribute == s.NAME:
            ffi.memmove(value, kernel.symbol.encode(), len(kernel.symbol))
            return _OK
        entry2 = ints.get(attribute)
        if entry2 is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        ffi.cast(entry2[0], value)[0] = entry2[1]
        return _OK
