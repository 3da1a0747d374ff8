"""HSA agent discovery: CPU and GPU agents with the properties the driver selects on.

``discover_agents(hsa)`` walks ``hsa_iterate_agents`` once and returns frozen
``AgentDescription`` values in HSA order (GPU ordinals are positions among the GPU
agents, as ROCr reports them after ``ROCR_VISIBLE_DEVICES``). Blocking (HSA queries);
thread-safe.
"""

from __future__ import annotations

from typing import Any, cast

import attrs

from .hsa import HsaLibrary
from .hsa_enums import AgentInfo, DeviceType, IsaInfo
from .target_id import TargetId

__all__ = ["AgentDescription", "SystemAgents", "discover_agents"]

#: ``HSA_AGENT_INFO_QUEUE_MAX_SIZE`` (hsa.h): the most packets one AQL queue may hold.
AGENT_INFO_QUEUE_MAX_SIZE = 14


@attrs.frozen
class AgentDescription:
    handle: int
    device_type: DeviceType
    name: str
    vendor: str
    product_name: str
    isa_names: tuple[str, ...]
    node: int
    uuid: str
    chip_id: int
    compute_unit_count: int
    wavefront_size: int
    nearest_cpu: int
    """Handle of the nearest CPU agent (0 for CPU agents or when unknown)."""
    bdf_id: int
    domain: int
    profile: int
    rounding_mode: int
    workgroup_max_size: int
    queue_max_size: int = 0
    """``HSA_AGENT_INFO_QUEUE_MAX_SIZE`` in packets (0 for CPU agents or when unknown)."""

    @property
    def is_gpu(self) -> bool:
        return self.device_type == DeviceType.GPU

    @property
    def bdf(self) -> str:
        """``DDDD:BB:DD.F`` (PCI domain, bus, device, function)."""
        b = self.bdf_id
        return f"{self.domain:04x}:{(b >> 8) & 0xFF:02x}:{(b >> 3) & 0x1F:02x}.{b & 0x7}"

    @property
    def target(self) -> TargetId:
        """The agent's preferred ISA as a target ID."""
        return TargetId.parse(self.isa_names[0])

    def hsa_handle(self, hsa: HsaLibrary) -> Any:
        return hsa.ffi.new("hsa_agent_t*", [self.handle])[0]


@attrs.frozen
class SystemAgents:
    cpus: tuple[AgentDescription, ...]
    gpus: tuple[AgentDescription, ...]

    def by_handle(self, handle: int) -> AgentDescription | None:
        for agent in self.cpus + self.gpus:
            if agent.handle == handle:
                return agent
        return None

    def nearest_cpu(self, gpu: AgentDescription) -> AgentDescription:
        cpu = self.by_handle(gpu.nearest_cpu)
        if cpu is not None and not cpu.is_gpu:
            return cpu
        # Older ROCr has no NEAREST_CPU: fall back to the CPU agent on the lowest node.
        return self.cpus[0]


def _describe(hsa: HsaLibrary, agent: Any) -> AgentDescription:
    device_type = DeviceType(hsa.agent_info(agent, AgentInfo.DEVICE, "uint32_t"))
    isas: list[str] = []
    max_size = 0
    for isa in hsa.iterate("hsa_agent_iterate_isas", "hsa_isa_t", agent):
        length = hsa.ffi.new("uint32_t*")
        hsa.check(
            hsa.lib.hsa_isa_get_info_alt(isa, IsaInfo.NAME_LENGTH, length),
            "hsa_isa_get_info_alt(NAME_LENGTH)",
        )
        buf = hsa.ffi.new(f"char[{max(1, length[0])}]")
        hsa.check(
            hsa.lib.hsa_isa_get_info_alt(isa, IsaInfo.NAME, buf), "hsa_isa_get_info_alt(NAME)"
        )
        isas.append(cast(bytes, hsa.ffi.string(buf)).decode())  # a char array reads as bytes
        size = hsa.ffi.new("uint32_t*")
        if hsa.lib.hsa_isa_get_info_alt(isa, IsaInfo.WORKGROUP_MAX_SIZE, size) == 0:
            max_size = max_size or int(size[0])
    nearest = 0
    if device_type == DeviceType.GPU:
        cpu = hsa.agent_info_optional(agent, AgentInfo.AMD_NEAREST_CPU, "hsa_agent_t")
        nearest = int(cpu.handle) if cpu is not None else 0

    def opt(attr: int) -> int:
        value = hsa.agent_info_optional(agent, attr, "uint32_t")
        return int(value) if value is not None else 0

    uuid = ""
    buf = hsa.ffi.new("char[64]")
    if hsa.lib.hsa_agent_get_info(agent, AgentInfo.AMD_UUID, buf) == 0:
        uuid = cast(bytes, hsa.ffi.string(buf)).decode("utf-8", "replace")
    return AgentDescription(
        handle=int(agent.handle),
        device_type=device_type,
        name=hsa.agent_info_string(agent, AgentInfo.NAME),
        vendor=hsa.agent_info_string(agent, AgentInfo.VENDOR_NAME),
        product_name=(
            hsa.agent_info_string(agent, AgentInfo.AMD_PRODUCT_NAME)
            if device_type == DeviceType.GPU
            else ""
        ),
        isa_names=tuple(isas),
        node=int(hsa.agent_info(agent, AgentInfo.NODE, "uint32_t")),
        uuid=uuid,
        chip_id=opt(AgentInfo.AMD_CHIP_ID),
        compute_unit_count=opt(AgentInfo.AMD_COMPUTE_UNIT_COUNT),
        wavefront_size=opt(AgentInfo.WAVEFRONT_SIZE) if device_type == DeviceType.GPU else 0,
        nearest_cpu=nearest,
        bdf_id=opt(AgentInfo.AMD_BDFID),
        domain=opt(AgentInfo.AMD_DOMAIN),
        profile=int(hsa.agent_info(agent, AgentInfo.PROFILE, "uint32_t")),
        rounding_mode=opt(AgentInfo.DEFAULT_FLOAT_ROUNDING_MODE),
        workgroup_max_size=max_size,
        queue_max_size=opt(AGENT_INFO_QUEUE_MAX_SIZE) if device_type == DeviceType.GPU else 0,
    )


def discover_agents(hsa: HsaLibrary) -> SystemAgents:
    cpus: list[AgentDescription] = []
    gpus: list[AgentDescription] = []
    for agent in hsa.iterate("hsa_iterate_agents", "hsa_agent_t"):
        desc = _describe(hsa, agent)
        if desc.device_type == DeviceType.GPU:
            if desc.isa_names:
                gpus.append(desc)
        elif desc.device_type == DeviceType.CPU:
            cpus.append(desc)
    return SystemAgents(tuple(cpus), tuple(gpus))
