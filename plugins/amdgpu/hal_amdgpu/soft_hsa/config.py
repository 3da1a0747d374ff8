"""Configuration of a software HSA system: its agents and their memory pools.

Frozen attrs values; building one touches nothing. ``SoftSystemConfig.default()`` is one
CPU agent and two gfx1100 GPUs; ``SoftSystemConfig.from_isas("gfx1100,gfx90a")`` builds
GPUs from a comma list (the ``soft_gpus`` URI parameter and ``HAL_AMDGPU_SOFT_GPUS``).
"""

from __future__ import annotations

import attrs

from hal_core import InvalidArgumentError

from ..hsa_enums import LinkType, PoolGlobalFlag
from ..target_id import HSA_ISA_PREFIX, TargetId, TargetKind

__all__ = [
    "SoftMemoryPoolConfig",
    "SoftAgentConfig",
    "SoftSystemConfig",
    "SOFT_GPUS_ENV",
    "NO_PEER_ACCESS",
]

NO_PEER_ACCESS = "no_peer_access"
"""A ``soft_gpus`` item: the listed GPUs cannot reach each other's memory."""

SOFT_GPUS_ENV = "HAL_AMDGPU_SOFT_GPUS"
MAX_SOFT_GPUS = 64


@attrs.frozen
class SoftMemoryPoolConfig:
    """One GLOBAL-segment memory pool of an agent."""

    flags: PoolGlobalFlag
    size: int = 1 << 32
    granule: int = 4096
    alignment: int = 4096
    accessible_by_all: bool = False
    alloc_max_size: int = 1 << 32


def _cpu_pools() -> tuple[SoftMemoryPoolConfig, ...]:
    return (
        SoftMemoryPoolConfig(
            PoolGlobalFlag.FINE_GRAINED | PoolGlobalFlag.KERNARG_INIT, accessible_by_all=True
        ),
        SoftMemoryPoolConfig(PoolGlobalFlag.FINE_GRAINED, accessible_by_all=True),
        SoftMemoryPoolConfig(PoolGlobalFlag.COARSE_GRAINED, accessible_by_all=True),
    )


def _gpu_pools() -> tuple[SoftMemoryPoolConfig, ...]:
    return (
        SoftMemoryPoolConfig(PoolGlobalFlag.COARSE_GRAINED),
        SoftMemoryPoolConfig(PoolGlobalFlag.FINE_GRAINED),
    )


def _check_isa(_inst: object, _attr: object, value: str) -> None:
    if value:
        TargetId.parse(value)  # raises INVALID_ARGUMENT naming the bad ISA


@attrs.frozen
class SoftAgentConfig:
    """A CPU (``isa == ""``) or GPU agent."""

    name: str
    isa: str = attrs.field(default="", validator=_check_isa)
    uuid: str = ""
    node: int = 0
    chip_id: int = 0
    compute_units: int = 8
    wavefront_size: int = 64
    bdf_id: int = 0
    product_name: str = ""
    pools: tuple[SoftMemoryPoolConfig, ...] = ()
    queue_max_size: int = 1 << 17
    """Packets per AQL queue at most (``HSA_AGENT_INFO_QUEUE_MAX_SIZE``; ROCr's on
    current GPUs)."""

    @property
    def is_gpu(self) -> bool:
        return bool(self.isa)


@attrs.frozen
class SoftSystemConfig:
    """Agents in HSA iteration order, and the link type between GPUs (CPU-GPU is PCIe).

    ``gpu_peer_access`` False presents GPUs that cannot reach each other's memory (as
    ROCr reports GPUs without a P2P path: ``NEVER_ALLOWED``, and grants refused)."""

    agents: tuple[SoftAgentConfig, ...]
    gpu_link: LinkType = LinkType.XGMI
    gpu_numa_distance: int = 15
    gpu_peer_access: bool = True

    @classmethod
    def default(cls) -> "SoftSystemConfig":
        return cls.from_isas("gfx1100,gfx1100")

    @classmethod
    def from_isas(cls, text: str) -> "SoftSystemConfig":
        """One CPU agent plus one GPU per comma-separated ISA (``gfx1100``,
        ``gfx942:sramecc+:xnack-``, ...): any exact processor, so the soft agent can
        present every target the device library serves. RDNA parts (gfx10 and later) run
        wave32, GCN/CDNA parts wave64. The item ``no_peer_access`` presents GPUs without
        peer access to each other's memory. INVALID_ARGUMENT for an empty list, a
        malformed ISA or a generic family."""
        isas = [part.strip() for part in str(text).split(",") if part.strip()]
        peer_access = NO_PEER_ACCESS not in isas
        isas = [isa for isa in isas if isa != NO_PEER_ACCESS]
        if not isas:
            raise InvalidArgumentError(
                f"soft HSA GPU list {text!r} is empty; give ISAs such as 'gfx1100,gfx90a'"
            )
        if len(isas) > MAX_SOFT_GPUS:
            raise InvalidArgumentError(f"soft HSA supports at most {MAX_SOFT_GPUS} GPUs")
        agents = [
            SoftAgentConfig(
                name="soft-cpu", node=0, wavefront_size=0, compute_units=4, pools=_cpu_pools()
            )
        ]
        for index, isa in enumerate(isas):
            target = TargetId.parse(isa)
            if target.kind is not TargetKind.EXACT:
                # A GPU reports an exact processor; a generic family names code objects.
                raise InvalidArgumentError(
                    f"soft HSA GPU {isa!r} is an LLVM generic code-object target, not a "
                    "processor a GPU can be; give an exact one such as gfx1101"
                )
            wave = 32 if target.major >= 10 else 64
            agents.append(
                SoftAgentConfig(
                    name=target.processor,
                    isa=HSA_ISA_PREFIX + target.format(),
                    uuid=f"GPU-{0x50F7A0000000 + index:016x}",
                    node=index + 1,
                    chip_id=0x7440 + (target.major << 4) + (target.minor or 0),
                    compute_units=16,
                    wavefront_size=wave,
                    bdf_id=((0x10 + index) << 8),
                    product_name=f"Soft HSA GPU {index} ({target.processor})",
                    pools=_gpu_pools(),
                )
            )
        return cls(tuple(agents), gpu_peer_access=peer_access)
