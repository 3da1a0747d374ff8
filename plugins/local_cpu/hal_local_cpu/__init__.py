"""hal_local_cpu: the CPU reference backend (drivers ``local-task`` and ``local-sync``)."""

from .device import LocalDeviceBackend
from .driver import LocalDriverBackend

__version__ = "0.1.0"
__all__ = ["LocalDeviceBackend", "LocalDriverBackend", "__version__"]
