"""The software HSA agent: a TEST AND DEVELOPMENT TOOL, not a GPU.

It implements, in Python over host memory, the HSA functions the ``amdgpu`` driver calls
(agents, memory pools, signals, AQL queues with a packet-processor thread, code objects and
executables over real HSACO files) so the driver can be exercised end to end on machines
without AMD hardware. Kernels run through *host twins* (Python functions registered per
kernel name). The driver uses it only when asked: URI parameter ``hsa=soft``
(``amdgpu://?hsa=soft``) or ``HAL_AMDGPU_HSA=soft``.
"""

from .config import SOFT_GPUS_ENV, SoftAgentConfig, SoftMemoryPoolConfig, SoftSystemConfig
from .host_twins import BUILTIN_TWINS, HostTwin, HostTwinContext
from .memory import SoftMemoryFault
from .runtime import SoftHsaRuntime

__all__ = [
    "BUILTIN_TWINS",
    "HostTwin",
    "HostTwinContext",
    "SOFT_GPUS_ENV",
    "SoftAgentConfig",
    "SoftHsaRuntime",
    "SoftMemoryFault",
    "SoftMemoryPoolConfig",
    "SoftSystemConfig",
]
