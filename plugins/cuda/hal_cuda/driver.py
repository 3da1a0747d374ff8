"""``CudaDriverBackend``: the NVIDIA GPUs the CUDA driver reports, and device creation.

Device paths (``cuda://PATH``): ``""`` (every GPU), ``"0"`` (an ordinal), ``"GPU-<uuid>"``
(the UUID ``nvidia-smi -L`` prints), or a comma list of those (a GPU named twice counts
once). A path naming one GPU is that GPU's ``CudaDeviceBackend``; several GPUs make one
``CudaLogicalDevice`` over them (``logical_device.py``), so on a one-GPU machine
``cuda://`` is that GPU. URI parameters: ``queues=N`` (1..16, default 2), the streams
(queues) of each GPU; ``alloca=pools|stream`` (default ``pools``), what serves
``queue_alloca`` from the default pool set: hal_core's pools over device slabs, or CUDA's
stream-ordered allocator (``stream_alloca.py``).

Each GPU's primary context is retained once per process and kept (``_contexts``):
devices come and go, but memory a closed device's buffers still hold is freed through
that context, and a context released and re-created could hand the same addresses to a
new device while the old buffers' frees are pending.
"""

from __future__ import annotations

import threading
from typing import Any

import attrs

from hal_core import DeviceInfo, InvalidArgumentError, NotFoundError

from .cuda_api import CudaContext, check, driver_api
from .device import CudaDeviceBackend
from .logical_device import CudaLogicalDevice, members_for
from .stream_alloca import parse_alloca_mode
from .stream_waits import memops_support

DEFAULT_QUEUES = 2
MAX_QUEUES = 16

CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16
CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33

_contexts: dict[int, CudaContext] = {}
_contexts_lock = threading.Lock()


@attrs.frozen
class GpuInfo:
    """What the driver reports about one GPU."""

    ordinal: int
    name: str
    uuid: str
    compute_capability: tuple[int, int]
    memory_bytes: int
    multiprocessors: int

    def describe(self) -> str:
        major, minor = self.compute_capability
        return (
            f"{self.name} (sm_{major}{minor}, compute capability {major}.{minor}, "
            f"{self.memory_bytes / 2**30:.1f} GiB, {self.uuid})"
        )


def _format_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def query_gpu(api: Any, ordinal: int) -> GpuInfo:
    dev = check(api.cuDeviceGet(ordinal), f"cuDeviceGet({ordinal})")
    raw_name = check(api.cuDeviceGetName(256, dev), "cuDeviceGetName")
    name = raw_name.split(b"\0", 1)[0].decode(errors="replace")
    uuid = check(api.cuDeviceGetUuid(dev), "cuDeviceGetUuid")
    raw_uuid = bytes(uuid.bytes) if not isinstance(uuid.bytes, str) else uuid.bytes.encode()

    def attribute(attr: int) -> int:
        value = api.cuDeviceGetAttribute(api.CUdevice_attribute(attr), dev)
        return int(check(value, "cuDeviceGetAttribute"))

    return GpuInfo(
        ordinal=ordinal,
        name=name,
        uuid=_format_uuid(raw_uuid[:16]),
        compute_capability=(
            attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
        ),
        memory_bytes=int(check(api.cuDeviceTotalMem(dev), "cuDeviceTotalMem")),
        multiprocessors=attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
    )


def context_for(api: Any, ordinal: int) -> CudaContext:
    """The process-wide retained primary context of GPU ``ordinal``."""
    with _contexts_lock:
        ctx = _contexts.get(ordinal)
        if ctx is None:
            ctx = CudaContext(api, ordinal)
            _contexts[ordinal] = ctx
        return ctx


class CudaDriverBackend:
    """``DriverBackend`` of the ``cuda`` driver. Creating it loads the CUDA driver:
    UNAVAILABLE (naming what was looked for and how to fix it) without one."""

    def __init__(self) -> None:
        self.api = driver_api()
        count = int(check(self.api.cuDeviceGetCount(), "cuDeviceGetCount"))
        self.gpus = [query_gpu(self.api, i) for i in range(count)]

    def query_available_devices(self) -> list[DeviceInfo]:
        return [
            DeviceInfo(device_id=g.ordinal + 1, path=str(g.ordinal), name=g.describe())
            for g in self.gpus
        ]

    def dump_device_info(self, device_id: int) -> str:
        gpus = self.gpus if device_id == 0 else self._select(str(device_id - 1))
        lines = []
        for g in gpus:
            major, minor = g.compute_capability
            lines += [
                f"cuda://{g.ordinal}: {g.name}",
                f"  uuid: {g.uuid}",
                f"  compute capability: {major}.{minor} (sm_{major}{minor})",
                f"  memory: {g.memory_bytes} bytes ({g.memory_bytes / 2**30:.1f} GiB)",
                f"  multiprocessors: {g.multiprocessors}",
                f"  waits on other GPUs' work: {self._wait_support(g.ordinal)}",
            ]
        return "\n".join(lines)

    def _wait_support(self, ordinal: int) -> str:
        """How a device on this GPU waits on another device's in-flight work."""
        dev = check(self.api.cuDeviceGet(ordinal), f"cuDeviceGet({ordinal})")
        return memops_support(self.api, dev)[1]

    def _select(self, path: str) -> list[GpuInfo]:
        if path == "":
            if not self.gpus:
                raise NotFoundError("the CUDA driver reports no GPU")
            return list(self.gpus)
        out: list[GpuInfo] = []
        for part in path.split(","):
            part = part.strip()
            gpu: GpuInfo | None = None
            if part.isdigit():
                index = int(part)
                gpu = self.gpus[index] if index < len(self.gpus) else None
            elif part.upper().startswith("GPU-"):
                gpu = next((g for g in self.gpus if g.uuid.lower() == part.lower()), None)
            else:
                raise InvalidArgumentError(
                    f"cuda device path {path!r}: entry {part!r} is neither a GPU ordinal nor "
                    "a GPU-<uuid>; use e.g. cuda://0, cuda://0,1 or cuda://GPU-<uuid>"
                )
            if gpu is None:
                known = ", ".join(f"{g.ordinal} / {g.uuid}" for g in self.gpus) or "none"
                raise NotFoundError(
                    f"cuda has no GPU {part!r}; paths are an ordinal or a GPU-<uuid> "
                    f"(known: {known})"
                )
            if gpu not in out:
                out.append(gpu)
        return out

    def create_device_by_id(
        self, device_id: int, params: dict[str, str]
    ) -> CudaDeviceBackend | CudaLogicalDevice:
        if device_id == 0:
            return self.create_device_by_path("", params)
        if not 1 <= device_id <= len(self.gpus):
            raise NotFoundError(f"cuda has no device id {device_id} (ids 1..{len(self.gpus)})")
        return self.create_device_by_path(str(device_id - 1), params)

    def create_device_by_path(
        self, path: str, params: dict[str, str]
    ) -> CudaDeviceBackend | CudaLogicalDevice:
        """One GPU: its ``CudaDeviceBackend``. Several: a ``CudaLogicalDevice`` over one
        member per GPU (``queues`` streams each), peer access enabled between them."""
        queues, alloca = _device_options(params)
        gpus = self._select(path)
        contexts = [context_for(self.api, g.ordinal) for g in gpus]
        if len(gpus) == 1:
            gpu = gpus[0]
            return CudaDeviceBackend(
                contexts[0], queues, gpu.memory_bytes, gpu.describe(), alloca=alloca
            )
        members = members_for(
            contexts,
            queues,
            [g.memory_bytes for g in gpus],
            [g.describe() for g in gpus],
            alloca=alloca,
        )
        try:
            return CudaLogicalDevice(
                members, queues, "cuda://" + ",".join(str(g.ordinal) for g in gpus)
            )
        except BaseException:
            for member in members:
                member.close(None)
            raise


def _device_options(params: dict[str, str]) -> tuple[int, str]:
    """(queues, alloca mode) from the URI parameters; INVALID_ARGUMENT for unknown ones
    or bad values."""
    unknown = sorted(set(params) - {"queues", "alloca"})
    if unknown:
        raise InvalidArgumentError(
            f"cuda does not know device parameters {unknown}; known: queues, alloca"
        )
    return _queue_count(params), parse_alloca_mode(params.get("alloca", ""))


def _queue_count(params: dict[str, str]) -> int:
    raw = params.get("queues", "")
    if raw == "":
        return DEFAULT_QUEUES
    try:
        queues = int(raw)
    except ValueError:
        raise InvalidArgumentError(f"device parameter queues={raw!r} is not an integer") from None
    if not 1 <= queues <= MAX_QUEUES:
        raise InvalidArgumentError(f"device parameter queues={queues} is outside 1..{MAX_QUEUES}")
    return queues
